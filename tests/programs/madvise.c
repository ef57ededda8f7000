/* madvise and mincore semantics, observed without addresses: residency strings ('1' per
 * resident page), contents, and errno values, on anonymous memory, on a private mapping of
 * a file (argv[1]: MADV_DONTNEED drops the private copy, the file's bytes come back), on
 * PROT_NONE pages, across a hole, with MAP_POPULATE, and in a forked child (its drop does
 * not touch the parent's page). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define PAGE 4096
#define PAGES 16

static void residency(const char *what, void *base, size_t pages)
{
    unsigned char vec[PAGES];
    char line[PAGES + 1];
    int r = mincore(base, pages * PAGE, vec);

    if (r != 0) {
        printf("%-28s mincore: -1 errno %d\n", what, errno);
        return;
    }
    for (size_t i = 0; i < pages; i++)
        line[i] = vec[i] & 1 ? '1' : '.';
    line[pages] = '\0';
    printf("%-28s %s\n", what, line);
}

static void result(const char *what, int r)
{
    printf("%-28s %d errno %d\n", what, r, r == 0 ? 0 : errno);
    errno = 0;
}

int main(int argc, char **argv)
{
    char *p = mmap(NULL, PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                   -1, 0);

    residency("fresh", p, PAGES);
    for (int i = 0; i < 8; i++)
        p[i * PAGE + 100] = (char)(i + 1);
    residency("first 8 written", p, PAGES);
    result("dontneed 2..4", madvise(p + 2 * PAGE, 3 * PAGE, MADV_DONTNEED));
    residency("after dontneed", p, PAGES);
    printf("page 2 reads %d, page 1 reads %d\n", p[2 * PAGE + 100], p[PAGE + 100]);
    residency("after reading page 2", p, PAGES);
    result("unaligned address", madvise(p + 1, PAGE, MADV_DONTNEED));
    result("length 0", madvise(p, 0, MADV_DONTNEED));
    result("unknown advice", madvise(p, PAGE, 12345));
    result("willneed", madvise(p, PAGES * PAGE, MADV_WILLNEED));
    result("sequential", madvise(p, PAGES * PAGE, MADV_SEQUENTIAL));
    result("random", madvise(p, PAGES * PAGE, MADV_RANDOM));
    result("normal", madvise(p, PAGES * PAGE, MADV_NORMAL));
    result("mincore unaligned", mincore(p + 8, PAGE, (unsigned char[1]){0}));
    result("mincore length 0", mincore(p, 0, (unsigned char[1]){0}));

    munmap(p + 10 * PAGE, 2 * PAGE);
    residency("with a hole at 10-11", p, PAGES);
    residency("before the hole", p, 10);
    result("willneed over the hole", madvise(p, PAGES * PAGE, MADV_WILLNEED));
    result("dontneed over the hole", madvise(p, PAGES * PAGE, MADV_DONTNEED));
    residency("pages 0-9 after it", p, 10);
    printf("page 0 reads %d\n", p[100]);

    p[3 * PAGE] = 7;
    result("mprotect 3 none", mprotect(p + 3 * PAGE, PAGE, PROT_NONE));
    residency("page 3 none, still there", p, 10);
    result("dontneed the none page", madvise(p + 3 * PAGE, PAGE, MADV_DONTNEED));
    residency("after dropping it", p, 10);
    mprotect(p + 3 * PAGE, PAGE, PROT_READ | PROT_WRITE);
    printf("page 3 reads %d\n", p[3 * PAGE]);

    char *q = mmap(NULL, 4 * PAGE, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    residency("populated", q, 4);
    result("dontneed populated", madvise(q, 4 * PAGE, MADV_DONTNEED));
    residency("populated, dropped", q, 4);

    int fd = argc > 1 ? open(argv[1], O_RDONLY) : -1;
    char *f = fd >= 0 ? mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0)
                      : MAP_FAILED;
    if (f != MAP_FAILED) {
        char first = f[0];

        f[0] = 'X';
        printf("file page written: %c (was %c)\n", f[0], first);
        result("dontneed the file page", madvise(f, PAGE, MADV_DONTNEED));
        printf("file page after: %s\n", f[0] == first ? "the file's byte again" : "changed");
    }

    p[5 * PAGE] = 55;
    fflush(stdout);
    pid_t child = fork();
    if (child == 0) {
        p[5 * PAGE] = 66;
        madvise(p + 5 * PAGE, PAGE, MADV_DONTNEED);
        _exit(p[5 * PAGE] == 0 ? 10 : 11);
    }
    int status;
    waitpid(child, &status, 0);
    printf("child: exit %d; parent's page 5 reads %d\n", WEXITSTATUS(status), p[5 * PAGE]);
    return 0;
}
