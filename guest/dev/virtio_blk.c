/*
 * virtio_blk.c - the virtio block device, driver side (virtio v1.2, 5.2
 * "Block Device"; 5.2.6 "Device Operation").
 *
 * Owns: the one device the command line announces, its request queue
 * (queue 0), one frame of request headers and status bytes (slot i for the
 * chain whose head is descriptor i), the requests in flight, and the
 * completion interrupt, routed through the IOAPIC to BLK_VECTOR.
 * Does not own: the transport registers (virtio_mmio.c), the rings
 * (virtqueue.c), the meaning of the sectors (mm/swap.c).
 *
 * A request is a chain: a device-readable header {type, reserved,
 * sector}, the data buffers (device-writable for a read), and a
 * device-writable status byte. Completion comes only from the interrupt;
 * blk_wait halts (sti; hlt, so no interrupt slips between the check and
 * the halt) until it arrives.
 */
#include "dev/virtio_blk.h"

#include "arch/x86_64/idt.h"
#include "arch/x86_64/io.h"
#include "boot/cmdline.h"
#include "dev/apic.h"
#include "dev/serial.h"
#include "dev/virtio_mmio.h"
#include "dev/virtqueue.h"
#include "lib/panic.h"
#include "lib/string.h"
#include "mm/pmm.h"

#define VIRTIO_ID_BLOCK 2
#define BLK_VECTOR 0x40
#define BLK_QUEUE_SIZE 64
#define BLK_F_SEG_MAX (1ull << 2)
#define BLK_F_BLK_SIZE (1ull << 6)
#define BLK_F_FLUSH (1ull << 9)
#define BLK_CONFIG_CAPACITY 0
#define BLK_CONFIG_SEG_MAX 12
#define BLK_STATUS_OFFSET 2048 /* status bytes after the headers in the frame */
#define RFLAGS_IF (1ull << 9)

/* The device's status byte (5.2.6). */
enum { VIRTIO_BLK_S_OK = 0, VIRTIO_BLK_S_IOERR = 1, VIRTIO_BLK_S_UNSUPP = 2 };

struct blk_header {
    uint32_t type;
    uint32_t reserved;
    uint64_t sector;
};
static_assert(sizeof(struct blk_header) == 16, "virtio_blk_req header layout");
static_assert(BLK_QUEUE_SIZE * sizeof(struct blk_header) <= BLK_STATUS_OFFSET &&
                  BLK_STATUS_OFFSET + BLK_QUEUE_SIZE <= PAGE_SIZE,
              "headers and status bytes share one frame");

static struct {
    bool up;
    bool failed;
    struct virtio_mmio dev;
    struct virtqueue q;
    uint64_t features;
    uint64_t capacity;
    uint32_t seg_max;
    paddr_t slots;                       /* the header and status frame */
    struct blk_request *inflight[BLK_QUEUE_SIZE];
    size_t in_flight;
    struct blk_stats stats;
} blk;

static struct blk_header *header_of(uint16_t head)
{
    return (struct blk_header *)phys_to_virt(blk.slots) + head;
}

static volatile uint8_t *status_of(uint16_t head)
{
    return (volatile uint8_t *)phys_to_virt(blk.slots) + BLK_STATUS_OFFSET + head;
}

static int result_of(uint8_t status)
{
    switch (status) {
    case VIRTIO_BLK_S_OK:
        return BLK_OK;
    case VIRTIO_BLK_S_UNSUPP:
        return BLK_UNSUPPORTED;
    default:
        return BLK_EIO;
    }
}

/* Takes every used chain and completes its request. Interrupts off. */
static void reap(void)
{
    uint16_t head;
    uint32_t written;

    while (virtq_take_used(&blk.q, &head, &written)) {
        struct blk_request *r = blk.inflight[head];

        if (r == NULL)
            panic("virtio_blk: the device completed descriptor %u, which carries no request",
                  head);
        blk.inflight[head] = NULL;
        blk.in_flight--;
        r->status = result_of(*status_of(head));
        if (r->status != BLK_OK)
            blk.stats.errors++;
        r->done = true;
    }
}

