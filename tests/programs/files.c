/* Files: open, read, lseek, pread, fstat, stat, openat relative to a directory descriptor,
 * readv, dup and fcntl on the file named by argv[1] (the caller passes the same bytes
 * natively and in the initrd); errors for missing files, writes to a read-only file and a
 * bad descriptor. Prints sizes, checksums and errno values only. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

static unsigned sum(const char *p, size_t n)
{
    unsigned s = 0;

    for (size_t i = 0; i < n; i++)
        s = s * 31 + (unsigned char)p[i];
    return s;
}

int main(int argc, char **argv)
{
    static char buf[65536];
    struct stat st, st2;
    const char *path = argc > 1 ? argv[1] : "/etc/data";
    int fd = open(path, O_RDONLY);

    printf("open %d\n", fd >= 0);
    fstat(fd, &st);
    printf("regular %d size %ld\n", S_ISREG(st.st_mode), (long)st.st_size);
    ssize_t n = read(fd, buf, sizeof(buf));
    printf("read %zd sum %x\n", n, sum(buf, (size_t)n));
    printf("read at end %zd\n", read(fd, buf, 10));
    printf("lseek set %ld cur %ld end %ld\n", (long)lseek(fd, 10, SEEK_SET),
           (long)lseek(fd, 5, SEEK_CUR), (long)lseek(fd, -3, SEEK_END));
    printf("lseek negative %ld errno %d\n", (long)lseek(fd, -1, SEEK_SET), errno);
    char small[8] = {0};
    printf("pread %zd at 4: %x, offset kept %ld\n", pread(fd, small, 4, 4), sum(small, 4),
           (long)lseek(fd, 0, SEEK_CUR));
    lseek(fd, 0, SEEK_SET);
    char a[3], b[5];
    struct iovec iov[2] = {{a, sizeof(a)}, {b, sizeof(b)}};
    printf("readv %zd sums %x %x\n", readv(fd, iov, 2), sum(a, 3), sum(b, 5));
    printf("stat same size %d\n", stat(path, &st2) == 0 && st2.st_size == st.st_size);
    char dir[4096];
    strcpy(dir, path);
    int dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY);
    strcpy(dir, path);
    int rel = openat(dfd, basename(dir), O_RDONLY);
    printf("openat relative %d, dir is dir %d\n", rel >= 0,
           fstat(dfd, &st2) == 0 && S_ISDIR(st2.st_mode));
    int copy = dup(fd);
    printf("dup shares the offset %d\n", lseek(copy, 7, SEEK_SET) == 7 && lseek(fd, 0, SEEK_CUR) == 7);
    printf("F_GETFL accmode %d\n", fcntl(fd, F_GETFL) & O_ACCMODE);
    printf("write to read-only fd %zd errno %d\n", write(fd, "x", 1), errno);
    printf("missing %d errno %d\n", open("/no/such/file", O_RDONLY), errno);
    printf("bad fd %zd errno %d\n", read(99, buf, 1), errno);
    printf("close twice %d %d errno %d\n", close(copy), close(copy), errno);
    printf("read into a bad pointer %zd errno %d\n", read(fd, (void *)16, 4), errno);
    printf("ENOTDIR %d errno %d\n", open(path, O_RDONLY | O_DIRECTORY), errno);
    printf("getcwd %s\n", getcwd(buf, sizeof(buf)) ? "ok" : "failed");
    return 0;
}
