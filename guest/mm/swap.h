/*
 * swap.h - swapping user pages to the block device: the swap area, swap
 * entries in not-present page-table entries, the swap cache, and page
 * replacement.
 *
 * Owns: the swap area on the disk (slot 0 a header, slots 1.. pages), the
 * use count of every slot, the swap cache (a slot's page still in a frame,
 * found instead of read again), the list of frames that may be evicted
 * with the (address space, address) that maps each, the replacement
 * policy (clock, fifo, random), reclaim between the watermarks, swap-in,
 * and the descriptor the monitor reads.
 * Does not own: the device (dev/virtio_blk.c), page tables (mm/paging.c),
 * regions and faults (mm/vmm.c calls in here), frame counts (mm/frames.c).
 *
 * A swap entry is a user leaf with P clear (the CPU ignores the rest):
 *
 *   bit  0      P = 0
 *   bit  1      SWAP_PTE_MARK: this not-present entry names a slot
 *   bits 12-43  the slot (1 .. slots-1; slot 0 holds the header)
 *
 * Slot s is sectors [s * 8, s * 8 + 8) of the disk. A slot's count is the
 * number of swap entries naming it plus one while the swap cache links it
 * to a frame; it is free at 0 and SWAP_SLOT_BAD after a failed write.
 *
 * Kernel memory (page tables, heap, kernel image) is never swapped: only
 * frames of mm/frames.c that one page-table entry maps, whose mapping was
 * recorded with swap_frame_mapped. Not thread-safe; never from an
 * interrupt handler (it waits for the disk).
 */
#ifndef SWAP_H
#define SWAP_H

#include "lib/types.h"

struct address_space;

#define SWAP_PTE_MARK ((uint64_t)1 << 1)
#define SWAP_SLOT_SHIFT 12
#define SWAP_SLOT_BITS 32
#define SWAP_SECTORS_PER_SLOT (PAGE_SIZE / 512)
#define SWAP_SLOT_BAD 0xffff
#define SWAP_MAX_COUNT 0xfff0

#define SWAP_MAGIC "EMUSWAP1"

/* Slot 0 of the area: what swap_init writes (mkswap's job in Linux). */
struct swap_header {
    char magic[8];      /* SWAP_MAGIC */
    uint32_t version;   /* 1 */
    uint32_t page_size; /* PAGE_SIZE */
    uint64_t slots;     /* slots in the area, the header's included */
};

static inline bool swap_is_entry(uint64_t e)
{
    return (e & 1) == 0 && (e & SWAP_PTE_MARK) != 0;
}

static inline uint64_t swap_entry(uint64_t slot)
{
    return (slot << SWAP_SLOT_SHIFT) | SWAP_PTE_MARK;
}

static inline uint64_t swap_slot_of(uint64_t e)
{
    return (e >> SWAP_SLOT_SHIFT) & ((1ull << SWAP_SLOT_BITS) - 1);
}

enum swap_policy {
    SWAP_POLICY_CLOCK = 0,  /* second chance on the Accessed bits */
    SWAP_POLICY_FIFO = 1,   /* the oldest mapping first, Accessed or not */
    SWAP_POLICY_RANDOM = 2, /* any evictable frame, from the kernel's random bytes */
};

/*
 * The global symbol swap_descriptor, for the monitor (little-endian, 152
 * bytes):
 *
 *   off  field          meaning
 *     0  magic          SWAP_DESCRIPTOR_MAGIC ("SWAP") once swap_init ran
 *     4  version        2
 *     8  pte_mark       SWAP_PTE_MARK
 *    16  slot_shift     SWAP_SLOT_SHIFT
 *    20  slot_bits      SWAP_SLOT_BITS
 *    24  slots          slots in the area (slot 0: the header)
 *    32  counts         kernel virtual address of uint16_t counts[slots]
 *    40  policy         enum swap_policy
 *    44  user_limit     the most user frames at once (0: the PMM's size)
 *    48  pages_out      pages written to a slot
 *    56  pages_in       pages read from a slot
 *    64  clean_drops    pages unmapped without a write (their slot was valid)
 *    72  cache_hits     swap-ins that found the page in the swap cache
 *    80  scans          frames the replacement policy looked at
 *    88  oom_kills      processes killed with neither RAM nor swap left
 *    96  bytes_written
 *   104  bytes_read
 *   112  io_errors      failed writes (slot marked bad) and reads (SIGBUS)
 *   120  sectors_per_slot
 *   128  readahead      pages read (and mapped) with a faulting one, counted in pages_in
 *   136  write_requests disk writes of pages (one per cluster of up to 32)
 *   144  read_requests  disk reads of pages (one per fault that read)
 */
