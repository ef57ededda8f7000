/*
 * large.c - the chained heap's large blocks (above its slab classes, up to
 * LARGE_MAX_PAGES pages): each block is a run of whole pages, the payload
 * at its first byte, mapped for exactly the pages it reaches.
 *
 * Owns: the large window (large.h), the run descriptors, the free runs and
 * the checks of all of it.
 * Does not own: the routing (chained.c), pages and the page cache
 * (pages.c), red zones (heap.c).
 *
 * The runs tile the window from RUNS_BASE to runs_end, in address order:
 * a page-granular best fit with splitting and merging (the boundary-tag
 * idea of Knuth's TAOCP 2.5, with the tags out of band). An allocation
 * takes the smallest free run that holds it, split if it is larger, or a
 * new run at runs_end; a freed run merges with free neighbours, and a free
 * run at the top of the window is given up (runs_end comes down). A free
 * run holds no page: its pages went to the page layer's cache, still
 * mapped, so the next claim at the same addresses finds them where they
 * are (no page-table or PMM work), unless the cache gave them to a claim
 * elsewhere meanwhile.
 *
 * The runs are described out of band, so a block of n pages of payload
 * takes n pages; a hash on the first page finds a run's descriptor from
 * its payload. The table's first page is static (kernel data, as the
 * slab caches' descriptors are): a heap with few large blocks maps no page
 * for their descriptors. Past it the table moves to the start of the
 * window, mapped page by page as it grows and never given back. A resize stays in place when it
 * shrinks, or when it grows into a free run after it or at the top of the
 * window; otherwise the block moves.
 */
#include "heap/large.h"

#include "heap/pages.h"
#include "lib/panic.h"
#include "lib/string.h"

#define TABLE_BASE LARGE_BASE
#define TABLE_BYTES ((uint64_t)1 << 30)          /* 32 M descriptors at most */
#define RUNS_BASE (LARGE_BASE + TABLE_BYTES)
#define NO_RUN 0xffffffffu
#define RUN_BUCKETS 4096u                       /* a power of two */

enum run_state {
    RUN_LIVE = 1,
    RUN_FREE = 2,
    RUN_UNUSED = 3, /* a descriptor on the unused stack */
};

struct run {
    uint32_t page;    /* the first page, counted from RUNS_BASE */
    uint32_t pages;   /* live: claimed, all of them; free: the run's length */
    uint32_t state;   /* enum run_state */
    uint32_t lower;   /* the runs before and after it in address order */
    uint32_t higher;
    uint32_t chain;   /* the next run of the same hash bucket; unused: next unused */
    uint32_t prev;    /* free: the list of its size */
    uint32_t next;
};

static_assert(sizeof(struct run) == 32, "run descriptor size");
static_assert(PAGE_SIZE % sizeof(struct run) == 0, "run descriptors do not cross pages");

#define STATIC_RUNS ((uint32_t)(PAGE_SIZE / sizeof(struct run)))

static struct run static_runs[STATIC_RUNS];
static struct run *runs = static_runs;   /* static_runs, then TABLE_BASE */
static uint32_t run_count;               /* descriptors in the table, used or not */
static uint32_t unused_runs;             /* stack of unused descriptors */
static uint32_t run_buckets[RUN_BUCKETS];
static uint32_t lowest, highest;         /* the ends of the address order */
/* Free runs of n pages are on free_runs[n]; those of LARGE_MAX_PAGES or
 * more all on free_runs[LARGE_MAX_PAGES]. */
static uint32_t free_runs[LARGE_MAX_PAGES + 1];
/* Bit n set iff free_runs[n] is not empty. */
static uint64_t free_sizes[(LARGE_MAX_PAGES + 1 + 63) / 64];
static vaddr_t runs_end;                 /* where the next new run starts */

static vaddr_t run_va(const struct run *r)
{
    return RUNS_BASE + (vaddr_t)r->page * PAGE_SIZE;
}

/* Pages for a payload of size bytes: at least one. */
static uint32_t pages_for(size_t size)
{
    return size == 0 ? 1 : (uint32_t)(heap_round_up(size, PAGE_SIZE) / PAGE_SIZE);
}

void large_init(void)
{
    runs = static_runs;
    run_count = 0;
    unused_runs = NO_RUN;
    lowest = highest = NO_RUN;
    for (unsigned b = 0; b < RUN_BUCKETS; b++)
        run_buckets[b] = NO_RUN;
    for (unsigned n = 0; n <= LARGE_MAX_PAGES; n++)
        free_runs[n] = NO_RUN;
    for (unsigned w = 0; w < ARRAY_SIZE(free_sizes); w++)
        free_sizes[w] = 0;
    runs_end = RUNS_BASE;
}

/* ---- Descriptors: the table, the hash of first pages, the size lists --------- */

