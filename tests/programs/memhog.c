/* A memory hog: N MiB (argv[1], default 24) touched sequentially, then at random
 * (a fixed LCG), through malloc (mmap-backed for large blocks) and brk-backed small
 * blocks; prints checksums only. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
    size_t mib = argc > 1 ? (size_t)atoi(argv[1]) : 24;
    size_t size = mib << 20, words = size / 8;
    uint64_t *a = malloc(size), sum = 0, x = 12345;

    if (a == NULL) {
        printf("no memory\n");
        return 1;
    }
    for (size_t i = 0; i < words; i += 512)
        a[i] = i * 2654435761u;
    for (size_t i = 0; i < words; i += 512)
        sum += a[i];
    printf("sequential %zu MiB sum %llx\n", mib, (unsigned long long)sum);
    for (int i = 0; i < 200000; i++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        a[(x >> 17) % words] ^= x;
    }
    sum = 0;
    for (size_t i = 0; i < words; i += 61)
        sum += a[i];
    printf("random sum %llx\n", (unsigned long long)sum);
    char *small[1000];
    for (int i = 0; i < 1000; i++) {
        small[i] = malloc(100 + i);
        memset(small[i], i & 0xff, 100 + i);
    }
    sum = 0;
    for (int i = 0; i < 1000; i++) {
        sum += (unsigned char)small[i][99 + i];
        free(small[i]);
    }
    printf("small sum %llu\n", (unsigned long long)sum);
    free(a);
    return 0;
}
