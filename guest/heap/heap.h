/*
 * heap.h - the kernel heap: kmalloc and friends, over pages of its own.
 *
 * Owns: the allocation interface every kernel layer uses, the choice of
 * allocator (heap=list|buddy|slab|chained on the command line, default
 * chained; heapfit=first|best for the list; heapdebug=1; heapcache=N, the
 * pages released pages may keep mapped, default a sixteenth of the RAM up to
 * HEAP_CACHE_MAX_PAGES),
 * the heap's virtual range and the footprint it reports.
 * Does not own: physical frames (mm/pmm.c) or page tables (mm/paging.c):
 * the heap asks them for pages and gives pages back.
 *
 * Inside heap/ (every file but this one is private to it), in layers:
 * heap.c implements this interface and debug mode over the allocators
 * (list.c, buddy.c, slab.c and chained.c, behind backend.h), and they
 * get every page from the page layer, pages.c, which also keeps the
 * footprint and heap_descriptor. No layer calls the one above it.
 *
 * Every pointer returned is 16-byte aligned (kmalloc_aligned: aligned to
 * what was asked) and lies in [HEAP_BASE, HEAP_END), in pages mapped
 * read/write, global, never executable. The first page of the range is a
 * guard page, never mapped, and so is the page after the end of each
 * allocator's mapped area (the list heap grows into the unmapped range
 * after its last page). Contents are undefined on return, except from
 * kcalloc; with heapdebug=1 they hold HEAP_POISON_BYTE.
 *
 * The five entry points are real functions (never inlined): the monitor
 * hooks their entries and return addresses (emu/heapcheck.py).
 *
 * Not thread-safe; never call from an interrupt handler. Call heap_init
 * once, after mm_init, before any of them.
 */
#ifndef HEAP_H
#define HEAP_H

#include "lib/types.h"

/* ---- The interface ------------------------------------------------------- */

/*
 * size bytes, 16-byte aligned. NULL if size is 0 or larger than
 * HEAP_MAX_ALLOC, or if no memory is left (the PMM ran out, or the
 * chosen allocator cannot serve that size). The caller frees with kfree.
 */
void *kmalloc(size_t size);

/*
 * Returns a block to the heap; kfree(NULL) does nothing. Panics with
 * "kfree: double free of 0x... (heap=KIND)" for a block already freed and
 * "kfree: invalid free of 0x... (heap=KIND)" for a pointer no allocation
 * returned, when the allocator can tell (always for the slab objects and
 * the block headers it checks; with heapdebug=1 also from the red zones).
 */
void kfree(void *p);

/*
 * Resizes the block p to size bytes; the first min(old size, size) bytes
 * are kept. In place when the allocator can (a shrink; a grow into free
 * space after the block for list and buddy, or at the end of the list
 * heap); otherwise a new block, the bytes copied, p freed. Returns the
 * block, or NULL if no memory is left, in which case p is untouched and
 * still allocated. krealloc(NULL, n) is kmalloc(n); krealloc(p, 0) frees
 * p and returns NULL. An aligned block stays aligned only if it is
 * resized in place.
 */
void *krealloc(void *p, size_t size);

/* n * size bytes, zeroed; NULL on overflow or as kmalloc. */
void *kcalloc(size_t n, size_t size);

/*
 * size bytes at an address that is a multiple of align (a power of two,
 * at most HEAP_MAX_ALIGN; 16 or less gives kmalloc's alignment). NULL as
 * kmalloc, or when align is above HEAP_MAX_ALIGN. Freed with kfree.
 * Panics "kmalloc_aligned: alignment 0x... is not a power of two".
 */
void *kmalloc_aligned(size_t size, size_t align);

#define HEAP_MIN_ALIGN 16
#define HEAP_MAX_ALIGN ((size_t)1 << 20)   /* 1 MiB */
#define HEAP_MAX_ALLOC ((size_t)1 << 30)   /* 1 GiB per block */

/* ---- Choice, checking and figures --------------------------------------- */

enum heap_kind {
    HEAP_LIST = 1,    /* one linked list of blocks, first or best fit */
    HEAP_BUDDY = 2,   /* power-of-two blocks, split and merged */
    HEAP_SLAB = 3,    /* power-of-two caches of objects, one slab page run each */
    HEAP_CHAINED = 4, /* size classes in slabs, the rest in the buddy heap */
};

enum heap_fit {
    HEAP_FIRST_FIT = 0,
    HEAP_BEST_FIT = 1,
};

