/* A hot/cold mix: `hotcold TOTAL_KIB HOT_KIB TOUCHES [HOT_PERCENT]`. TOTAL_KIB are written
 * once; then TOUCHES pages are touched at random (a fixed LCG), HOT_PERCENT of them
 * (default 90) in the first HOT_KIB, the rest anywhere in the cold remainder. Prints a
 * checksum only, so its output is the same wherever the pages lived meanwhile. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define PAGE 4096

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: hotcold TOTAL_KIB HOT_KIB TOUCHES [HOT_PERCENT]\n");
        return 2;
    }
    size_t pages = (size_t)atol(argv[1]) / 4, hot = (size_t)atol(argv[2]) / 4;
    long touches = atol(argv[3]);
    unsigned percent = argc > 4 ? (unsigned)atoi(argv[4]) : 90;
    uint64_t x = 2463534242u, sum = 0;
    uint8_t *a = malloc(pages * PAGE);

    if (a == NULL || hot == 0 || hot >= pages) {
        fprintf(stderr, "hotcold: need 0 < HOT_KIB < TOTAL_KIB and the memory\n");
        return 1;
    }
    for (size_t p = 0; p < pages; p++)
        a[p * PAGE] = (uint8_t)p;
    for (long i = 0; i < touches; i++) {
        size_t p;

        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        if ((x >> 33) % 100 < percent)
            p = (x >> 17) % hot;
        else
            p = hot + (x >> 17) % (pages - hot);
        a[p * PAGE + (i % 64) * 64] += (uint8_t)i;
        sum += a[p * PAGE];
    }
    printf("hotcold %zu pages, %zu hot: sum %llx\n", pages, hot, (unsigned long long)sum);
    free(a);
    return 0;
}
