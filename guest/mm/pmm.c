/*
 * pmm.c - the physical memory manager's common layer.
 *
 * Owns: the copy of the memory map, the table of managed frame ranges,
 * the placement of the backend's metadata, argument checking for every
 * public call, the counts (kept in pmm_descriptor, which a checker reads),
 * poisoning freed frames in MM_DEBUG builds, and dispatch to the backend.
 * Does not own: the free/used state itself (pmm_bitmap.c, pmm_buddy.c) or
 * page tables (paging.c).
 *
 * Managed frames are a sorted table of disjoint ranges: the USABLE entries
 * without frame 0, plus what pmm_reclaim_bootloader adds later. The table
 * leaves out the metadata frames (counted as used, never freeable), so it
 * is all pmm_free has to look up. The backend describes one span
 * [base_pfn, base_pfn + frames) that covers every USABLE and
 * BOOTLOADER_RECLAIMABLE frame, so reclaiming needs no resizing; base_pfn
 * is aligned to 2^PMM_BUDDY_MAX_ORDER so that frame alignment inside the
 * span is the same as physical alignment.
 */
#include "mm/pmm.h"

#include "boot/boot.h"
#include "lib/panic.h"
#include "lib/string.h"
#include "test/planted.h"

#define MAX_REGIONS 1024                  /* the most entries a loader may give */
#define MAX_RANGES (MAX_REGIONS + 16)     /* USABLE entries plus reclaimed pieces */
#define SPAN_ALIGN ((pfn_t)1 << PMM_BUDDY_MAX_ORDER)

vaddr_t hhdm_base;
struct pmm_descriptor pmm_descriptor;

static struct pmm_region regions[MAX_REGIONS];
static size_t region_count;

static struct frame_range managed[MAX_RANGES];
static size_t managed_count;

/* A copy of the chosen backend, not a pointer to it: a call through it
 * needs one load less. Its name is NULL until pmm_init. */
static struct pmm_backend backend;
static struct frame_range metadata;
static size_t reclaimed;
static bool reclaim_done;

/* ---- The memory map copy ------------------------------------------------ */

size_t pmm_region_count(void)
{
    return region_count;
}

const struct pmm_region *pmm_region(size_t index)
{
    if (index >= region_count)
        panic("pmm_region: index %lu of %lu", index, region_count);
    return &regions[index];
}

static void copy_memmap(void)
{
    const struct limine_memmap_response *mm = boot_memmap();
    const struct limine_hhdm_response *hhdm = boot_hhdm();

    if (mm == NULL || hhdm == NULL)
        panic("pmm_init: the loader gave no %s", mm == NULL ? "memory map" : "HHDM");
    if (mm->entry_count > MAX_REGIONS)
        panic("pmm_init: %lu memory map entries, at most %d", mm->entry_count, MAX_REGIONS);
    for (uint64_t i = 0; i < mm->entry_count; i++) {
        regions[i].base = mm->entries[i]->base;
        regions[i].length = mm->entries[i]->length;
        regions[i].type = mm->entries[i]->type;
    }
    region_count = mm->entry_count;
    hhdm_base = hhdm->offset;
}

/* The whole frames of a region: [start, end), frame 0 left out. */
static struct frame_range region_frames(const struct pmm_region *r)
{
    struct frame_range f;

    f.start = paddr_to_pfn(r->base + PAGE_SIZE - 1);
    f.end = paddr_to_pfn(r->base + r->length);
    if (f.start == 0)
        f.start = 1;
    if (f.end < f.start)
        f.end = f.start;
    return f;
}

static bool is_ram_type(uint64_t type)
{
    return type == LIMINE_MEMMAP_USABLE || type == LIMINE_MEMMAP_BOOTLOADER_RECLAIMABLE;
}

/* ---- Managed ranges ------------------------------------------------------ */

