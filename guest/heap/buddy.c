/*
 * buddy.c - the buddy heap (heap=buddy, and the chained heap's large
 * sizes): power-of-two blocks, split on allocation, merged on free.
 *
 * Owns: the arena [BUDDY_BASE, BUDDY_BASE + 2^arena_order), the blocks
 * that tile it, one free list per order (free_area), which of the arena's
 * pages are mapped, and the checks of all of it.
 * Does not own: pages (pages.c), red zones (heap.c).
 *
 * The idea, once: a block of order k is 2^k bytes at an offset from the
 * arena's base that is a multiple of 2^k. Its buddy is the other half of
 * the block of order k + 1 that contains it: offset ^ (1 << k). An
 * allocation takes the smallest free block of at least the order needed
 * and splits it in halves, keeping the lower one, until it has that
 * order; a free merges the block with its buddy while the buddy is a free
 * block of the same order. Two free buddies never stay apart.
 *
 * Every block starts with a 16-byte header (magic, order, state, the
 * payload's offset as an order, and the extent: header, gap and size the
 * caller may touch); a free block keeps its free-list links in the next 16
 * bytes, so the smallest order is 5 (32 bytes). The payload follows the
 * header; for an alignment above 16 it starts at the first aligned offset
 * instead, and the 16 bytes before it hold a tag pointing back to the
 * header.
 *
 * Pages are mapped lazily, so the footprint is what blocks really use:
 * a page of the arena is mapped iff it holds a block's header or lies in
 * the extent of an allocated block. A free block of 4 KiB or more keeps
 * only its first page; an allocated one maps its extent and nothing more,
 * and resizing it maps or unmaps pages at its end. A shrink keeps the
 * block's order (only pages go back); a grow past the order absorbs the
 * free buddies above the block, when it is their lower half, or moves. The arena starts as
 * one page and doubles when no block is large enough: the new upper half
 * becomes a free block (merged with the lower half if that is all free).
 */
#include "heap/backend.h"

#include "heap/pages.h"
#include "lib/panic.h"
#include "test/planted.h"

#define BUDDY_BASE (HEAP_BASE + HEAP_WINDOW)
#define BUDDY_MIN_ORDER 5
#define BUDDY_MAX_ORDER 32
#define BUDDY_PAGE_ORDER 12
#define BUDDY_MAGIC 0x59444442u     /* "BDDY" */
#define BUDDY_TAG_MAGIC 0x47415442u /* "BTAG" */
#define HEADER_BYTES 16

enum buddy_state {
    BUDDY_FREE = 0x46,
    BUDDY_USED = 0x55,
};

struct buddy_block {
    uint32_t magic;      /* BUDDY_MAGIC */
    uint8_t order;
    uint8_t state;       /* enum buddy_state */
    uint8_t front_order; /* the payload starts 1 << front_order bytes in */
    uint8_t reserved;
    uint64_t extent;     /* allocated: bytes from the block's start in use */
};

struct buddy_links {     /* free blocks only, right after the header */
    struct buddy_block *prev;
    struct buddy_block *next;
};

struct buddy_tag {       /* before an aligned payload */
    uint32_t magic;      /* BUDDY_TAG_MAGIC */
    uint32_t front;      /* payload - block */
    uint64_t reserved;
};

static_assert(sizeof(struct buddy_block) == HEADER_BYTES, "buddy header size");
static_assert(sizeof(struct buddy_block) + sizeof(struct buddy_links) <=
                  (1u << BUDDY_MIN_ORDER), "a free block holds its links");

static struct buddy_block *free_area[BUDDY_MAX_ORDER + 1];
static unsigned arena_order; /* 0 until the first allocation */

enum grow_pages {
    GROW_MAPS,       /* arena_grow maps the new half's first page */
    GROW_PREMAPPED,  /* the caller mapped it */
};

/* ---- Blocks -------------------------------------------------------------------- */

static uint64_t order_bytes(unsigned order)
{
    return (uint64_t)1 << order;
}

static vaddr_t arena_end(void)
{
    return arena_order == 0 ? BUDDY_BASE : BUDDY_BASE + order_bytes(arena_order);
}

