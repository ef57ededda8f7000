/*
 * large.c - the chained heap's large blocks (above its slab classes, up to
 * LARGE_MAX_PAGES pages): each block is a run of whole pages, the payload
 * after a 16-byte header, mapped for exactly the pages it reaches.
 *
 * Owns: the large window (large.h), the run descriptors, the free runs and
 * the checks of all of it.
 * Does not own: the routing (chained.c), pages and the page cache
 * (pages.c), red zones (heap.c).
 *
 * Virtual space is plentiful and only mapped pages cost memory, so runs
 * are never split or merged (a buddy heap's work): a run keeps the slot of
 * virtual pages it was first given, followed by an unmapped guard page, and
 * a freed run waits on the free list of its slot's size for a request of
 * that many pages, or up to half as many (the smallest slot that fits). Its pages go to the page layer's cache when it is freed,
 * still mapped, so the next run of that size in that slot finds them where
 * they are (no page-table or PMM work), unless the cache gave them to a
 * claim elsewhere meanwhile.
 *
 * The runs are described out of band, in a table at the start of the
 * window (mapped page by page as it grows, never given back): a freed run
 * keeps no page. A descriptor is live (its run is allocated) or free (on
 * the free list of its slot's size); slots are never given up. The run's
 * header names its descriptor; on free it is marked, so a second free of a
 * run whose page the cache still holds is seen.
 *
 * A resize stays in place while the new size fits the run's slot (pages
 * claimed or released at its end), and grows the slot when it is the last
 * one of the window; otherwise the block moves.
 */
#include "heap/large.h"

#include "heap/pages.h"
#include "lib/panic.h"

#define TABLE_BASE LARGE_BASE
#define TABLE_BYTES ((uint64_t)1 << 30)          /* 32 M descriptors at most */
#define RUNS_BASE (LARGE_BASE + TABLE_BYTES)
#define NO_RUN 0xffffffffu
#define HEAD_LIVE 0x4556494cu /* "LIVE" */
#define HEAD_FREE 0x45455246u /* "FREE" */

enum run_state {
    RUN_LIVE = 1,
    RUN_FREE = 2,
};

struct run {
    vaddr_t va;          /* the header: the slot's first byte */
    uint32_t slot_pages; /* the slot's virtual pages (the guard page not counted) */
    uint32_t pages;      /* live: pages claimed, from va on */
    uint32_t state;      /* enum run_state */
    uint32_t next;       /* free list */
    uint64_t reserved;
};

struct large_head {
    uint32_t magic; /* HEAD_LIVE, or HEAD_FREE once freed */
    uint32_t index; /* of the descriptor */
    uint64_t reserved;
};

static_assert(sizeof(struct run) == 32, "run descriptor size");
static_assert(sizeof(struct large_head) == LARGE_HEAD_BYTES, "large head size");

static struct run *const runs = (struct run *)TABLE_BASE;
static uint32_t run_count;               /* descriptors in the table */
static uint32_t free_runs[LARGE_MAX_PAGES + 1];
/* Bit n set iff free_runs[n] is not empty. */
static uint64_t free_sizes[(LARGE_MAX_PAGES + 1 + 63) / 64];
static vaddr_t runs_end;                 /* where the next new slot starts */

static uint32_t pages_for(size_t size)
{
    return (uint32_t)(heap_round_up(size + LARGE_HEAD_BYTES, PAGE_SIZE) / PAGE_SIZE);
}

void large_init(void)
{
    run_count = 0;
    for (unsigned n = 0; n <= LARGE_MAX_PAGES; n++)
        free_runs[n] = NO_RUN;
    for (unsigned w = 0; w < ARRAY_SIZE(free_sizes); w++)
        free_sizes[w] = 0;
    runs_end = RUNS_BASE;
}

