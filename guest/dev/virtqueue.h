/*
 * virtqueue.h - a split virtqueue from the driver's side (virtio v1.2, 2.7
 * "Split Virtqueues").
 *
 * Owns: one queue's three areas in one physically contiguous, zeroed frame
 * (the descriptor table, the available ring, the used ring), the free list
 * of descriptors, making chains available and taking back used ones.
 * Does not own: telling the device where the queue is or notifying it
 * (virtio_mmio.c), what a chain means (the device driver).
 *
 * The layout in the frame, for a queue of size entries (a power of two,
 * at most VIRTQ_MAX_SIZE so that everything fits in 4 KiB):
 *   0                      descriptors, 16 bytes each (16-byte aligned)
 *   16 * size              available ring: flags, idx, ring[size], used_event
 *   align4(that + 6 + 2*size)  used ring: flags, idx, {id, len}[size], avail_event
 * Not thread-safe: callers serialise (the block driver submits with
 * interrupts off and reaps in its interrupt handler).
 */
#ifndef VIRTQUEUE_H
#define VIRTQUEUE_H

#include "lib/types.h"

#define VIRTQ_MAX_SIZE 128
#define VIRTQ_DESC_F_NEXT 1
#define VIRTQ_DESC_F_WRITE 2

struct virtq_desc {
    uint64_t addr;
    uint32_t len;
    uint16_t flags;
    uint16_t next;
};
static_assert(sizeof(struct virtq_desc) == 16, "virtq_desc layout");

struct virtq_avail {
    uint16_t flags;
    uint16_t idx;
    uint16_t ring[];
};

struct virtq_used_elem {
    uint32_t id;
    uint32_t len;
};

struct virtq_used {
    uint16_t flags;
    uint16_t idx;
    struct virtq_used_elem ring[];
};

struct virtqueue {
    uint16_t size;
    volatile struct virtq_desc *desc;
    volatile struct virtq_avail *avail;
    volatile struct virtq_used *used;
    paddr_t frame;             /* the areas' frame; desc at frame, ... */
    paddr_t avail_pa, used_pa;
    uint16_t free_head;        /* first free descriptor; chained through next */
    uint16_t free_count;
    uint16_t last_used;        /* the next used-ring entry to take */
};

/* One buffer of a chain: physical address, length, and whether the device
 * writes it (device-readable buffers come first in a chain). */
struct virtq_buf {
    paddr_t pa;
    uint32_t len;
    bool device_writes;
};

enum virtq_result {
    VIRTQ_OK = 0,
    VIRTQ_NO_MEMORY = -1, /* no frame for the areas */
    VIRTQ_FULL = -2,      /* fewer free descriptors than the chain needs */
    VIRTQ_BAD_SIZE = -3,
};

/* Sets up q with size entries (a power of two up to VIRTQ_MAX_SIZE) in a
 * new zeroed frame. */
int virtq_init(struct virtqueue *q, uint16_t size);

/* Frees the areas' frame (the device must be reset first). */
void virtq_destroy(struct virtqueue *q);

/*
 * Puts n buffers in a chain and makes it available (available index
 * moved past it). *head gets the chain's first descriptor, which the used
 * ring will name. VIRTQ_FULL leaves the queue unchanged. The caller
 * notifies the device.
 */
int virtq_add(struct virtqueue *q, const struct virtq_buf *bufs, size_t n, uint16_t *head);

/*
 * Takes the next used chain, if any: true with its head and the bytes the
 * device wrote, its descriptors free again; false when none is left.
 */
bool virtq_take_used(struct virtqueue *q, uint16_t *head, uint32_t *written);

#endif
