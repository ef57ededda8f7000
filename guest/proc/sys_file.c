/*
 * sys_file.c - the file system calls: read, write, readv, writev, pread64,
 * open, openat, close, lseek, stat, lstat, fstat, newfstatat, access,
 * faccessat, ioctl, pipe, pipe2, dup, dup2, dup3, fcntl, getcwd.
 *
 * Owns: argument checks, descriptors to files, blocking (a read of an
 * empty pipe or a write to a full one sleeps on the pipe; O_NONBLOCK
 * returns -EAGAIN), SIGPIPE on -EPIPE, and iovec arrays.
 * Does not own: the files' behaviour (fs/file.c) or descriptors' slots
 * (fs/fdtable.c).
 *
 * The working directory is always "/"; there are no terminals (ioctl
 * answers -ENOTTY, so libc buffers standard output as for a pipe).
 */
#include "fs/fdtable.h"
#include "heap/heap.h"
#include "lib/errno.h"
#include "lib/string.h"
#include "mm/usercopy.h"
#include "proc/proc.h"
#include "proc/sched.h"
#include "proc/signal.h"
#include "proc/syscall.h"

#define IOV_MAX 1024
#define PATH_MAX 4096
#define MAX_RW ((uint64_t)0x7ffff000) /* Linux's MAX_RW_COUNT */
#define R_OK 4
#define W_OK 2
#define X_OK 1

struct iovec {
    uint64_t base;
    uint64_t len;
};

static struct file *file_of(int64_t fd)
{
    return fd_file(proc_current()->fds, (int)fd);
}

static bool nonblocking(const struct file *f)
{
    return (f->status_flags & O_NONBLOCK) != 0;
}

static int64_t read_blocking(struct file *f, vaddr_t buf, size_t n)
{
    for (;;) {
        int64_t got = file_read(f, buf, n);

        if (got != -EAGAIN || nonblocking(f))
            return got;
        if (sleep_on(file_wait_channel(f)) == SLEEP_INTERRUPTED)
            return -EINTR;
    }
}

/* A blocking write writes everything (pipes in pieces); -EPIPE raises SIGPIPE. */
static int64_t write_blocking(struct file *f, vaddr_t buf, size_t n)
{
    size_t done = 0;

    do {
        int64_t put = file_write(f, buf + done, n - done);

        if (put == -EAGAIN && !nonblocking(f)) {
            if (sleep_on(file_wait_channel(f)) == SLEEP_INTERRUPTED)
                return done > 0 ? (int64_t)done : -EINTR;
            continue;
        }
        if (put < 0) {
            if (put == -EPIPE)
                signal_send(proc_current(), SIGPIPE);
            return done > 0 ? (int64_t)done : put;
        }
        done += (size_t)put;
        if (nonblocking(f))
            break;
    } while (done < n);
    return (int64_t)done;
}

SYSCALL(read)
{
    struct file *file = file_of((int64_t)a[0]);

    if (file == NULL)
        return -EBADF;
    return read_blocking(file, a[1], a[2] < MAX_RW ? a[2] : MAX_RW);
}

SYSCALL(write)
{
    struct file *file = file_of((int64_t)a[0]);

    if (file == NULL)
        return -EBADF;
    return write_blocking(file, a[1], a[2] < MAX_RW ? a[2] : MAX_RW);
}

SYSCALL(pread64)
{
    struct file *file = file_of((int64_t)a[0]);
    uint64_t saved;
    int64_t got;

    if (file == NULL)
        return -EBADF;
    if (file->kind != FILE_INITRD)
        return -ESPIPE;
    if ((int64_t)a[3] < 0)
        return -EINVAL;
    saved = file->offset;
    file->offset = a[3];
    got = file_read(file, a[1], a[2] < MAX_RW ? a[2] : MAX_RW);
    file->offset = saved;
    return got;
}

/* readv/writev: one request per iovec, stopping at a short one or an error. */
static int64_t vector_io(const uint64_t *a, bool writing)
{
    struct file *file = file_of((int64_t)a[0]);
    uint64_t count = a[2];
    int64_t total = 0;

    if (file == NULL)
        return -EBADF;
    if (count > IOV_MAX)
        return -EINVAL;
    for (uint64_t i = 0; i < count; i++) {
        struct iovec v;
        int64_t n;

        if (copy_from_user(&v, a[1] + i * sizeof(v), sizeof(v)) != 0)
            return total > 0 ? total : -EFAULT;
        if ((int64_t)v.len < 0)
            return -EINVAL;
        if (v.len == 0)
            continue;
        n = writing ? write_blocking(file, v.base, v.len) : read_blocking(file, v.base, v.len);
        if (n < 0)
            return total > 0 ? total : n;
        total += n;
        if ((uint64_t)n < v.len)
            break;
    }
    return total;
}

