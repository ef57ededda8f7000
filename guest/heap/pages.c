/*
 * pages.c - the heap's page layer: every heap page an allocator uses is
 * claimed and released here (see pages.h for the contracts).
 *
 * Owns: mapping frames at claimed heap addresses, the cache of released
 * pages and its shrinker, the frames' way to and from the PMM, the
 * footprint counts, the heap_descriptor the monitor reads, the allocator's
 * name and the debug mode as heap_fail and heap_poison use them.
 * Does not own: which pages an allocator claims (list.c, buddy.c,
 * slab.c), kmalloc and debug mode's red zones (heap.c), frames (mm/pmm.c)
 * or page tables (mm/paging.c).
 */
#include "heap/pages.h"

#include "lib/panic.h"
#include "lib/string.h"
#include "mm/paging.h"
#include "mm/pmm.h"

struct heap_descriptor heap_descriptor;
enum heap_debug heap_debug_state;

/* The allocator's name in panic messages; "none" before heap_init. */
static const char *heap_name = "none";

static void cache_init(uint64_t watermark);
static size_t cache_drain(void);

void heap_pages_init(enum heap_kind kind, const char *name, enum heap_debug debug,
                     uint64_t cache_watermark)
{
    heap_name = name;
    heap_debug_state = debug;
    heap_descriptor.version = HEAP_DESCRIPTOR_VERSION;
    heap_descriptor.kind = kind;
    heap_descriptor.debug = debug;
    heap_descriptor.base = HEAP_BASE;
    heap_descriptor.end = HEAP_END;
    cache_init(cache_watermark);
    pmm_set_shrinker(cache_drain);
    heap_descriptor.magic = HEAP_DESCRIPTOR_MAGIC;
}

/* ---- Helpers ---------------------------------------------------------------- */

NORETURN void heap_fail(const char *fn, const char *rule, const void *p)
{
    panic("%s: %s 0x%lx (heap=%s)", fn, rule, (vaddr_t)p, heap_name);
}

void heap_poison(void *p, size_t n)
{
    if (heap_debug_state == HEAP_DEBUG_ON)
        memset(p, HEAP_POISON_BYTE, n);
}

/* ---- The cache of released pages ------------------------------------------------- *
 *
 * Released pages stay mapped, their frames held, in the cache as runs of
 * consecutive pages (one per release, up to CACHE_RUN_PAGES each): up to
 * watermark pages in all, the least recently released given back to the
 * PMM first (unmapped, with invlpg, and freed). A claim takes pages cached
 * at its own addresses with no page-table work at all; pages it needs
 * elsewhere take the frames of the oldest cached run (moved: unmapped
 * there, mapped here) before the PMM is asked, so the cache never makes
 * the footprint (claimed + cached) larger than the claims alone would. The
 * PMM drains the cache through its shrinker before it reports no memory.
 *
 * Entries live in a fixed table: a hash on a run's first page (chains of
 * entry indices) to find it, and a list in release order (oldest at the
 * head) to pick one. A page inside a run is found by looking for runs that
 * start at most CACHE_RUN_PAGES - 1 pages before it. Index NO_ENTRY ends
 * both; unused entries form a stack. Every run has a page, so the table
 * has an entry for each run the watermark allows.
 */
#define NO_ENTRY 0xffffffffu
#define CACHE_BUCKETS HEAP_CACHE_MAX_PAGES /* a power of two: chains of about one */
#define CACHE_RUN_PAGES 64u

static_assert((CACHE_BUCKETS & (CACHE_BUCKETS - 1)) == 0, "cache buckets: a power of two");

struct cache_entry {
    vaddr_t va;          /* the run's first page; all of it still mapped */
    uint32_t pages;      /* 1..CACHE_RUN_PAGES */
    uint32_t older;      /* release order: the previous and next entries */
    uint32_t newer;
    uint32_t chain;      /* next entry of the same bucket; free entries: next unused */
};

static struct cache_entry cache_entries[HEAP_CACHE_MAX_PAGES];
static uint32_t cache_buckets[CACHE_BUCKETS];
static uint32_t cache_oldest, cache_newest, cache_unused;
/* At least the pages of the longest run cached since the cache was last
 * empty: how far back a page's run can start. */
static uint32_t cache_longest;
/* Set while the layer changes page tables or the cache itself: the shrinker
 * then gives nothing (claims drain the cache themselves when the PMM runs
 * out of page-table frames). */
static bool cache_busy;

/* The frames of the run being moved, mapped or unmapped (the heap is not
 * reentrant). */
static paddr_t run_frames[CACHE_RUN_PAGES];

