/* The OOM killer's victim is the largest process, not the one that faults:
 * `oomkill HOG_KIB MORE_KIB PROGRAM [ARGS...]`. A child (the hog) writes HOG_KIB, says so
 * through a pipe and sleeps reading another; the parent then writes MORE_KIB of its own.
 * Where RAM and swap cannot hold both, the parent's own fault finds no frame and the kernel
 * must kill the hog, whose RSS is the larger. The parent checks its pages, reports how the
 * hog ended (natively it wakes at the end of its pipe and exits 0), then runs PROGRAM
 * (fork and execve) and reports its status. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#define PAGE 4096

static void fill(uint8_t *a, size_t pages, uint8_t seed)
{
    for (size_t p = 0; p < pages; p++)
        for (size_t i = 0; i < PAGE; i += 512)
            a[p * PAGE + i] = (uint8_t)(p * 7 + i / 512 + seed);
}

static size_t wrong_pages(const uint8_t *a, size_t pages, uint8_t seed)
{
    size_t wrong = 0;

    for (size_t p = 0; p < pages; p++)
        for (size_t i = 0; i < PAGE; i += 512)
            if (a[p * PAGE + i] != (uint8_t)(p * 7 + i / 512 + seed)) {
                wrong++;
                break;
            }
    return wrong;
}

static void report(const char *who, int status)
{
    if (WIFSIGNALED(status))
        printf("%s: killed by signal %d\n", who, WTERMSIG(status));
    else
        printf("%s: exited %d\n", who, WEXITSTATUS(status));
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: oomkill HOG_KIB MORE_KIB PROGRAM [ARGS...]\n");
        return 2;
    }
    size_t hog_pages = (size_t)atol(argv[1]) / 4, more_pages = (size_t)atol(argv[2]) / 4;
    int ready[2], sleep[2], status;
    char byte;

    if (pipe(ready) != 0 || pipe(sleep) != 0)
        return 1;
    pid_t hog = fork();
    if (hog == 0) {
        uint8_t *a = malloc(hog_pages * PAGE);

        close(sleep[1]);
        fill(a, hog_pages, 1);
        write(ready[1], "r", 1);
        read(sleep[0], &byte, 1); /* the end of the pipe, natively */
        return wrong_pages(a, hog_pages, 1) == 0 ? 0 : 1;
    }
    close(sleep[0]);
    if (read(ready[0], &byte, 1) != 1)
        return 1;
    uint8_t *b = malloc(more_pages * PAGE);
    fill(b, more_pages, 2);
    printf("parent: %zu pages, %zu wrong\n", more_pages, wrong_pages(b, more_pages, 2));
    close(sleep[1]);
    waitpid(hog, &status, 0);
    report("hog", status);
    fflush(stdout);
    pid_t next = fork();
    if (next == 0) {
        execv(argv[3], argv + 3);
        return 127;
    }
    waitpid(next, &status, 0);
    report(argv[3], status);
    return 0;
}
