/*
 * fdtable.c - file descriptor tables (see fdtable.h).
 *
 * Owns: the slots and their flags. Does not own: the files.
 */
#include "fs/fdtable.h"

#include "heap/heap.h"
#include "lib/errno.h"
#include "lib/string.h"

struct fdtable *fdtable_create(void)
{
    return kcalloc(1, sizeof(struct fdtable));
}

struct fdtable *fdtable_clone(const struct fdtable *t)
{
    struct fdtable *copy = kmalloc(sizeof(*copy));

    if (copy == NULL)
        return NULL;
    memcpy(copy, t, sizeof(*copy));
    for (int fd = 0; fd < FD_MAX; fd++) {
        if (copy->file[fd] != NULL)
            file_get(copy->file[fd]);
    }
    return copy;
}

void fdtable_destroy(struct fdtable *t)
{
    for (int fd = 0; fd < FD_MAX; fd++)
        fd_close(t, fd);
    kfree(t);
}

struct file *fd_file(const struct fdtable *t, int fd)
{
    return fd >= 0 && fd < FD_MAX ? t->file[fd] : NULL;
}

int fd_install(struct fdtable *t, struct file *f, int min, enum fd_flags flags)
{
    for (int fd = min < 0 ? 0 : min; fd < FD_MAX; fd++) {
        if (t->file[fd] == NULL) {
            t->file[fd] = f;
            t->flags[fd] = (uint8_t)flags;
            return fd;
        }
    }
    return -EMFILE;
}

void fd_install_at(struct fdtable *t, int fd, struct file *f, enum fd_flags flags)
{
    struct file *old = t->file[fd];

    t->file[fd] = f;
    t->flags[fd] = (uint8_t)flags;
    if (old != NULL)
        file_put(old);
}

int fd_close(struct fdtable *t, int fd)
{
    struct file *f = fd_file(t, fd);

    if (f == NULL)
        return -EBADF;
    t->file[fd] = NULL;
    t->flags[fd] = FD_KEEP_ON_EXEC;
    file_put(f);
    return 0;
}

void fd_close_on_exec(struct fdtable *t)
{
    for (int fd = 0; fd < FD_MAX; fd++) {
        if (t->file[fd] != NULL && t->flags[fd] == FD_CLOSE_ON_EXEC)
            fd_close(t, fd);
    }
}
