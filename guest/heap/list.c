/*
 * list.c - the linked-list heap (heap=list), after the osdev-notes
 * book's: every block has a header with its size, status, and links to
 * the previous and next blocks; free blocks are coalesced.
 *
 * Owns: the list window [LIST_BASE, list_end) and every block in it, the
 * free list, the fit policy (heapfit=first|best), and growing the heap.
 * Does not own: pages (pages.c), red zones (heap.c).
 *
 * The blocks tile [LIST_BASE, list_end): each starts with a 16-byte header
 * and its payload follows. Sizes and links are counted in 16-byte units
 * (so a payload is always 16-byte aligned): size is the whole block, prev
 * and next the distance to the neighbours (0 at either end; next always
 * equals size but for the last block). A free block also sits on a free
 * list, whose links live in its first 16 payload bytes, so the smallest
 * block is LIST_MIN_UNITS: a header plus 16 bytes.
 *
 * An allocation takes the first free block large enough (heapfit=best:
 * the smallest), the free block at the end of the heap only when no other
 * fits, splitting off the rest when that makes a block of at least the
 * minimum; an aligned one may split off a free block in front.
 * When nothing fits, the heap grows: it maps pages at list_end, extending
 * the last block if it is free. The page at list_end is the guard: never
 * mapped while it is the end. A free coalesces with the next block, then
 * with the previous one, so no two free blocks are ever neighbours. A
 * resize shrinks in place (splitting off the rest), or grows into a free
 * next block and, at the end of the heap, into new pages.
 */
#include "heap/backend.h"

#include "boot/cmdline.h"
#include "heap/pages.h"
#include "lib/panic.h"
#include "lib/string.h"
#include "test/planted.h"

#define LIST_BASE (HEAP_BASE + PAGE_SIZE)
#define LIST_LIMIT (HEAP_BASE + HEAP_WINDOW - PAGE_SIZE)
#define LIST_MAGIC 0x4c48u /* "HL" */
#define UNIT 16
#define LIST_MIN_UNITS 2   /* header + free-list links */
#define LIST_MAX_UNITS 0xffffffffull

enum block_status {
    BLOCK_FREE = 0xf4ee,
    BLOCK_USED = 0x05ed,
};

struct list_block {
    uint16_t magic;  /* LIST_MAGIC */
    uint16_t status; /* enum block_status */
    uint32_t size;   /* units, header included */
    uint32_t prev;   /* units back to the previous block; 0 for the first */
    uint32_t next;   /* units on to the next block; 0 for the last */
};

struct list_links {
    struct list_block *prev_free;
    struct list_block *next_free;
};

static_assert(sizeof(struct list_block) == UNIT, "list header is one unit");

static vaddr_t list_end;         /* LIST_BASE + the bytes mapped */
static struct list_block *tail;  /* the last block (relink keeps it) */
static struct list_block *free_head;
static enum heap_fit fit;
/* At least the size of every free block but the last one (an upper bound:
 * raised when a free block appears or grows, lowered to what a failed
 * search proved), so a request no hole can hold skips the search. */
static uint64_t hole_bound;

/* ---- Blocks ----------------------------------------------------------------------- */

static struct list_block *unit_at(const struct list_block *b, int64_t units)
{
    return (struct list_block *)((vaddr_t)b + (uint64_t)(units * UNIT));
}

static struct list_links *links(struct list_block *b)
{
    return (struct list_links *)(b + 1);
}

static bool is_last(const struct list_block *b)
{
    return (vaddr_t)b + (uint64_t)b->size * UNIT == list_end;
}

static struct list_block *next_block(const struct list_block *b)
{
    return b->next == 0 ? NULL : unit_at(b, b->next);
}

static struct list_block *prev_block(const struct list_block *b)
{
    return b->prev == 0 ? NULL : unit_at(b, -(int64_t)b->prev);
}

/* The last block of the heap, or NULL if it is empty. */
static struct list_block *last_block(void)
{
    return list_end == LIST_BASE ? NULL : tail;
}

/* With heapdebug=1, a header must be intact wherever the code relies on
 * it: not poisoned (merged into a neighbour), a magic, a status, a size. */
static void expect_header(const struct list_block *b, const char *fn)
{
    if (heap_debug_state != HEAP_DEBUG_ON)
        return;
    if (b->magic == (HEAP_POISON_BYTE | HEAP_POISON_BYTE << 8))
        heap_fail(fn, "header of a block already merged into its neighbour at", b);
    if (b->magic != LIST_MAGIC || (b->status != BLOCK_FREE && b->status != BLOCK_USED))
        heap_fail(fn, "corrupt block header at", b);
    if (b->size < LIST_MIN_UNITS)
        heap_fail(fn, "block smaller than a header and its links at", b);
}

