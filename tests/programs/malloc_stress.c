/* musl malloc under stress: random malloc, realloc and free of sizes from 1 byte to 1 MiB
 * (a fixed LCG), every block filled with a pattern and checked before it is freed or
 * resized: brk, mmap, munmap and mremap all get exercised. Prints checksums only. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SLOTS 512

static uint64_t x = 88172645463325252ULL;

static uint64_t next(void)
{
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return x;
}

static size_t pick_size(void)
{
    uint64_t r = next();

    switch (r % 8) {
    case 0:
        return 1 + r % 16;
    case 1:
    case 2:
    case 3:
        return 1 + r % 512;
    case 4:
    case 5:
        return 1 + r % 8192;
    case 6:
        return 1 + r % 131072;
    default:
        return 1 + r % 1048576;
    }
}

static unsigned char *block[SLOTS];
static size_t size[SLOTS];

static int check(int i)
{
    for (size_t k = 0; k < size[i]; k += 97) {
        if (block[i][k] != (unsigned char)(i + k))
            return 0;
    }
    return 1;
}

/* The bytes check() reads: every 97th, from `from` on. */
static void fill(int i, size_t from)
{
    for (size_t k = (from + 96) / 97 * 97; k < size[i]; k += 97)
        block[i][k] = (unsigned char)(i + k);
}

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 4000, bad = 0;
    uint64_t total = 0;

    for (int r = 0; r < rounds; r++) {
        int i = (int)(next() % SLOTS);

        if (block[i] == NULL) {
            size[i] = pick_size();
            block[i] = malloc(size[i]);
            fill(i, 0);
        } else if (next() % 3 == 0) {
            size_t old = size[i];

            bad += !check(i);
            size[i] = pick_size();
            block[i] = realloc(block[i], size[i]);
            fill(i, old < size[i] ? old : size[i]);
        } else {
            bad += !check(i);
            total += size[i];
            free(block[i]);
            block[i] = NULL;
        }
    }
    for (int i = 0; i < SLOTS; i++) {
        if (block[i] != NULL) {
            bad += !check(i);
            free(block[i]);
        }
    }
    printf("rounds %d freed bytes %llu bad %d\n", rounds, (unsigned long long)total, bad);
    return bad != 0;
}
