/* A random-touch memory hog: MIB MiB (argv[1], default 32) of anonymous memory whose pages
 * are first touched in a random order (a Fisher-Yates shuffle driven by xorshift64*, seed
 * argv[2]), each written at a random offset; then every page is checked, mincore counts the
 * resident pages, a random quarter is dropped with MADV_DONTNEED (not resident, zero when
 * read again), and random single pages are unmapped before the rest is checked once more.
 * Prints counts and checksums only, never an address. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>

#define PAGE 4096

static uint64_t state;

static uint64_t next(void)
{
    state ^= state >> 12;
    state ^= state << 25;
    state ^= state >> 27;
    return state * 2685821657736338717ULL;
}

static size_t resident(const unsigned char *base, size_t pages, unsigned char *vec)
{
    size_t n = 0;

    if (mincore((void *)base, pages * PAGE, vec) != 0) {
        perror("mincore");
        exit(1);
    }
    for (size_t i = 0; i < pages; i++)
        n += vec[i] & 1;
    return n;
}

int main(int argc, char **argv)
{
    size_t mib = argc > 1 ? (size_t)atoi(argv[1]) : 32, pages = mib << 20 >> 12;
    uint32_t *order = malloc(pages * sizeof(*order));
    uint16_t *offset = malloc(pages * sizeof(*offset));
    unsigned char *vec = malloc(pages), *dropped = calloc(pages, 1), *gone = calloc(pages, 1);
    uint64_t sum = 0;
    size_t bad = 0, zero = 0, holes = 0;

    state = argc > 2 ? strtoull(argv[2], NULL, 0) | 1 : 0x9e3779b97f4a7c15ULL;
    unsigned char *base = mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE,
                               MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED || !order || !offset || !vec || !dropped || !gone) {
        printf("no memory\n");
        return 1;
    }
    for (size_t i = 0; i < pages; i++)
        order[i] = (uint32_t)i;
    for (size_t i = pages - 1; i > 0; i--) {
        size_t j = next() % (i + 1);
        uint32_t t = order[i];

        order[i] = order[j];
        order[j] = t;
    }
    printf("%zu MiB, %zu pages; resident before: %zu\n", mib, pages,
           resident(base, pages, vec));
    for (size_t i = 0; i < pages; i++) {
        size_t page = order[i];

        offset[page] = (uint16_t)(next() % (PAGE / 8) * 8);
        *(uint64_t *)(base + page * PAGE + offset[page]) = page * 0x9e3779b97f4a7c15ULL + i;
    }
    printf("resident after touching in random order: %zu\n", resident(base, pages, vec));
    for (size_t i = 0; i < pages; i++) {
        uint64_t v = *(uint64_t *)(base + order[i] * PAGE + offset[order[i]]);

        bad += v != order[i] * 0x9e3779b97f4a7c15ULL + i;
        sum += v * (i + 1);
    }
    printf("checked: %zu wrong, sum %llx\n", bad, (unsigned long long)sum);
    for (size_t i = 0; i < pages / 4; i++) {
        size_t page = next() % pages;

        if (!dropped[page] && madvise(base + page * PAGE, PAGE, MADV_DONTNEED) != 0) {
            perror("madvise");
            return 1;
        }
        dropped[page] = 1;
    }
    size_t ndropped = 0;
    for (size_t i = 0; i < pages; i++)
        ndropped += dropped[i];
    printf("dropped %zu; resident now: %zu\n", ndropped, resident(base, pages, vec));
    for (size_t i = 0; i < pages / 16; i++) {
        size_t page = next() % pages;

        if (!gone[page] && munmap(base + page * PAGE, PAGE) != 0) {
            perror("munmap");
            return 1;
        }
        holes += !gone[page];
        gone[page] = 1;
    }
    sum = bad = 0;
    for (size_t page = 0; page < pages; page++) {
        uint64_t v;

        if (gone[page])
            continue;
        v = *(uint64_t *)(base + page * PAGE + offset[page]);
        if (dropped[page])
            zero += v == 0;
        else
            sum += v;
        bad += dropped[page] && v != 0;
    }
    printf("%zu holes punched; dropped pages read as zero: %zu, not zero: %zu; sum %llx\n",
           holes, zero, bad, (unsigned long long)sum);
    return bad != 0;
}