static uint32_t bucket_of(vaddr_t va)
{
    return (uint32_t)(((va >> PAGE_SHIFT) * 0x9e3779b97f4a7c15ULL) >> 40) & (CACHE_BUCKETS - 1);
}

static void cache_init(uint64_t watermark)
{
    if (watermark > HEAP_CACHE_MAX_PAGES)
        panic("heap_init: heapcache=%lu is above the most, %u pages", watermark,
              HEAP_CACHE_MAX_PAGES);
    heap_descriptor.cache_watermark = watermark;
    heap_descriptor.cached_pages = 0;
    for (uint32_t i = 0; i < CACHE_BUCKETS; i++)
        cache_buckets[i] = NO_ENTRY;
    for (uint32_t i = 0; i < HEAP_CACHE_MAX_PAGES; i++)
        cache_entries[i].chain = i + 1 < HEAP_CACHE_MAX_PAGES ? i + 1 : NO_ENTRY;
    cache_unused = 0;
    cache_oldest = cache_newest = NO_ENTRY;
}

/* The entry of the run that starts at va, or NO_ENTRY. */
static uint32_t cache_find(vaddr_t va)
{
    uint32_t i = cache_buckets[bucket_of(va)];

    while (i != NO_ENTRY && cache_entries[i].va != va)
        i = cache_entries[i].chain;
    return i;
}

/* The entry of the run holding the page va, or NO_ENTRY. */
static uint32_t cache_find_page(vaddr_t va)
{
    for (uint32_t back = 0; back < cache_longest && va - back * PAGE_SIZE >= HEAP_BASE;
         back++) {
        uint32_t i = cache_find(va - back * PAGE_SIZE);

        if (i != NO_ENTRY)
            return cache_entries[i].pages > back ? i : NO_ENTRY;
    }
    return NO_ENTRY;
}

static void chain_unlink(uint32_t i)
{
    uint32_t *link = &cache_buckets[bucket_of(cache_entries[i].va)];

    while (*link != i)
        link = &cache_entries[*link].chain;
    *link = cache_entries[i].chain;
}

static void chain_link(uint32_t i)
{
    uint32_t b = bucket_of(cache_entries[i].va);

    cache_entries[i].chain = cache_buckets[b];
    cache_buckets[b] = i;
}

/* Drops entry i (its pages are no longer cached) onto the unused stack. */
static void cache_remove(uint32_t i)
{
    struct cache_entry *e = &cache_entries[i];

    chain_unlink(i);
    if (e->older != NO_ENTRY)
        cache_entries[e->older].newer = e->newer;
    else
        cache_oldest = e->newer;
    if (e->newer != NO_ENTRY)
        cache_entries[e->newer].older = e->older;
    else
        cache_newest = e->older;
    heap_descriptor.cached_pages -= e->pages;
    if (heap_descriptor.cached_pages == 0)
        cache_longest = 0;
    e->chain = cache_unused;
    cache_unused = i;
}

/* Caches the released run [va, va + pages) (mapped; pages <= CACHE_RUN_PAGES)
 * as the newest. */
static void cache_put(vaddr_t va, uint32_t pages)
{
    uint32_t i = cache_unused;
    struct cache_entry *e = &cache_entries[i];

    if (i == NO_ENTRY)
        panic("heap_pages_release: page cache table full (heap=%s)", heap_name);
    cache_unused = e->chain;
    e->va = va;
    e->pages = pages;
    chain_link(i);
    e->older = cache_newest;
    e->newer = NO_ENTRY;
    if (cache_newest != NO_ENTRY)
        cache_entries[cache_newest].newer = i;
    else
        cache_oldest = i;
    cache_newest = i;
    heap_descriptor.cached_pages += pages;
    if (pages > cache_longest)
        cache_longest = pages;
}

/* Takes the first pages pages of run i (fewer than it has) out of the
 * cache; the rest stays, in its place in release order. */
static void cache_take_head(uint32_t i, uint32_t pages)
{
    struct cache_entry *e = &cache_entries[i];

    chain_unlink(i);
    e->va += (vaddr_t)pages * PAGE_SIZE;
    e->pages -= pages;
    chain_link(i);
    heap_descriptor.cached_pages -= pages;
}

/* Splits run i at the page va inside it (not its first): the pages from va
 * on become a run of their own. */
static void cache_split(uint32_t i, vaddr_t va)
{
    struct cache_entry *e = &cache_entries[i];
    uint32_t head = (uint32_t)((va - e->va) / PAGE_SIZE), tail = e->pages - head;

    e->pages = head;
    heap_descriptor.cached_pages -= tail;
    cache_put(va, tail);
}

/* ---- Claimed pages -------------------------------------------------------------- */