/* Makes room for descriptor i, the first past the table's end: the table
 * moves from the static page to the window when that is full, and then
 * grows by a page; false if out of memory or table space. */
static bool table_grow(uint32_t i)
{
    if (i < STATIC_RUNS)
        return true;
    if ((uint64_t)(i + 1) * sizeof(struct run) > TABLE_BYTES)
        return false;
    if (i == STATIC_RUNS) { /* the static page's copy and the next page */
        if (heap_pages_claim(TABLE_BASE, 2) != HEAP_OK)
            return false;
        memcpy((void *)TABLE_BASE, static_runs, sizeof(static_runs));
        runs = (struct run *)TABLE_BASE;
        return true;
    }
    return (vaddr_t)&runs[i] % PAGE_SIZE != 0 ||
           heap_pages_claim((vaddr_t)&runs[i], 1) == HEAP_OK;
}

/* An unused descriptor; NO_RUN if out of memory or table space. */
static uint32_t desc_new(void)
{
    uint32_t i = unused_runs;

    if (i != NO_RUN) {
        unused_runs = runs[i].chain;
        return i;
    }
    i = run_count;
    if (!table_grow(i))
        return NO_RUN;
    run_count++;
    return i;
}

static void desc_drop(uint32_t i)
{
    runs[i].state = RUN_UNUSED;
    runs[i].chain = unused_runs;
    unused_runs = i;
}

static uint32_t bucket_of(uint32_t page)
{
    return (page * 0x9e3779b1u) >> 20 & (RUN_BUCKETS - 1);
}

static void hash_add(uint32_t i)
{
    uint32_t b = bucket_of(runs[i].page);

    runs[i].chain = run_buckets[b];
    run_buckets[b] = i;
}

static void hash_del(uint32_t i)
{
    uint32_t *link = &run_buckets[bucket_of(runs[i].page)];

    while (*link != i)
        link = &runs[*link].chain;
    *link = runs[i].chain;
}

/* The run that starts at va (live or free), or NO_RUN. */
static uint32_t hash_find(vaddr_t va)
{
    uint32_t page = (uint32_t)((va - RUNS_BASE) / PAGE_SIZE);
    uint32_t i = run_buckets[bucket_of(page)];

    while (i != NO_RUN && runs[i].page != page)
        i = runs[i].chain;
    return i;
}

static uint32_t size_class(uint32_t pages)
{
    return pages < LARGE_MAX_PAGES ? pages : LARGE_MAX_PAGES;
}

/* Marks run i free and puts it on the list of its size. */
static void list_add(uint32_t i)
{
    uint32_t n = size_class(runs[i].pages);

    runs[i].state = RUN_FREE;
    runs[i].prev = NO_RUN;
    runs[i].next = free_runs[n];
    if (free_runs[n] != NO_RUN)
        runs[free_runs[n]].prev = i;
    free_runs[n] = i;
    free_sizes[n / 64] |= 1ULL << (n % 64);
}

static void list_del(uint32_t i)
{
    uint32_t n = size_class(runs[i].pages);

    if (runs[i].prev != NO_RUN)
        runs[runs[i].prev].next = runs[i].next;
    else
        free_runs[n] = runs[i].next;
    if (runs[i].next != NO_RUN)
        runs[runs[i].next].prev = runs[i].prev;
    if (free_runs[n] == NO_RUN)
        free_sizes[n / 64] &= ~(1ULL << (n % 64));
}

/* The smallest size list with a run of at least pages pages, or 0. */
static uint32_t fitting_size(uint32_t pages)
{
    for (uint32_t w = pages / 64; w < ARRAY_SIZE(free_sizes); w++) {
        uint64_t bits = free_sizes[w];

        if (w == pages / 64)
            bits &= ~0ULL << (pages % 64);
        if (bits != 0)
            return w * 64 + (uint32_t)__builtin_ctzll(bits);
    }
    return 0;
}

/* ---- The address order ------------------------------------------------------ */

/* Links the new run j into the address order right after i (NO_RUN: first). */
static void addr_insert_after(uint32_t i, uint32_t j)
{
    uint32_t after = i != NO_RUN ? runs[i].higher : lowest;

    runs[j].lower = i;
    runs[j].higher = after;
    if (i != NO_RUN)
        runs[i].higher = j;
    else
        lowest = j;
    if (after != NO_RUN)
        runs[after].lower = j;
    else
        highest = j;
}

/* Takes run j out of the address order and the hash, and drops it. */
static void run_remove(uint32_t j)
{
    if (runs[j].lower != NO_RUN)
        runs[runs[j].lower].higher = runs[j].higher;
    else
        lowest = runs[j].higher;
    if (runs[j].higher != NO_RUN)
        runs[runs[j].higher].lower = runs[j].lower;
    else
        highest = runs[j].lower;
    hash_del(j);
    desc_drop(j);
}

