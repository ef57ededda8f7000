/*
 * virtqueue.c - split virtqueue rings, the driver's half (virtio v1.2,
 * 2.7.13 "Supplying Buffers to The Device", 2.7.14 "Receiving Used Buffers
 * From The Device").
 *
 * Owns: the areas' frame and the descriptor free list.
 * Does not own: the device, notifications, what the chains carry.
 */
#include "dev/virtqueue.h"

#include "lib/panic.h"
#include "lib/string.h"
#include "mm/pmm.h"

static size_t avail_offset(uint16_t size)
{
    return sizeof(struct virtq_desc) * size;
}

static size_t used_offset(uint16_t size)
{
    return (avail_offset(size) + 6 + 2u * size + 3) & ~(size_t)3;
}

static_assert(((sizeof(struct virtq_desc) * VIRTQ_MAX_SIZE + 6 + 2 * VIRTQ_MAX_SIZE + 3) & ~3) +
                  6 + sizeof(struct virtq_used_elem) * VIRTQ_MAX_SIZE <=
              PAGE_SIZE, "a virtqueue of VIRTQ_MAX_SIZE fits in one frame");

int virtq_init(struct virtqueue *q, uint16_t size)
{
    paddr_t frame;
    uint8_t *base;

    if (size == 0 || size > VIRTQ_MAX_SIZE || (size & (size - 1)) != 0)
        return VIRTQ_BAD_SIZE;
    frame = pmm_alloc();
    if (frame == 0)
        return VIRTQ_NO_MEMORY;
    base = phys_to_virt(frame);
    memset(base, 0, PAGE_SIZE);
    *q = (struct virtqueue){
        .size = size,
        .desc = (volatile struct virtq_desc *)base,
        .avail = (volatile struct virtq_avail *)(base + avail_offset(size)),
        .used = (volatile struct virtq_used *)(base + used_offset(size)),
        .frame = frame,
        .avail_pa = frame + avail_offset(size),
        .used_pa = frame + used_offset(size),
        .free_head = 0,
        .free_count = size,
        .last_used = 0,
    };
    for (uint16_t i = 0; i < size; i++)
        q->desc[i].next = (uint16_t)(i + 1);
    return VIRTQ_OK;
}

void virtq_destroy(struct virtqueue *q)
{
    if (q->frame != 0)
        pmm_free(q->frame);
    *q = (struct virtqueue){0};
}

int virtq_add(struct virtqueue *q, const struct virtq_buf *bufs, size_t n, uint16_t *head)
{
    uint16_t first = q->free_head, index = first;

    if (n == 0 || n > q->free_count)
        return VIRTQ_FULL;
    for (size_t i = 0; i < n; i++) {
        volatile struct virtq_desc *d = &q->desc[index];

        d->addr = bufs[i].pa;
        d->len = bufs[i].len;
        d->flags = (uint16_t)((bufs[i].device_writes ? VIRTQ_DESC_F_WRITE : 0) |
                              (i + 1 < n ? VIRTQ_DESC_F_NEXT : 0));
        index = d->next;
    }
    q->free_head = index;
    q->free_count = (uint16_t)(q->free_count - n);
    q->avail->ring[q->avail->idx % q->size] = first;
    __asm__ volatile("" : : : "memory"); /* the entry before the index (2.7.13.2) */
    q->avail->idx = (uint16_t)(q->avail->idx + 1);
    *head = first;
    return VIRTQ_OK;
}

/* Puts the chain at head back on the free list. */
static void free_chain(struct virtqueue *q, uint16_t head)
{
    uint16_t index = head, count = 1;

    while (q->desc[index].flags & VIRTQ_DESC_F_NEXT) {
        index = q->desc[index].next;
        if (++count > q->size)
            panic("virtq_take_used: the chain of head %u loops", head);
    }
    q->desc[index].next = q->free_head;
    q->free_head = head;
    q->free_count = (uint16_t)(q->free_count + count);
}

bool virtq_take_used(struct virtqueue *q, uint16_t *head, uint32_t *written)
{
    volatile struct virtq_used_elem *e;

    if (q->last_used == q->used->idx)
        return false;
    __asm__ volatile("" : : : "memory"); /* the index before the entry (2.7.14) */
    e = &q->used->ring[q->last_used % q->size];
    if (e->id >= q->size)
        panic("virtq_take_used: the device returned descriptor %u of %u", e->id, q->size);
    *head = (uint16_t)e->id;
    *written = e->len;
    q->last_used = (uint16_t)(q->last_used + 1);
    free_chain(q, *head);
    return true;
}