static struct buddy_links *links(struct buddy_block *b)
{
    return (struct buddy_links *)(b + 1);
}

static struct buddy_block *at(vaddr_t va)
{
    return (struct buddy_block *)va;
}

static struct buddy_block *buddy_of(struct buddy_block *b, unsigned order)
{
#if PLANT_BUG == 104 /* planted bug 104: the right neighbour, buddy or not */
    return at((vaddr_t)b + order_bytes(order));
#else
    return at(BUDDY_BASE + (((vaddr_t)b - BUDDY_BASE) ^ order_bytes(order)));
#endif
}

static size_t extent_pages(uint64_t extent)
{
    return heap_round_up(extent, PAGE_SIZE) / PAGE_SIZE;
}

static void free_push(struct buddy_block *b, unsigned order)
{
    b->magic = BUDDY_MAGIC;
    b->order = (uint8_t)order;
    b->state = BUDDY_FREE;
    b->front_order = 0;
    b->extent = 0;
    links(b)->prev = NULL;
    links(b)->next = free_area[order];
    if (free_area[order] != NULL)
        links(free_area[order])->prev = b;
    free_area[order] = b;
}

static void free_remove(struct buddy_block *b)
{
    struct buddy_links *l = links(b);

    if (l->prev != NULL)
        links(l->prev)->next = l->next;
    else
        free_area[b->order] = l->next;
    if (l->next != NULL)
        links(l->next)->prev = l->prev;
}

/*
 * Makes b (order, first page mapped, nothing else of it mapped) free,
 * merging it with its buddy as long as that is a free block of the same
 * order. The upper half's header becomes plain free space: its page is
 * unmapped (order >= 12) or its bytes poisoned.
 */
static void free_merge(struct buddy_block *b, unsigned order)
{
    while (order < arena_order) {
        struct buddy_block *buddy = buddy_of(b, order);
        struct buddy_block *upper = buddy > b ? buddy : b;

        if ((vaddr_t)buddy >= arena_end() || buddy->magic != BUDDY_MAGIC ||
            buddy->state != BUDDY_FREE || buddy->order != order)
            break;
        free_remove(buddy);
        if (order >= BUDDY_PAGE_ORDER)
            heap_pages_release((vaddr_t)upper, 1);
        else
            heap_poison(upper, sizeof(*upper) + sizeof(struct buddy_links));
        b = buddy < b ? buddy : b;
        order++;
    }
    free_push(b, order);
}

/* Doubles the arena (or creates it, one page); HEAP_NO_MEMORY if it
 * cannot grow. */
static int arena_grow(enum grow_pages pages)
{
    vaddr_t upper = arena_end();

    if (arena_order == BUDDY_MAX_ORDER)
        return HEAP_NO_MEMORY;
    if (pages == GROW_MAPS && heap_pages_claim(upper, 1) != HEAP_OK)
        return HEAP_NO_MEMORY;
    if (arena_order == 0) {
        arena_order = BUDDY_PAGE_ORDER;
        free_push(at(upper), BUDDY_PAGE_ORDER);
        return HEAP_OK;
    }
    arena_order++;
    if (pages == GROW_MAPS)
        free_merge(at(upper), arena_order - 1);
    return HEAP_OK;
}

/* The smallest order >= order with a free block; above arena_order if none. */
static unsigned smallest_free(unsigned order)
{
    while (order <= arena_order && free_area[order] == NULL)
        order++;
    return order;
}

/* Splits free blocks down to one of order, taken off its list (doubling
 * the arena until one is large enough); NULL if out of memory. */
static struct buddy_block *take(unsigned order)
{
    unsigned k;
    struct buddy_block *b;

    for (k = smallest_free(order); k > arena_order; k = smallest_free(order)) {
        if (arena_grow(GROW_MAPS) != HEAP_OK)
            return NULL;
    }
    b = free_area[k];
    free_remove(b);
    while (k > order) {
        struct buddy_block *upper = at((vaddr_t)b + order_bytes(k - 1));

        if (k - 1 >= BUDDY_PAGE_ORDER && heap_pages_claim((vaddr_t)upper, 1) != HEAP_OK) {
            free_merge(b, k);
            return NULL;
        }
        k--;
        free_push(upper, k);
    }
    return b;
}

