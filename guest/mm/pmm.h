/*
 * pmm.h - the physical memory manager: which 4 KiB frames of RAM are free.
 *
 * Owns: the kernel's copy of the Limine memory map, the set of frames it
 * manages (USABLE RAM from the start, BOOTLOADER_RECLAIMABLE RAM once
 * reclaimed), the free/used state of each of them, the counts, the HHDM
 * offset, and the descriptor an outside checker reads.
 * Does not own: virtual mappings (paging.c), when bootloader memory is
 * reclaimed (mm_init in paging.c decides), or what callers put in frames.
 *
 * Two interchangeable backends keep the free/used state: a bitmap
 * (pmm_bitmap.c) and a buddy allocator (pmm_buddy.c). pmm.c checks every
 * argument, keeps the counts and poisons freed frames; the backends only
 * keep their data structure. The kernel picks one with pmm=bitmap|buddy.
 *
 * Frame 0 is never handed out, so 0 can mean "no frame". Frames of any
 * other memory map type (RESERVED, ACPI, BAD_MEMORY, the kernel image,
 * the framebuffer...) are never touched. Frame contents are undefined on
 * allocation: callers that need zeroes clear the frame themselves. With
 * -DMM_DEBUG=1 every freed frame is filled with PMM_POISON.
 *
 * Not thread-safe: the kernel has one CPU and calls this with interrupts
 * in any state but never from an interrupt handler.
 */
#ifndef PMM_H
#define PMM_H

#include "lib/types.h"

#ifndef MM_DEBUG
#define MM_DEBUG 0
#endif

#define PMM_POISON 0xdeadbeefdeadbeefULL

enum pmm_kind {
    PMM_BITMAP = 1,
    PMM_BUDDY = 2,
};

/* ---- Allocation --------------------------------------------------------- */

/* One frame; returns its physical address, or 0 when no frame is free. */
paddr_t pmm_alloc(void);

/*
 * Returns a frame from pmm_alloc (or a reclaimed one) to the pool.
 * Panics "pmm_free: double free of 0x..." if it is already free and
 * "pmm_free: 0x... is not managed RAM" if the PMM does not manage it
 * (unaligned, frame 0, not USABLE, not yet reclaimed, the PMM metadata).
 */
void pmm_free(paddr_t pa);

/*
 * frames physically contiguous frames whose first frame number is a
 * multiple of align_frames (a power of two; 0 means 1). Returns the
 * address of the first frame, or 0 if no such run is free. The buddy
 * backend serves at most 2^PMM_BUDDY_MAX_ORDER frames per call (and the
 * alignment at most that); larger requests return 0.
 * Panics on frames == 0 or an alignment that is not a power of two.
 */
paddr_t pmm_alloc_contiguous(size_t frames, size_t align_frames);

/*
 * Frees frames frames starting at pa. Every frame is checked before any
 * is freed: the same panics as pmm_free, naming pmm_free_contiguous.
 * Any run of allocated frames may be freed this way, in any pieces.
 */
void pmm_free_contiguous(paddr_t pa, size_t frames);

/*
 * The shrinker: a layer that holds frames it can give back at once (the
 * heap's page cache) registers fn, and pmm_alloc and pmm_alloc_contiguous
 * call it when they find no frames, then try once more, before they return
 * 0. fn frees what it holds (through pmm_free) and returns how many frames;
 * it must not allocate. One shrinker; a second call replaces it.
 */
typedef size_t (*pmm_shrinker_fn)(void);
void pmm_set_shrinker(pmm_shrinker_fn fn);

size_t pmm_free_count(void);  /* frames free now */
size_t pmm_used_count(void);  /* managed frames not free (includes the metadata) */
size_t pmm_total_count(void); /* managed frames: free + used */

/* ---- Bring-up (mm_init in paging.c calls these, in this order) ---------- */

/*
 * Copies the Limine memory map and the HHDM offset into kernel memory and
 * manages every USABLE frame except frame 0 and the frames that now hold
 * the backend's metadata (placed at the start of the first USABLE region
 * large enough). Call once, while the loader's page tables are live.
 * Panics if the loader gave no memory map or HHDM, or nothing fits.
 */
void pmm_init(enum pmm_kind kind);

/* Frame ranges [start, end) handed to pmm_reclaim_bootloader. */
struct frame_range {
    pfn_t start;
    pfn_t end;
};

/*
 * Starts managing every BOOTLOADER_RECLAIMABLE frame except those in the
 * keep ranges (memory the kernel still reads: the boot stack, responses).
 * Call once, after the kernel runs on its own page tables. Returns the
 * number of frames added (all of them free).
 */
size_t pmm_reclaim_bootloader(const struct frame_range *keep, size_t nkeep);

/* Frames the backend's metadata occupies; frames added by the reclaim. */
size_t pmm_metadata_frames(void);
size_t pmm_reclaimed_frames(void);

enum pmm_kind pmm_kind(void);
const char *pmm_kind_name(enum pmm_kind kind);

/* ---- The kernel's copy of the memory map, valid after pmm_init ---------- */

struct pmm_region {
    paddr_t base;
    uint64_t length;
    uint64_t type; /* enum limine_memmap_type */
};

