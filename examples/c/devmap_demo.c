/*
 * devmap from C: a 64 MiB memfd device at 2 MiB, mapped, written, pinned by address (folio
 * ranges, extents for a DMA registration, and a page array), unpinned dirty; a memory error
 * reported at one page, the badblocks list read, the lost page read safely, the poison
 * cleared; a metadata estimate; a region with namespaces, one enabled as a device, written,
 * disabled and enabled again. Every result is checked: on any failure the program prints
 * the call, the errno and devmap_last_error() and exits 1.
 *
 * Build and run (scripts/c-example.sh does this under AddressSanitizer):
 *   cargo build -p devmap-ffi --locked
 *   cc -Iinclude examples/c/devmap_demo.c target/debug/libdevmap.a -lpthread -ldl -lm
 * or against the shared library, installed (scripts/install-c.sh PREFIX; it does this too):
 *   cc examples/c/devmap_demo.c $(pkg-config --cflags --libs devmap)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "devmap.h"

#define MIB (UINT64_C(1) << 20)
#define PAGE UINT64_C(4096)

/* Fails the program with the call, its errno and the library's message unless rc == want. */
static void check(int rc, int want, const char *call, int line)
{
    if (rc == want)
        return;
    fprintf(stderr, "devmap_demo.c:%d: %s returned %d (%s), wanted %d: %s\n", line, call, rc,
            rc < 0 ? strerror(-rc) : "?", want, devmap_last_error());
    exit(1);
}

#define CHECK(call) check((call), 0, #call, __LINE__)
#define EXPECT(call, want) check((call), (want), #call, __LINE__)
#define ASSERT(cond)                                                                   \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            fprintf(stderr, "devmap_demo.c:%d: assertion failed: %s\n", __LINE__, #cond); \
            exit(1);                                                                   \
        }                                                                              \
    } while (0)