/* Inserts [start, end) into the sorted table, merging with neighbours. */
static void add_managed(pfn_t start, pfn_t end)
{
    size_t i = 0;

    if (start >= end)
        return;
    while (i < managed_count && managed[i].end < start)
        i++;
    if (i < managed_count && managed[i].start <= end) {
        if (start < managed[i].start)
            managed[i].start = start;
        if (end > managed[i].end)
            managed[i].end = end;
        if (i + 1 < managed_count && managed[i + 1].start <= managed[i].end) {
            managed[i].end = managed[i + 1].end;
            memmove(&managed[i + 1], &managed[i + 2],
                    (managed_count - i - 2) * sizeof(managed[0]));
            managed_count--;
        }
        return;
    }
    if (managed_count == MAX_RANGES)
        panic("add_managed: more than %d managed ranges", MAX_RANGES);
    memmove(&managed[i + 1], &managed[i], (managed_count - i) * sizeof(managed[0]));
    managed[i].start = start;
    managed[i].end = end;
    managed_count++;
}

/* The managed range is_managed found last: managed ranges only ever grow,
 * so a copy of one stays managed. Frees cluster: most hit it. Kept as a
 * start and a length, so the hit test is one subtraction and a compare. */
static struct {
    pfn_t start;
    uint64_t frames;
} last_hit;

/* Binary search: is pfn in a managed range? Records the hit in last_hit. */
static bool find_managed(pfn_t pfn)
{
    size_t lo = 0, hi = managed_count;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;

        if (pfn < managed[mid].start)
            hi = mid;
        else if (pfn >= managed[mid].end)
            lo = mid + 1;
        else {
            last_hit.start = managed[mid].start;
            last_hit.frames = managed[mid].end - managed[mid].start;
            return true;
        }
    }
    return false;
}

static bool is_managed(pfn_t pfn)
{
    return pfn - last_hit.start < last_hit.frames || find_managed(pfn);
}

/* ---- Metadata placement -------------------------------------------------- */

/* The span every USABLE and BOOTLOADER_RECLAIMABLE frame lies in. */
static struct frame_range ram_span(void)
{
    struct frame_range span = {.start = PMM_NO_FRAME, .end = 0};

    for (size_t i = 0; i < region_count; i++) {
        struct frame_range f = region_frames(&regions[i]);

        if (!is_ram_type(regions[i].type) || f.start == f.end)
            continue;
        if (f.start < span.start)
            span.start = f.start;
        if (f.end > span.end)
            span.end = f.end;
    }
    if (span.end == 0)
        panic("pmm_init: the memory map has no USABLE frame");
    span.start &= ~(SPAN_ALIGN - 1);
    return span;
}

/* The first frames of the first USABLE region holding count frames. */
static struct frame_range place_metadata(uint64_t count)
{
    for (size_t i = 0; i < region_count; i++) {
        struct frame_range f = region_frames(&regions[i]);

        if (regions[i].type == LIMINE_MEMMAP_USABLE && f.end - f.start >= count)
            return (struct frame_range){.start = f.start, .end = f.start + count};
    }
    panic("pmm_init: no USABLE region holds the %lu frames of %s metadata", count,
          backend.name);
}

static void fill_descriptor(struct frame_range span, uint64_t meta_bytes)
{
    struct pmm_descriptor *d = &pmm_descriptor;

    d->version = PMM_DESCRIPTOR_VERSION;
    d->kind = backend.kind;
    d->map_bytes = meta_bytes;
    d->base_pfn = span.start;
    d->frames = span.end - span.start;
    d->hhdm_offset = hhdm_base;
    d->meta_base = pfn_to_paddr(metadata.start);
    d->meta_frames = metadata.end - metadata.start;
    backend.describe(d);
    d->magic = PMM_DESCRIPTOR_MAGIC;
}

/* ---- Bring-up ------------------------------------------------------------ */

/* Fills [start, end) with PMM_POISON through the HHDM. */
static void poison(pfn_t start, pfn_t end)
{
    for (pfn_t pfn = start; pfn < end; pfn++) {
        uint64_t *w = phys_to_virt(pfn_to_paddr(pfn));

        for (size_t i = 0; i < PAGE_SIZE / sizeof(*w); i++)
            w[i] = PMM_POISON;
    }
}

