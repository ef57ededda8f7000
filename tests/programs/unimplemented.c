/* Calls system calls the project's kernel does not implement (getrusage, and a number
 * Linux does not assign), each twice: the monitor names each once
 * (tests/test_processes.py). Prints the errno values; not a differential case. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(void)
{
    for (int i = 0; i < 2; i++) {
        long a = syscall(SYS_getrusage, 0, (void *)0);
        int ea = errno;
        long b = syscall(1000);
        int eb = errno;

        printf("getrusage %ld errno %d, 1000 %ld errno %d\n", a, ea, b, eb);
    }
    return 0;
}
