/* An interpreter of memory system calls for differential tests: argv[1] names a data file
 * (for file mappings), each later argument is one operation on a 64-page arena reserved
 * PROT_NONE at start; every operation prints one line that depends on nothing but the
 * semantics (return codes, errno, bytes, residency, access). Offsets and lengths are in
 * pages, protections are a digit (PROT_* bits).
 *   mO,L,P    mmap anonymous MAP_FIXED      nO,L,P   the same with MAP_FIXED_NOREPLACE
 *   fO,L,P    mmap argv[1] MAP_FIXED         uO,L     munmap
 *   pO,L,P    mprotect                       rO,L,N   mremap to N pages in place
 *   xO,L,N,T  mremap MAYMOVE|FIXED to page T dO,L     madvise(MADV_DONTNEED)
 *   wO,B      write byte B at page O (through a pipe: EFAULT if not writable)
 *   tO        read page O's first byte the same way
 *   c         mincore of the arena           a        access map of the arena
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#define PAGE 4096
#define PAGES 64

static char *arena;
static int probe[2], data_fd;

static void status(const char *op, long ok)
{
    printf("%s %s\n", op, ok ? "ok" : "fail");
    if (!ok)
        printf("  errno %d\n", errno);
}

static void residency(void)
{
    unsigned char vec[PAGES];
    char line[PAGES + 1];

    if (mincore(arena, PAGES * PAGE, vec) != 0) {
        printf("c errno %d\n", errno);
        return;
    }
    for (int i = 0; i < PAGES; i++)
        line[i] = '0' + (vec[i] & 1);
    line[PAGES] = 0;
    printf("c %s\n", line);
}

static int readable(char *p)
{
    char byte;

    if (write(probe[1], p, 1) != 1)
        return 0;
    read(probe[0], &byte, 1);
    return 1;
}

static void access_map(void)
{
    char line[PAGES + 1];

    for (int i = 0; i < PAGES; i++) {
        char *p = arena + i * PAGE;
        int r = readable(p);
        int w = r && write(probe[1], p, 1) == 1 && read(probe[0], p, 1) == 1;

        line[i] = w ? 'w' : r ? 'r' : '.';
    }
    line[PAGES] = 0;
    printf("a %s\n", line);
}

static void run(const char *op)
{
    long v[4] = {0, 0, 0, 0};
    char *p;

    sscanf(op + 1, "%ld,%ld,%ld,%ld", &v[0], &v[1], &v[2], &v[3]);
    p = arena + v[0] * PAGE;
    switch (op[0]) {
    case 'm':
    case 'n':
        status(op, mmap(p, v[1] * PAGE, (int)v[2], MAP_PRIVATE | MAP_ANONYMOUS |
                        (op[0] == 'm' ? MAP_FIXED : MAP_FIXED_NOREPLACE), -1, 0) == p);
        break;
    case 'f':
        status(op, mmap(p, v[1] * PAGE, (int)v[2], MAP_PRIVATE | MAP_FIXED, data_fd, 0) == p);
        break;
    case 'u':
        status(op, munmap(p, v[1] * PAGE) == 0);
        break;
    case 'p':
        status(op, mprotect(p, v[1] * PAGE, (int)v[2]) == 0);
        break;
    case 'r':
        status(op, mremap(p, v[1] * PAGE, v[2] * PAGE, 0) == p);
        break;
    case 'x':
        status(op, mremap(p, v[1] * PAGE, v[2] * PAGE, MREMAP_MAYMOVE | MREMAP_FIXED,
                          arena + v[3] * PAGE) == arena + v[3] * PAGE);
        break;
    case 'd':
        status(op, madvise(p, v[1] * PAGE, MADV_DONTNEED) == 0);
        break;
    case 'w': {
        char byte = (char)v[1];
        status(op, write(probe[1], &byte, 1) == 1 && read(probe[0], p, 1) == 1);
        break;
    }
    case 't':
        if (readable(p))
            printf("%s = %d\n", op, *(volatile char *)p);
        else
            printf("%s unreadable errno %d\n", op, errno);
        break;
    case 'c':
        residency();
        break;
    case 'a':
        access_map();
        break;
    default:
        printf("%s: unknown operation\n", op);
    }
}

int main(int argc, char **argv)
{
    pipe(probe);
    data_fd = open(argc > 1 ? argv[1] : "/dev/null", O_RDONLY);
    arena = mmap(NULL, PAGES * PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    for (int i = 2; i < argc; i++)
        run(argv[i]);
    residency();
    access_map();
    for (int i = 0; i < PAGES; i++) {
        if (readable(arena + i * PAGE))
            printf("%d:%d ", i, arena[i * PAGE]);
    }
    printf("\n");
    return 0;
}