/* ---- Finding a block from its payload ----------------------------------------------- */

static bool in_arena(vaddr_t va)
{
    return va - BUDDY_BASE < arena_end() - BUDDY_BASE;
}

/* The allocated block whose payload is p; panics (fn) otherwise. */
static struct buddy_block *block_of(const void *p, const char *fn)
{
    vaddr_t va = (vaddr_t)p;
    const struct buddy_tag *tag = (const struct buddy_tag *)p - 1;
    struct buddy_block *b = (struct buddy_block *)tag;

    if (!in_arena(va - HEADER_BYTES) || (va & 15) != 0 ||
        (heap_debug_state == HEAP_DEBUG_ON && !heap_page_claimed(va - HEADER_BYTES)))
        heap_fail(fn, "invalid free of", p);
    if (tag->magic == BUDDY_TAG_MAGIC) {
        if (tag->front > va - BUDDY_BASE || (tag->front & (tag->front - 1)) != 0)
            heap_fail(fn, "invalid free of", p);
        b = at(va - tag->front);
    }
    if (b->magic == BUDDY_MAGIC && b->state == BUDDY_FREE)
        heap_fail(fn, "double free of", p);
    if (b->magic != BUDDY_MAGIC || b->state != BUDDY_USED ||
        va - (vaddr_t)b != (vaddr_t)1 << b->front_order)
        heap_fail(fn, "invalid free of", p);
    return b;
}

/* ---- The backend --------------------------------------------------------------------- */

static void buddy_init(void)
{
    for (unsigned k = 0; k <= BUDDY_MAX_ORDER; k++)
        free_area[k] = NULL;
    arena_order = 0;
}

static void *buddy_alloc(size_t size, size_t align)
{
    unsigned front_order = heap_order_of(align > HEADER_BYTES ? align : HEADER_BYTES);
    uint64_t extent = order_bytes(front_order) + size;
    unsigned order = heap_order_of(extent);
    struct buddy_block *b;

    if (order < BUDDY_MIN_ORDER)
        order = BUDDY_MIN_ORDER;
    if (order > BUDDY_MAX_ORDER)
        return NULL;
    b = take(order);
    if (b == NULL)
        return NULL;
    if (order >= BUDDY_PAGE_ORDER && extent_pages(extent) > 1 &&
        heap_pages_claim((vaddr_t)b + PAGE_SIZE, extent_pages(extent) - 1) != HEAP_OK) {
        free_merge(b, order);
        return NULL;
    }
    b->order = (uint8_t)order;
    b->state = BUDDY_USED;
    b->front_order = (uint8_t)front_order;
    b->extent = extent;
    if (front_order > heap_order_of(HEADER_BYTES)) {
        struct buddy_tag *tag = (struct buddy_tag *)((vaddr_t)b + order_bytes(front_order)) - 1;

        tag->magic = BUDDY_TAG_MAGIC;
        tag->front = (uint32_t)order_bytes(front_order);
    }
    return (char *)b + order_bytes(front_order);
}

static void buddy_free(void *p)
{
    struct buddy_block *b = block_of(p, "kfree");
    unsigned order = b->order;

    if (b->front_order > heap_order_of(HEADER_BYTES)) /* the gap and the tag */
        heap_poison(b + 1, order_bytes(b->front_order) - HEADER_BYTES);
    if (order >= BUDDY_PAGE_ORDER && extent_pages(b->extent) > 1)
        heap_pages_release((vaddr_t)b + PAGE_SIZE, extent_pages(b->extent) - 1);
    free_merge(b, order);
}

/* A new extent inside the block's own order: map or unmap pages at its end. */
static enum heap_resize resize_within(struct buddy_block *b, uint64_t extent)
{
    size_t old = extent_pages(b->extent), new = extent_pages(extent);

