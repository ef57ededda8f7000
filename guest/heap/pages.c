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

void heap_pages_init(enum heap_kind kind, const char *name, enum heap_debug debug)
{
    heap_name = name;
    heap_debug_state = debug;
    heap_descriptor.version = HEAP_DESCRIPTOR_VERSION;
    heap_descriptor.kind = kind;
    heap_descriptor.debug = debug;
    heap_descriptor.base = HEAP_BASE;
    heap_descriptor.end = HEAP_END;
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

/* ---- Claimed pages -------------------------------------------------------------- */

bool heap_page_claimed(vaddr_t va)
{
    return vmm_translate(vmm_kernel_root(), va) != VMM_NO_TRANSLATION;
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

/* Unmaps a run of pages and frees their frames, physically contiguous
 * stretches at once. */
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
}

/* Unmaps pages (not counted off the footprint: the callers do). */
static void unmap_pages(vaddr_t va, size_t pages)
{
    for (size_t done = 0; done < pages; done += HEAP_RUN_PAGES)
        unmap_run(va + done * PAGE_SIZE,
                  pages - done < HEAP_RUN_PAGES ? pages - done : HEAP_RUN_PAGES);
}

/* Maps a run of pages, frame by frame (the PMM's single-frame path is
 * its fastest). HEAP_OK, or HEAP_NO_MEMORY with nothing mapped. */
static enum heap_status map_run(vaddr_t va, size_t pages)
{
    int status = VMM_OK;
    size_t i;

    for (i = 0; i < pages && status == VMM_OK; i++) {
        paddr_t pa = pmm_alloc();

        status = pa == 0 ? VMM_NO_MEMORY
                         : vmm_map(vmm_kernel_root(), va + i * PAGE_SIZE, pa, 1,
                                   VM_WRITE | VM_GLOBAL);
        if (status != VMM_OK && pa != 0)
            pmm_free(pa);
    }
    if (status == VMM_ALREADY_MAPPED)
        panic("heap_pages_claim: 0x%lx already mapped (heap=%s)", va + (i - 1) * PAGE_SIZE,
              heap_name);
    if (status != VMM_OK && i > 1)
        unmap_run(va, i - 1);
    return status == VMM_OK ? HEAP_OK : HEAP_NO_MEMORY;
}

enum heap_status heap_pages_claim(vaddr_t va, size_t pages)
{
    size_t done = 0;

    if (!heap_in_range(va) || (va & (PAGE_SIZE - 1)) != 0 ||
        pages > (HEAP_END - va) / PAGE_SIZE)
        panic("heap_pages_claim: 0x%lx + %lu pages is not in the heap (heap=%s)", va, pages,
              heap_name);
    while (done < pages) {
        size_t run = pages - done < HEAP_RUN_PAGES ? pages - done : HEAP_RUN_PAGES;

        if (map_run(va + done * PAGE_SIZE, run) != HEAP_OK) {
            unmap_pages(va, done);
            return HEAP_NO_MEMORY;
        }
        heap_poison((void *)(va + done * PAGE_SIZE), run * PAGE_SIZE);
        done += run;
    }
    count_pages((int64_t)pages);
    return HEAP_OK;
}

void heap_pages_release(vaddr_t va, size_t pages)
{
    unmap_pages(va, pages);
    count_pages(-(int64_t)pages);
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
