/* A swap workload: N KiB (argv[1], default 2048) written sequentially, read back
 * sequentially, touched at random (a fixed LCG, argv[2] touches, default 2000), and
 * looped over three times; prints checksums only, so its output is the same wherever
 * the pages lived meanwhile. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    size_t kib = argc > 1 ? (size_t)atoi(argv[1]) : 2048;
    long touches = argc > 2 ? atol(argv[2]) : 2000;
    size_t pages = kib / 4, words = kib * 128;
    uint64_t *a = malloc(kib * 1024), sum = 0, x = 12345;

    if (a == NULL) {
        printf("no memory\n");
        return 1;
    }
    for (size_t i = 0; i < words; i++)
        a[i] = i * 2654435761u;
    for (size_t i = 0; i < words; i += 64)
        sum += a[i];
    printf("sequential %zu KiB sum %llx\n", kib, (unsigned long long)sum);
    for (long i = 0; i < touches; i++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        a[(x >> 17) % words] ^= x;
    }
    sum = 0;
    for (size_t i = 0; i < words; i += 61)
        sum += a[i];
    printf("random sum %llx\n", (unsigned long long)sum);
    sum = 0;
    for (int round = 0; round < 3; round++)
        for (size_t p = 0; p < pages; p++)
            sum += a[p * 512 + round] += (uint64_t)round;
    printf("loop sum %llx\n", (unsigned long long)sum);
    free(a);
    return 0;
}
