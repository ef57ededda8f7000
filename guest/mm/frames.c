/*
 * frames.c - user frames and their reference counts (see frames.h).
 *
 * Owns: the count directory, its chunks, and the per-chunk number of
 * counted frames that decides when a chunk goes back to the PMM.
 * Does not own: the frames' contents beyond zeroing, or their mappings.
 */
#include "mm/frames.h"

#include "heap/heap.h"
#include "lib/panic.h"
#include "lib/string.h"
#include "mm/pmm.h"
#include "mm/swap.h"

static uint32_t **dir;
static uint32_t *chunk_live; /* counted frames per chunk */
static size_t chunks;
static size_t counted;

void uframes_init(void)
{
    pfn_t end = pmm_descriptor.base_pfn + pmm_descriptor.frames;

    chunks = (end + UFRAME_CHUNK_FRAMES - 1) / UFRAME_CHUNK_FRAMES;
    dir = kcalloc(chunks, sizeof(*dir));
    chunk_live = kcalloc(chunks, sizeof(*chunk_live));
    if (dir == NULL || chunk_live == NULL)
        panic("uframes_init: no memory for %lu count chunks", chunks);
}

/* The count slot of pfn, taking a chunk if create; NULL if none. */
static uint32_t *slot(pfn_t pfn, bool create)
{
    size_t c = pfn / UFRAME_CHUNK_FRAMES;
    paddr_t pa;

    if (c >= chunks)
        panic("frames: frame 0x%lx beyond the PMM's range", pfn_to_paddr(pfn));
    if (dir[c] == NULL) {
        if (!create)
            return NULL;
        pa = pmm_alloc();
        if (pa == 0)
            return NULL;
        dir[c] = phys_to_virt(pa);
        page_zero(dir[c]);
    }
    return &dir[c][pfn % UFRAME_CHUNK_FRAMES];
}

paddr_t uframe_alloc(enum uframe_fill fill)
{
    size_t limit = swap_user_limit();
    paddr_t pa;
    uint32_t *count;

    swap_reclaim_if_low(counted);
    if (limit != 0 && counted >= limit && !swap_reclaim_one())
        return 0;
    pa = pmm_alloc();
    if (pa == 0 && swap_reclaim_one())
        pa = pmm_alloc();
    if (pa == 0)
        return 0;
    count = slot(paddr_to_pfn(pa), true);
    if (count == NULL) {
        pmm_free(pa);
        return 0;
    }
    if (*count != 0)
        panic("uframe_alloc: the PMM handed out 0x%lx, which has %u references", pa, *count);
    *count = 1;
    chunk_live[paddr_to_pfn(pa) / UFRAME_CHUNK_FRAMES]++;
    counted++;
    if (fill == UFRAME_ZEROED)
        page_zero(phys_to_virt(pa));
    return pa;
}

void uframe_get(paddr_t pa)
{
    uint32_t *count = slot(paddr_to_pfn(pa), false);

    if (count == NULL || *count == 0)
        panic("uframe_get: 0x%lx has no references", pa);
    (*count)++;
}

void uframe_put(paddr_t pa)
{
    pfn_t pfn = paddr_to_pfn(pa);
    uint32_t *count = slot(pfn, false);
    size_t c = pfn / UFRAME_CHUNK_FRAMES;

    if (count == NULL || *count == 0)
        panic("uframe_put: 0x%lx has no references", pa);
    if (--*count != 0)
        return;
    counted--;
    swap_frame_freed(pa);
    pmm_free(pa);
    if (--chunk_live[c] == 0) {
        pmm_free(virt_to_phys(dir[c]));
        dir[c] = NULL;
    }
}

uint32_t uframe_refs(paddr_t pa)
{
    uint32_t *count = slot(paddr_to_pfn(pa), false);

    return count != NULL ? *count : 0;
}

size_t uframe_count(void)
{
    return counted;
}

struct uframe_layout uframe_layout(void)
{
    return (struct uframe_layout){.dir = dir, .chunks = chunks};
}