/* Sets b's next link and the following block's prev link from b->size. */
static void relink(struct list_block *b)
{
    b->next = is_last(b) ? 0 : b->size;
    if (b->next != 0)
        unit_at(b, b->size)->prev = b->size;
    else
        tail = b;
}

static void init_block(struct list_block *b, uint64_t units, enum block_status status,
                       uint32_t prev)
{
    b->magic = LIST_MAGIC;
    b->status = (uint16_t)status;
    b->size = (uint32_t)units;
    b->prev = prev;
    relink(b);
}

/* ---- The free list ------------------------------------------------------------------- */

static void free_push(struct list_block *b)
{
    if (b->size > hole_bound && !is_last(b))
        hole_bound = b->size;
    b->status = BLOCK_FREE;
    links(b)->prev_free = NULL;
    links(b)->next_free = free_head;
    if (free_head != NULL)
        links(free_head)->prev_free = b;
    free_head = b;
}

static void free_remove(struct list_block *b)
{
    struct list_links *l = links(b);

    if (l->prev_free != NULL)
        links(l->prev_free)->next_free = l->next_free;
    else
        free_head = l->next_free;
    if (l->next_free != NULL)
        links(l->next_free)->prev_free = l->prev_free;
}

/* ---- Coalescing -------------------------------------------------------------------- */

/* If the block after b is free, b absorbs it (b's status is unchanged). */
static void merge_next(struct list_block *b)
{
    struct list_block *n;

    expect_header(b, "merge_next");
    n = next_block(b);
    if (n == NULL || n->status != BLOCK_FREE)
        return;
    free_remove(n);
    b->size += n->size;
    heap_poison(n, sizeof(*n) + sizeof(struct list_links));
    relink(b);
}

/* If the block before b is free, it absorbs b and is returned; else b. */
static struct list_block *merge_prev(struct list_block *b)
{
    struct list_block *p = prev_block(b);

    if (p == NULL || p->status != BLOCK_FREE)
        return b;
    p->size += b->size;
    relink(p);
    if (p->size > hole_bound && !is_last(p))
        hole_bound = p->size;
    heap_poison(b, sizeof(*b) + sizeof(struct list_links));
    return p;
}

/* b (off the free list) becomes free: coalesced, then put on the list. */
static void release(struct list_block *b)
{
    struct list_block *survivor;

    b->status = BLOCK_FREE;
#if PLANT_BUG == 101 /* planted bug 101: previous first, then next into a stale header */
    survivor = merge_prev(b);
    merge_next(b);
#else
    merge_next(b);
    survivor = merge_prev(b);
#endif
    if (survivor == b)
        free_push(b);
}

/* Cuts b down to units, the rest becoming a free block (coalesced with
 * what follows); b keeps all if the rest would be too small. */
static void split(struct list_block *b, uint64_t units)
{
    uint64_t rest = b->size - units;
    struct list_block *r;

#if PLANT_BUG == 102 /* planted bug 102: a remainder of a bare header is split off */
    if (rest < 1)
        return;
#else
    if (rest < LIST_MIN_UNITS)
        return;
#endif
    b->size = (uint32_t)units;
    r = unit_at(b, (int64_t)units);
    r->magic = LIST_MAGIC;
    r->status = BLOCK_USED;
    r->size = (uint32_t)rest;
    r->prev = (uint32_t)units;
    relink(r);
    relink(b);
    release(r);
}

/* ---- Growing ----------------------------------------------------------------------- */

/*
 * Maps pages at the end so that the last block is free and has at least
 * units; returns it, or NULL (nothing changed) if no memory is left.
 */
static struct list_block *grow(uint64_t units)
{
    struct list_block *last = last_block();
    uint64_t have = last != NULL && last->status == BLOCK_FREE ? last->size : 0;
    uint64_t bytes = heap_round_up((units - have) * UNIT, PAGE_SIZE);
    vaddr_t old_end = list_end;

    if (bytes > LIST_LIMIT - list_end || (have + bytes / UNIT) > LIST_MAX_UNITS ||
        heap_pages_claim(list_end, bytes / PAGE_SIZE) != HEAP_OK)
        return NULL;
    list_end += bytes;
    if (have > 0) {
        last->size += (uint32_t)(bytes / UNIT);
        relink(last);
        return last;
    }
    init_block((struct list_block *)old_end, bytes / UNIT, BLOCK_FREE,
               last == NULL ? 0 : last->size);
    if (last != NULL)
        relink(last);
    free_push((struct list_block *)old_end);
    return (struct list_block *)old_end;
}

/* ---- Finding a block ---------------------------------------------------------------- */

/* Units of a block with room for size bytes. */
static uint64_t units_for(size_t size)
{
    uint64_t units = 1 + heap_round_up(size, UNIT) / UNIT;

    return units < LIST_MIN_UNITS ? LIST_MIN_UNITS : units;
}