static void interrupt(struct interrupt_frame *f)
{
    (void)f;
    blk.stats.interrupts++;
    if (virtio_mmio_ack_interrupt(&blk.dev) & VIRTIO_INT_CONFIG_CHANGE) {
        if (virtio_mmio_status(&blk.dev) & VIRTIO_STATUS_NEEDS_RESET)
            blk.failed = true;
    }
    reap();
    apic_eoi();
}

/* The queue, the slot frame and DRIVER_OK, after features were agreed. */
static int start_queue(void)
{
    uint32_t max = virtio_mmio_queue_max(&blk.dev, 0);
    uint16_t size = BLK_QUEUE_SIZE;

    if (max < 4)
        return VIRTIO_NO_QUEUE;
    while (size > max)
        size /= 2;
    if (virtq_init(&blk.q, size) != VIRTQ_OK)
        return VIRTIO_NO_QUEUE;
    blk.slots = pmm_alloc();
    if (blk.slots == 0) {
        virtq_destroy(&blk.q);
        return VIRTIO_NO_QUEUE;
    }
    memset(phys_to_virt(blk.slots), 0, PAGE_SIZE);
    return virtio_mmio_queue(&blk.dev, 0, size, blk.q.frame, blk.q.avail_pa, blk.q.used_pa);
}

int blk_init(void)
{
    char word[64];
    paddr_t base;
    uint64_t window;
    uint8_t irq;
    int status;

    if (blk.up)
        return BLK_OK;
    if (cmdline_get("virtio_mmio.device", word, sizeof(word)) < 0)
        return BLK_NO_DEVICE;
    status = virtio_mmio_parse(word, &base, &window, &irq);
    if (status == VIRTIO_OK)
        status = virtio_mmio_open(&blk.dev, base, irq, VIRTIO_ID_BLOCK);
    if (status == VIRTIO_OK)
        status = virtio_mmio_negotiate(&blk.dev, VIRTIO_F_VERSION_1 | BLK_F_SEG_MAX |
                                                     BLK_F_BLK_SIZE | BLK_F_FLUSH,
                                       &blk.features);
    if (status == VIRTIO_OK)
        status = start_queue();
    if (status == VIRTIO_OK && apic_route_isa(irq, BLK_VECTOR) != APIC_OK)
        status = VIRTIO_NO_QUEUE;
    if (status != VIRTIO_OK) {
        kreport("virtio_blk: the device announced as %s would not start (%d)\n", word, status);
        return BLK_NO_DEVICE;
    }
    idt_set_handler(BLK_VECTOR, interrupt);
    blk.capacity = virtio_mmio_config64(&blk.dev, BLK_CONFIG_CAPACITY);
    blk.seg_max = (blk.features & BLK_F_SEG_MAX)
                      ? virtio_mmio_config32(&blk.dev, BLK_CONFIG_SEG_MAX) : 1;
    virtio_mmio_driver_ok(&blk.dev);
    blk.up = true;
    kprintf("virtio_blk: %lu sectors at 0x%lx, IRQ %u\n", blk.capacity, base, irq);
    return BLK_OK;
}

bool blk_present(void)
{
    return blk.up;
}

uint64_t blk_capacity(void)
{
    return blk.capacity;
}

/* Whole sectors in bounds, a segment count the device takes. */
static bool well_formed(const struct blk_request *r)
{
    uint64_t bytes = 0;

    if (r->op == BLK_FLUSH)
        return r->nsegs == 0 && (blk.features & BLK_F_FLUSH);
    if (r->nsegs == 0 || r->nsegs > BLK_MAX_SEGMENTS || r->nsegs > blk.seg_max)
        return false;
    for (size_t i = 0; i < r->nsegs; i++) {
        if (r->seg[i].len == 0)
            return false;
        bytes += r->seg[i].len;
    }
    if (r->op == BLK_GET_ID)
        return bytes == BLK_ID_BYTES;
    return bytes % BLK_SECTOR == 0 && r->sector + bytes / BLK_SECTOR <= blk.capacity &&
           r->sector + bytes / BLK_SECTOR >= r->sector;
}