/* Makes [start, end) managed and free; nothing if it is empty. */
static void adopt_piece(pfn_t start, pfn_t end)
{
    if (start >= end)
        return;
    add_managed(start, end);
    backend.release(start, end - start);
    pmm_descriptor.free_frames += end - start;
}

/* Counts [start, end) and adopts it, minus the metadata frames. */
static void adopt_free(pfn_t start, pfn_t end)
{
    pfn_t cut_start = start > metadata.start ? start : metadata.start;
    pfn_t cut_end = end < metadata.end ? end : metadata.end;

    pmm_descriptor.total_frames += end - start;
    if (cut_start >= cut_end)
        cut_start = cut_end = end;
    adopt_piece(start, cut_start);
    adopt_piece(cut_end, end);
}

void pmm_init(enum pmm_kind kind)
{
    struct frame_range span;
    uint64_t bytes;

    if (backend.name != NULL)
        panic("pmm_init: called twice");
    backend = kind == PMM_BUDDY ? pmm_buddy_backend : pmm_bitmap_backend;
    copy_memmap();
    span = ram_span();
    bytes = backend.metadata_bytes(span.end - span.start);
    metadata = place_metadata((bytes + PAGE_SIZE - 1) / PAGE_SIZE);
    backend.init(phys_to_virt(pfn_to_paddr(metadata.start)), span.start,
                  span.end - span.start);
    for (size_t i = 0; i < region_count; i++) {
        struct frame_range f = region_frames(&regions[i]);

        if (regions[i].type == LIMINE_MEMMAP_USABLE)
            adopt_free(f.start, f.end);
    }
    fill_descriptor(span, bytes);
}

/* The first keep range that ends after pfn and starts before end, or NULL. */
static const struct frame_range *next_kept(pfn_t pfn, pfn_t end, const struct frame_range *keep,
                                           size_t nkeep)
{
    const struct frame_range *first = NULL;

    for (size_t k = 0; k < nkeep; k++) {
        if (keep[k].end <= pfn || keep[k].start >= end)
            continue;
        if (first == NULL || keep[k].start < first->start)
            first = &keep[k];
    }
    return first;
}

/* Adopts [start, end) without the keep ranges; returns the frames added. */
static size_t reclaim_range(pfn_t start, pfn_t end, const struct frame_range *keep,
                            size_t nkeep)
{
    size_t added = 0;

    while (start < end) {
        const struct frame_range *k = next_kept(start, end, keep, nkeep);
        pfn_t piece_end = k == NULL ? end : (k->start > start ? k->start : start);

        if (piece_end > start) {
            if (MM_DEBUG)
                poison(start, piece_end);
            adopt_free(start, piece_end);
            added += piece_end - start;
        }
        start = k == NULL ? end : k->end;
    }
    return added;
}

size_t pmm_reclaim_bootloader(const struct frame_range *keep, size_t nkeep)
{
    size_t added = 0;

    if (backend.name == NULL || reclaim_done)
        panic("pmm_reclaim_bootloader: %s",
              backend.name == NULL ? "before pmm_init" : "called twice");
    reclaim_done = true;
    for (size_t i = 0; i < region_count; i++) {
        struct frame_range f = region_frames(&regions[i]);

        if (regions[i].type == LIMINE_MEMMAP_BOOTLOADER_RECLAIMABLE)
            added += reclaim_range(f.start, f.end, keep, nkeep);
    }
    reclaimed = added;
    return added;
}

/* ---- Allocation ---------------------------------------------------------- */

static pmm_shrinker_fn shrinker;

void pmm_set_shrinker(pmm_shrinker_fn fn)
{
    shrinker = fn;
}

/* Asks the shrinker for its frames (never from inside it); true if it
 * gave some back, so the allocation is worth trying again. */
static bool shrink(void)
{
    static bool shrinking;
    size_t freed;

    if (shrinker == NULL || shrinking)
        return false;
    shrinking = true;
    freed = shrinker();
    shrinking = false;
    return freed > 0;
}

