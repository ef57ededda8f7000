/*
 * file.c - open files (see file.h).
 *
 * Owns: creating and dropping struct file, dispatching each operation on
 * the file's kind, stat's view of every kind, and initrd files as VM
 * objects (a region holds a reference on the file it maps).
 * Does not own: the pipe queue (pipe.c), the archive (initrd.c), the
 * host channel (dev/hostio.c).
 */
#include "fs/file.h"

#include "fs/pipe.h"
#include "heap/heap.h"
#include "lib/errno.h"
#include "lib/panic.h"
#include "lib/string.h"
#include "mm/usercopy.h"

#define DEV_INITRD 1
#define DEV_PIPE 12
#define DEV_HOST 5

static void (*wakeup_hook)(const void *channel);
static size_t live_files;

void file_set_wakeup(void (*wake)(const void *channel))
{
    wakeup_hook = wake;
}

static void wake(const void *channel)
{
    if (wakeup_hook != NULL && channel != NULL)
        wakeup_hook(channel);
}

size_t file_live_count(void)
{
    return live_files;
}

/* ---- Files as VM objects ------------------------------------------------------ */

static struct file *of_object(const struct vm_object *o)
{
    return (struct file *)o;
}

static void object_read(struct vm_object *o, uint64_t offset, void *dst, size_t n)
{
    const struct initrd_entry *e = of_object(o)->entry;
    uint64_t have = offset < e->size ? e->size - offset : 0;

    if (have >= PAGE_SIZE && n == PAGE_SIZE) {
        page_copy(dst, e->data + offset);
        return;
    }
    if (have > n)
        have = n;
    memcpy(dst, e->data + offset, have);
    memset((uint8_t *)dst + have, 0, n - have);
}

static void object_get(struct vm_object *o)
{
    file_get(of_object(o));
}

static void object_put(struct vm_object *o)
{
    file_put(of_object(o));
}

static const char *object_name(const struct vm_object *o)
{
    return of_object(o)->entry->path;
}

static uint64_t object_size(const struct vm_object *o)
{
    return of_object(o)->entry->size;
}

static const struct vm_object_ops file_object_ops = {
    .read = object_read,
    .get = object_get,
    .put = object_put,
    .name = object_name,
    .size = object_size,
};

/* ---- Making and dropping files --------------------------------------------------- */

static struct file *file_new(enum file_kind kind, uint32_t flags)
{
    struct file *f = kcalloc(1, sizeof(*f));

    if (f == NULL)
        return NULL;
    f->object.ops = &file_object_ops;
    f->refs = 1;
    f->kind = kind;
    f->status_flags = flags & O_STATUS_FLAGS;
    live_files++;
    return f;
}

struct file *file_open(const char *path, uint32_t flags, int *error)
{
    const struct initrd_entry *e = initrd_lookup(path);
    struct file *f;

    if (e == NULL) {
        *error = (flags & O_CREAT) ? -EROFS : -ENOENT;
        return NULL;
    }
    if ((flags & O_CREAT) && (flags & O_EXCL)) {
        *error = -EEXIST;
        return NULL;
    }
    if ((flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC)) {
        *error = e->type == INITRD_DIR ? -EISDIR : -EROFS;
        return NULL;
    }
    if ((flags & O_DIRECTORY) && e->type != INITRD_DIR) {
        *error = -ENOTDIR;
        return NULL;
    }
    f = file_new(e->type == INITRD_DIR ? FILE_DIR : FILE_INITRD, flags);
    if (f == NULL) {
        *error = -ENOMEM;
        return NULL;
    }
    f->entry = e;
    return f;
}

struct file *file_host(enum hostio_stream stream, uint32_t flags)
{
    struct file *f = file_new(FILE_HOST, flags);

    if (f != NULL)
        f->stream = stream;
    return f;
}

int file_pipe(struct file **read_end, struct file **write_end, uint32_t flags)
{
    struct pipe *p = pipe_create();
    struct file *r = file_new(FILE_PIPE_READ, O_RDONLY | (flags & O_NONBLOCK));
    struct file *w = file_new(FILE_PIPE_WRITE, O_WRONLY | (flags & O_NONBLOCK));

    if (p == NULL || r == NULL || w == NULL) {
        if (p != NULL) {
            pipe_close(p, PIPE_READER);
            pipe_close(p, PIPE_WRITER);
        }
        if (r != NULL) {
            kfree(r);
            live_files--;
        }
        if (w != NULL) {
            kfree(w);
            live_files--;
        }
        return -ENOMEM;
    }
    r->pipe = w->pipe = p;
    *read_end = r;
    *write_end = w;
    return 0;
}

void file_get(struct file *f)
{
    if (f->refs == 0)
        panic("file_get: a closed file");
    f->refs++;
}

void file_put(struct file *f)
{
    if (f->refs == 0)
        panic("file_put: a closed file");
    if (--f->refs != 0)
        return;
    if (f->kind == FILE_PIPE_READ || f->kind == FILE_PIPE_WRITE) {
        struct pipe *p = f->pipe;

        if (!pipe_close(p, f->kind == FILE_PIPE_READ ? PIPE_READER : PIPE_WRITER))
            wake(p); /* the other side sees EOF or EPIPE */
    }
    live_files--;
    kfree(f);
}

/* ---- Operations ---------------------------------------------------------------------- */

static bool can_read(const struct file *f)
{
    return (f->status_flags & O_ACCMODE) != O_WRONLY;
}

static bool can_write(const struct file *f)
{
    return (f->status_flags & O_ACCMODE) != O_RDONLY;
}

