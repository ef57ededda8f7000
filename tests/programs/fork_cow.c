/* fork with copy-on-write: parent and child write the same global, heap, stack and mmap'd
 * bytes after the fork and each sees only its own writes; the parent waits, then prints.
 * Also wait4's statuses for a child that exits, one killed by a signal, and ECHILD. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

static int global = 1;

static unsigned sum(const unsigned char *p, size_t n)
{
    unsigned s = 0;

    for (size_t i = 0; i < n; i++)
        s = s * 33 + p[i];
    return s;
}

int main(void)
{
    size_t big = 2 << 20;
    unsigned char *heap = malloc(big);
    unsigned char *map = mmap(NULL, 65536, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    int local = 3, status = 0, p[2];

    memset(heap, 0x11, big);
    memset(map, 0x22, 65536);
    pipe(p);
    fflush(stdout);
    pid_t child = fork();
    if (child == 0) {
        global = 100;
        local = 300;
        memset(heap, 0x33, big / 2);
        map[5] = 9;
        char line[128];
        int n = snprintf(line, sizeof(line), "child: global %d local %d heap %x map %x\n",
                         global, local, sum(heap, big), sum(map, 65536));
        write(p[1], line, (size_t)n);
        _exit(42);
    }
    global = 2;
    heap[big - 1] = 0x44;
    waitpid(child, &status, 0);
    char line[128] = {0};
    read(p[0], line, sizeof(line) - 1);
    printf("%s", line);
    printf("parent: global %d local %d heap %x map %x\n", global, local, sum(heap, big),
           sum(map, 65536));
    printf("child exited %d with %d\n", WIFEXITED(status), WEXITSTATUS(status));
    child = fork();
    if (child == 0) {
        volatile int *bad = NULL;
        *bad = 1;
        _exit(0);
    }
    waitpid(child, &status, 0);
    printf("second child signaled %d by %d\n", WIFSIGNALED(status), WTERMSIG(status));
    child = fork();
    if (child == 0) {
        pause();
        _exit(0);
    }
    kill(child, SIGKILL);
    waitpid(child, &status, 0);
    printf("third child signaled %d by %d\n", WIFSIGNALED(status), WTERMSIG(status));
    printf("no more children: %d errno %d\n", waitpid(-1, &status, 0), errno);
    printf("WNOHANG without children: %d\n", waitpid(-1, &status, WNOHANG));
    return 0;
}