#define SWAP_DESCRIPTOR_MAGIC 0x50415753u /* "SWAP" */
struct swap_descriptor {
    uint32_t magic;
    uint32_t version;
    uint64_t pte_mark;
    uint32_t slot_shift;
    uint32_t slot_bits;
    uint64_t slots;
    vaddr_t counts;
    uint32_t policy;
    uint32_t user_limit;
    uint64_t pages_out;
    uint64_t pages_in;
    uint64_t clean_drops;
    uint64_t cache_hits;
    uint64_t scans;
    uint64_t oom_kills;
    uint64_t bytes_written;
    uint64_t bytes_read;
    uint64_t io_errors;
    uint64_t sectors_per_slot;
    uint64_t readahead;
    uint64_t write_requests;
    uint64_t read_requests;
};
static_assert(sizeof(struct swap_descriptor) == 152, "swap_descriptor layout");
static_assert(offsetof(struct swap_descriptor, counts) == 32, "swap_descriptor counts");
static_assert(offsetof(struct swap_descriptor, pages_out) == 48, "swap_descriptor stats");
static_assert(offsetof(struct swap_descriptor, sectors_per_slot) == 120, "swap_descriptor");

extern struct swap_descriptor swap_descriptor;

/*
 * Once, after uframes_init and before the first process: reads
 * user_mem=SIZE (a limit on user frames, K/M suffix), swap_policy= and
 * swap_cluster=N (pages per write and per read, 1 to 32, default 32; 1
 * swaps page by page, no read-ahead) from the command line, brings up the disk if one is announced, writes the
 * area's header and allocates the slot counts and the frame list. Without
 * a disk only the limit applies. Panics if the tables do not fit.
 */
void swap_init(void);

bool swap_enabled(void);

/* Frames the user may hold (the limit, or every frame the PMM manages). */
size_t swap_user_limit(void);

/* Called by uframe_alloc before it takes a frame: reclaims down to the high
 * watermark if the user's frames reached the low one. */
void swap_reclaim_if_low(size_t user_frames);

/* Reclaims at least one frame now (the PMM ran dry); false if none could go. */
bool swap_reclaim_one(void);

/* The frame pa is now the page at va of as, mapped by one entry: it joins
 * the evictable frames (at the tail) or its record moves there. */
void swap_frame_mapped(paddr_t pa, struct address_space *as, vaddr_t va);

/* The frame pa's contents changed behind the D bit's back (a dirty entry's
 * page now mapped by a fresh entry: fork, mremap): its slot is no longer a
 * copy of it. */
void swap_frame_dirtied(paddr_t pa);

/* mm/frames.c: pa went back to the PMM. */
void swap_frame_freed(paddr_t pa);

/* as is going away: forget its frames' records. */
void swap_space_gone(struct address_space *as);

/* One more / one fewer swap entry names the slot of entry e. */
void swap_entry_dup(uint64_t e);
void swap_entry_free(uint64_t e);

/* Is e a swap entry naming a slot in use? */
bool swap_entry_valid(uint64_t e);

enum swap_in_result {
    SWAP_IN_OK = 0,
    SWAP_IN_NO_MEMORY = -1, /* no frame, even after reclaim */
    SWAP_IN_IO_ERROR = -2,  /* the read failed: the process gets SIGBUS */
    SWAP_IN_BAD_ENTRY = -3, /* the entry names no slot in use */
};

/*
 * Reads the page of the swap entry at va of as (a fault on it) into a
 * frame, or finds it in the swap cache, and maps it with flags_for's
 * rights. The entry's slot is kept linked to the frame (a later clean
 * eviction writes nothing) unless write says the page is about to change.
 * The same read brings in the next pages below limit (the end of va's
 * region) whose entries name the next slots, mapped too (read-ahead).
 * *pa_out gets the frame.
 */
int swap_in(struct address_space *as, vaddr_t va, vaddr_t limit, uint64_t entry, bool write,
            uint32_t (*flags_for)(const void *region, paddr_t pa), const void *region,
            paddr_t *pa_out);

/* One line of counts, for the kernel's exit report. */
void swap_report(void);

/* Slots in use now: holding a page, or retired after a failed write. */
uint64_t swap_slots_in_use(void);

#endif
