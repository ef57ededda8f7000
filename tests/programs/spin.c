/* CPU-bound processes that never give up the CPU of their own accord: only a timer
 * interrupt can take it from them.
 *
 *   spin            a child spins forever after waking its parent through a pipe; the
 *                   parent runs again only if the kernel preempts the child, then kills
 *                   it. The output is the same natively, on any number of CPUs.
 *   spin race R W   parent and child each run R rounds of W loop iterations and print
 *                   one line per round ("parent 3", "child 0"): interleaved lines prove
 *                   preemption; without it the parent's R lines come first. Natively the
 *                   order depends on the host's CPUs; the set of lines does not. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile unsigned long sink;

static int starve(void)
{
    int ready[2], status;
    char byte;
    pid_t child;

    if (pipe(ready) != 0)
        return 1;
    child = fork();
    if (child < 0)
        return 1;
    if (child == 0) {
        write(ready[1], "x", 1); /* wakes the parent, but keeps the CPU: */
        for (;;)
            ;
    }
    if (read(ready[0], &byte, 1) != 1)
        return 1;
    kill(child, SIGKILL);
    waitpid(child, &status, 0);
    printf("the spinning child ended by signal %d\n",
           WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    return 0;
}

/* One unbuffered line per round, so the lines reach fd 1 in the order they were made. */
static void rounds(const char *who, long count, long work)
{
    char line[64];

    for (long r = 0; r < count; r++) {
        for (long i = 0; i < work; i++)
            sink += (unsigned long)i;
        int n = snprintf(line, sizeof(line), "%s %ld\n", who, r);
        write(1, line, (size_t)n);
    }
}

static int race(long count, long work)
{
    int status;
    pid_t child = fork();

    if (child < 0)
        return 1;
    if (child == 0) {
        rounds("child", count, work);
        _exit(0);
    }
    rounds("parent", count, work);
    if (waitpid(child, &status, 0) != child || !WIFEXITED(status))
        return 1;
    return WEXITSTATUS(status);
}

int main(int argc, char **argv)
{
    if (argc > 3 && strcmp(argv[1], "race") == 0)
        return race(atol(argv[2]), atol(argv[3]));
    return starve();
}
