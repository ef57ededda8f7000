/*
 * virtio_blk.h - the virtio block device (virtio v1.2, 5.2 "Block Device"):
 * the kernel's disk, used for swap.
 *
 * Owns: the one block device the command line announces
 * (virtio_mmio.device=SIZE@ADDR:IRQ), its request queue, the requests in
 * flight, the completion interrupt, and the device's counters.
 * Does not own: the transport (virtio_mmio.c), the rings (virtqueue.c),
 * the interrupt controllers (apic.c), what is stored where (mm/swap.c).
 *
 * Requests are asynchronous: blk_submit queues one and returns; the
 * device's interrupt completes it (its status set, then done); blk_wait
 * halts until then. Data buffers are physical (frames): up to
 * BLK_MAX_SEGMENTS pieces, each a whole number of sectors in total.
 * Callers must not touch a buffer until its request is done: the device
 * reads (write) or fills (read) it at completion time.
 * The driver is not reentrant: submit, wait and poll from thread context,
 * never from an interrupt handler. Interrupts must be deliverable when
 * blk_wait is called (it enables them while it halts).
 */
#ifndef VIRTIO_BLK_H
#define VIRTIO_BLK_H

#include "lib/types.h"

#define BLK_SECTOR 512
#define BLK_MAX_SEGMENTS 32
#define BLK_ID_BYTES 20

enum blk_op {
    BLK_READ = 0,
    BLK_WRITE = 1,
    BLK_FLUSH = 4,
    BLK_GET_ID = 8,
};

enum blk_result {
    BLK_OK = 0,
    BLK_EIO = -1,            /* the device reported an I/O error */
    BLK_UNSUPPORTED = -2,    /* the device does not do this request */
    BLK_NO_DEVICE = -3,      /* none announced, or it would not start */
    BLK_BAD_REQUEST = -4,    /* not whole sectors, too many segments, past the end */
    BLK_BUSY = -5,           /* the queue is full: wait for a completion, retry */
    BLK_DEVICE_FAILED = -6,  /* the device needs a reset (it saw a protocol breach) */
};

struct blk_segment {
    paddr_t pa;
    uint32_t len;
};

struct blk_request {
    /* Set by the caller. */
    enum blk_op op;
    uint64_t sector;
    size_t nsegs;
    struct blk_segment seg[BLK_MAX_SEGMENTS];
    /* Set by the driver: done becomes true once status is final. */
    volatile bool done;
    volatile int status;
    uint16_t head;
};

struct blk_stats {
    uint64_t requests;
    uint64_t bytes_read;
    uint64_t bytes_written;
    uint64_t interrupts;
    uint64_t errors;
};

/*
 * Finds the device on the command line and brings it up (features VERSION_1,
 * FLUSH, SEG_MAX, BLK_SIZE when offered; one queue). BLK_OK (also when it is
 * up already) or BLK_NO_DEVICE, having printed why.
 */
int blk_init(void);

bool blk_present(void);

/* Capacity in sectors. */
uint64_t blk_capacity(void);

/* Checks r and queues it (see the header comment). BLK_OK, BLK_BUSY,
 * BLK_BAD_REQUEST, BLK_NO_DEVICE or BLK_DEVICE_FAILED; on error r is not
 * queued and r->done stays false. */
int blk_submit(struct blk_request *r);

/* Halts until r (submitted) is done; returns r->status. */
int blk_wait(struct blk_request *r);

/* Halts until at least one request in flight completes (none: returns). */
void blk_wait_any(void);

/* Requests in flight now. */
size_t blk_in_flight(void);

/* A whole synchronous request of one contiguous buffer at pa. */
int blk_io(enum blk_op op, uint64_t sector, paddr_t pa, uint32_t bytes);

/* The device's 20-byte serial (get-id), NUL-terminated into buf[21]. */
int blk_get_id(char buf[BLK_ID_BYTES + 1]);

const struct blk_stats *blk_stats(void);

const char *blk_result_name(int result);

#endif
