/*
 * pages.c - the heap's page layer: every heap page an allocator uses is
 * claimed and released here (see pages.h for the contracts).
 *
 * Owns: mapping fresh frames at claimed heap addresses and unmapping them
 * on release, the frames' way to and from the PMM, the footprint counts,
 * the heap_descriptor the monitor reads, the allocator's name and the
 * debug mode as heap_fail and heap_poison use them.
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
 * A released page stays mapped, its frame held, in the cache: up to watermark
 * pages, the least recently released given back to the PMM first (unmapped,
 * with invlpg, and freed). A claim takes a page cached at its own address
 * with no page-table work at all; a page it needs elsewhere comes from the
 * cache's oldest page (moved: unmapped there, mapped here) before the PMM is
 * asked, so the cache never makes the footprint (claimed + cached) larger
 * than the claims alone would. The PMM drains the cache through its shrinker
 * before it reports no memory.
 *
 * Entries live in a fixed table: a hash on the virtual page (chains of
 * entry indices) to find a page, and a list in release order (oldest at the
 * head) to pick one. Index NO_ENTRY ends both; unused entries form a stack.
 */
#define NO_ENTRY 0xffffffffu
#define CACHE_BUCKETS HEAP_CACHE_MAX_PAGES /* a power of two: chains of about one */

static_assert((CACHE_BUCKETS & (CACHE_BUCKETS - 1)) == 0, "cache buckets: a power of two");

struct cache_entry {
    vaddr_t va;          /* the page, still mapped there */
    uint32_t older;      /* release order: the previous and next entries */
    uint32_t newer;
    uint32_t chain;      /* next entry of the same bucket; free entries: next unused */
    uint32_t reserved;
};

static struct cache_entry cache_entries[HEAP_CACHE_MAX_PAGES];
static uint32_t cache_buckets[CACHE_BUCKETS];
static uint32_t cache_oldest, cache_newest, cache_unused;
static bool cache_ready;

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
    cache_ready = true;
}

/* The entry of the cached page va, unlinked from its chain and the release
 * order, and back on the unused stack; false if va is not cached. */
static bool cache_take_at(vaddr_t va)
{
    uint32_t *link = &cache_buckets[bucket_of(va)];
    struct cache_entry *e;
    uint32_t i;

    for (i = *link; i != NO_ENTRY; link = &e->chain, i = *link) {
        e = &cache_entries[i];
        if (e->va == va)
            break;
    }
    if (i == NO_ENTRY)
        return false;
    *link = e->chain;
    if (e->older != NO_ENTRY)
        cache_entries[e->older].newer = e->newer;
    else
        cache_oldest = e->newer;
    if (e->newer != NO_ENTRY)
        cache_entries[e->newer].older = e->older;
    else
        cache_newest = e->older;
    e->chain = cache_unused;
    cache_unused = i;
    heap_descriptor.cached_pages--;
    return true;
}

static bool cache_has(vaddr_t va)
{
    for (uint32_t i = cache_buckets[bucket_of(va)]; i != NO_ENTRY; i = cache_entries[i].chain) {
        if (cache_entries[i].va == va)
            return true;
    }
    return false;
}

/* Adds the released page va (mapped; there is room: an unused entry). */
static void cache_put(vaddr_t va)
{
    uint32_t i = cache_unused;
    struct cache_entry *e = &cache_entries[i];
    uint32_t b = bucket_of(va);

    cache_unused = e->chain;
    e->va = va;
    e->chain = cache_buckets[b];
    cache_buckets[b] = i;
    e->older = cache_newest;
    e->newer = NO_ENTRY;
    if (cache_newest != NO_ENTRY)
        cache_entries[cache_newest].newer = i;
    else
        cache_oldest = i;
    cache_newest = i;
    heap_descriptor.cached_pages++;
}

/* ---- Claimed pages -------------------------------------------------------------- */

bool heap_page_claimed(vaddr_t va)
{
    va &= ~(vaddr_t)(PAGE_SIZE - 1);
    return vmm_translate(vmm_kernel_root(), va) != VMM_NO_TRANSLATION && !cache_has(va);
}

static void count_pages(int64_t delta)
{
    heap_descriptor.pages += (uint64_t)delta;
    if (heap_descriptor.pages > heap_descriptor.peak_pages)
        heap_descriptor.peak_pages = heap_descriptor.pages;
}

/* Pages are unmapped in runs of at most HEAP_RUN_PAGES: one vmm_unmap
 * (which prunes each emptied table once) and the frames freed in
 * physically contiguous stretches. Mapping goes page by page, so vmm_map
 * never makes a large entry that a partial unmap would have to split. */
#define HEAP_RUN_PAGES 64

/* The frames of the run being unmapped (the heap is not reentrant). */
static paddr_t run_frames[HEAP_RUN_PAGES];

/* Unmaps a run of pages (invlpg for each: vmm_unmap) and frees their
 * frames, physically contiguous stretches at once; counts them off the
 * footprint. */