/* A descriptor for a new slot of pages; NO_RUN if out of memory or space. */
static uint32_t new_run(uint32_t pages)
{
    uint32_t i = run_count;

    if (pages + 1 > (LARGE_END - runs_end) / PAGE_SIZE ||
        (uint64_t)(i + 1) * sizeof(struct run) > TABLE_BYTES)
        return NO_RUN;
    if ((vaddr_t)&runs[i] % PAGE_SIZE == 0 && heap_pages_claim((vaddr_t)&runs[i], 1) != HEAP_OK)
        return NO_RUN;
    run_count++;
    runs[i].va = runs_end;
    runs[i].slot_pages = pages;
    runs[i].pages = 0;
    runs[i].state = RUN_FREE;
    runs_end += (uint64_t)(pages + 1) * PAGE_SIZE; /* and a guard page */
    return i;
}

static void push_free(uint32_t i)
{
    uint32_t n = runs[i].slot_pages;

    runs[i].state = RUN_FREE;
    runs[i].pages = 0;
    runs[i].next = free_runs[n];
    free_runs[n] = i;
    free_sizes[n / 64] |= 1ULL << (n % 64);
}

/* The smallest slot size in [pages, 2 * pages] with a free run, or 0:
 * a slot larger than the request keeps the pages it does not use in the
 * cache, the first to be moved to a claim elsewhere. */
static uint32_t fitting_size(uint32_t pages)
{
    uint32_t last = pages * 2 < LARGE_MAX_PAGES ? pages * 2 : LARGE_MAX_PAGES;

    for (uint32_t w = pages / 64; w <= last / 64; w++) {
        uint64_t bits = free_sizes[w];

        if (w == pages / 64)
            bits &= ~0ULL << (pages % 64);
        if (bits != 0) {
            uint32_t n = w * 64 + (uint32_t)__builtin_ctzll(bits);

            return n <= last ? n : 0;
        }
    }
    return 0;
}

static uint32_t pop_free(uint32_t n)
{
    uint32_t i = free_runs[n];

    free_runs[n] = runs[i].next;
    if (free_runs[n] == NO_RUN)
        free_sizes[n / 64] &= ~(1ULL << (n % 64));
    return i;
}

void *large_alloc(size_t size)
{
    uint32_t pages = pages_for(size);
    uint32_t n = fitting_size(pages);
    uint32_t i = n != 0 ? pop_free(n) : new_run(pages);
    struct run *r;
    struct large_head *head;

    if (i == NO_RUN)
        return NULL;
    r = &runs[i];
    if (heap_pages_claim(r->va, pages) != HEAP_OK) {
        push_free(i);
        return NULL;
    }
    r->state = RUN_LIVE;
    r->pages = pages;
    head = (struct large_head *)r->va;
    head->magic = HEAD_LIVE;
    head->index = i;
    return head + 1;
}

/* The live run of payload p; panics (fn) otherwise. */
static struct run *run_of(const void *p, const char *fn)
{
    const struct large_head *head = (const struct large_head *)p - 1;
    vaddr_t va = (vaddr_t)head;
    struct run *r;

    if (va < RUNS_BASE || va >= runs_end || (va & (PAGE_SIZE - 1)) != 0 ||
        (heap_debug_state == HEAP_DEBUG_ON && !heap_page_claimed(va)))
        heap_fail(fn, "invalid free of", p);
    if (head->magic == HEAD_FREE)
        heap_fail(fn, "double free of", p);
    if (head->magic != HEAD_LIVE || head->index >= run_count)
        heap_fail(fn, "invalid free of", p);
    r = &runs[head->index];
    if (r->va != va || r->state != RUN_LIVE)
        heap_fail(fn, "invalid free of", p);
    return r;
}

void large_free(void *p)
{
    struct run *r = run_of(p, "kfree");
    uint32_t i = ((struct large_head *)p - 1)->index;

    ((struct large_head *)p - 1)->magic = HEAD_FREE;
    heap_pages_release(r->va, r->pages);
    push_free(i);
}