bool heap_page_claimed(vaddr_t va)
{
    va &= ~(vaddr_t)(PAGE_SIZE - 1);
    return vmm_translate(vmm_kernel_root(), va) != VMM_NO_TRANSLATION &&
           cache_find_page(va) == NO_ENTRY;
}

static void count_pages(int64_t delta)
{
    heap_descriptor.pages += (uint64_t)delta;
    if (heap_descriptor.pages > heap_descriptor.peak_pages)
        heap_descriptor.peak_pages = heap_descriptor.pages;
}

/* Frees frames[0..n) to the PMM, physically contiguous stretches at once,
 * and counts them off the footprint. */
static void free_frames(const paddr_t *frames, size_t n)
{
    size_t start = 0;

    for (size_t i = 0; i < n; i++) {
        if (i + 1 < n && frames[i + 1] == frames[i] + PAGE_SIZE)
            continue;
        if (i == start)
            pmm_free(frames[start]);
        else
            pmm_free_contiguous(frames[start], i + 1 - start);
        start = i + 1;
    }
    count_pages(-(int64_t)n);
}

/* Unmaps [va, va + pages) (invlpg for each), their frames into frames[];
 * panics (naming fn) if a page is not mapped. */
static void unmap_into(vaddr_t va, size_t pages, paddr_t *frames, const char *fn)
{
    if (vmm_unmap_frames(vmm_kernel_root(), va, pages, frames, VMM_KEEP_TABLES) != VMM_OK)
        panic("%s: 0x%lx + %lu pages not mapped (heap=%s)", fn, va, pages, heap_name);
}

/* Takes up to pages pages from the end of the oldest run out of the cache,
 * unmapped, their frames in frames[]; how many (0: the cache is empty). */
static size_t cache_take_oldest(size_t pages, paddr_t *frames, const char *fn)
{
    struct cache_entry *e;
    uint32_t n;

    if (cache_oldest == NO_ENTRY)
        return 0;
    e = &cache_entries[cache_oldest];
    n = e->pages < pages ? e->pages : (uint32_t)pages;
    unmap_into(e->va + (vaddr_t)(e->pages - n) * PAGE_SIZE, n, frames, fn);
    if (n == e->pages) {
        cache_remove(cache_oldest);
    } else {
        e->pages -= n;
        heap_descriptor.cached_pages -= n;
    }
    return n;
}

/* Gives the oldest cached pages back to the PMM until the cache holds at
 * most keep pages; how many went. */
static size_t cache_trim(uint64_t keep)
{
    size_t freed = 0;

    while (heap_descriptor.cached_pages > keep) {
        uint64_t excess = heap_descriptor.cached_pages - keep;
        size_t n = cache_take_oldest(excess < CACHE_RUN_PAGES ? excess : CACHE_RUN_PAGES,
                                     run_frames, "heap_pages_release");

        free_frames(run_frames, n);
        freed += n;
    }
    return freed;
}

/* The PMM's shrinker: every cached page back to the PMM (none while the
 * layer is in the middle of its own page-table work). */
static size_t cache_drain(void)
{
    size_t freed;

    if (cache_busy)
        return 0;
    cache_busy = true;
    freed = cache_trim(0);
    cache_busy = false;
    return freed;
}

/* Frames for pages pages (at most CACHE_RUN_PAGES) in run_frames: moved
 * from the oldest cached runs, else new from the PMM (counted on the
 * footprint); how many it found. */
static size_t gather_frames(size_t pages)
{
    size_t got = 0, moved;

    while (got < pages && cache_oldest != NO_ENTRY)
        got += cache_take_oldest(pages - got, run_frames + got, "heap_pages_claim");
    moved = got;
    for (; got < pages; got++) {
        paddr_t pa = pmm_alloc();

        if (pa == 0)
            break;
        run_frames[got] = pa;
    }
    count_pages((int64_t)(got - moved)); /* once: the peak is the same */
    return got;
}

/* Maps pages pages at va (none mapped, at most CACHE_RUN_PAGES) with frames
 * from gather_frames; how many (0: no memory, nothing mapped). */
static size_t map_new(vaddr_t va, size_t pages)
{
    size_t got = gather_frames(pages);
    int status;

    if (got == 0)
        return 0;
    status = vmm_map_frames(vmm_kernel_root(), va, run_frames, got, VM_WRITE | VM_GLOBAL);
    if (status == VMM_ALREADY_MAPPED)
        panic("heap_pages_claim: 0x%lx already mapped (heap=%s)", va, heap_name);
    if (status != VMM_OK) {
        free_frames(run_frames, got);
        return 0;
    }
    return got;
}

