/* Pipes: a child streams 300 KiB through a pipe (more than its 64 KiB capacity, so both
 * sides block in turn) and the parent checks every byte; EOF once the writer closes; a
 * write with no reader left gets EPIPE (SIGPIPE ignored) and a default SIGPIPE ends a
 * child with 141; dup2 onto stdout; O_NONBLOCK reads of an empty pipe give EAGAIN. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define TOTAL (300 * 1024)

int main(void)
{
    int p[2], status;
    static unsigned char buf[8192];

    pipe(p);
    fflush(stdout);
    pid_t writer = fork();
    if (writer == 0) {
        close(p[0]);
        for (int sent = 0; sent < TOTAL;) {
            int n = sizeof(buf) < (size_t)(TOTAL - sent) ? (int)sizeof(buf) : TOTAL - sent;
            for (int i = 0; i < n; i++)
                buf[i] = (unsigned char)((sent + i) * 13);
            sent += (int)write(p[1], buf, (size_t)n);
        }
        _exit(0);
    }
    close(p[1]);
    long got = 0, bad = 0, reads = 0;
    for (;;) {
        ssize_t n = read(p[0], buf, 3000);
        if (n <= 0)
            break;
        for (ssize_t i = 0; i < n; i++)
            bad += buf[i] != (unsigned char)((got + i) * 13);
        got += n;
        reads++;
    }
    waitpid(writer, &status, 0);
    printf("received %ld bytes, %ld bad, writer status %d, eof %d\n", got, bad,
           WEXITSTATUS(status), read(p[0], buf, 1) == 0);
    close(p[0]);

    pipe(p);
    close(p[0]);
    signal(SIGPIPE, SIG_IGN);
    printf("write without reader: %zd errno %d\n", write(p[1], "x", 1), errno);
    signal(SIGPIPE, SIG_DFL);
    fflush(stdout);
    pid_t victim = fork();
    if (victim == 0) {
        write(p[1], "x", 1);
        _exit(0);
    }
    waitpid(victim, &status, 0);
    printf("default SIGPIPE: signaled %d by %d\n", WIFSIGNALED(status), WTERMSIG(status));
    close(p[1]);

    pipe(p);
    fcntl(p[0], F_SETFL, O_NONBLOCK);
    printf("nonblocking empty read: %zd errno %d\n", read(p[0], buf, 10), errno);
    fflush(stdout);
    pid_t echo = fork();
    if (echo == 0) {
        dup2(p[1], 1);
        close(p[1]);
        printf("through dup2'd stdout\n");
        fflush(stdout);
        _exit(0);
    }
    close(p[1]);
    waitpid(echo, &status, 0);
    ssize_t n = read(p[0], buf, sizeof(buf) - 1);
    buf[n > 0 ? n : 0] = 0;
    printf("parent read: %s", buf);
    return 0;
}