enum heap_debug {
    HEAP_DEBUG_OFF = 0,
    HEAP_DEBUG_ON = 1, /* red zones, poison, magics, checks on every call */
};

/*
 * Reads heap=, heapfit=, heapdebug= and heapcache= from the command line and readies
 * the allocator (no page is mapped until the first allocation). Panics on
 * an unknown value: "heap_init: unknown heap=... (use list, buddy, slab or
 * chained)".
 */
void heap_init(void);

enum heap_kind heap_kind(void);
const char *heap_kind_name(enum heap_kind kind);
enum heap_debug heap_debug_mode(void);

/*
 * Walks every block of the heap and checks the allocator's invariants
 * (headers and magics, sizes, links, free lists, bitmaps, coalescing and
 * buddy rules, mapped pages) and, with heapdebug=1, each allocated block's
 * red zones. Panics "heap_check: <rule> at 0x... (heap=KIND)" on the first
 * broken one. Returns the number of allocated blocks.
 */
size_t heap_check(void);

/* Bytes of pages the heap holds now (its cache included), and the most it
 * ever held. */
uint64_t heap_footprint(void);
uint64_t heap_peak_footprint(void);

/* ---- Where the heap lives, for the monitor -------------------------------- */

/*
 * The heap's virtual range: [HEAP_BASE, HEAP_END), 4 TiB above the HHDM's
 * 64 TiB. HEAP_BASE itself is the guard page. Each allocator keeps its
 * pages in its own window:
 *   list   [HEAP_BASE + 4 KiB, HEAP_BASE + 1 TiB - 4 KiB), grown from the start
 *   buddy  [HEAP_BASE + 1 TiB, + 4 GiB): the arena, doubled when it is full
 *   slab   [HEAP_BASE + 2 TiB, HEAP_END): one 64 GiB window per size class,
 *          whose first slab slot is never used (a guard)
 * chained uses the buddy and the slab windows.
 */
#define HEAP_BASE 0xffffc00000000000ULL
#define HEAP_WINDOW ((uint64_t)1 << 40)
#define HEAP_END (HEAP_BASE + 4 * HEAP_WINDOW)

/*
 * The global symbol heap_descriptor, for an outside checker. Layout,
 * little-endian, 64 bytes:
 *
 *   off  field            meaning
 *     0  magic            HEAP_DESCRIPTOR_MAGIC ("HEAP") once heap_init ran
 *     4  version          HEAP_DESCRIPTOR_VERSION
 *     8  kind             enum heap_kind
 *    12  debug            enum heap_debug
 *    16  base             HEAP_BASE: every block lies in [base, end)
 *    24  end              HEAP_END
 *    32  pages            heap pages held now, cached ones included
 *                         (footprint / 4096)
 *    40  peak_pages       the most ever held at once
 *    48  cached_pages     of pages, those released and kept mapped in the
 *                         cache: their frames are the heap's, not free
 *    56  cache_watermark  the most the cache keeps (heapcache=)
 *
 * The baseline for leak checks: a frame is accounted for when it is free
 * in the PMM or held by a heap cache, so "free frames + cached_pages" must
 * come back to its value before a workload once the workload has freed
 * everything (the PMM's free_frames alone drops by the cached pages). The
 * PMM drains the cache before it fails an allocation, so cached pages are
 * memory the kernel can always have back.
 */
#define HEAP_DESCRIPTOR_MAGIC 0x50414548u /* "HEAP" */
#define HEAP_DESCRIPTOR_VERSION 2u

/* heapcache=N: N pages at most (the cache's table is static); without it, a
 * sixteenth of the managed RAM, up to that. */
#define HEAP_CACHE_MAX_PAGES 8192u
#define HEAP_CACHE_RAM_FRACTION 16u

struct heap_descriptor {
    uint32_t magic;
    uint32_t version;
    uint32_t kind;
    uint32_t debug;
    vaddr_t base;
    vaddr_t end;
    uint64_t pages;
    uint64_t peak_pages;
    uint64_t cached_pages;
    uint64_t cache_watermark;
};
static_assert(sizeof(struct heap_descriptor) == 64, "heap_descriptor size");
static_assert(offsetof(struct heap_descriptor, cached_pages) == 48, "heap_descriptor cache");

extern struct heap_descriptor heap_descriptor;

/* With heapdebug=1: freed bytes, and the red zones around each block. */
#define HEAP_POISON_BYTE 0x6b
#define HEAP_REDZONE_BYTE 0xcc

#endif