static void device_demo(void)
{
    devmap_space *space = NULL;
    devmap_device *dev = NULL;
    devmap_mapping *map = NULL;
    devmap_device_options opts;
    struct devmap_device_info info;
    void *addr = NULL;
    uint64_t len = 0;

    CHECK(devmap_space_new(&space));
    CHECK(devmap_device_options_init(2 * MIB, &opts));
    CHECK(devmap_device_create_memfd(space, 64 * MIB, &opts, &dev));
    CHECK(devmap_device_get_info(dev, &info));
    ASSERT(info.size == 64 * MIB && info.align == 2 * MIB);
    ASSERT(info.catches_touches && info.granularity == DEVMAP_GRANULARITY_PAGE);

    /* A refusal: the length must be a multiple of the align. */
    EXPECT(devmap_mmap(dev, 0, 3 * PAGE, &map, &addr, &len), -EINVAL);
    ASSERT(strstr(devmap_last_error(), "not a multiple of the device align") != NULL);
    /* A NULL out pointer is -EFAULT, and nothing is mapped. */
    EXPECT(devmap_mmap(dev, 0, 64 * MIB, NULL, &addr, &len), -EFAULT);

    CHECK(devmap_mmap(dev, 0, 64 * MIB, &map, &addr, &len));
    ASSERT(len == 64 * MIB && (uintptr_t)addr % (2 * MIB) == 0);
    printf("mapped %" PRIu64 " MiB at %p\n", len / MIB, addr);

    /* Writes: each first touch of a 2 MiB leaf runs devmap's fault path. */
    char *bytes = addr;
    strcpy(bytes + PAGE, "hello from C");
    memset(bytes + 2 * MIB, 0xab, 2 * MIB);
    CHECK(devmap_device_get_info(dev, &info));
    ASSERT(info.leaves_mapped == 2);

    /* Pin 8 MiB by address, folio-range form: ask for the count first, then the entries. */
    devmap_pins *pins = NULL;
    size_t n = 0;
    CHECK(devmap_pin_folios(map, addr, 8 * MIB / PAGE, DEVMAP_PIN_WRITE, &pins));
    EXPECT(devmap_pins_folios(pins, NULL, 0, &n), -ENOSPC);
    ASSERT(n == 4);
    devmap_folio *folios = calloc(n, sizeof *folios);
    ASSERT(folios != NULL);
    CHECK(devmap_pins_folios(pins, folios, n, &n));
    for (size_t i = 0; i < n; i++) {
        printf("folio %zu: addr %#zx pfn %" PRIu64 " head %" PRIu64 " order %u pages %" PRIu64
               "\n",
               i, folios[i].addr, folios[i].pfn, folios[i].head, folios[i].order,
               folios[i].nr_pages);
        ASSERT(folios[i].order == 9 && folios[i].nr_pages == 512);
        ASSERT(folios[i].addr == (uintptr_t)addr + i * 2 * MIB);
    }
    free(folios);
    uint64_t pinned = 0;
    CHECK(devmap_pins_nr_pages(pins, &pinned));
    ASSERT(pinned == 8 * MIB / PAGE);

    /* Extents for a DMA registration: one 8 MiB extent with no limits; with a NIC's
     * 4 MiB max_mr_size, two, each starting on a folio boundary. */
    devmap_extent ext[4];
    CHECK(devmap_pins_extents(pins, 0, 0, ext, 4, &n));
    ASSERT(n == 1 && ext[0].addr == (uintptr_t)addr && ext[0].len == 8 * MIB);
    CHECK(devmap_pins_extents(pins, 0, 4 * MIB, ext, 4, &n));
    ASSERT(n == 2 && ext[1].offset == 4 * MIB && ext[1].pfn == ext[0].pfn + 1024);
    for (size_t i = 0; i < n; i++)
        printf("extent %zu: addr %#zx offset %" PRIu64 " pfn %" PRIu64 " len %" PRIu64 "\n", i,
               ext[i].addr, ext[i].offset, ext[i].pfn, ext[i].len);
    /* An IOMMU with room for one mapping only: -E2BIG, and the reason. */
    EXPECT(devmap_pins_extents(pins, 1, 4 * MIB, ext, 4, &n), -E2BIG);
    struct devmap_pin_stats stats;
    CHECK(devmap_device_pin_stats(dev, &stats));
    ASSERT(stats.pinned_bytes == 8 * MIB && stats.pin_refs == 8 * MIB / PAGE);
    CHECK(devmap_unpin(pins, true));
    CHECK(devmap_device_pin_stats(dev, &stats));
    ASSERT(stats.pinned_bytes == 0);

    /* The page-array form, 16 pages from the second page. */
    devmap_page pages[16];
    CHECK(devmap_pin_pages(map, bytes + PAGE, 16, 0, &pins));
    CHECK(devmap_pins_pages(pins, pages, 16, &n));
    ASSERT(n == 16 && pages[0].addr == (uintptr_t)bytes + PAGE);
    ASSERT(pages[15].pfn == pages[0].pfn + 15);
    /* The folio view of page-array pins is refused, with the reason. */
    EXPECT(devmap_pins_folios(pins, NULL, 0, &n), -EINVAL);
    CHECK(devmap_unpin(pins, false));

    /* A memory error in the page at 2 MiB + 8 KiB: at PAGE granularity the mapping loses
     * those 4 KiB only, not the 2 MiB leaf. */
    struct devmap_mf_report report;
    char *bad = bytes + 2 * MIB + 2 * PAGE;
    CHECK(devmap_memory_failure_at(bad, 0, &report));
    printf("memory error at %p: pfn %" PRIu64 ", %u mapping(s) lost it, %" PRIu64
           " bytes lost, %" PRIu64 " ns\n",
           (void *)bad, report.pfn, report.nr_mappings, report.lost_bytes, report.elapsed_ns);
    ASSERT(report.nr_mappings == 1 && report.lost_bytes == PAGE);
    /* A second error on the page is handled again, as the kernel handles device pages. */
    CHECK(devmap_memory_failure_at(bad, DEVMAP_MF_ACTION_REQUIRED, NULL));

    devmap_badblock bb[4];
    CHECK(devmap_badblocks(dev, bb, 4, &n));
    ASSERT(n == 1 && bb[0].offset == 2 * MIB + 2 * PAGE && bb[0].len == PAGE);
    printf("badblocks: offset %" PRIu64 " length %" PRIu64 "\n", bb[0].offset, bb[0].len);

    /* Reading the lost page is refused rather than dying of SIGBUS; its neighbour reads. */
    unsigned char buf[64];
    EXPECT(devmap_read_mc(map, 2 * MIB + 2 * PAGE, buf, sizeof buf), -EHWPOISON);
    CHECK(devmap_read_mc(map, 2 * MIB + PAGE, buf, sizeof buf));
    ASSERT(buf[0] == 0xab && buf[63] == 0xab);
    CHECK(devmap_read_mc(map, PAGE, buf, 13));
    ASSERT(memcmp(buf, "hello from C", 13) == 0);

    uint64_t cleared = 0;
    CHECK(devmap_clear_poison(dev, 2 * MIB + 2 * PAGE, PAGE, &cleared));
    ASSERT(cleared == 1);
    CHECK(devmap_badblocks(dev, NULL, 0, &n));
    ASSERT(n == 0);

    /* Freed in an order that would deadlock a device freed first, were it not for the
     * mapping holding it. */
    devmap_device_free(dev);
    devmap_space_free(space);
    devmap_mapping_free(map);
}

static void estimate_demo(void)
{
    struct devmap_cost cost;
    CHECK(devmap_estimate(UINT64_C(1) << 40, 2 * MIB, DEVMAP_LAYOUT_HEADS, DEVMAP_MAP_MEM,
                          DEVMAP_MODE_DEVDAX, &cost));
    printf("1 TiB at 2 MiB, heads layout: %" PRIu64 " MiB of metadata\n",
           cost.metadata_bytes / MIB);
    ASSERT(cost.metadata_bytes == 32 * MIB && cost.vmemmap_shift == 9);
    EXPECT(devmap_estimate(3000 * MIB, UINT64_C(1) << 30, DEVMAP_LAYOUT_HEADS, DEVMAP_MAP_MEM,
                           DEVMAP_MODE_DEVDAX, &cost),
           -EINVAL);
}

