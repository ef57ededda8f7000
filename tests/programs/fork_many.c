/* Sequential fork, exit and wait: the parent holds argv[2] MiB (default 4), touched, and
 * forks argv[1] children (default 8) one after another; each child writes argv[3] MiB of
 * its own (copy-on-write of the parent's pages, default 1) and exits with its index.
 * With argv[4] = "rdtsc" it prints the time stamp counter's ticks per fork+exit+wait
 * (under emu: instructions). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static uint64_t rdtsc(void)
{
    uint32_t lo, hi;

    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return ((uint64_t)hi << 32) | lo;
}

int main(int argc, char **argv)
{
    int children = argc > 1 ? atoi(argv[1]) : 8;
    size_t parent_mib = argc > 2 ? (size_t)atoi(argv[2]) : 4;
    size_t child_mib = argc > 3 ? (size_t)atoi(argv[3]) : 1;
    int timing = argc > 4 && strcmp(argv[4], "rdtsc") == 0;
    char *mem = malloc(parent_mib << 20);
    int sum = 0;

    for (size_t i = 0; i < parent_mib << 20; i += 4096)
        mem[i] = (char)i;
    uint64_t start = rdtsc();
    for (int c = 0; c < children; c++) {
        int status;
        pid_t pid = fork();

        if (pid == 0) {
            for (size_t i = 0; i < child_mib << 20 && i < parent_mib << 20; i += 4096)
                mem[i] = (char)c;
            _exit(c);
        }
        waitpid(pid, &status, 0);
        sum += WEXITSTATUS(status);
    }
    uint64_t ticks = rdtsc() - start;
    printf("%d children, exit statuses sum %d, parent memory kept %d\n", children, sum,
           mem[4096] == (char)4096);
    if (timing)
        printf("ticks per fork+exit+wait %llu\n", (unsigned long long)(ticks / (uint64_t)children));
    return 0;
}