/* Splits the pages of run i from its page keep on into a new free run
 * after it (run i keeps keep pages); false if no descriptor is left. */
static bool split_tail(uint32_t i, uint32_t keep)
{
    uint32_t j = desc_new();

    if (j == NO_RUN)
        return false;
    runs[j].page = runs[i].page + keep;
    runs[j].pages = runs[i].pages - keep;
    runs[i].pages = keep;
    hash_add(j);
    addr_insert_after(i, j);
    list_add(j);
    return true;
}

/* Run i, whose pages are not claimed, becomes free: merged with free
 * neighbours, and given up if it ends the window. */
static void make_free(uint32_t i)
{
    uint32_t h = runs[i].higher, l = runs[i].lower;

    if (h != NO_RUN && runs[h].state == RUN_FREE) {
        list_del(h);
        runs[i].pages += runs[h].pages;
        run_remove(h);
    }
    if (l != NO_RUN && runs[l].state == RUN_FREE) {
        list_del(l);
        runs[l].pages += runs[i].pages;
        run_remove(i);
        i = l;
    }
    if (i == highest) {
        runs_end = run_va(&runs[i]);
        run_remove(i);
        return;
    }
    list_add(i);
}

/* ---- Allocation -------------------------------------------------------------- */

/* A run of exactly pages pages, out of every list (its state not set):
 * the best fitting free run, split, or a new one at runs_end; NO_RUN if
 * out of descriptors or window. */
static uint32_t take_run(uint32_t pages)
{
    uint32_t n = fitting_size(pages), i;

    if (n != 0) {
        i = free_runs[n];
        list_del(i);
        if (runs[i].pages > pages && !split_tail(i, pages)) {
            list_add(i);
            return NO_RUN;
        }
        return i;
    }
    if (pages > (LARGE_END - runs_end) / PAGE_SIZE || (i = desc_new()) == NO_RUN)
        return NO_RUN;
    runs[i].page = (uint32_t)((runs_end - RUNS_BASE) / PAGE_SIZE);
    runs[i].pages = pages;
    hash_add(i);
    addr_insert_after(highest, i);
    runs_end += (vaddr_t)pages * PAGE_SIZE;
    return i;
}

void *large_alloc(size_t size)
{
    uint32_t pages = pages_for(size);
    uint32_t i = take_run(pages);
    vaddr_t va;

    if (i == NO_RUN)
        return NULL;
    va = run_va(&runs[i]);
    if (heap_pages_claim(va, pages) != HEAP_OK) {
        make_free(i);
        return NULL;
    }
    runs[i].state = RUN_LIVE;
    return (void *)va;
}

/* The live run of payload p; panics (fn) otherwise. A run freed and not
 * merged since is seen as a double free. */
static uint32_t run_of(const void *p, const char *fn)
{
    vaddr_t va = (vaddr_t)p;
    uint32_t i;

    if (va < RUNS_BASE || va >= runs_end || (va & (PAGE_SIZE - 1)) != 0)
        heap_fail(fn, "invalid free of", p);
    i = hash_find(va);
    if (i != NO_RUN && runs[i].state == RUN_FREE)
        heap_fail(fn, "double free of", p);
    if (i == NO_RUN || runs[i].state != RUN_LIVE)
        heap_fail(fn, "invalid free of", p);
    return i;
}

void large_free(void *p)
{
    uint32_t i = run_of(p, "kfree");

    heap_pages_release(run_va(&runs[i]), runs[i].pages);
    make_free(i);
}

/* Run i (live) shrinks to pages pages: the rest released, a free run. */
static void shrink(uint32_t i, uint32_t pages)
{
    uint32_t h = runs[i].higher;
    vaddr_t cut = run_va(&runs[i]) + (vaddr_t)pages * PAGE_SIZE;

    if (h != NO_RUN && runs[h].state == RUN_FREE) {
        heap_pages_release(cut, runs[i].pages - pages); /* the next free run starts earlier */
        list_del(h);
        hash_del(h);
        runs[h].pages += runs[i].pages - pages;
        runs[h].page -= runs[i].pages - pages;
        hash_add(h);
        list_add(h);
        runs[i].pages = pages;
    } else if (h == NO_RUN) {
        heap_pages_release(cut, runs[i].pages - pages); /* the window's top comes down */
        runs[i].pages = pages;
        runs_end = cut;
    } else if (split_tail(i, pages)) {
        heap_pages_release(cut, runs[runs[i].higher].pages);
    }
}

/* Run i (live) grows to pages pages into the free run after it or the
 * window's free top; false (nothing changed) if neither has room. */
