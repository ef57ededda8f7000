/* The virtual-memory benchmarks' workload (bench/processes.py), one mode per figure:
 *
 *   vm touch PAGES         map PAGES anonymous pages and write one byte to each: every
 *                          write is a demand-zero fault; prints the region's bounds so
 *                          the benchmark can pick those faults out
 *   vm cycle N PAGES       N times: map PAGES anonymous pages, write each, unmap them
 *   vm fork N MIB          touch MIB MiB of anonymous memory, then N times: fork, the
 *                          child exits at once, the parent waits for it
 *
 * Exits 0, or 1 with a message when a call fails. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define PAGE 4096

static char *map(size_t pages)
{
    char *p = mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                   -1, 0);

    if (p == MAP_FAILED) {
        perror("mmap");
        exit(1);
    }
    return p;
}

static void touch(volatile char *p, size_t pages)
{
    for (size_t i = 0; i < pages; i++)
        p[i * PAGE] = 1;
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "";
    long a = argc > 2 ? atol(argv[2]) : 0, b = argc > 3 ? atol(argv[3]) : 0;

    if (strcmp(mode, "touch") == 0 && a > 0) {
        char *p = map((size_t)a);

        touch(p, (size_t)a);
        printf("region %lx %lx\n", (unsigned long)p, (unsigned long)(p + a * PAGE));
        return 0;
    }
    if (strcmp(mode, "cycle") == 0 && a > 0 && b > 0) {
        for (long i = 0; i < a; i++) {
            char *p = map((size_t)b);

            touch(p, (size_t)b);
            if (munmap(p, (size_t)b * PAGE) != 0) {
                perror("munmap");
                return 1;
            }
        }
        return 0;
    }
    if (strcmp(mode, "fork") == 0 && a > 0 && b > 0) {
        size_t pages = (size_t)b << 20 >> 12;
        int status;

        touch(map(pages), pages);
        for (long i = 0; i < a; i++) {
            pid_t child = fork();

            if (child < 0) {
                perror("fork");
                return 1;
            }
            if (child == 0)
                _exit(0);
            if (waitpid(child, &status, 0) != child || status != 0) {
                perror("waitpid");
                return 1;
            }
        }
        return 0;
    }
    fprintf(stderr, "usage: vm touch PAGES | cycle N PAGES | fork N MIB\n");
    return 2;
}
