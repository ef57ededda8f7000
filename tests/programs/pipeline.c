/* A shell-style pipeline of fork + execve + pipes: `pipeline N` runs N stages, each this
 * program executed again (from argv[0]) as `pipeline stage K`, stdin and stdout joined by
 * pipes with dup2; the parent writes 200 KiB of generated text into the first stage and
 * reads the last one's output. Stage K adds K to every letter (mod 26), passes the rest on,
 * and exits with status K (102 if no line came through). The parent prints a checksum of
 * what came out, the feeder's status and every stage's. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define TOTAL (200 * 1024)
#define MAX_STAGES 8

static int stage(int k)
{
    static char buf[4096];
    ssize_t n;
    long lines = 0;

    while ((n = read(0, buf, sizeof(buf))) > 0) {
        for (ssize_t i = 0; i < n; i++) {
            char c = buf[i];

            if (c >= 'a' && c <= 'z')
                buf[i] = (char)('a' + (c - 'a' + k) % 26);
            lines += c == '\n';
        }
        for (ssize_t done = 0; done < n;) {
            ssize_t w = write(1, buf + done, (size_t)(n - done));
            if (w <= 0)
                return 100;
            done += w;
        }
    }
    return n < 0 ? 101 : (lines > 0 ? k : 102);
}

int main(int argc, char **argv)
{
    if (argc > 2 && strcmp(argv[1], "stage") == 0)
        return stage(atoi(argv[2]));
    int stages = argc > 1 ? atoi(argv[1]) : 3;
    if (stages < 1 || stages > MAX_STAGES)
        return 2;
    pid_t pids[MAX_STAGES];
    int in[2], prev;

    pipe(in);
    prev = in[0];
    for (int k = 1; k <= stages; k++) {
        int next[2];

        pipe(next);
        pids[k - 1] = fork();
        if (pids[k - 1] == 0) {
            char number[8];
            char *args[] = {argv[0], "stage", number, NULL};
            char *env[] = {NULL};

            snprintf(number, sizeof(number), "%d", k);
            dup2(prev, 0);
            dup2(next[1], 1);
            close(prev);
            close(next[0]);
            close(next[1]);
            close(in[1]);
            execve(argv[0], args, env);
            _exit(127);
        }
        close(prev);
        close(next[1]);
        prev = next[0];
    }
    pid_t feeder = fork();
    if (feeder == 0) {
        static char line[64];
        uint64_t x = 1;

        close(prev);
        for (int sent = 0; sent < TOTAL;) {
            int n = 0;

            x = x * 6364136223846793005ULL + 1442695040888963407ULL;
            for (int i = 0; i < 40; i++)
                line[n++] = (char)('a' + (x >> (i % 60)) % 26);
            line[n++] = '\n';
            if (write(in[1], line, (size_t)n) != n)
                _exit(1);
            sent += n;
        }
        _exit(0);
    }
    close(in[1]);
    static char buf[8192];
    uint64_t sum = 0, bytes = 0;
    ssize_t n;
    while ((n = read(prev, buf, sizeof(buf))) > 0) {
        for (ssize_t i = 0; i < n; i++)
            sum = sum * 131 + (unsigned char)buf[i];
        bytes += (uint64_t)n;
    }
    printf("%d stages: %llu bytes out, checksum %llx\n", stages, (unsigned long long)bytes,
           (unsigned long long)sum);
    int status;
    waitpid(feeder, &status, 0);
    printf("feeder: %d\n", WEXITSTATUS(status));
    for (int k = 1; k <= stages; k++) {
        waitpid(pids[k - 1], &status, 0);
        printf("stage %d: exit %d\n", k, WEXITSTATUS(status));
    }
    return 0;
}