static bool grow(uint32_t i, uint32_t pages)
{
    uint32_t h = runs[i].higher, more = pages - runs[i].pages;
    vaddr_t end = run_va(&runs[i]) + (vaddr_t)runs[i].pages * PAGE_SIZE;

    if (h == NO_RUN) {
        if (more > (LARGE_END - runs_end) / PAGE_SIZE || heap_pages_claim(end, more) != HEAP_OK)
            return false;
        runs_end += (vaddr_t)more * PAGE_SIZE;
    } else {
        if (runs[h].state != RUN_FREE || runs[h].pages < more ||
            heap_pages_claim(end, more) != HEAP_OK)
            return false;
        list_del(h);
        if (runs[h].pages == more) {
            run_remove(h);
        } else {
            hash_del(h);
            runs[h].page += more;
            runs[h].pages -= more;
            hash_add(h);
            list_add(h);
        }
    }
    runs[i].pages = pages;
    return true;
}

enum heap_resize large_resize(void *p, size_t size)
{
    uint32_t i = run_of(p, "krealloc");
    uint32_t pages = size <= LARGE_MAX_SIZE ? pages_for(size) : LARGE_MAX_PAGES + 1;

    if (pages < runs[i].pages)
        shrink(i, pages);
    if (pages <= runs[i].pages)
        return HEAP_RESIZED;
    if (pages > LARGE_MAX_PAGES || !grow(i, pages))
        return HEAP_MOVE;
    return HEAP_RESIZED;
}

size_t large_usable(const void *p)
{
    return (size_t)runs[run_of(p, "krealloc")].pages * PAGE_SIZE;
}

/* ---- heap_check ------------------------------------------------------------------ */

/* Run i, found at va in the address order after a run in state before. */
static void check_run(uint32_t i, vaddr_t va, uint32_t before, heap_block_fn fn)
{
    const struct run *r = &runs[i];
    vaddr_t last;

    if (i >= run_count)
        heap_fail("heap_check", "large run descriptor outside the table at", (void *)va);
    last = run_va(r) + (vaddr_t)(r->pages - 1) * PAGE_SIZE;
    if (run_va(r) != va || r->pages == 0 ||
        r->pages > (runs_end - va) / PAGE_SIZE || hash_find(va) != i)
        heap_fail("heap_check", "large runs do not tile the window at", (void *)va);
    if (r->state == RUN_LIVE) {
        if (r->pages > LARGE_MAX_PAGES || !heap_page_claimed(va) || !heap_page_claimed(last))
            heap_fail("heap_check", "page of a large run not mapped, run", (void *)va);
        if (fn != NULL)
            fn((void *)va, (size_t)r->pages * PAGE_SIZE);
    } else if (r->state != RUN_FREE) {
        heap_fail("heap_check", "bad large run state at descriptor", r);
    } else if (before == RUN_FREE || i == highest) {
        heap_fail("heap_check", "free large run not merged, run", (void *)va);
    } else if (heap_page_claimed(va) || heap_page_claimed(last)) {
        heap_fail("heap_check", "free large run still claims its pages, run", (void *)va);
    }
}

/* The runs on the list of size class n: free, of that class, counted once. */
static uint64_t check_list(uint32_t n)
{
    uint64_t count = 0;
    uint32_t prev = NO_RUN;

    for (uint32_t i = free_runs[n]; i != NO_RUN; prev = i, i = runs[i].next) {
        if (i >= run_count || runs[i].state != RUN_FREE || runs[i].prev != prev ||
            size_class(runs[i].pages) != n || ++count > run_count)
            heap_fail("heap_check", "large run list broken at descriptor", &runs[i]);
    }
    if ((count != 0) != ((free_sizes[n / 64] >> (n % 64)) & 1))
        heap_fail("heap_check", "large run size bitmap wrong for list", &free_runs[n]);
    return count;
}

size_t large_check(heap_block_fn fn)
{
    uint64_t live = 0, free = 0, listed = 0, seen = 0;
    uint32_t before = RUN_LIVE, prev = NO_RUN;
    vaddr_t va = RUNS_BASE;

    for (unsigned n = 1; n <= LARGE_MAX_PAGES; n++)
        listed += check_list(n);
    for (uint32_t i = lowest; i != NO_RUN; prev = i, i = runs[i].higher) {
        if (++seen > run_count || (i < run_count && runs[i].lower != prev))
            heap_fail("heap_check", "large run address order broken at descriptor", &runs[i]);
        check_run(i, va, before, fn);
        before = runs[i].state;
        live += before == RUN_LIVE;
        free += before == RUN_FREE;
        va += (vaddr_t)runs[i].pages * PAGE_SIZE;
    }
    if (va != runs_end || prev != highest)
        heap_fail("heap_check", "large runs end before the window's top", (void *)va);
    if (listed != free)
        heap_fail("heap_check", "free large run on no free list; table at", runs);
    return live;
}
