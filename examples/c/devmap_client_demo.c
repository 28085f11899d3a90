/*
 * Two processes sharing a namespace through `devmap serve`, from C:
 *
 *   devmap_client_demo write SOCKET NAME MESSAGE   # one process
 *   devmap_client_demo read SOCKET NAME MESSAGE    # another, while the writer runs
 *
 * The writer connects to the service on SOCKET, opens namespace NAME, maps its first leaf and
 * writes MESSAGE (NUL-terminated) at byte 4096; it prints one line and keeps its mapping until
 * its stdin closes. The reader, another process, maps the same bytes, checks it reads MESSAGE
 * there, pins the leaf in the service and prints the extents a DMA registration (VFIO,
 * ibv_reg_mr) would take. Every result is checked: on any failure the program prints the
 * call, the errno and devmap_last_error() and exits 1.
 *
 * scripts/client-demo.sh runs both against a `devmap serve` it starts (scripts/c-example.sh
 * does, under AddressSanitizer with leak checks). examples/python/client_demo.py is the same
 * in Python, and either reads what the other wrote. Build:
 *   cargo build -p devmap-ffi --locked
 *   cc -Iinclude examples/c/devmap_client_demo.c target/debug/libdevmap.a -lpthread -ldl -lm
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "devmap.h"

#define AT 4096
#define PAGE UINT64_C(4096)

/* Fails the program with the call, its errno and the library's message unless rc == 0. */
static void check(int rc, const char *call, int line)
{
    if (rc == 0)
        return;
    fprintf(stderr, "devmap_client_demo.c:%d: %s returned %d (%s): %s\n", line, call, rc,
            strerror(-rc), devmap_last_error());
    exit(1);
}

#define CHECK(call) check((call), #call, __LINE__)

/* A namespace's first leaf, mapped through the service. */
struct window {
    devmap_client *client;
    devmap_client_ns *ns;
    devmap_client_mapping *map;
    char *bytes;
    uint64_t len;
};

static struct window map_first_leaf(const char *socket, const char *name)
{
    struct window w = {0};
    devmap_client_ns_info info;
    void *addr = NULL;

    CHECK(devmap_client_connect(socket, &w.client));
    CHECK(devmap_client_open(w.client, NULL, name, &w.ns));
    CHECK(devmap_client_ns_get_info(w.ns, &info));
    if (info.align < 2 * AT) {
        fprintf(stderr, "namespace %s has align %" PRIu64 ": this demo needs at least 8 KiB\n",
                name, info.align);
        exit(1);
    }
    CHECK(devmap_client_map(w.ns, 0, info.align, &w.map, &addr, &w.len));
    w.bytes = addr;
    return w;
}

/* Frees every handle: any order works, the mapping first detaches it in the service. */
static void unmap(struct window *w)
{
    devmap_client_free(w->client);
    devmap_client_ns_free(w->ns);
    devmap_client_mapping_free(w->map);
}

static int write_role(const char *socket, const char *name, const char *message)
{
    struct window w = map_first_leaf(socket, name);
    size_t n = strlen(message) + 1;

    if (n > w.len - AT) {
        fprintf(stderr, "the message is %zu bytes: at most %" PRIu64 " fit\n", n, w.len - AT);
        exit(1);
    }
    /* The first touch of the leaf is caught in this process and resolved by the service. */
    memcpy(w.bytes + AT, message, n);
    printf("writer %d: wrote %zu bytes at offset %d of %s (mapped at %p)\n", (int)getpid(), n,
           AT, name, (void *)w.bytes);
    fflush(stdout);
    /* Hold the mapping until told to go (stdin closes). */
    while (getchar() != EOF) {
    }
    unmap(&w);
    printf("writer %d: unmapped\n", (int)getpid());
    return 0;
}

static int read_role(const char *socket, const char *name, const char *message)
{
    struct window w = map_first_leaf(socket, name);
    size_t n = strlen(message) + 1;
    devmap_client_pins *pins = NULL;
    devmap_extent extents[8];
    size_t count = 0;
    uint64_t nr_pages = 0;

    if (n > w.len - AT || memcmp(w.bytes + AT, message, n) != 0) {
        fprintf(stderr, "reader: offset %d does not hold the message %s\n", AT, message);
        unmap(&w);
        return 1;
    }
    printf("reader %d: read \"%s\" at offset %d (mapped at %p)\n", (int)getpid(), w.bytes + AT,
           AT, (void *)w.bytes);

    /* Pin the whole leaf in the service, one entry per folio, and read its extents. */
    CHECK(devmap_client_pin(w.map, w.bytes, w.len / PAGE, DEVMAP_PIN_WRITE, true, &pins));
    CHECK(devmap_client_pins_nr_pages(pins, &nr_pages));
    CHECK(devmap_client_pins_extents(pins, extents, sizeof extents / sizeof extents[0], &count));
    printf("reader %d: pinned %" PRIu64 " pages in %zu extent(s)\n", (int)getpid(), nr_pages,
           count);
    for (size_t i = 0; i < count; i++)
        printf("  extent addr=%#zx offset=%" PRIu64 " pfn=%#" PRIx64 " length=%" PRIu64 "\n",
               (size_t)extents[i].addr, extents[i].offset, extents[i].pfn, extents[i].len);
    if (nr_pages != w.len / PAGE || count != 1 || extents[0].addr != (uintptr_t)w.bytes ||
        extents[0].len != w.len) {
        fprintf(stderr, "reader: the pins do not cover exactly the leaf\n");
        return 1;
    }
    CHECK(devmap_client_unpin(pins, true));
    unmap(&w);
    return 0;
}

int main(int argc, char **argv)
{
    if (devmap_abi_version() != DEVMAP_ABI_VERSION) {
        fprintf(stderr, "devmap_client_demo: built for ABI %u, loaded %u\n", DEVMAP_ABI_VERSION,
                devmap_abi_version());
        return 1;
    }
    if (argc != 5 || (strcmp(argv[1], "write") != 0 && strcmp(argv[1], "read") != 0)) {
        fprintf(stderr, "usage: %s write|read SOCKET NAME MESSAGE\n", argv[0]);
        return 2;
    }
    if (strcmp(argv[1], "write") == 0)
        return write_role(argv[2], argv[3], argv[4]);
    return read_role(argv[2], argv[3], argv[4]);
}