/* Where a payload aligned to align can start in free block f with units
 * after it, leaving in front either nothing or a whole free block; 0 if
 * it does not fit. */
static vaddr_t aligned_spot(const struct list_block *f, uint64_t units, size_t align)
{
    vaddr_t payload = (vaddr_t)(f + 1);
    vaddr_t p = heap_round_up(payload, align);

    if (p != payload && p - payload < LIST_MIN_UNITS * UNIT)
        p += align;
    if (p - UNIT + units * UNIT > (vaddr_t)f + (uint64_t)f->size * UNIT)
        return 0;
    return p;
}

/* Where a payload of units (aligned to align) starts in free block f, or 0. */
static vaddr_t spot_in(const struct list_block *f, uint64_t units, size_t align)
{
    if (align <= UNIT)
        return f->size >= units ? (vaddr_t)(f + 1) : 0;
    return aligned_spot(f, units, align);
}

/*
 * The free block to use and the payload address in it (*spot), or NULL:
 * the first that fits (heapfit=best: the smallest, an exact fit at once).
 * The last block of the heap, if free, is taken only when no other fits:
 * it can grow, so it is kept for requests nothing else holds and for
 * blocks growing in place in front of it (dlmalloc's "top").
 */
static struct list_block *find_fit(uint64_t units, size_t align, vaddr_t *spot)
{
    struct list_block *best = NULL;
    vaddr_t best_spot = 0;

    for (struct list_block *f = units <= hole_bound ? free_head : NULL; f != NULL;
         f = links(f)->next_free) {
        vaddr_t p;

        if (f == tail || (best != NULL && f->size >= best->size))
            continue;
        p = spot_in(f, units, align);
        if (p == 0)
            continue;
        best = f;
        best_spot = p;
        if (fit == HEAP_FIRST_FIT || f->size == units)
            break;
    }
    if (best == NULL && align <= UNIT && units - 1 < hole_bound)
        hole_bound = units - 1; /* no hole holds units */
    if (best == NULL && tail != NULL && tail->status == BLOCK_FREE) {
        best_spot = spot_in(tail, units, align);
        best = best_spot != 0 ? tail : NULL;
    }
    *spot = best_spot;
    return best;
}

/* Takes free block f for a payload at spot with units: a free block is
 * split off in front if spot is not f's own payload, the rest after. */
static void *carve(struct list_block *f, vaddr_t spot, uint64_t units)
{
    struct list_block *b = (struct list_block *)spot - 1;

    free_remove(f);
    if (b != f) {
        uint64_t gap = (uint64_t)(b - f);

        init_block(b, f->size - gap, BLOCK_USED, (uint32_t)gap);
        f->size = (uint32_t)gap;
        relink(f);
        free_push(f);
    }
    b->status = BLOCK_USED;
    split(b, units);
    return b + 1;
}

/* ---- The backend ---------------------------------------------------------------------- */

static void list_init(void)
{
    char value[8];

    list_end = LIST_BASE;
    free_head = NULL;
    tail = NULL;
    hole_bound = 0;
    fit = HEAP_FIRST_FIT;
    if (cmdline_get("heapfit", value, sizeof(value)) < 0 || strcmp(value, "first") == 0)
        return;
    if (strcmp(value, "best") != 0)
        panic("heap_init: unknown heapfit=%s (use first or best)", value);
    fit = HEAP_BEST_FIT;
}

static void *list_alloc(size_t size, size_t align)
{
    uint64_t units = units_for(size);
    vaddr_t spot;
    struct list_block *f = find_fit(units, align, &spot);

    if (f == NULL) {
        uint64_t slack = align <= UNIT ? 0 : (align + LIST_MIN_UNITS * UNIT) / UNIT;

        if (units + slack > LIST_MAX_UNITS || grow(units + slack) == NULL)
            return NULL;
        f = find_fit(units, align, &spot);
        if (f == NULL)
            panic("list_alloc: no fit after growing by %lu units", units + slack);
    }
    return carve(f, spot, units);
}

/* The allocated block of payload p; panics (fn) otherwise. */
static struct list_block *block_of(const void *p, const char *fn)
{
    struct list_block *b = (struct list_block *)p - 1;

    if ((vaddr_t)b - LIST_BASE >= list_end - LIST_BASE || ((vaddr_t)p & 15) != 0 ||
        b->magic != LIST_MAGIC)
        heap_fail(fn, "invalid free of", p);
    if (b->status == BLOCK_FREE)
        heap_fail(fn, "double free of", p);
    if (b->status != BLOCK_USED || b->size < LIST_MIN_UNITS || !((vaddr_t)b +
        (uint64_t)b->size * UNIT <= list_end))
        heap_fail(fn, "invalid free of", p);
    return b;
}