static paddr_t alloc_one(void)
{
    pfn_t pfn;

    if (pmm_descriptor.free_frames == 0)
        return 0;
    pfn = backend.take(1, 1);
    if (pfn == PMM_NO_FRAME)
        panic("pmm_alloc: the %s found no frame of the %lu counted free", backend.name,
              pmm_descriptor.free_frames);
    pmm_descriptor.free_frames--;
    return pfn_to_paddr(pfn);
}

paddr_t pmm_alloc(void)
{
    paddr_t pa = alloc_one();

    if (pa == 0 && shrink())
        pa = alloc_one();
    return pa;
}

static paddr_t alloc_run(size_t frames, size_t align_frames)
{
    pfn_t pfn;

    if (frames > pmm_descriptor.free_frames)
        return 0;
    pfn = backend.take(frames, align_frames);
    if (pfn == PMM_NO_FRAME)
        return 0;
    pmm_descriptor.free_frames -= frames;
    return pfn_to_paddr(pfn);
}

paddr_t pmm_alloc_contiguous(size_t frames, size_t align_frames)
{
    paddr_t pa;

    if (align_frames == 0)
        align_frames = 1;
    if (frames == 0 || (align_frames & (align_frames - 1)) != 0)
        panic("pmm_alloc_contiguous: %lu frames aligned to %lu: need frames > 0 and a "
              "power-of-two alignment", frames, align_frames);
    pa = alloc_run(frames, align_frames);
    if (pa == 0 && shrink())
        pa = alloc_run(frames, align_frames);
    return pa;
}

/* Panics with fn's name unless pa, the address of frame pfn, is a managed,
 * allocated frame. */
static inline void check_freeable(const char *fn, paddr_t pa, pfn_t pfn)
{
#if PLANT_BUG == 4 /* planted bug 4: any frame of the span passes, managed or not */
    (void)is_managed;
    if ((pa & (PAGE_SIZE - 1)) != 0 || pfn < pmm_descriptor.base_pfn ||
        pfn - pmm_descriptor.base_pfn >= pmm_descriptor.frames ||
        (pfn >= metadata.start && pfn < metadata.end))
#else
    if ((pa & (PAGE_SIZE - 1)) != 0 || !is_managed(pfn)) /* the metadata is not in the table */
#endif
        panic("%s: 0x%lx is not managed RAM", fn, pa);
    if (backend.state(pfn) == FRAME_FREE)
        panic("%s: double free of 0x%lx", fn, pa);
}

void pmm_free(paddr_t pa)
{
    check_freeable("pmm_free", pa, paddr_to_pfn(pa));
    if (MM_DEBUG)
        poison(paddr_to_pfn(pa), paddr_to_pfn(pa) + 1);
    backend.release(paddr_to_pfn(pa), 1);
    pmm_descriptor.free_frames++;
}

void pmm_free_contiguous(paddr_t pa, size_t frames)
{
    pfn_t pfn = paddr_to_pfn(pa);

    if (frames == 0)
        panic("pmm_free_contiguous: 0 frames at 0x%lx", pa);
    /* pa's offset in its page is every frame's: the first frame checks it. */
    check_freeable("pmm_free_contiguous", pa, pfn);
    for (size_t i = 1; i < frames; i++)
        check_freeable("pmm_free_contiguous", pfn_to_paddr(pfn + i), pfn + i);
    if (MM_DEBUG)
        poison(pfn, pfn + frames);
    backend.release(pfn, frames);
    pmm_descriptor.free_frames += frames;
}

/* ---- Counts and names ---------------------------------------------------- */

size_t pmm_free_count(void)
{
    return pmm_descriptor.free_frames;
}

size_t pmm_used_count(void)
{
    return pmm_descriptor.total_frames - pmm_descriptor.free_frames;
}

size_t pmm_total_count(void)
{
    return pmm_descriptor.total_frames;
}

size_t pmm_metadata_frames(void)
{
    return metadata.end - metadata.start;
}

size_t pmm_reclaimed_frames(void)
{
    return reclaimed;
}

enum pmm_kind pmm_kind(void)
{
    return backend.name != NULL ? backend.kind : PMM_BITMAP;
}

const char *pmm_kind_name(enum pmm_kind kind)
{
    return kind == PMM_BUDDY ? "buddy" : "bitmap";
}
