/*
 * pmm_buddy.c - the buddy backend of the physical memory manager.
 *
 * Owns: the free lists (one free_area per order), the per-frame state
 * bytes and the per-frame free-list links, all in the metadata pmm.c
 * places for it.
 * Does not own: argument checks, counts or poisoning (pmm.c).
 *
 * The idea, once: free memory is kept as blocks of 2^order frames, each
 * aligned to its own size, for order 0 to PMM_BUDDY_MAX_ORDER. The block
 * of the same order next to a block, with which it would form the aligned
 * block of order + 1, is its buddy: index ^ (1 << order). Allocation takes
 * a block from the smallest order that has one and splits it, giving the
 * unused upper halves back to the lower orders' lists. Freeing a block
 * merges it with its buddy as long as the buddy is free and whole, so
 * free memory keeps coalescing into large blocks.
 *
 * Frame indices are relative to base_pfn, which pmm.c aligns to
 * 2^PMM_BUDDY_MAX_ORDER, so index alignment is physical alignment. Only
 * the first frame of a free block has a nonzero state byte (FREE_HEAD |
 * order); links are meaningful only there. Nothing is written into free
 * frames themselves, so untouched RAM stays untouched.
 */
#include "pmm.h"

#include "panic.h"
#include "string.h"

#define NIL 0xffffffffu
#define FREE_HEAD(order) ((uint8_t)(PMM_BUDDY_FREE_HEAD | (order)))

struct buddy_link {
    uint32_t next;
    uint32_t prev;
};

struct free_area {
    uint32_t head;    /* first free block of this order, NIL if none */
    uint64_t nr_free; /* blocks on the list */
};

static uint8_t *state;
static struct buddy_link *links;
static struct free_area free_area[PMM_BUDDY_MAX_ORDER + 1];
static uint64_t nframes;
static pfn_t base;

static uint64_t links_offset(uint64_t frames)
{
    return (frames + 7) & ~(uint64_t)7;
}

static uint64_t buddy_metadata_bytes(uint64_t frames)
{
    return links_offset(frames) + frames * sizeof(struct buddy_link);
}

static void buddy_init(void *meta, pfn_t base_pfn, uint64_t frames)
{
    if (frames >= NIL)
        panic("buddy_init: %lu frames do not fit 32-bit links", frames);
    state = meta;
    links = (struct buddy_link *)((uint8_t *)meta + links_offset(frames));
    nframes = frames;
    base = base_pfn;
    memset(state, 0, frames);
    for (int order = 0; order <= PMM_BUDDY_MAX_ORDER; order++) {
        free_area[order].head = NIL;
        free_area[order].nr_free = 0;
    }
}

static void list_push(unsigned order, uint64_t idx)
{
    struct free_area *area = &free_area[order];

    links[idx].next = area->head;
    links[idx].prev = NIL;
    if (area->head != NIL)
        links[area->head].prev = (uint32_t)idx;
    area->head = (uint32_t)idx;
    area->nr_free++;
    state[idx] = FREE_HEAD(order);
}

static void list_remove(unsigned order, uint64_t idx)
{
    struct free_area *area = &free_area[order];
    struct buddy_link *l = &links[idx];

    if (l->prev != NIL)
        links[l->prev].next = l->next;
    else
        area->head = l->next;
    if (l->next != NIL)
        links[l->next].prev = l->prev;
    area->nr_free--;
    state[idx] = 0;
}

/* Frees the aligned block at idx, merging with free buddies upwards. */
static void free_block(uint64_t idx, unsigned order)
{
    while (order < PMM_BUDDY_MAX_ORDER) {
        uint64_t buddy = idx ^ ((uint64_t)1 << order);

        if (buddy + ((uint64_t)1 << order) > nframes || state[buddy] != FREE_HEAD(order))
            break;
        list_remove(order, buddy);
        idx &= ~((uint64_t)1 << order);
        order++;
    }
    list_push(order, idx);
}

/* The largest order a block at idx may have without passing end. */
static unsigned fitting_order(uint64_t idx, uint64_t end)
{
    unsigned order = 0;

    while (order < PMM_BUDDY_MAX_ORDER && (idx & ((uint64_t)1 << order)) == 0 &&
           idx + ((uint64_t)2 << order) <= end)
        order++;
    return order;
}

/* Cuts [idx, end) into maximal aligned blocks and frees each. Not inlined,
 * so that the single-frame path of buddy_release stays short. */
static __attribute__((noinline)) void release_range(uint64_t idx, uint64_t end)
{
    while (idx < end) {
        unsigned order = fitting_order(idx, end);

        free_block(idx, order);
        idx += (uint64_t)1 << order;
    }
}

static void buddy_release(pfn_t pfn, uint64_t count)
{
    if (count == 1) /* the common case, without fitting_order */
        free_block(pfn - base, 0);
    else
        release_range(pfn - base, pfn - base + count);
}

/* Takes a block of exactly 2^order frames: split a larger one if needed. */
static pfn_t take_block(unsigned order)
{
    unsigned k = order;
    uint64_t idx;

    while (k <= PMM_BUDDY_MAX_ORDER && free_area[k].head == NIL)
        k++;
    if (k > PMM_BUDDY_MAX_ORDER)
        return PMM_NO_FRAME;
    idx = free_area[k].head;
    list_remove(k, idx);
    while (k > order) {
        k--;
        list_push(k, idx + ((uint64_t)1 << k)); /* split: the upper half stays free */
    }
    return idx;
}

/* The block of the smallest order holding count frames aligned to align;
 * the frames past count go straight back to the free lists. */
static pfn_t buddy_take(uint64_t count, uint64_t align)
{
    uint64_t need = count > align ? count : align;
    unsigned order = 0;
    pfn_t idx;

    if (need == 1 && free_area[0].head != NIL) { /* the common case: a free single frame */
        idx = free_area[0].head;
        list_remove(0, idx);
        return base + idx;
    }
    while (((uint64_t)1 << order) < need)
        order++;
    if (order > PMM_BUDDY_MAX_ORDER)
        return PMM_NO_FRAME;
    idx = take_block(order);
    if (idx == PMM_NO_FRAME)
        return PMM_NO_FRAME;
    if (count < ((uint64_t)1 << order))
        buddy_release(base + idx + count, ((uint64_t)1 << order) - count);
    return base + idx;
}

/* Free iff some free block's head covers it: one candidate per order. */
static enum frame_state buddy_state(pfn_t pfn)
{
    uint64_t idx = pfn - base;

    for (unsigned order = 0; order <= PMM_BUDDY_MAX_ORDER; order++) {
        uint64_t head = idx & ~(((uint64_t)1 << order) - 1);

        if (state[head] == FREE_HEAD(order))
            return FRAME_FREE;
    }
    return FRAME_USED;
}

static void buddy_describe(struct pmm_descriptor *d)
{
    d->max_order = PMM_BUDDY_MAX_ORDER;
    d->map = virt_to_phys(state);
    d->links = virt_to_phys(links);
}

const struct pmm_backend pmm_buddy_backend = {
    .kind = PMM_BUDDY,
    .name = "buddy",
    .metadata_bytes = buddy_metadata_bytes,
    .init = buddy_init,
    .release = buddy_release,
    .take = buddy_take,
    .state = buddy_state,
    .describe = buddy_describe,
};