static int64_t host_read(struct file *f, vaddr_t buf, size_t n)
{
    int64_t got = hostio_read(f->stream, n < HOSTIO_CHUNK ? n : HOSTIO_CHUNK);

    if (got > 0 && copy_to_user(buf, hostio_buffer(), (size_t)got) != 0)
        return -EFAULT;
    return got;
}

static int64_t host_write(struct file *f, vaddr_t buf, size_t n)
{
    size_t done = 0;

    while (done < n) {
        size_t chunk = n - done < HOSTIO_CHUNK ? n - done : HOSTIO_CHUNK;
        int64_t put;

        if (copy_from_user(hostio_buffer(), buf + done, chunk) != 0)
            return done > 0 ? (int64_t)done : -EFAULT;
        put = hostio_write(f->stream, chunk);
        if (put < 0)
            return done > 0 ? (int64_t)done : put;
        done += (size_t)put;
        if ((size_t)put < chunk)
            break;
    }
    return (int64_t)done;
}

int64_t file_read(struct file *f, vaddr_t buf, size_t n)
{
    int64_t got;

    if (!can_read(f))
        return -EBADF;
    switch (f->kind) {
    case FILE_INITRD: {
        uint64_t have = f->offset < f->entry->size ? f->entry->size - f->offset : 0;

        if (have > n)
            have = n;
        if (copy_to_user(buf, f->entry->data + f->offset, have) != 0)
            return -EFAULT;
        f->offset += have;
        return (int64_t)have;
    }
    case FILE_DIR:
        return -EISDIR;
    case FILE_PIPE_READ:
        got = pipe_read(f->pipe, buf, n);
        if (got > 0)
            wake(f->pipe); /* room for writers */
        return got;
    case FILE_HOST:
        return host_read(f, buf, n);
    default:
        return -EBADF;
    }
}

int64_t file_write(struct file *f, vaddr_t buf, size_t n)
{
    int64_t put;

    if (!can_write(f))
        return -EBADF;
    switch (f->kind) {
    case FILE_PIPE_WRITE:
        put = pipe_write(f->pipe, buf, n);
        if (put > 0)
            wake(f->pipe); /* data for readers */
        return put;
    case FILE_HOST:
        return host_write(f, buf, n);
    default:
        return -EBADF;
    }
}

int64_t file_seek(struct file *f, int64_t offset, int whence)
{
    int64_t base;

    if (f->kind != FILE_INITRD && f->kind != FILE_DIR)
        return -ESPIPE;
    switch (whence) {
    case SEEK_SET:
        base = 0;
        break;
    case SEEK_CUR:
        base = (int64_t)f->offset;
        break;
    case SEEK_END:
        base = (int64_t)f->entry->size;
        break;
    default:
        return -EINVAL;
    }
    if (base + offset < 0)
        return -EINVAL;
    f->offset = (uint64_t)(base + offset);
    return (int64_t)f->offset;
}

/* A stable inode number from the path (FNV-1a). */
static uint64_t inode_of(const char *path)
{
    uint64_t h = 0xcbf29ce484222325ULL;

    for (; *path != '\0'; path++)
        h = (h ^ (uint8_t)*path) * 0x100000001b3ULL;
    return h & 0xffffffffULL;
}

static void stat_entry(const struct initrd_entry *e, struct linux_stat *st)
{
    memset(st, 0, sizeof(*st));
    st->st_dev = DEV_INITRD;
    st->st_ino = inode_of(e->path);
    st->st_nlink = e->type == INITRD_DIR ? 2 : 1;
    st->st_mode = (e->type == INITRD_DIR ? S_IFDIR : S_IFREG) | e->mode;
    st->st_size = (int64_t)e->size;
    st->st_blksize = PAGE_SIZE;
    st->st_blocks = (int64_t)((e->size + 511) / 512);
}

void file_stat(const struct file *f, struct linux_stat *st)
{
    if (f->kind == FILE_INITRD || f->kind == FILE_DIR) {
        stat_entry(f->entry, st);
        return;
    }
    memset(st, 0, sizeof(*st));
    st->st_nlink = 1;
    st->st_blksize = PAGE_SIZE;
    st->st_dev = f->kind == FILE_HOST ? DEV_HOST : DEV_PIPE;
    st->st_ino = f->kind == FILE_HOST ? (uint64_t)f->stream + 1 : ((vaddr_t)f->pipe >> 4) & 0xffffffff;
    st->st_mode = S_IFIFO | 0600;
}

int file_stat_path(const char *path, struct linux_stat *st)
{
    const struct initrd_entry *e = initrd_lookup(path);

    if (e == NULL)
        return -ENOENT;
    stat_entry(e, st);
    return 0;
}

const void *file_wait_channel(const struct file *f)
{
    return f->kind == FILE_PIPE_READ || f->kind == FILE_PIPE_WRITE ? f->pipe : NULL;
}

/* ---- Paths ------------------------------------------------------------------------------ */

int path_normalize(const char *path, char *out, size_t size)
{
    size_t n = 0;

    if (size < 2)
        return -ENAMETOOLONG;
    out[n++] = '/';
    while (*path != '\0') {
        const char *part;
        size_t len = 0;

        while (*path == '/')
            path++;
        part = path;
        while (part[len] != '\0' && part[len] != '/')
            len++;
        path += len;
        if (len == 0 || (len == 1 && part[0] == '.'))
            continue;
        if (len == 2 && part[0] == '.' && part[1] == '.') {
            while (n > 1 && out[n - 1] != '/')
                n--;
            if (n > 1)
                n--;
            continue;
        }
        if (n + (n > 1) + len + 1 > size)
            return -ENAMETOOLONG;
        if (n > 1)
            out[n++] = '/';
        memcpy(out + n, part, len);
        n += len;
    }
    out[n] = '\0';
    return 0;
}
