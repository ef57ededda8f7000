/* Programs that end by a signal, one per argv[1]: what the shell shows (128 + N) must be
 * the same natively and under emu, after the same output. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static volatile int sink;

static int deep(int n)
{
    volatile char pad[1024];

    pad[0] = (char)n;
    return deep(n + 1) + pad[0];
}

static void say(const char *what)
{
    printf("%s\n", what);
    fflush(stdout);
}

int main(int argc, char **argv)
{
    const char *c = argc > 1 ? argv[1] : "null";
    static const char rodata[] = "read-only";
    static unsigned char code[16] = {0xc3}; /* ret, in a data page */

    say(c);
    if (strcmp(c, "null") == 0)
        sink = *(volatile int *)16;
    else if (strcmp(c, "write-rodata") == 0)
        *(volatile char *)rodata = 'x';
    else if (strcmp(c, "write-text") == 0)
        *(volatile char *)(void *)main = 0;
    else if (strcmp(c, "exec-data") == 0)
        ((void (*)(void))code)();
    else if (strcmp(c, "prot-none") == 0) {
        char *p = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        sink = p[100];
    } else if (strcmp(c, "unmapped") == 0) {
        char *p = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        p[0] = 1;
        munmap(p, 8192);
        p[4096] = 2;
    } else if (strcmp(c, "stack") == 0) {
        sink = deep(0);
    } else if (strcmp(c, "abort") == 0) {
        abort();
    } else if (strcmp(c, "kill") == 0) {
        kill(getpid(), SIGTERM);
    } else if (strcmp(c, "ignored") == 0) {
        signal(SIGTERM, SIG_IGN);
        kill(getpid(), SIGTERM);
        say("still here");
        return 3;
    } else if (strcmp(c, "kernel-half") == 0) {
        sink = *(volatile int *)0xffffffff80000000UL;
    } else if (strcmp(c, "ud2") == 0) {
        __asm__ volatile("ud2");
    } else if (strcmp(c, "divide") == 0) {
        volatile int zero = 0;
        sink = 1 / zero;
    }
    say("not reached");
    return 0;
}
