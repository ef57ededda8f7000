/* mremap (grow in place, shrink, MREMAP_MAYMOVE moves with contents, MREMAP_FIXED),
 * madvise(MADV_DONTNEED) zeroing, mincore, and a private file mapping (argv[1], a file in
 * the initrd or on the host) that copies on write and re-reads after DONTNEED. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define PAGE 4096

static unsigned sum(const char *p, size_t n)
{
    unsigned s = 0;

    for (size_t i = 0; i < n; i++)
        s = s * 31 + (unsigned char)p[i];
    return s;
}

static void resident(const char *what, void *p, size_t pages)
{
    unsigned char vec[64];
    char line[65];

    if (mincore(p, pages * PAGE, vec) != 0) {
        printf("%-24s mincore errno %d\n", what, errno);
        return;
    }
    for (size_t i = 0; i < pages; i++)
        line[i] = '0' + (vec[i] & 1);
    line[pages] = 0;
    printf("%-24s %s\n", what, line);
}

int main(int argc, char **argv)
{
    /* Eight pages reserved, the upper four given back: room to grow into. */
    char *a = mmap(NULL, 8 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    char *gone = mmap(NULL, PAGE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

    munmap(gone, PAGE); /* an address nothing maps */
    munmap(a + 4 * PAGE, 4 * PAGE);
    for (int i = 0; i < 4 * PAGE; i++)
        a[i] = (char)(i * 7);
    unsigned before = sum(a, 4 * PAGE);
    char *g = mremap(a, 4 * PAGE, 6 * PAGE, 0);
    printf("grow in place: %s\n", g == MAP_FAILED ? strerror(errno) : g == a ? "same" : "moved");
    if (g != MAP_FAILED) {
        printf("kept %d, tail zero %d\n", sum(g, 4 * PAGE) == before, g[5 * PAGE] == 0);
        a = g;
    }
    char *blocker = mmap(a + 6 * PAGE, PAGE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    printf("blocker placed %d\n", blocker == a + 6 * PAGE);
    char *n = mremap(a, 6 * PAGE, 16 * PAGE, 0);
    printf("grow blocked, no MAYMOVE: %s\n", n == MAP_FAILED ? strerror(errno) : "ok");
    char *m = mremap(a, 6 * PAGE, 16 * PAGE, MREMAP_MAYMOVE);
    printf("MAYMOVE: moved %d, kept %d\n", m != a, sum(m, 4 * PAGE) == before);
    resident("after move", m, 16);
    printf("old range mapped: %d\n", mincore(a, PAGE, (unsigned char[1]){0}) == 0);
    char *s = mremap(m, 16 * PAGE, 2 * PAGE, 0);
    printf("shrink: same %d, kept %d\n", s == m, sum(s, 2 * PAGE) == sum(m, 2 * PAGE));
    resident("after shrink", m, 2);
    char *target = mmap(NULL, 8 * PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    char *f = mremap(s, 2 * PAGE, 2 * PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, target + 2 * PAGE);
    printf("FIXED: at target+2 %d, first byte %d\n", f == target + 2 * PAGE, f[PAGE + 3]);
    printf("FIXED without MAYMOVE: %s\n",
           mremap(f, PAGE, PAGE, MREMAP_FIXED, target) == MAP_FAILED ? strerror(errno) : "ok");
    printf("unmapped source: %s\n",
           mremap(gone, PAGE, 2 * PAGE, MREMAP_MAYMOVE) == MAP_FAILED ? strerror(errno) : "ok");
    memset(f, 0x5a, 2 * PAGE);
    printf("DONTNEED: %d\n", madvise(f, PAGE, MADV_DONTNEED));
    printf("first page zero %d, second kept %d\n", f[10] == 0, f[PAGE + 10] == 0x5a);
    resident("after DONTNEED", f, 2);
    printf("DONTNEED unaligned: %s\n", madvise(f + 1, PAGE, MADV_DONTNEED) ? strerror(errno) : "ok");
    if (argc > 1) {
        int fd = open(argv[1], O_RDONLY);
        off_t size = lseek(fd, 0, SEEK_END);
        char *file = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
        unsigned original = sum(file, (size_t)size);
        file[0] ^= 1;
        printf("file: size %ld, private write changes the view %d\n", (long)size,
               sum(file, (size_t)size) != original);
        madvise(file, PAGE, MADV_DONTNEED);
        printf("file after DONTNEED back to the file %d\n", sum(file, (size_t)size) == original);
        char *shared = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        printf("shared writable of O_RDONLY: %s\n", shared == MAP_FAILED ? strerror(errno) : "ok");
        printf("tail past EOF zero %d\n", size % PAGE == 0 || file[size] == 0);
        close(fd);
    }
    return 0;
}
