/* The program break: growth, contents across growth, shrink and regrowth (fresh
 * zeroes), and a break that cannot move below its start. Prints no addresses. */
#include <stdint.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>

/* musl's sbrk and brk refuse to move the break: call the system call itself. */
static char *set_break(char *to)
{
    return (char *)syscall(SYS_brk, to);
}

int main(void)
{
    char *start = set_break(0);
    char *p = start;

    printf("the break moves %d\n", set_break(start + 100000) == start + 100000);
    for (int i = 0; i < 100000; i++)
        p[i] = (char)i;
    char *q = start + 100000;
    printf("grows again %d\n", set_break(q + 3 * 1024 * 1024) == q + 3 * 1024 * 1024);
    q[3 * 1024 * 1024 - 1] = 7;
    long sum = 0;
    for (int i = 0; i < 100000; i++)
        sum += (unsigned char)p[i];
    printf("kept across growth %ld\n", sum);
    printf("shrink %d\n", set_break(start + 4096) == start + 4096);
    printf("regrow %d\n", set_break(start + 200000) == start + 200000);
    printf("regrown tail is zero %d, head kept %d\n", p[150000] == 0, p[100] == 100);
    printf("below the start refused %d\n", set_break(start - 4096) == start + 200000);
    printf("break where asked %d\n", set_break(0) == start + 200000);
    return 0;
}