/* Puts the claimed pages [va, va + pages) in the cache, giving the oldest
 * back to the PMM first as far as the watermark needs room (so the cache's
 * table always has an entry); of a run larger than the watermark, the
 * pages beyond it are unmapped at once. */
static void release_pages(vaddr_t va, size_t pages)
{
    uint64_t watermark = heap_descriptor.cache_watermark;

    if (pages <= CACHE_RUN_PAGES && heap_descriptor.cached_pages + pages <= watermark) {
        cache_put(va, (uint32_t)pages); /* room without giving any back */
        return;
    }
    for (size_t done = 0; done < pages;) {
        size_t n = pages - done < CACHE_RUN_PAGES ? pages - done : CACHE_RUN_PAGES;

        if (n > watermark) { /* more than the cache keeps: the first pages go */
            size_t gone = n - watermark;

            unmap_into(va + done * PAGE_SIZE, gone, run_frames, "heap_pages_release");
            free_frames(run_frames, gone);
            done += gone;
            n -= gone;
        }
        if (n > 0) {
            cache_trim(watermark - n);
            cache_put(va + done * PAGE_SIZE, (uint32_t)n);
        }
        done += n;
    }
}

/* Takes the cached pages from at on, at most left: the run cached at at
 * (its head), or none; how many. */
static size_t take_cached(vaddr_t at, size_t left)
{
    uint32_t i = cache_find(at);
    size_t n;

    if (i == NO_ENTRY)
        return 0;
    n = cache_entries[i].pages;
    if (n <= left) {
        cache_remove(i);
        return n;
    }
    cache_take_head(i, (uint32_t)left);
    return left;
}

/* The pages from at on, at most left (and CACHE_RUN_PAGES), before the
 * first mapped one; 0 when at itself is mapped: then it is inside a cached
 * run, which is split there (panics if at is claimed). */
static size_t unmapped_from(vaddr_t at, size_t left)
{
    size_t n = left < CACHE_RUN_PAGES ? left : CACHE_RUN_PAGES;
    uint32_t i;

    if (cache_oldest == NO_ENTRY) /* nothing but claimed pages is mapped */
        return n;
    n = vmm_unmapped_prefix(vmm_kernel_root(), at, n);
    if (n > 0)
        return n;
    i = cache_find_page(at);
    if (i == NO_ENTRY)
        panic("heap_pages_claim: 0x%lx already mapped (heap=%s)", at, heap_name);
    cache_split(i, at);
    return 0;
}

/* Claims [va, va + pages): runs cached there are taken as they are, the
 * pages between them mapped with frames moved or new; the number claimed
 * from va on (fewer than pages: out of memory). */
static size_t claim_pages(vaddr_t va, size_t pages)
{
    size_t done = 0, n;
    bool drained = false;

    while (done < pages) {
        vaddr_t at = va + done * PAGE_SIZE;

        if ((n = take_cached(at, pages - done)) == 0 &&
            (n = unmapped_from(at, pages - done)) != 0 && (n = map_new(at, n)) == 0) {
            if (drained)
                break; /* no frame or page table, the cache drained already */
            cache_trim(0); /* what the shrinker could not give inside the walk */
            drained = true;
        }
        done += n;
    }
    return done;
}

enum heap_status heap_pages_claim(vaddr_t va, size_t pages)
{
    size_t done;

    if (!heap_in_range(va) || (va & (PAGE_SIZE - 1)) != 0 ||
        pages > (HEAP_END - va) / PAGE_SIZE)
        panic("heap_pages_claim: 0x%lx + %lu pages is not in the heap (heap=%s)", va, pages,
              heap_name);
    cache_busy = true;
    done = claim_pages(va, pages);
    if (done < pages)
        release_pages(va, done);
    cache_busy = false;
    if (done < pages)
        return HEAP_NO_MEMORY;
    heap_poison((void *)va, pages * PAGE_SIZE);
    return HEAP_OK;
}

void heap_pages_release(vaddr_t va, size_t pages)
{
    if (heap_debug_state == HEAP_DEBUG_ON) {
        for (size_t i = 0; i < pages; i++) {
            if (!heap_page_claimed(va + i * PAGE_SIZE))
                panic("heap_pages_release: 0x%lx not claimed (heap=%s)", va + i * PAGE_SIZE,
                      heap_name);
        }
    }
    cache_busy = true;
    release_pages(va, pages);
    cache_busy = false;
}

/* ---- The footprint (heap.h) ----------------------------------------------------- */

uint64_t heap_footprint(void)
{
    return heap_descriptor.pages * PAGE_SIZE;
}

uint64_t heap_peak_footprint(void)
{
    return heap_descriptor.peak_pages * PAGE_SIZE;
}
