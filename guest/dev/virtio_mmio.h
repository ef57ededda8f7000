/*
 * virtio_mmio.h - the driver's side of the virtio-mmio transport, version 2
 * (OASIS virtio v1.2, 4.2 "Virtio Over MMIO"; 3.1.1 the initialisation
 * sequence).
 *
 * Owns: finding a device from Linux's command-line syntax
 * (virtio_mmio.device=SIZE@ADDR:IRQ), mapping its registers, the device
 * status sequence, feature negotiation, handing the device a queue, the
 * notify and the interrupt acknowledge, and reading its configuration.
 * Does not own: the rings (virtqueue.c), what a device does (virtio_blk.c),
 * the interrupt line (apic.c routes it).
 *
 * Every register is read and written 32 bits at a time, as the transport
 * requires. Not thread-safe; the interrupt handler may call only
 * virtio_mmio_ack_interrupt and virtio_mmio_status.
 */
#ifndef VIRTIO_MMIO_H
#define VIRTIO_MMIO_H

#include "lib/types.h"

/* Register offsets (4.2.2). */
enum virtio_mmio_register {
    VIRTIO_MMIO_MAGIC = 0x000,
    VIRTIO_MMIO_VERSION = 0x004,
    VIRTIO_MMIO_DEVICE_ID = 0x008,
    VIRTIO_MMIO_DEVICE_FEATURES = 0x010,
    VIRTIO_MMIO_DEVICE_FEATURES_SEL = 0x014,
    VIRTIO_MMIO_DRIVER_FEATURES = 0x020,
    VIRTIO_MMIO_DRIVER_FEATURES_SEL = 0x024,
    VIRTIO_MMIO_QUEUE_SEL = 0x030,
    VIRTIO_MMIO_QUEUE_NUM_MAX = 0x034,
    VIRTIO_MMIO_QUEUE_NUM = 0x038,
    VIRTIO_MMIO_QUEUE_READY = 0x044,
    VIRTIO_MMIO_QUEUE_NOTIFY = 0x050,
    VIRTIO_MMIO_INTERRUPT_STATUS = 0x060,
    VIRTIO_MMIO_INTERRUPT_ACK = 0x064,
    VIRTIO_MMIO_STATUS = 0x070,
    VIRTIO_MMIO_QUEUE_DESC = 0x080,   /* low half; high at +4 */
    VIRTIO_MMIO_QUEUE_DRIVER = 0x090,
    VIRTIO_MMIO_QUEUE_DEVICE = 0x0a0,
    VIRTIO_MMIO_CONFIG_GENERATION = 0x0fc,
    VIRTIO_MMIO_CONFIG = 0x100,
};

#define VIRTIO_MMIO_MAGIC_VALUE 0x74726976u /* "virt" */

/* Device status bits (2.1). */
enum virtio_status_bit {
    VIRTIO_STATUS_ACKNOWLEDGE = 1,
    VIRTIO_STATUS_DRIVER = 2,
    VIRTIO_STATUS_DRIVER_OK = 4,
    VIRTIO_STATUS_FEATURES_OK = 8,
    VIRTIO_STATUS_NEEDS_RESET = 64,
    VIRTIO_STATUS_FAILED = 128,
};

/* Interrupt status bits (4.2.2). */
#define VIRTIO_INT_USED_BUFFER 1u
#define VIRTIO_INT_CONFIG_CHANGE 2u

#define VIRTIO_F_VERSION_1 (1ull << 32)

enum virtio_result {
    VIRTIO_OK = 0,
    VIRTIO_BAD_ANNOUNCEMENT = -1, /* the command-line word does not parse */
    VIRTIO_NO_MEMORY = -2,        /* mapping the registers needed a page table */
    VIRTIO_NOT_VIRTIO = -3,       /* no "virt" magic, or not version 2 */
    VIRTIO_WRONG_DEVICE = -4,     /* another device type than asked for */
    VIRTIO_FEATURES_REFUSED = -5, /* FEATURES_OK did not stick */
    VIRTIO_NO_QUEUE = -6,         /* the queue does not exist or is too small */
};

struct virtio_mmio {
    volatile uint32_t *regs; /* the mapped window */
    paddr_t base;
    uint8_t irq;
    uint32_t device_id;
};

/*
 * Parses Linux's "SIZE@ADDR:IRQ" (SIZE a number with an optional K or M,
 * ADDR hex with 0x, IRQ decimal) into its parts. VIRTIO_OK or
 * VIRTIO_BAD_ANNOUNCEMENT; nothing is written on error.
 */
int virtio_mmio_parse(const char *text, paddr_t *base, uint64_t *size, uint8_t *irq);

/*
 * Maps the registers at base (one page, uncached, at its HHDM address),
 * checks the magic, the version and that the device is of type device_id,
 * resets it and sets ACKNOWLEDGE and DRIVER. *dev is filled on VIRTIO_OK.
 */
int virtio_mmio_open(struct virtio_mmio *dev, paddr_t base, uint8_t irq, uint32_t device_id);

/*
 * Accepts the features of wanted that the device offers (VERSION_1 must be
 * among them) and sets FEATURES_OK; *accepted gets what was agreed. On
 * VIRTIO_FEATURES_REFUSED the device is marked FAILED.
 */
int virtio_mmio_negotiate(struct virtio_mmio *dev, uint64_t wanted, uint64_t *accepted);

/* The largest size queue index may have (0: no such queue). */
uint32_t virtio_mmio_queue_max(struct virtio_mmio *dev, uint32_t index);

/* Gives queue index its size and the physical addresses of its three
 * areas, then sets it ready. VIRTIO_NO_QUEUE if size exceeds the maximum. */
int virtio_mmio_queue(struct virtio_mmio *dev, uint32_t index, uint16_t size, paddr_t desc,
                      paddr_t driver, paddr_t device);

/* DRIVER_OK: the device may now be used. */
void virtio_mmio_driver_ok(struct virtio_mmio *dev);

/* Marks the device FAILED: the driver gave up on it. */
void virtio_mmio_fail(struct virtio_mmio *dev);

/* Tells the device that queue index has new buffers. */
void virtio_mmio_notify(struct virtio_mmio *dev, uint32_t index);

/* Reads the interrupt status and acknowledges those bits; returns them. */
uint32_t virtio_mmio_ack_interrupt(struct virtio_mmio *dev);

uint32_t virtio_mmio_status(struct virtio_mmio *dev);

/* 32 and 64-bit fields of the device's configuration space at offset; a
 * 64-bit one is read as two halves, again while the generation changes. */
uint32_t virtio_mmio_config32(struct virtio_mmio *dev, uint32_t offset);
uint64_t virtio_mmio_config64(struct virtio_mmio *dev, uint32_t offset);

#endif
