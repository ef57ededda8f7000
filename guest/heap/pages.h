/*
 * pages.h - the heap's page layer, under every allocator; private to heap/.
 *
 * Owns: all heap page traffic: backing heap addresses with frames and
 * mappings when an allocator claims them, and giving both back when it
 * releases them; which heap pages are claimed; the footprint (pages held
 * now and at most, in heap_descriptor, which this layer publishes); and
 * what every allocator needs from below: the panic helper that names the
 * allocator, and debug-mode poison.
 * Does not own: which addresses an allocator uses or when (list.c,
 * buddy.c, slab.c), the choice of allocator and debug mode (heap.c
 * passes them to heap_pages_init), frames (mm/pmm.c) or page tables
 * (mm/paging.c).
 *
 * No allocator maps, unmaps or counts a heap page itself, so this is the
 * one place for policy on heap pages: released pages stay mapped in a
 * bounded cache (heapcache=N pages) and a claim takes them back before it
 * asks the PMM; the PMM drains the cache (its shrinker) before it reports
 * no memory. A released page is no longer the caller's (it must not be
 * touched, and heap_page_claimed is false) even while it stays mapped; the
 * footprint counts every page the layer holds a frame for, cached or not.
 */
#ifndef HEAP_PAGES_H
#define HEAP_PAGES_H

#include "heap/heap.h"

enum heap_status {
    HEAP_OK = 0,
    HEAP_NO_MEMORY = -1,
};

/*
 * Called once by heap_init, before the allocator's own init: the kind,
 * name and debug mode chosen, which heap_fail, heap_poison and the
 * heap_descriptor report from now on, and the cache's watermark in pages
 * (0: no cache; panics above HEAP_CACHE_MAX_PAGES). Registers the cache's
 * shrinker with the PMM.
 */
void heap_pages_init(enum heap_kind kind, const char *name, enum heap_debug debug,
                     uint64_t cache_watermark);

/*
 * Claims pages pages at va (page aligned, inside the heap range, none of
 * them claimed) for the caller: backed by frames, mapped read/write and
 * global, never executable. Pages cached at their own address are taken
 * as they are; the others get the frames of the oldest cached runs (moved
 * here), else new frames. All or nothing: HEAP_OK, or HEAP_NO_MEMORY with
 * nothing claimed. With heapdebug=1 the pages are filled with
 * HEAP_POISON_BYTE. Panics "heap_pages_claim: 0x... already mapped" and
 * "heap_pages_claim: 0x... + N pages is not in the heap".
 */
enum heap_status heap_pages_claim(vaddr_t va, size_t pages);

/*
 * Gives back pages pages at va, every one claimed. They go to the cache,
 * still mapped; the oldest cached pages beyond the watermark are unmapped
 * (invlpg for each) and their frames freed (panics "heap_pages_release:
 * 0x... + N pages not mapped" when pages it unmaps are not; with
 * heapdebug=1 "heap_pages_release: 0x... not claimed" at once). Callers
 * may rely only on the pages no longer being theirs.
 */
void heap_pages_release(vaddr_t va, size_t pages);

/* True if the page holding va is claimed (mapped for an allocator, and
 * not in the cache). */
bool heap_page_claimed(vaddr_t va);

/* True if va lies in [HEAP_BASE, HEAP_END). */
static inline bool heap_in_range(vaddr_t va)
{
    return va - HEAP_BASE < HEAP_END - HEAP_BASE;
}

/* ---- What every allocator needs ------------------------------------------ */

/* Panics "fn: rule 0x<p> (heap=KIND)", e.g. "kfree: double free of 0x...". */
NORETURN void heap_fail(const char *fn, const char *rule, const void *p);

/* With heapdebug=1 fills [p, p + n) with HEAP_POISON_BYTE; else nothing. */
void heap_poison(void *p, size_t n);

/* The debug mode heap_pages_init was given (a plain global read, for the
 * allocators' hot paths). */
extern enum heap_debug heap_debug_state;

#endif
