/*
 * pmm_buddy.c - the buddy backend of the physical memory manager.
 *
 * Owns: the free lists (one per order), the per-frame state bytes, the
 * per-frame free-list links and a private per-frame free bitmap, all in
 * the metadata pmm.c places for it.
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
 *
 * The state bytes tell whether a frame is free only through its block's
 * head, one candidate per order. The private free bitmap (bit i set iff
 * frame i is free) tells it in one bit test: pmm.c's double-free check
 * (state) and the single-frame free path use it. Its bits change only
 * where whole blocks are taken or freed, not on splits or merges.
 */
#include "mm/pmm.h"

#include "lib/panic.h"
#include "lib/string.h"

#define NIL 0xffffffffu
#define FREE_HEAD(order) ((uint8_t)(PMM_BUDDY_FREE_HEAD | (order)))

struct buddy_link {
    uint32_t next;
    uint32_t prev;
};

static uint8_t *state;
static struct buddy_link *links;
static uint64_t *free_bits;
static uint32_t free_head[PMM_BUDDY_MAX_ORDER + 1]; /* first free block per order, or NIL */
static uint64_t nframes;
static pfn_t base;

/* The metadata: state bytes, then links, then the free bitmap. */
static uint64_t links_offset(uint64_t frames)
{
    return (frames + 7) & ~(uint64_t)7;
}

static uint64_t bits_offset(uint64_t frames)
{
    return links_offset(frames) + frames * sizeof(struct buddy_link);
}

static uint64_t bits_bytes(uint64_t frames)
{
    return (frames + 63) / 64 * sizeof(uint64_t);
}

static uint64_t buddy_metadata_bytes(uint64_t frames)
{
    return bits_offset(frames) + bits_bytes(frames);
}

static void buddy_init(void *meta, pfn_t base_pfn, uint64_t frames)
{
    if (frames >= NIL)
        panic("buddy_init: %lu frames do not fit 32-bit links", frames);
    state = meta;
    links = (struct buddy_link *)((uint8_t *)meta + links_offset(frames));
    free_bits = (uint64_t *)((uint8_t *)meta + bits_offset(frames));
    nframes = frames;
    base = base_pfn;
    memset(state, 0, frames);
    memset(free_bits, 0, bits_bytes(frames));
    for (int order = 0; order <= PMM_BUDDY_MAX_ORDER; order++)
        free_head[order] = NIL;
}

/* Bit i of free_bits. bt, bts and btr address a bit string at any offset,
 * so each is one instruction (as Linux's x86 bitops are). */
static bool bit_test(uint64_t i)
{
    bool set;

    __asm__("btq %2, %1" : "=@ccc"(set) : "m"(*free_bits), "r"(i) : "memory");
    return set;
}

static void bit_set(uint64_t i)
{
    __asm__ volatile("btsq %1, %0" : "+m"(*free_bits) : "r"(i) : "memory");
}

static void bit_clear(uint64_t i)
{
    __asm__ volatile("btrq %1, %0" : "+m"(*free_bits) : "r"(i) : "memory");
}

/* Sets (free) or clears the bits of the aligned block at idx. */
static void mark_block(uint64_t idx, unsigned order, bool free)
{
    uint64_t *w = &free_bits[idx / 64];

    if (order == 0) {
        if (free)
            bit_set(idx);
        else
            bit_clear(idx);
        return;
    }
    if (order < 6) { /* within one word */
        uint64_t mask = (((uint64_t)2 << ((1u << order) - 1)) - 1) << (idx % 64);

        *w = free ? *w | mask : *w & ~mask;
        return;
    }
    for (uint64_t n = (uint64_t)1 << (order - 6); n > 0; n--)
        *w++ = free ? ~(uint64_t)0 : 0;
}

static void list_push(unsigned order, uint64_t idx)
{
    uint32_t head = free_head[order];

    links[idx].next = head;
    links[idx].prev = NIL;
    if (head != NIL)
        links[head].prev = (uint32_t)idx;
    free_head[order] = (uint32_t)idx;
    state[idx] = FREE_HEAD(order);
}

/* Takes the first block off order's list, which must not be empty. */
static uint64_t list_pop(unsigned order)
{
    uint64_t idx = free_head[order];
    uint32_t next = links[idx].next;

    free_head[order] = next;
    if (next != NIL)
        links[next].prev = NIL;
    state[idx] = 0;
    return idx;
}

