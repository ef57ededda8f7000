/*
 * file.h - open files: what file descriptors point at.
 *
 * Owns: struct file (a reference-counted open file: its kind, status
 * flags and offset), opening initrd paths, the host's standard streams as
 * files, pipes as pairs of files, reading, writing, seeking and stat, and
 * files as the VM objects regions map (initrd files only).
 * Does not own: descriptors (fs/fdtable.c), blocking (a read of an empty
 * pipe returns -EAGAIN; proc/ sleeps on file_wait_channel and is woken
 * through the hook it installs with file_set_wakeup), or user pointers
 * beyond copying through mm/usercopy.h.
 *
 * Errors are negative Linux errno values. Linux's x86-64 open(2) flag
 * values and struct stat layout are used as they are.
 */
#ifndef FILE_H
#define FILE_H

#include "dev/hostio.h"
#include "fs/initrd.h"
#include "lib/types.h"
#include "mm/vmm.h"

/* open(2) flags, Linux x86-64. */
#define O_ACCMODE 03
#define O_RDONLY 00
#define O_WRONLY 01
#define O_RDWR 02
#define O_CREAT 0100
#define O_EXCL 0200
#define O_NOCTTY 0400
#define O_TRUNC 01000
#define O_APPEND 02000
#define O_NONBLOCK 04000
#define O_LARGEFILE 0100000
#define O_DIRECTORY 0200000
#define O_NOFOLLOW 0400000
#define O_CLOEXEC 02000000
#define O_PATH 010000000
#define O_STATUS_FLAGS (O_ACCMODE | O_APPEND | O_NONBLOCK)

#define S_IFMT 0170000
#define S_IFIFO 0010000
#define S_IFCHR 0020000
#define S_IFDIR 0040000
#define S_IFREG 0100000

#define SEEK_SET 0
#define SEEK_CUR 1
#define SEEK_END 2

#define PIPE_BUF 4096        /* writes up to this size are atomic */
#define PIPE_CAPACITY 65536  /* Linux's default pipe size */

/* struct stat of Linux x86-64 (144 bytes). */
struct linux_stat {
    uint64_t st_dev;
    uint64_t st_ino;
    uint64_t st_nlink;
    uint32_t st_mode;
    uint32_t st_uid;
    uint32_t st_gid;
    uint32_t pad0;
    uint64_t st_rdev;
    int64_t st_size;
    int64_t st_blksize;
    int64_t st_blocks;
    uint64_t st_atime_sec;
    uint64_t st_atime_nsec;
    uint64_t st_mtime_sec;
    uint64_t st_mtime_nsec;
    uint64_t st_ctime_sec;
    uint64_t st_ctime_nsec;
    int64_t reserved[3];
};
static_assert(sizeof(struct linux_stat) == 144, "struct stat layout");

enum file_kind {
    FILE_INITRD = 1,     /* a regular file of the initrd */
    FILE_DIR = 2,        /* an initrd directory (open for stat only) */
    FILE_PIPE_READ = 3,
    FILE_PIPE_WRITE = 4,
    FILE_HOST = 5,       /* the host's stdin, stdout or stderr */
};

struct pipe;

struct file {
    struct vm_object object; /* first: regions map the file through it */
    uint32_t refs;
    enum file_kind kind;
    uint32_t status_flags;   /* O_ACCMODE, O_APPEND, O_NONBLOCK */
    uint64_t offset;
    const struct initrd_entry *entry; /* FILE_INITRD, FILE_DIR */
    struct pipe *pipe;                /* FILE_PIPE_* */
    enum hostio_stream stream;        /* FILE_HOST */
};

/* Opens an absolute, normalized path; *error gets -ENOENT, -EACCES (a write
 * to the read-only initrd), -EISDIR, -ENOTDIR or -ENOMEM on NULL. */
struct file *file_open(const char *path, uint32_t flags, int *error);

/* A file for one of the host's streams (NULL if no memory). */
struct file *file_host(enum hostio_stream stream, uint32_t flags);

/* Both ends of a new pipe; -ENOMEM (nothing allocated) or 0. */
int file_pipe(struct file **read_end, struct file **write_end, uint32_t flags);

void file_get(struct file *f);
/* Drops a reference; the last one closes the file (a pipe end wakes the
 * other side). */
void file_put(struct file *f);

/* Reads at most n bytes into user memory at buf. Returns the count, 0 at
 * the end, -EAGAIN (an empty pipe with writers), -EBADF, -EFAULT... */
int64_t file_read(struct file *f, vaddr_t buf, size_t n);

/* Writes at most n bytes from user memory. Returns the count (a pipe may
 * take part: at least one byte, all of a write <= PIPE_BUF), -EAGAIN (no
 * room), -EPIPE (no reader left), -EBADF, -EFAULT... */
int64_t file_write(struct file *f, vaddr_t buf, size_t n);

/* lseek: the new offset, or -ESPIPE (pipes, streams), -EINVAL. */
int64_t file_seek(struct file *f, int64_t offset, int whence);

void file_stat(const struct file *f, struct linux_stat *st);

/* stat of a path without opening it: 0 or -ENOENT. */
int file_stat_path(const char *path, struct linux_stat *st);

/* What a reader or writer blocked on f sleeps on (NULL: never blocks). */
const void *file_wait_channel(const struct file *f);

/* Installs what wakes sleepers on a channel (proc/sched.c's wakeup). */
void file_set_wakeup(void (*wake)(const void *channel));

/* Makes path absolute and canonical ("." and ".." and repeated '/'
 * resolved against "/"); -ENAMETOOLONG if it does not fit in out. */
int path_normalize(const char *path, char *out, size_t size);

/* Live struct file and pipe objects (leak checks). */
size_t file_live_count(void);

#endif