    if (b->order >= BUDDY_PAGE_ORDER && new > old &&
        heap_pages_claim((vaddr_t)b + old * PAGE_SIZE, new - old) != HEAP_OK)
        return HEAP_MOVE;
    if (b->order >= BUDDY_PAGE_ORDER && new < old)
        heap_pages_release((vaddr_t)b + new * PAGE_SIZE, old - new);
    b->extent = extent;
    return HEAP_RESIZED;
}

/* Can b grow to order target by absorbing free buddies above it (and
 * doubling the arena when b is all of it)? Changes nothing. */
static bool can_absorb(const struct buddy_block *b, unsigned target)
{
    vaddr_t offset = (vaddr_t)b - BUDDY_BASE;

    if (target > BUDDY_MAX_ORDER || (offset & (order_bytes(target) - 1)) != 0)
        return false;
    for (unsigned k = b->order; k < target; k++) {
        const struct buddy_block *buddy = at((vaddr_t)b + order_bytes(k));

        if ((vaddr_t)buddy >= arena_end())
            continue; /* b is the whole arena: doubling gives the buddy */
        if (buddy->magic != BUDDY_MAGIC || buddy->state != BUDDY_FREE || buddy->order != k)
            return false;
    }
    return true;
}

/* Was the page at va mapped before b absorbs its buddies up to target?
 * Only their first pages are (a free block keeps just its header page). */
static bool buddy_header_page(const struct buddy_block *b, unsigned target, vaddr_t va)
{
    for (unsigned k = b->order; k < target; k++) {
        if (va == (vaddr_t)b + order_bytes(k) && va < arena_end())
            return true;
    }
    return false;
}

/* Maps the pages of [from, to) that absorbing up to target leaves
 * unmapped; all or nothing. */
static int map_absorbed(const struct buddy_block *b, unsigned target, vaddr_t from, vaddr_t to)
{
    for (vaddr_t va = from; va < to; va += PAGE_SIZE) {
        if (buddy_header_page(b, target, va) || heap_pages_claim(va, 1) == HEAP_OK)
            continue;
        for (vaddr_t undo = from; undo < va; undo += PAGE_SIZE) {
            if (!buddy_header_page(b, target, undo))
                heap_pages_release(undo, 1);
        }
        return HEAP_NO_MEMORY;
    }
    return HEAP_OK;
}

/* Grows b in place to order target (can_absorb said yes) and extent. */
static enum heap_resize absorb(struct buddy_block *b, unsigned target, uint64_t extent)
{
    vaddr_t from = (vaddr_t)b + extent_pages(b->extent) * PAGE_SIZE;

    if (map_absorbed(b, target, from, (vaddr_t)b + extent_pages(extent) * PAGE_SIZE) !=
        HEAP_OK)
        return HEAP_MOVE;
    for (unsigned k = b->order; k < target; k++) {
        struct buddy_block *buddy = at((vaddr_t)b + order_bytes(k));

        if ((vaddr_t)buddy >= arena_end())
            arena_grow(GROW_PREMAPPED);
        else
            free_remove(buddy);
    }
    b->order = (uint8_t)target;
    b->extent = extent;
    return HEAP_RESIZED;
}

static enum heap_resize buddy_resize(void *p, size_t size)
{
    struct buddy_block *b = block_of(p, "krealloc");
    uint64_t extent = order_bytes(b->front_order) + size;
    unsigned target = heap_order_of(extent);

    if (extent <= order_bytes(b->order))
        return resize_within(b, extent);
    if (!can_absorb(b, target))
        return HEAP_MOVE;
    return absorb(b, target, extent);
}

static size_t buddy_usable(const void *p)
{
    const struct buddy_block *b = block_of(p, "krealloc");

    return b->extent - order_bytes(b->front_order);
}

/* ---- heap_check ------------------------------------------------------------------------- */