static void list_remove(unsigned order, uint64_t idx)
{
    struct buddy_link *l = &links[idx];

    if (l->prev != NIL)
        links[l->prev].next = l->next;
    else
        free_head[order] = l->next;
    if (l->next != NIL)
        links[l->next].prev = l->prev;
    state[idx] = 0;
}

/* Is the buddy of the block at idx a free block of the same order? A free
 * head inside the span starts a free block inside the span, so the head
 * is all that needs bounds checking. */
static bool buddy_free(uint64_t idx, unsigned order)
{
    uint64_t buddy = idx ^ ((uint64_t)1 << order);

    return buddy < nframes && state[buddy] == FREE_HEAD(order);
}

/* Frees the aligned block at idx, merging with free buddies upwards. */
static void free_block(uint64_t idx, unsigned order)
{
    mark_block(idx, order, true);
    while (order < PMM_BUDDY_MAX_ORDER && buddy_free(idx, order)) {
        list_remove(order, idx ^ ((uint64_t)1 << order));
        idx &= ~((uint64_t)1 << order);
        order++;
    }
    list_push(order, idx);
}

/* The largest order a block at idx may have without passing end (> idx):
 * the lesser of idx's alignment and the floor of log2 of the length. */
static unsigned fitting_order(uint64_t idx, uint64_t end)
{
    unsigned align = (unsigned)__builtin_ctzll(idx | ((uint64_t)1 << PMM_BUDDY_MAX_ORDER));
    unsigned fit = 63 - (unsigned)__builtin_clzll(end - idx);

    return align < fit ? align : fit;
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
    uint64_t idx = pfn - base;

    /* The common case: free_block without a merge. The buddy of a used
     * frame is a free block of order 0 iff it is a free frame. */
    if (count == 1 && !bit_test(idx ^ 1)) {
        mark_block(idx, 0, true);
        list_push(0, idx);
        return;
    }
    release_range(idx, idx + count);
}

/* Takes a block of exactly 2^order frames: split a larger one if needed. */
static pfn_t take_block(unsigned order)
{
    unsigned k = order;
    uint64_t idx;

    while (k <= PMM_BUDDY_MAX_ORDER && free_head[k] == NIL)
        k++;
    if (k > PMM_BUDDY_MAX_ORDER)
        return PMM_NO_FRAME;
    idx = list_pop(k);
    while (k > order) {
        k--;
        list_push(k, idx + ((uint64_t)1 << k)); /* split: the upper half stays free */
    }
    mark_block(idx, order, false);
    return idx;
}

/* The block of the smallest order holding count frames aligned to align;
 * the frames past count go straight back to the free lists. Not inlined,
 * so that the single-frame path of buddy_take stays short. */
static __attribute__((noinline)) pfn_t take_run(uint64_t count, uint64_t align)
{
    uint64_t need = count > align ? count : align;
    unsigned order = need == 1 ? 0 : 64 - (unsigned)__builtin_clzll(need - 1);
    pfn_t idx;

    if (order > PMM_BUDDY_MAX_ORDER)
        return PMM_NO_FRAME;
    idx = take_block(order);
    if (idx == PMM_NO_FRAME)
        return PMM_NO_FRAME;
    if (count < ((uint64_t)1 << order))
        release_range(idx + count, idx + ((uint64_t)1 << order));
    return base + idx;
}

static pfn_t buddy_take(uint64_t count, uint64_t align)
{
    uint64_t idx;

    /* The common case is a single frame off the order-0 list: count >= 1
     * and align is a power of two, so (count | align) == 1 means both are 1.
     * Two separate unlikely tests stay two plain branches (one combined
     * test compiles to flag arithmetic). */
    if (__builtin_expect((count | align) != 1, 0))
        return take_run(count, align);
    if (__builtin_expect(free_head[0] == NIL, 0))
        return take_run(count, align);
    idx = list_pop(0);
    mark_block(idx, 0, false);
    return base + idx;
}

static enum frame_state buddy_state(pfn_t pfn)
{
    return bit_test(pfn - base) ? FRAME_FREE : FRAME_USED;
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