size_t pmm_region_count(void);
const struct pmm_region *pmm_region(size_t index);

/* ---- The higher-half direct map ----------------------------------------- */

/* The loader's HHDM offset; paging.c keeps the same offset. */
extern vaddr_t hhdm_base;

static inline void *phys_to_virt(paddr_t pa) { return (void *)(hhdm_base + pa); }
static inline paddr_t virt_to_phys(const void *hhdm_va)
{
    return (vaddr_t)hhdm_va - hhdm_base;
}

/* ---- What an outside checker reads -------------------------------------- */

/*
 * The global symbol pmm_descriptor. A monitor reads it (through the
 * kernel's symbol table) to see which frames are free without running
 * guest code. Layout, little-endian, 96 bytes:
 *
 *   off  field         meaning
 *     0  magic         PMM_DESCRIPTOR_MAGIC ("PMMD") once pmm_init ran, else 0
 *     4  version       PMM_DESCRIPTOR_VERSION
 *     8  kind          enum pmm_kind: 1 bitmap, 2 buddy
 *    12  max_order     buddy: highest order; bitmap: 0
 *    16  map           physical address of the state map (below)
 *    24  map_bytes     bytes of metadata from map on (buddy: map, links, bitmap)
 *    32  links         buddy: physical address of the free-list links; else 0
 *    40  base_pfn      frame number that map entry 0 describes
 *    48  frames        number of frames the map describes
 *    56  total_frames  = pmm_total_count()
 *    64  free_frames   = pmm_free_count(), kept current
 *    72  hhdm_offset   virtual = physical + hhdm_offset
 *    80  meta_base     physical address of the PMM's own frames
 *    88  meta_frames   how many (everything from map on lives in them)
 *
 * Bitmap (kind 1): bit i (bit i % 64 of the little-endian 64-bit word
 * i / 64) is 0 iff frame base_pfn + i is free. Bits of frames the PMM
 * does not manage are 1.
 * Buddy (kind 2): one byte per frame. 0x80 | order marks the first frame
 * of a free block of 2^order frames (the block is aligned to its size);
 * every other byte is 0. Frame base_pfn + i is free iff some free block
 * contains it. links holds {uint32_t next, prev} per frame (indices
 * relative to base_pfn, 0xffffffff = none) for the free blocks' heads.
 * After the links the buddy keeps a private bitmap (one bit per frame,
 * set iff free) for its own O(1) lookups; a checker need not read it.
 */
#define PMM_DESCRIPTOR_MAGIC 0x444d4d50u /* "PMMD" */
#define PMM_DESCRIPTOR_VERSION 1u
#define PMM_BUDDY_FREE_HEAD 0x80u

struct pmm_descriptor {
    uint32_t magic;
    uint32_t version;
    uint32_t kind;
    uint32_t max_order;
    paddr_t map;
    uint64_t map_bytes;
    paddr_t links;
    pfn_t base_pfn;
    uint64_t frames;
    uint64_t total_frames;
    uint64_t free_frames;
    vaddr_t hhdm_offset;
    paddr_t meta_base;
    uint64_t meta_frames;
};
static_assert(sizeof(struct pmm_descriptor) == 96, "pmm_descriptor size");
static_assert(offsetof(struct pmm_descriptor, map) == 16, "pmm_descriptor map");
static_assert(offsetof(struct pmm_descriptor, free_frames) == 64, "pmm_descriptor free");
static_assert(offsetof(struct pmm_descriptor, meta_frames) == 88, "pmm_descriptor meta");

extern struct pmm_descriptor pmm_descriptor;

/* ---- Backends: the interface pmm.c drives (pmm_bitmap.c, pmm_buddy.c) --- */

#define PMM_NO_FRAME ((pfn_t)-1)
#define PMM_BUDDY_MAX_ORDER 10 /* blocks of up to 1024 frames (4 MiB) */

enum frame_state {
    FRAME_USED,
    FRAME_FREE,
};

/*
 * pmm.c calls these only with valid arguments: frame numbers inside
 * [base_pfn, base_pfn + frames), release only on managed frames that are
 * all used, take with align a power of two. The backend never counts.
 */
struct pmm_backend {
    enum pmm_kind kind;
    const char *name;
    /* Bytes of metadata needed to describe frames frames. */
    uint64_t (*metadata_bytes)(uint64_t frames);
    /* Adopts the metadata at meta (an HHDM pointer); every frame starts used. */
    void (*init)(void *meta, pfn_t base_pfn, uint64_t frames);
    /* Makes [pfn, pfn + count) free. */
    void (*release)(pfn_t pfn, uint64_t count);
    /* Makes count free frames starting at a multiple of align used;
     * returns the first, or PMM_NO_FRAME if there is no such run. */
    pfn_t (*take)(uint64_t count, uint64_t align);
    enum frame_state (*state)(pfn_t pfn);
    /* Fills the backend's fields of the descriptor (max_order, map, links). */
    void (*describe)(struct pmm_descriptor *d);
};

extern const struct pmm_backend pmm_bitmap_backend;
extern const struct pmm_backend pmm_buddy_backend;

#endif
