/* Stack growth: recursion and alloca to a depth below the 8 MiB limit (argv[1] KiB, default
 * 6000) touch fresh pages the kernel adds on demand; the deepest frame's sum proves the
 * contents. With argv[2] = "over" the recursion goes past the limit: SIGSEGV. */
#include <alloca.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static long depth_kib, target_kib;
static long (*volatile again)(long); /* an indirect call: no tail-call or loop rewrite */

static long recurse(long level)
{
    char frame[1000];
    char *volatile p = frame;

    memset(p, (int)(level & 0x7f), sizeof(frame));
    if (++depth_kib >= target_kib)
        return p[5];
    return again(level + 1) + p[999];
}

int main(int argc, char **argv)
{
    target_kib = argc > 1 ? atol(argv[1]) : 6000;
    if (argc > 2 && strcmp(argv[2], "over") == 0)
        target_kib = 100000;
    printf("going %ld KiB deep\n", target_kib);
    fflush(stdout);
    again = recurse;
    long sum = recurse(0);
    printf("sum %ld at %ld KiB\n", sum, depth_kib);
    char *big = alloca(256 * 1024);
    memset(big, 1, 256 * 1024);
    printf("a 256 KiB alloca works %d\n", big[256 * 1024 - 1]);
    return 0;
}