SYSCALL(readv)
{
    return vector_io(a, false);
}

SYSCALL(writev)
{
    return vector_io(a, true);
}

/* The absolute, normalized form of a user path relative to dirfd. */
static int user_path(int64_t dirfd, vaddr_t upath, char *out)
{
    char *raw = kmalloc(2 * PATH_MAX);
    int64_t len;
    int status;

    if (raw == NULL)
        return -ENOMEM;
    len = copy_string_from_user(raw, upath, PATH_MAX);
    status = len < 0 ? (int)len : len == 0 ? -ENOENT : 0;
    if (status == 0 && raw[0] != '/' && (int32_t)dirfd != AT_FDCWD) {
        struct file *dir = file_of((int32_t)dirfd);

        if (dir == NULL)
            status = -EBADF;
        else if (dir->kind != FILE_DIR)
            status = -ENOTDIR;
        else if (strlen(dir->entry->path) + 1 + (size_t)len + 1 > PATH_MAX)
            status = -ENAMETOOLONG;
        else {
            char *joined = raw + PATH_MAX;
            size_t d = strlen(dir->entry->path);

            memcpy(joined, dir->entry->path, d);
            joined[d] = '/';
            memcpy(joined + d + 1, raw, (size_t)len + 1);
            memcpy(raw, joined, d + 1 + (size_t)len + 1);
        }
    }
    if (status == 0)
        status = path_normalize(raw, out, PATH_MAX);
    kfree(raw);
    return status;
}

static int64_t do_open(int64_t dirfd, vaddr_t upath, uint64_t flags)
{
    char *path = kmalloc(PATH_MAX);
    struct file *file = NULL;
    int status, fd;

    if (path == NULL)
        return -ENOMEM;
    status = user_path(dirfd, upath, path);
    if (status == 0)
        file = file_open(path, (uint32_t)flags, &status);
    kfree(path);
    if (file == NULL)
        return status;
    fd = fd_install(proc_current()->fds, file, 0,
                    (flags & O_CLOEXEC) ? FD_CLOSE_ON_EXEC : FD_KEEP_ON_EXEC);
    if (fd < 0)
        file_put(file);
    return fd;
}

SYSCALL(open)
{
    return do_open(AT_FDCWD, a[0], a[1]);
}

SYSCALL(openat)
{
    return do_open((int64_t)a[0], a[1], a[2]);
}

SYSCALL(close)
{
    return fd_close(proc_current()->fds, (int)a[0]);
}

SYSCALL(lseek)
{
    struct file *file = file_of((int64_t)a[0]);

    return file == NULL ? -EBADF : file_seek(file, (int64_t)a[1], (int)a[2]);
}

SYSCALL(fstat)
{
    struct file *file = file_of((int64_t)a[0]);
    struct linux_stat st;

    if (file == NULL)
        return -EBADF;
    file_stat(file, &st);
    return copy_to_user(a[1], &st, sizeof(st));
}

static int64_t stat_at(int64_t dirfd, vaddr_t upath, vaddr_t ust, uint64_t flags)
{
    char *path;
    struct linux_stat st;
    int status;
    char first;

    if (flags & AT_EMPTY_PATH) {
        if (copy_from_user(&first, upath, 1) != 0)
            return -EFAULT;
        if (first == '\0') {
            struct file *file = file_of(dirfd);

            if (file == NULL)
                return -EBADF;
            file_stat(file, &st);
            return copy_to_user(ust, &st, sizeof(st));
        }
    }
    path = kmalloc(PATH_MAX);
    if (path == NULL)
        return -ENOMEM;
    status = user_path(dirfd, upath, path);
    if (status == 0)
        status = file_stat_path(path, &st);
    kfree(path);
    return status != 0 ? status : copy_to_user(ust, &st, sizeof(st));
}

SYSCALL(stat)
{
    return stat_at(AT_FDCWD, a[0], a[1], 0);
}

SYSCALL(lstat)
{
    return stat_at(AT_FDCWD, a[0], a[1], 0);
}

SYSCALL(newfstatat)
{
    return stat_at((int64_t)a[0], a[1], a[2], a[3]);
}

static int64_t access_at(int64_t dirfd, vaddr_t upath, uint64_t mode)
{
    char *path = kmalloc(PATH_MAX);
    struct linux_stat st;
    int status;

    if (path == NULL)
        return -ENOMEM;
    status = user_path(dirfd, upath, path);
    if (status == 0)
        status = file_stat_path(path, &st);
    kfree(path);
    if (status != 0)
        return status;
    if (mode & ~(uint64_t)(R_OK | W_OK | X_OK))
        return -EINVAL;
    if (mode & W_OK)
        return -EROFS;
    if ((mode & X_OK) && !(st.st_mode & 0111))
        return -EACCES;
    return 0;
}

