/* A workload for fault-injection campaigns (bench/campaigns/proc-*.toml): every memory
 * path of a process once (anonymous and file-less mmap, touch, mprotect, mremap, munmap,
 * brk, fork with copy-on-write, a pipe, exec-free wait), and a status that says how it
 * ended, so a campaign can tell a clean failure from a wrong result:
 *   0  all done, every check held
 *   2  a check failed: memory came back different (a kernel bug under any injection)
 *   3  a system call failed with ENOMEM or EAGAIN (allowed when allocations fail)
 * A child killed by the kernel for want of a frame (SIGKILL) counts as 3 for its parent.
 * The output is the same natively and under emu exec. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define PAGE 4096
#define PAGES 48

static void out_of_memory(const char *what)
{
    printf("%s: %s\n", what, strerror(errno));
    exit(errno == ENOMEM || errno == EAGAIN ? 3 : 2);
}

static void expect(int ok, const char *what)
{
    if (!ok) {
        printf("check failed: %s\n", what);
        exit(2);
    }
}

static uint64_t pattern(uint64_t page, uint64_t salt)
{
    return (page + 1) * 0x9e3779b97f4a7c15ull ^ salt;
}

static void fill(unsigned char *base, int pages, uint64_t salt)
{
    for (int i = 0; i < pages; i++)
        *(uint64_t *)(base + (size_t)i * PAGE + (i * 40) % PAGE) = pattern(i, salt);
}

static int holds(const unsigned char *base, int pages, uint64_t salt)
{
    for (int i = 0; i < pages; i++) {
        if (*(const uint64_t *)(base + (size_t)i * PAGE + (i * 40) % PAGE) != pattern(i, salt))
            return 0;
    }
    return 1;
}

static unsigned char *anonymous(size_t length)
{
    void *p = mmap(NULL, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

    if (p == MAP_FAILED)
        out_of_memory("mmap");
    return p;
}

static void regions(void)
{
    unsigned char *a = anonymous(PAGES * PAGE), *b;

    fill(a, PAGES, 1);
    if (mprotect(a + 8 * PAGE, 8 * PAGE, PROT_READ) != 0)  /* splits the region */
        out_of_memory("mprotect");
    expect(holds(a, PAGES, 1), "contents after mprotect");
    if (munmap(a + 20 * PAGE, 4 * PAGE) != 0)              /* a hole in the middle */
        out_of_memory("munmap");
    b = mremap(a + 24 * PAGE, 24 * PAGE, 40 * PAGE, MREMAP_MAYMOVE);
    if (b == MAP_FAILED)
        out_of_memory("mremap");
    for (int i = 0; i < 24; i++)                            /* pages moved with their data */
        expect(*(uint64_t *)(b + (size_t)i * PAGE + ((i + 24) * 40) % PAGE) ==
               pattern(i + 24, 1), "contents after mremap");
    fill(b + 24 * PAGE, 16, 7);
    expect(holds(b + 24 * PAGE, 16, 7), "grown part of a remapped region");
    if (madvise(a, 8 * PAGE, MADV_DONTNEED) != 0)
        out_of_memory("madvise");
    expect(a[0] == 0 && a[8 * PAGE - 1] == 0, "zero after MADV_DONTNEED");
    munmap(a, 20 * PAGE);
    munmap(b, 40 * PAGE);
}

/* The break through the system call: musl's sbrk refuses to move it. */
static unsigned char *set_break(unsigned char *end)
{
    return (unsigned char *)syscall(SYS_brk, end);
}

static void program_break(void)
{
    unsigned char *start = set_break(NULL);

    if (set_break(start + 32 * PAGE) != start + 32 * PAGE) {
        errno = ENOMEM;     /* brk answers with the old break when it cannot move */
        out_of_memory("brk");
    }
    fill(start, 32, 3);
    expect(holds(start, 32, 3), "break contents");
    expect(set_break(start + 16 * PAGE) == start + 16 * PAGE, "the break shrinks");
    expect(holds(start, 16, 3), "break contents after shrinking");
    set_break(start);
}

/* Parent and child write their own values on the same pages; each sees its own. */
static void copy_on_write(void)
{
    unsigned char *a = anonymous(16 * PAGE);
    int fds[2], status;
    char verdict = 0;
    pid_t child;

    fill(a, 16, 5);
    if (pipe(fds) != 0)
        out_of_memory("pipe");
    child = fork();
    if (child < 0)
        out_of_memory("fork");
    if (child == 0) {
        char ok = holds(a, 16, 5) ? 'y' : 'n';

        fill(a, 16, 6);
        if (ok == 'y' && !holds(a, 16, 6))
            ok = 'n';
        write(fds[1], &ok, 1);
        _exit(0);
    }
    fill(a, 8, 9);
    if (waitpid(child, &status, 0) != child)
        out_of_memory("waitpid");
    if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) {
        printf("child killed: out of memory\n");
        exit(3);
    }
    expect(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the child exited 0");
    expect(read(fds[0], &verdict, 1) == 1 && verdict == 'y', "the child saw its own pages");
    expect(holds(a, 8, 9), "the parent's pages after the child wrote");
    for (int i = 8; i < 16; i++)
        expect(*(uint64_t *)(a + (size_t)i * PAGE + (i * 40) % PAGE) == pattern(i, 5),
               "the parent's untouched pages");
    close(fds[0]);
    close(fds[1]);
    munmap(a, 16 * PAGE);
}

static void heap(void)
{
    void *block[64];

    for (int i = 0; i < 64; i++) {
        block[i] = malloc((size_t)(i + 1) * 1000);
        if (block[i] == NULL)
            out_of_memory("malloc");
        memset(block[i], i, (size_t)(i + 1) * 1000);
    }
    for (int i = 0; i < 64; i++) {
        expect(((unsigned char *)block[i])[(size_t)i * 1000] == i, "malloc'd contents");
        free(block[i]);
    }
}

int main(void)
{
    regions();
    program_break();
    copy_on_write();
    heap();
    printf("all checks held\n");
    return 0;
}