int blk_submit(struct blk_request *r)
{
    struct virtq_buf bufs[BLK_MAX_SEGMENTS + 2];
    uint64_t flags = read_rflags();
    uint16_t head;
    int status;

    r->done = false;
    if (!blk.up)
        return BLK_NO_DEVICE;
    if (blk.failed)
        return BLK_DEVICE_FAILED;
    if (!well_formed(r))
        return BLK_BAD_REQUEST;
    cli();
    head = blk.q.free_head;
    if (blk.q.free_count < r->nsegs + 2) {
        status = BLK_BUSY;
    } else {
        *header_of(head) = (struct blk_header){.type = r->op, .reserved = 0,
                                               .sector = r->sector};
        *status_of(head) = 0xff;
        bufs[0] = (struct virtq_buf){virt_to_phys(header_of(head)), sizeof(struct blk_header),
                                     false};
        for (size_t i = 0; i < r->nsegs; i++)
            bufs[i + 1] = (struct virtq_buf){r->seg[i].pa, r->seg[i].len, r->op != BLK_WRITE};
        bufs[r->nsegs + 1] = (struct virtq_buf){virt_to_phys((void *)status_of(head)), 1, true};
        if (virtq_add(&blk.q, bufs, r->nsegs + 2, &head) != VIRTQ_OK)
            panic("blk_submit: the queue refused a chain it had room for");
        r->head = head;
        blk.inflight[head] = r;
        blk.in_flight++;
        blk.stats.requests++;
        virtio_mmio_notify(&blk.dev, 0);
        status = BLK_OK;
    }
    if (flags & RFLAGS_IF)
        sti();
    return status;
}

/* Halts with interrupts on until *done; leaves IF as it found it. */
static void halt_until(volatile bool *done)
{
    uint64_t flags = read_rflags();

    cli();
    while (!*done && !blk.failed)
        __asm__ volatile("sti; hlt; cli" : : : "memory");
    if (flags & RFLAGS_IF)
        sti();
}

static uint64_t data_bytes(const struct blk_request *r)
{
    uint64_t bytes = 0;

    for (size_t i = 0; i < r->nsegs; i++)
        bytes += r->seg[i].len;
    return bytes;
}

int blk_wait(struct blk_request *r)
{
    halt_until(&r->done);
    if (!r->done)
        return BLK_DEVICE_FAILED;
    if (r->status == BLK_OK && r->op == BLK_READ)
        blk.stats.bytes_read += data_bytes(r);
    if (r->status == BLK_OK && r->op == BLK_WRITE)
        blk.stats.bytes_written += data_bytes(r);
    return r->status;
}

void blk_wait_any(void)
{
    uint64_t flags = read_rflags();
    size_t before;

    cli();
    before = blk.stats.interrupts;
    while (blk.in_flight > 0 && blk.stats.interrupts == before && !blk.failed)
        __asm__ volatile("sti; hlt; cli" : : : "memory");
    if (flags & RFLAGS_IF)
        sti();
}

size_t blk_in_flight(void)
{
    return blk.in_flight;
}

int blk_io(enum blk_op op, uint64_t sector, paddr_t pa, uint32_t bytes)
{
    struct blk_request r = {.op = op, .sector = sector, .nsegs = 1};
    int status;

    r.seg[0] = (struct blk_segment){pa, bytes};
    status = blk_submit(&r);
    return status == BLK_OK ? blk_wait(&r) : status;
}

int blk_get_id(char buf[BLK_ID_BYTES + 1])
{
    paddr_t frame = pmm_alloc();
    int status;

    if (frame == 0)
        return BLK_BAD_REQUEST;
    status = blk_io(BLK_GET_ID, 0, frame, BLK_ID_BYTES);
    memcpy(buf, phys_to_virt(frame), BLK_ID_BYTES);
    buf[BLK_ID_BYTES] = '\0';
    pmm_free(frame);
    return status;
}

const struct blk_stats *blk_stats(void)
{
    return &blk.stats;
}

const char *blk_result_name(int result)
{
    switch (result) {
    case BLK_OK:
        return "ok";
    case BLK_EIO:
        return "I/O error";
    case BLK_UNSUPPORTED:
        return "unsupported";
    case BLK_NO_DEVICE:
        return "no device";
    case BLK_BAD_REQUEST:
        return "bad request";
    case BLK_BUSY:
        return "queue full";
    case BLK_DEVICE_FAILED:
        return "device failed";
    }
    return "unknown";
}