SYSCALL(access)
{
    return access_at(AT_FDCWD, a[0], a[1]);
}

SYSCALL(faccessat)
{
    return access_at((int64_t)a[0], a[1], a[2]);
}

SYSCALL(ioctl)
{
    return file_of((int64_t)a[0]) == NULL ? -EBADF : -ENOTTY;
}

static int64_t make_pipe(vaddr_t ufds, uint64_t flags)
{
    struct fdtable *t = proc_current()->fds;
    enum fd_flags fdf = (flags & O_CLOEXEC) ? FD_CLOSE_ON_EXEC : FD_KEEP_ON_EXEC;
    struct file *r, *w;
    int fds[2];
    int status;

    if (flags & ~(uint64_t)(O_CLOEXEC | O_NONBLOCK))
        return -EINVAL;
    status = file_pipe(&r, &w, (uint32_t)flags);
    if (status != 0)
        return status;
    fds[0] = fd_install(t, r, 0, fdf);
    fds[1] = fds[0] < 0 ? -EMFILE : fd_install(t, w, 0, fdf);
    if (fds[0] < 0 || fds[1] < 0) {
        if (fds[0] >= 0)
            fd_close(t, fds[0]);
        else
            file_put(r);
        file_put(w);
        return -EMFILE;
    }
    if (copy_to_user(ufds, fds, sizeof(fds)) != 0) {
        fd_close(t, fds[0]);
        fd_close(t, fds[1]);
        return -EFAULT;
    }
    return 0;
}

SYSCALL(pipe)
{
    return make_pipe(a[0], 0);
}

SYSCALL(pipe2)
{
    return make_pipe(a[0], a[1]);
}

static int64_t dup_from(int64_t fd, int64_t min, enum fd_flags flags)
{
    struct fdtable *t = proc_current()->fds;
    struct file *file = fd_file(t, (int)fd);
    int nfd;

    if (file == NULL)
        return -EBADF;
    if (min < 0 || min >= FD_MAX)
        return -EINVAL;
    file_get(file);
    nfd = fd_install(t, file, (int)min, flags);
    if (nfd < 0)
        file_put(file);
    return nfd;
}

SYSCALL(dup)
{
    return dup_from((int64_t)a[0], 0, FD_KEEP_ON_EXEC);
}

static int64_t dup_to(int64_t oldfd, int64_t newfd, enum fd_flags flags)
{
    struct fdtable *t = proc_current()->fds;
    struct file *file = fd_file(t, (int)oldfd);

    if (file == NULL)
        return -EBADF;
    if (newfd < 0 || newfd >= FD_MAX)
        return -EBADF;
    file_get(file);
    fd_install_at(t, (int)newfd, file, flags);
    return newfd;
}

SYSCALL(dup2)
{
    if ((int)a[0] == (int)a[1])
        return file_of((int64_t)a[0]) != NULL ? (int64_t)(int)a[1] : -EBADF;
    return dup_to((int)a[0], (int)a[1], FD_KEEP_ON_EXEC);
}

SYSCALL(dup3)
{
    if (a[2] & ~(uint64_t)O_CLOEXEC)
        return -EINVAL;
    if ((int)a[0] == (int)a[1])
        return -EINVAL;
    return dup_to((int)a[0], (int)a[1], (a[2] & O_CLOEXEC) ? FD_CLOSE_ON_EXEC : FD_KEEP_ON_EXEC);
}

SYSCALL(fcntl)
{
    struct fdtable *t = proc_current()->fds;
    int fd = (int)a[0];
    struct file *file = fd_file(t, fd);

    if (file == NULL)
        return -EBADF;
    switch (a[1]) {
    case F_DUPFD:
        return dup_from(fd, (int64_t)a[2], FD_KEEP_ON_EXEC);
    case F_DUPFD_CLOEXEC:
        return dup_from(fd, (int64_t)a[2], FD_CLOSE_ON_EXEC);
    case F_GETFD:
        return t->flags[fd] == FD_CLOSE_ON_EXEC ? FD_CLOEXEC : 0;
    case F_SETFD:
        t->flags[fd] = (a[2] & FD_CLOEXEC) ? FD_CLOSE_ON_EXEC : FD_KEEP_ON_EXEC;
        return 0;
    case F_GETFL:
        return file->status_flags | O_LARGEFILE;
    case F_SETFL:
        file->status_flags = (file->status_flags & ~(uint32_t)(O_APPEND | O_NONBLOCK)) |
                             ((uint32_t)a[2] & (O_APPEND | O_NONBLOCK));
        return 0;
    default:
        return -EINVAL;
    }
}

SYSCALL(getcwd)
{
    static const char root[] = "/";

    if (a[1] < sizeof(root))
        return -ERANGE;
    return copy_to_user(a[0], root, sizeof(root)) != 0 ? -EFAULT : (int64_t)sizeof(root);
}
