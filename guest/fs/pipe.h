/*
 * pipe.h - pipes: a bounded byte queue between a read end and a write
 * end; private to fs/ (file.c makes the ends).
 *
 * Owns: the queue (PIPE_CAPACITY bytes from the heap), the number of open
 * ends of each kind, and the POSIX rules: a read returns what is there
 * (0 once no writer is left), a write of at most PIPE_BUF bytes goes in
 * whole or not at all, a larger one in pieces, and a write with no reader
 * left fails with -EPIPE.
 * Does not own: blocking (-EAGAIN tells the caller to wait) or waking
 * (file.c calls the wakeup hook after every change).
 */
#ifndef PIPE_H
#define PIPE_H

#include "lib/types.h"

struct pipe;

/* A pipe with one reader and one writer, or NULL if no memory. */
struct pipe *pipe_create(void);

/* One end fewer; the pipe is freed when both kinds reach zero. Returns
 * true if it was freed. */
enum pipe_end {
    PIPE_READER = 0,
    PIPE_WRITER = 1,
};
bool pipe_close(struct pipe *p, enum pipe_end end);
void pipe_open(struct pipe *p, enum pipe_end end);

int64_t pipe_read(struct pipe *p, vaddr_t buf, size_t n);
int64_t pipe_write(struct pipe *p, vaddr_t buf, size_t n);

/* Bytes queued now. */
size_t pipe_queued(const struct pipe *p);

#endif