/* The pages of block b that the mapping rule says must be (un)mapped. */
static void check_pages(const struct buddy_block *b)
{
    size_t pages = b->state == BUDDY_USED ? extent_pages(b->extent) : 1;

    if (b->order < BUDDY_PAGE_ORDER)
        return;
    if (!heap_page_claimed((vaddr_t)b + (pages - 1) * PAGE_SIZE))
        heap_fail("heap_check", "page of an allocated block not mapped, block", b);
    if (pages < (order_bytes(b->order) >> PAGE_SHIFT) &&
        heap_page_claimed((vaddr_t)b + pages * PAGE_SIZE))
        heap_fail("heap_check", "page past a block's extent still mapped, block", b);
}

/* One block's header; counts a free one in nfree. Returns its order. */
static unsigned check_block(const struct buddy_block *b, uint64_t *nfree, heap_block_fn fn)
{
    vaddr_t offset = (vaddr_t)b - BUDDY_BASE;

    if (!heap_page_claimed((vaddr_t)b) || b->magic != BUDDY_MAGIC)
        heap_fail("heap_check", "no block header at", b);
    if (b->order < BUDDY_MIN_ORDER || b->order > arena_order ||
        (offset & (order_bytes(b->order) - 1)) != 0)
        heap_fail("heap_check", "block not aligned to its size (not a buddy block) at", b);
    if (b->state == BUDDY_FREE) {
        const struct buddy_block *buddy = at(BUDDY_BASE + (offset ^ order_bytes(b->order)));

        if (b->order < arena_order && heap_page_claimed((vaddr_t)buddy) &&
            buddy->magic == BUDDY_MAGIC &&
            buddy->state == BUDDY_FREE && buddy->order == b->order)
            heap_fail("heap_check", "free buddies not merged at", b);
        nfree[b->order]++;
    } else if (b->state == BUDDY_USED) {
        uint64_t front = order_bytes(b->front_order);

        if (b->extent <= front || b->extent > order_bytes(b->order))
            heap_fail("heap_check", "allocated block's extent out of its order at", b);
        if (front > HEADER_BYTES &&
            ((const struct buddy_tag *)((vaddr_t)b + front) - 1)->magic != BUDDY_TAG_MAGIC)
            heap_fail("heap_check", "alignment tag overwritten in block", b);
        if (fn != NULL)
            fn((void *)((vaddr_t)b + front), b->extent - front);
    } else {
        heap_fail("heap_check", "bad block state at", b);
    }
    check_pages(b);
    return b->order;
}

/* Every free list: its blocks free, of its order, linked both ways. */
static void check_free_lists(const uint64_t *nfree)
{
    for (unsigned k = 0; k <= BUDDY_MAX_ORDER; k++) {
        uint64_t n = 0;
        const struct buddy_block *prev = NULL;

        for (struct buddy_block *b = free_area[k]; b != NULL; b = links(b)->next) {
            if (!in_arena((vaddr_t)b) || !heap_page_claimed((vaddr_t)b) ||
                b->magic != BUDDY_MAGIC || b->state != BUDDY_FREE || b->order != k)
                heap_fail("heap_check", "free list entry is not a free block of its order:",
                          b);
            if (links(b)->prev != prev || ++n > nfree[k])
                heap_fail("heap_check", "free list broken at", b);
            prev = b;
        }
        if (n != nfree[k])
            heap_fail("heap_check", "free block missing from its free list, order list at",
                      &free_area[k]);
    }
}

static size_t buddy_check(heap_block_fn fn)
{
    uint64_t nfree[BUDDY_MAX_ORDER + 1] = {0};
    size_t used = 0;

    for (vaddr_t va = BUDDY_BASE; va < arena_end();) {
        const struct buddy_block *b = at(va);
        unsigned order = check_block(b, nfree, fn);

        used += b->state == BUDDY_USED;
        if (va + order_bytes(order) > arena_end())
            heap_fail("heap_check", "block past the arena's end at", b);
        va += order_bytes(order);
    }
    check_free_lists(nfree);
    return used;
}

const struct heap_backend heap_buddy_backend = {
    .kind = HEAP_BUDDY,
    .name = "buddy",
    .init = buddy_init,
    .alloc = buddy_alloc,
    .free = buddy_free,
    .resize = buddy_resize,
    .usable = buddy_usable,
    .check = buddy_check,
};