static void unmap_run(vaddr_t va, size_t pages)
{
    paddr_t *pa = run_frames;
    size_t start = 0;

    for (size_t i = 0; i < pages; i++) {
        pa[i] = vmm_translate(vmm_kernel_root(), va + i * PAGE_SIZE);
        if (pa[i] == VMM_NO_TRANSLATION)
            panic("heap_pages_release: 0x%lx not mapped (heap=%s)", va + i * PAGE_SIZE,
                  heap_name);
    }
    if (vmm_unmap(vmm_kernel_root(), va, pages) != VMM_OK)
        panic("heap_pages_release: cannot unmap 0x%lx (heap=%s)", va, heap_name);
    for (size_t i = 0; i < pages; i++) {
        bool run_ends = i + 1 == pages || pa[i + 1] != pa[i] + PAGE_SIZE;

        if (run_ends && i == start)
            pmm_free(pa[start]);
        else if (run_ends)
            pmm_free_contiguous(pa[start], i + 1 - start);
        if (run_ends)
            start = i + 1;
    }
    count_pages(-(int64_t)pages);
}

/* Gives the oldest cached page back to the PMM; false if none is cached. */
static bool cache_evict_oldest(void)
{
    vaddr_t va;

    if (cache_oldest == NO_ENTRY)
        return false;
    va = cache_entries[cache_oldest].va;
    cache_take_at(va);
    unmap_run(va, 1);
    return true;
}

/* The PMM's shrinker: every cached page back to the PMM. */
static size_t cache_drain(void)
{
    size_t frames = 0;

    while (cache_evict_oldest())
        frames++;
    return frames;
}

/* The frame for a page claimed at va that the cache does not hold there:
 * the oldest cached page's, unmapped where it was, else a new one from the
 * PMM (counted on the footprint); 0 if neither has one. */
static paddr_t frame_for_claim(void)
{
    vaddr_t old;
    paddr_t pa;

    if (cache_oldest == NO_ENTRY) {
        pa = pmm_alloc();
        if (pa != 0)
            count_pages(1);
        return pa;
    }
    old = cache_entries[cache_oldest].va;
    cache_take_at(old);
    pa = vmm_translate(vmm_kernel_root(), old);
    if (pa == VMM_NO_TRANSLATION || vmm_unmap(vmm_kernel_root(), old, 1) != VMM_OK)
        panic("heap_pages_claim: cached page 0x%lx not mapped (heap=%s)", old, heap_name);
    return pa;
}

/* Claims the one page at va: from the cache at va, or a frame mapped
 * there. HEAP_OK, or HEAP_NO_MEMORY with nothing claimed. */
static enum heap_status claim_page(vaddr_t va)
{
    paddr_t pa;
    int status;

    if (cache_take_at(va))
        return HEAP_OK;
    pa = frame_for_claim();
    if (pa == 0)
        return HEAP_NO_MEMORY;
    status = vmm_map(vmm_kernel_root(), va, pa, 1, VM_WRITE | VM_GLOBAL);
    if (status == VMM_ALREADY_MAPPED)
        panic("heap_pages_claim: 0x%lx already mapped (heap=%s)", va, heap_name);
    if (status != VMM_OK) {
        pmm_free(pa);
        count_pages(-1);
        return HEAP_NO_MEMORY;
    }
    return HEAP_OK;
}

/* Puts the claimed pages [va, va + pages) in the cache, giving the oldest
 * back to the PMM beyond the watermark. */
static void release_pages(vaddr_t va, size_t pages)
{
    for (size_t done = 0; heap_descriptor.cache_watermark == 0 && done < pages;
         done += HEAP_RUN_PAGES)
        unmap_run(va + done * PAGE_SIZE,
                  pages - done < HEAP_RUN_PAGES ? pages - done : HEAP_RUN_PAGES);
    for (size_t i = 0; heap_descriptor.cache_watermark != 0 && i < pages; i++) {
        if (heap_descriptor.cached_pages == heap_descriptor.cache_watermark)
            cache_evict_oldest();
        cache_put(va + i * PAGE_SIZE);
    }
}

enum heap_status heap_pages_claim(vaddr_t va, size_t pages)
{
    if (!heap_in_range(va) || (va & (PAGE_SIZE - 1)) != 0 ||
        pages > (HEAP_END - va) / PAGE_SIZE)
        panic("heap_pages_claim: 0x%lx + %lu pages is not in the heap (heap=%s)", va, pages,
              heap_name);
    for (size_t i = 0; i < pages; i++) {
        if (claim_page(va + i * PAGE_SIZE) != HEAP_OK) {
            release_pages(va, i);
            return HEAP_NO_MEMORY;
        }
    }
    heap_poison((void *)va, pages * PAGE_SIZE);
    return HEAP_OK;
}

void heap_pages_release(vaddr_t va, size_t pages)
{
    release_pages(va, pages);
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