enum heap_resize large_resize(void *p, size_t size)
{
    struct run *r = run_of(p, "krealloc");
    uint32_t pages = size <= LARGE_MAX_SIZE ? pages_for(size) : LARGE_MAX_PAGES + 1;
    bool last = r->va + (uint64_t)(r->slot_pages + 1) * PAGE_SIZE == runs_end;

    if (pages <= r->pages) {
        if (pages < r->pages)
            heap_pages_release(r->va + (uint64_t)pages * PAGE_SIZE, r->pages - pages);
        r->pages = pages;
        return HEAP_RESIZED;
    }
    if (pages > LARGE_MAX_PAGES || (pages > r->slot_pages &&
        (!last || pages - r->slot_pages > (LARGE_END - runs_end) / PAGE_SIZE)))
        return HEAP_MOVE;
    if (heap_pages_claim(r->va + (uint64_t)r->pages * PAGE_SIZE, pages - r->pages) != HEAP_OK)
        return HEAP_MOVE;
    if (pages > r->slot_pages) { /* the last slot grows into the free space after it */
        runs_end += (uint64_t)(pages - r->slot_pages) * PAGE_SIZE;
        r->slot_pages = pages;
    }
    r->pages = pages;
    return HEAP_RESIZED;
}

size_t large_usable(const void *p)
{
    return (size_t)run_of(p, "krealloc")->pages * PAGE_SIZE - LARGE_HEAD_BYTES;
}

/* ---- heap_check ------------------------------------------------------------------ */

static void check_run(uint32_t i, heap_block_fn fn)
{
    const struct run *r = &runs[i];
    const struct large_head *head = (const struct large_head *)r->va;

    if (r->va < RUNS_BASE || r->va + (uint64_t)r->slot_pages * PAGE_SIZE > runs_end ||
        (r->va & (PAGE_SIZE - 1)) != 0 || r->slot_pages == 0 ||
        r->slot_pages > LARGE_MAX_PAGES)
        heap_fail("heap_check", "large run outside its window at", (void *)r->va);
    if (r->state == RUN_LIVE) {
        if (r->pages == 0 || r->pages > r->slot_pages || !heap_page_claimed(r->va) ||
            !heap_page_claimed(r->va + (uint64_t)(r->pages - 1) * PAGE_SIZE))
            heap_fail("heap_check", "page of a large run not mapped, run", (void *)r->va);
        if (head->magic != HEAD_LIVE || head->index != i)
            heap_fail("heap_check", "large run's header overwritten at", head);
        if (fn != NULL)
            fn((void *)(head + 1), (size_t)r->pages * PAGE_SIZE - LARGE_HEAD_BYTES);
    } else if (r->state != RUN_FREE) {
        heap_fail("heap_check", "bad large run state at descriptor", r);
    } else if (heap_page_claimed(r->va)) {
        heap_fail("heap_check", "free large run still claims its pages, run", (void *)r->va);
    }
}

/* Every list: its entries in range, in the state it holds, counted once. */
static uint64_t check_list(uint32_t head, enum run_state state, uint32_t slot_pages)
{
    uint64_t n = 0;

    for (uint32_t i = head; i != NO_RUN; i = runs[i].next) {
        if (i >= run_count || runs[i].state != state || ++n > run_count ||
            (state == RUN_FREE && runs[i].slot_pages != slot_pages))
            heap_fail("heap_check", "large run list broken at descriptor", &runs[i]);
    }
    return n;
}

size_t large_check(heap_block_fn fn)
{
    uint64_t live = 0, listed = 0;

    for (unsigned n = 1; n <= LARGE_MAX_PAGES; n++)
        listed += check_list(free_runs[n], RUN_FREE, n);
    for (uint32_t i = 0; i < run_count; i++) {
        check_run(i, fn);
        live += runs[i].state == RUN_LIVE;
    }
    if (listed != run_count - live)
        heap_fail("heap_check", "free large run on no free list; table at", runs);
    return live;
}
