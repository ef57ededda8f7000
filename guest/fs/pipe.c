/*
 * pipe.c - pipes (see pipe.h).
 *
 * Owns: the ring buffer (head: the next byte to read; count: bytes held)
 * and the copies between it and user memory, in at most two pieces each.
 * Does not own: the files at either end (file.c).
 */
#include "fs/pipe.h"

#include "fs/file.h"
#include "heap/heap.h"
#include "lib/errno.h"
#include "mm/usercopy.h"

struct pipe {
    uint8_t *buf;
    size_t head;
    size_t count;
    uint32_t readers;
    uint32_t writers;
};

struct pipe *pipe_create(void)
{
    struct pipe *p = kcalloc(1, sizeof(*p));

    if (p == NULL)
        return NULL;
    p->buf = kmalloc(PIPE_CAPACITY);
    if (p->buf == NULL) {
        kfree(p);
        return NULL;
    }
    p->readers = 1;
    p->writers = 1;
    return p;
}

void pipe_open(struct pipe *p, enum pipe_end end)
{
    if (end == PIPE_READER)
        p->readers++;
    else
        p->writers++;
}

bool pipe_close(struct pipe *p, enum pipe_end end)
{
    if (end == PIPE_READER)
        p->readers--;
    else
        p->writers--;
    if (p->readers != 0 || p->writers != 0)
        return false;
    kfree(p->buf);
    kfree(p);
    return true;
}

size_t pipe_queued(const struct pipe *p)
{
    return p->count;
}

int64_t pipe_read(struct pipe *p, vaddr_t buf, size_t n)
{
    size_t take = n < p->count ? n : p->count;
    size_t first = PIPE_CAPACITY - p->head;

    if (n == 0)
        return 0;
    if (p->count == 0)
        return p->writers == 0 ? 0 : -EAGAIN;
    if (first > take)
        first = take;
    if (copy_to_user(buf, p->buf + p->head, first) != 0 ||
        copy_to_user(buf + first, p->buf, take - first) != 0)
        return -EFAULT;
    p->head = (p->head + take) % PIPE_CAPACITY;
    p->count -= take;
    return (int64_t)take;
}

int64_t pipe_write(struct pipe *p, vaddr_t buf, size_t n)
{
    size_t room = PIPE_CAPACITY - p->count;
    size_t tail = (p->head + p->count) % PIPE_CAPACITY;
    size_t put, first;

    if (p->readers == 0)
        return -EPIPE;
    if (n == 0)
        return 0;
    if (room == 0 || (n <= PIPE_BUF && room < n))
        return -EAGAIN;
    put = n < room ? n : room;
    first = PIPE_CAPACITY - tail;
    if (first > put)
        first = put;
    if (copy_from_user(p->buf + tail, buf, first) != 0 ||
        copy_from_user(p->buf, buf + first, put - first) != 0)
        return -EFAULT;
    p->count += put;
    return (int64_t)put;
}
