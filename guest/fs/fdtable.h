/*
 * fdtable.h - file descriptor tables.
 *
 * Owns: a process's table of descriptors (each a reference on a struct
 * file, plus its close-on-exec flag), the lowest-free-number rule,
 * dup/dup2/close, the copy fork makes and the closing exec does.
 * Does not own: the files (fs/file.c) or which process holds the table.
 */
#ifndef FDTABLE_H
#define FDTABLE_H

#include "fs/file.h"

#define FD_MAX 256 /* RLIMIT_NOFILE, soft and hard */

enum fd_flags {
    FD_KEEP_ON_EXEC = 0,
    FD_CLOSE_ON_EXEC = 1, /* FD_CLOEXEC */
};

struct fdtable {
    struct file *file[FD_MAX];
    uint8_t flags[FD_MAX]; /* enum fd_flags */
};

/* An empty table, or NULL if no memory. */
struct fdtable *fdtable_create(void);

/* A copy sharing every open file (fork), or NULL if no memory. */
struct fdtable *fdtable_clone(const struct fdtable *t);

/* Closes every descriptor and frees the table. */
void fdtable_destroy(struct fdtable *t);

/* The file behind fd, or NULL for a bad or closed descriptor. */
struct file *fd_file(const struct fdtable *t, int fd);

/* Puts f (the caller's reference, which the table now owns) at the lowest
 * free descriptor >= min; returns it, or -EMFILE (the reference is then
 * still the caller's). */
int fd_install(struct fdtable *t, struct file *f, int min, enum fd_flags flags);

/* Puts f at fd, closing what was there (dup2); takes the reference. */
void fd_install_at(struct fdtable *t, int fd, struct file *f, enum fd_flags flags);

/* 0, or -EBADF. */
int fd_close(struct fdtable *t, int fd);

/* Closes the descriptors marked FD_CLOSE_ON_EXEC. */
void fd_close_on_exec(struct fdtable *t);

#endif
