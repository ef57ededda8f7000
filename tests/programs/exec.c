/* execve: argv[1] "child" prints what it was given and exits with 5; otherwise the program
 * forks, the child execs this program again as "child" with arguments and an environment,
 * and the parent reports the child's status. Also: execve of a missing file fails with
 * ENOENT and the process goes on; close-on-exec descriptors are closed in the new image. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv, char **envp)
{
    if (argc > 1 && strcmp(argv[1], "child") == 0) {
        printf("child: argc %d", argc);
        for (int i = 2; i < argc; i++)
            printf(" [%s]", argv[i]);
        printf(" env");
        for (char **e = envp; *e; e++)
            printf(" [%s]", *e);
        printf(" fd3 %s fd4 %s\n", fcntl(3, F_GETFD) < 0 ? "closed" : "open",
               fcntl(4, F_GETFD) < 0 ? "closed" : "open");
        return 5;
    }
    char *bad[] = {"nope", NULL};
    char *env[] = {"A=1", "B=two words", NULL};
    int status;

    printf("missing: %d errno %d\n", execve("/no/such/program", bad, env), errno);
    fflush(stdout);
    dup2(1, 3);
    dup2(1, 4);
    fcntl(4, F_SETFD, FD_CLOEXEC);
    pid_t pid = fork();
    if (pid == 0) {
        char *args[] = {argv[0], "child", "x", "", "y z", NULL};
        execve(argv[0], args, env);
        _exit(99);
    }
    waitpid(pid, &status, 0);
    printf("parent: child exited with %d\n", WEXITSTATUS(status));
    pid = vfork();
    if (pid == 0) {
        char *args[] = {argv[0], "child", "vfork", NULL};
        execve(argv[0], args, env);
        _exit(98);
    }
    waitpid(pid, &status, 0);
    printf("parent: vfork child exited with %d\n", WEXITSTATUS(status));
    return 0;
}
