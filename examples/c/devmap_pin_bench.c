/*
 * Pinning from C: pin, read and unpin 4 GiB of faulted 2 MiB leaves by address in
 * folio-range form, ROUNDS times, and print the median and the 10th/90th percentiles. The
 * same loop as the Rust side of crates/devmap-ffi/src/tests/overhead.rs, across a real
 * C-to-Rust call boundary (BENCHMARKS.md compares the two).
 *
 *   cargo build -p devmap-ffi --release --locked
 *   cc -O2 -Iinclude examples/c/devmap_pin_bench.c target/release/libdevmap.a \
 *       -lpthread -ldl -lm -o /tmp/devmap_pin_bench && /tmp/devmap_pin_bench [ROUNDS]
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "devmap.h"

#define GIB (UINT64_C(1) << 30)

static void check(int rc, const char *what)
{
    if (rc != 0) {
        fprintf(stderr, "%s: %s (%d): %s\n", what, strerror(-rc), rc, devmap_last_error());
        exit(1);
    }
}

static int cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int main(int argc, char **argv)
{
    size_t rounds = argc > 1 ? strtoul(argv[1], NULL, 10) : 2000;
    uint64_t size = 4 * GIB, nr_pages = size / 4096;
    size_t leaves = size / (2u << 20);
    devmap_space *space;
    devmap_device *dev;
    devmap_mapping *map;
    devmap_device_options opts;
    void *addr;

    check(devmap_space_new(&space), "space");
    check(devmap_device_options_init(2u << 20, &opts), "options");
    opts.faults = DEVMAP_FAULTS_EXPLICIT; /* metadata only: no 4 GiB of memory needed */
    check(devmap_device_create_memfd(space, size, &opts, &dev), "device");
    check(devmap_mmap(dev, 0, size, &map, &addr, NULL), "mmap");
    check(devmap_mapping_populate(map, addr, size, NULL), "populate");

    devmap_folio *buf = calloc(leaves, sizeof *buf);
    uint64_t *t = calloc(rounds, sizeof *t);
    if (!buf || !t)
        return 1;
    for (size_t r = 0; r < rounds + rounds / 10; r++) {
        devmap_pins *pins;
        size_t n;
        uint64_t start = now_ns();
        check(devmap_pin_folios(map, addr, nr_pages, DEVMAP_PIN_WRITE, &pins), "pin");
        check(devmap_pins_folios(pins, buf, leaves, &n), "folios");
        check(devmap_unpin(pins, true), "unpin");
        if (r >= rounds / 10)
            t[r - rounds / 10] = now_ns() - start;
        if (n != leaves)
            return 1;
    }
    qsort(t, rounds, sizeof *t, cmp);
    printf("C: pin + read + unpin of 4 GiB at 2 MiB (%zu folios), %zu rounds: median %.3f us "
           "(p10 %.3f, p90 %.3f)\n",
           leaves, rounds, t[rounds / 2] / 1e3, t[rounds / 10] / 1e3, t[rounds * 9 / 10] / 1e3);
    free(t);
    free(buf);
    devmap_mapping_free(map);
    devmap_device_free(dev);
    devmap_space_free(space);
    return 0;
}