static void region_demo(void)
{
    char dir[] = "/tmp/devmap-demo-XXXXXX";
    ASSERT(mkdtemp(dir) != NULL);
    char path[sizeof dir + 16];
    snprintf(path, sizeof path, "%s/pmem.img", dir);

    devmap_region *region = NULL;
    CHECK(devmap_region_create(path, 256 * MIB, &region));
    CHECK(devmap_namespace_create(region, "vm0", 64 * MIB, 2 * MIB, DEVMAP_MODE_DEVDAX,
                                  DEVMAP_MAP_MEM));
    CHECK(devmap_namespace_create(region, "vm1", 32 * MIB, PAGE, DEVMAP_MODE_FSDAX,
                                  DEVMAP_MAP_DEV));
    EXPECT(devmap_namespace_create(region, "vm0", 2 * MIB, 2 * MIB, DEVMAP_MODE_DEVDAX,
                                   DEVMAP_MAP_MEM),
           -EEXIST);

    /* A second manager is refused while this one holds the lock; a reader is not. */
    devmap_region *other = NULL;
    EXPECT(devmap_region_open(path, DEVMAP_REGION_MANAGE, &other), -EBUSY);
    CHECK(devmap_region_open(path, DEVMAP_REGION_READ, &other));

    devmap_namespace_info ns[4];
    size_t n = 0;
    CHECK(devmap_namespace_list(other, ns, 4, &n));
    ASSERT(n == 2);
    for (size_t i = 0; i < n; i++)
        printf("namespace %s: %" PRIu64 " MiB, %s, map %s, data at %" PRIu64 "\n", ns[i].name,
               ns[i].size / MIB, ns[i].mode == DEVMAP_MODE_DEVDAX ? "devdax" : "fsdax",
               ns[i].map == DEVMAP_MAP_MEM ? "mem" : "dev", ns[i].data_offset);
    ASSERT(strcmp(ns[0].name, "vm0") == 0 && ns[0].size == 64 * MIB);
    EXPECT(devmap_namespace_destroy(other, "vm1"), -EROFS);
    devmap_region_free(other);

    /* Enable vm0 as a device, write through a mapping, disable it cleanly and enable it
     * again: the bytes are in the region file, and the second enable knows the first ended
     * cleanly. */
    devmap_space *space = NULL;
    devmap_device *dev = NULL;
    devmap_mapping *map = NULL;
    struct devmap_enable_info how;
    struct devmap_device_info dinfo;
    void *addr = NULL;
    CHECK(devmap_space_new(&space));
    CHECK(devmap_namespace_enable(region, space, "vm0", NULL, &dev, &how));
    ASSERT(how.path == DEVMAP_ENABLE_HOST && !how.was_clean);
    CHECK(devmap_device_get_info(dev, &dinfo));
    CHECK(devmap_mmap(dev, 0, dinfo.size, &map, &addr, NULL));
    CHECK(devmap_mapping_populate(map, addr, 2 * MIB, NULL)); /* a file device: fault first */
    strcpy(addr, "kept in the region file");
    EXPECT(devmap_namespace_disable(region, dev), -EBUSY); /* the mapping holds it */
    devmap_mapping_free(map);
    CHECK(devmap_namespace_disable(region, dev));
    CHECK(devmap_namespace_enable(region, space, "vm0", NULL, &dev, &how));
    ASSERT(how.was_clean);
    CHECK(devmap_mmap(dev, 0, dinfo.size, &map, &addr, NULL));
    char back[24];
    CHECK(devmap_read_mc(map, 0, back, sizeof back));
    ASSERT(strcmp(back, "kept in the region file") == 0);
    devmap_mapping_free(map);
    CHECK(devmap_namespace_disable(region, dev));
    devmap_space_free(space);

    CHECK(devmap_namespace_destroy(region, "vm1"));
    EXPECT(devmap_namespace_destroy(region, "vm1"), -ENOENT);
    struct devmap_region_info info;
    CHECK(devmap_region_get_info(region, &info));
    ASSERT(info.nr_namespaces == 1 && info.size == 256 * MIB);
    devmap_region_free(region);

    ASSERT(unlink(path) == 0 && rmdir(dir) == 0);
}

int main(void)
{
    if (devmap_abi_version() != DEVMAP_ABI_VERSION) {
        fprintf(stderr, "devmap_demo: built for ABI %u, loaded %u\n", DEVMAP_ABI_VERSION,
                devmap_abi_version());
        return 1;
    }
    device_demo();
    estimate_demo();
    region_demo();
    printf("devmap_demo: ok\n");
    return 0;
}
