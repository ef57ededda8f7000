/*
 * random.c - SplitMix64 (see random.h).
 */
#include "proc/random.h"

static uint64_t state;

void random_seed(uint64_t seed)
{
    state = seed;
}

static uint64_t next(void)
{
    uint64_t z = (state += 0x9e3779b97f4a7c15ULL);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void random_fill(void *dst, size_t n)
{
    uint8_t *d = dst;

    while (n > 0) {
        uint64_t word = next();

        for (int i = 0; i < 8 && n > 0; i++, n--) {
            *d++ = (uint8_t)word;
            word >>= 8;
        }
    }
}