static void list_free(void *p)
{
    release(block_of(p, "kfree"));
}

/* Room for units at b by taking the free block after it and, when that
 * reaches the end of the heap, new pages. Validates, then changes. */
static enum heap_resize grow_in_place(struct list_block *b, uint64_t units)
{
    struct list_block *n = next_block(b);
    uint64_t have = b->size + (n != NULL && n->status == BLOCK_FREE ? n->size : 0);
    vaddr_t reach = (vaddr_t)b + have * UNIT;
    uint64_t bytes = 0;

    if (have < units) {
        bytes = heap_round_up((units - have) * UNIT, PAGE_SIZE);
        if (reach != list_end || bytes > LIST_LIMIT - list_end ||
            have + bytes / UNIT > LIST_MAX_UNITS ||
            heap_pages_claim(list_end, bytes / PAGE_SIZE) != HEAP_OK)
            return HEAP_MOVE;
        list_end += bytes;
    }
    if (n != NULL && n->status == BLOCK_FREE) {
        free_remove(n);
        heap_poison(n, sizeof(*n) + sizeof(struct list_links));
    }
    b->size = (uint32_t)(have + bytes / UNIT);
    relink(b);
    split(b, units);
    return HEAP_RESIZED;
}

static enum heap_resize list_resize(void *p, size_t size)
{
    struct list_block *b = block_of(p, "krealloc");
    uint64_t units = units_for(size);

    if (units <= b->size) {
        split(b, units);
        return HEAP_RESIZED;
    }
    return grow_in_place(b, units);
}

static size_t list_usable(const void *p)
{
    return ((size_t)((const struct list_block *)p - 1)->size - 1) * UNIT;
}

/* ---- heap_check ------------------------------------------------------------------------ */

/* One block's header against its neighbours; returns 1 if it is free. */
static uint64_t check_block(const struct list_block *b, uint32_t prev_units,
                            bool prev_free, heap_block_fn fn)
{
    if (b->magic != LIST_MAGIC || (b->status != BLOCK_FREE && b->status != BLOCK_USED))
        heap_fail("heap_check", "corrupt block header at", b);
    if (b->size < LIST_MIN_UNITS)
        heap_fail("heap_check", "block smaller than a header and its links at", b);
    if ((vaddr_t)b + (uint64_t)b->size * UNIT > list_end)
        heap_fail("heap_check", "block past the end of the heap at", b);
    if (b->prev != prev_units || b->next != (is_last(b) ? 0 : b->size))
        heap_fail("heap_check", "prev/next links disagree with the sizes at", b);
    if (b->status == BLOCK_FREE && prev_free)
        heap_fail("heap_check", "neighbouring free blocks not coalesced at", b);
    if (b->status == BLOCK_FREE && !is_last(b) && b->size > hole_bound)
        heap_fail("heap_check", "free block larger than the search bound at", b);
    if (b->status == BLOCK_USED && fn != NULL)
        fn((void *)(b + 1), list_usable(b + 1));
    return b->status == BLOCK_FREE;
}

static void check_free_list(uint64_t nfree)
{
    uint64_t n = 0;
    struct list_block *prev = NULL;

    for (struct list_block *f = free_head; f != NULL; f = links(f)->next_free) {
        if ((vaddr_t)f - LIST_BASE >= list_end - LIST_BASE || ((vaddr_t)f & 15) != 0 ||
            f->magic != LIST_MAGIC || f->status != BLOCK_FREE)
            heap_fail("heap_check", "free list entry is not a free block:", f);
        if (links(f)->prev_free != prev || ++n > nfree)
            heap_fail("heap_check", "free list broken at", f);
        prev = f;
    }
    if (n != nfree)
        heap_fail("heap_check", "free block missing from the free list; list head",
                  free_head);
}

static size_t list_check(heap_block_fn fn)
{
    uint64_t nfree = 0, blocks = 0;
    const struct list_block *b = (const struct list_block *)LIST_BASE, *last = NULL;
    uint32_t prev_units = 0;
    bool prev_free = false;

    for (; (vaddr_t)b < list_end; b = unit_at(b, b->size)) {
        uint64_t is_free = check_block(b, prev_units, prev_free, fn);

        nfree += is_free;
        blocks++;
        prev_units = b->size;
        prev_free = is_free != 0;
        last = b;
    }
    if ((vaddr_t)b != list_end || last != last_block())
        heap_fail("heap_check", "blocks do not end at the heap's end; last block", last);
    check_free_list(nfree);
    return blocks - nfree;
}

const struct heap_backend heap_list_backend = {
    .kind = HEAP_LIST,
    .name = "list",
    .init = list_init,
    .alloc = list_alloc,
    .free = list_free,
    .resize = list_resize,
    .usable = list_usable,
    .check = list_check,
};
