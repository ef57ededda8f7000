/*
 * slab.c - slab caches, and the slab heap (heap=slab) built on them.
 *
 * Owns: laying out the caches (objects per slab, slab pages, bitmap size),
 * the slow paths of slab.h (a new slab from the page layer, moves
 * between the partial and full lists, giving empty slabs back), the checks
 * of every slab, and the standalone slab heap: one cache per power of two
 * from 16 bytes to SLAB_HEAP_MAX, each object aligned to its size.
 * Does not own: the fast paths (slab.h), the chained heap's size
 * classes (chained.c), pages (pages.c).
 *
 * The slab heap has no headers in its objects: a request takes a whole
 * object of the next power of two, so its waste is internal (up to half
 * an object) plus the slab headers and the partly filled slabs. A resize
 * stays in place while the new size fits the object. Requests above
 * SLAB_HEAP_MAX get NULL.
 */
#include "heap/slab.h"

#include "heap/pages.h"
#include "lib/panic.h"
#include "lib/string.h"

#define SLAB_HEAP_MIN_SHIFT 4
#define SLAB_HEAP_MAX_SHIFT 24               /* 16 MiB objects */
#define SLAB_HEAP_MAX ((size_t)1 << SLAB_HEAP_MAX_SHIFT)
#define SLAB_MAX_PAGES 16                     /* for slabs of many objects */
#define SLAB_MIN_OBJECTS 8
#define SLAB_HEADER_FIXED (sizeof(struct slab))
#define SLAB_MAX_CAPACITY 0xffffu /* the free count is 16 bits */

struct slab_cache slab_caches[SLAB_MAX_CLASSES];
static size_t cache_count;

/* The head of every empty partial list: a slab header whose first bitmap
 * word is full (the kernel builds with -fno-strict-aliasing). */
static uint64_t none[sizeof(struct slab) / 8 + 1] = {[sizeof(struct slab) / 8] = ~0ULL};

#define SLAB_NONE ((struct slab *)none)

/* ---- Layout ------------------------------------------------------------- */

static uint64_t header_bytes(uint64_t capacity)
{
    return heap_round_up(SLAB_HEADER_FIXED + 8 * ((capacity + 63) / 64 + 1), 16);
}

/* Objects of size that fit in pages pages with their header. */
static uint64_t capacity_for(uint64_t size, uint64_t pages)
{
    uint64_t bytes = pages * PAGE_SIZE;
    uint64_t n = bytes / size;

    while (n > 0 && n * size + header_bytes(n) > bytes)
        n--;
    return n > SLAB_MAX_CAPACITY ? SLAB_MAX_CAPACITY : n;
}

/* The fewest pages (up to SLAB_MAX_PAGES) wasting at most 1/8 of the slab
 * and holding at least SLAB_MIN_OBJECTS objects, so a slab is not mapped
 * and given back every few calls (SLUB's minimum objects per slab); failing
 * that, the fewest wasting at most 1/8; failing that, a slab of one object
 * and its header. */
static void choose_layout(uint64_t size, uint64_t *pages, uint64_t *capacity)
{
    for (uint64_t least = SLAB_MIN_OBJECTS; least >= 1; least /= SLAB_MIN_OBJECTS) {
        for (uint64_t n = 1; n <= SLAB_MAX_PAGES; n++) {
            uint64_t cap = capacity_for(size, n);

            if (cap >= least && cap * size * 8 >= 7 * n * PAGE_SIZE) {
                *pages = n;
                *capacity = cap;
                return;
            }
        }
    }
    *pages = (size + header_bytes(1) + PAGE_SIZE - 1) / PAGE_SIZE;
    *capacity = 1;
}

static void setup_cache(struct slab_cache *c, size_t cls, uint64_t size)
{
    uint64_t pages, capacity;

    if (size == 0 || size % 16 != 0)
        panic("slab_setup: object size %lu is not a positive multiple of 16", size);
    choose_layout(size, &pages, &capacity);
    memset(c, 0, sizeof(*c));
    c->size = size;
    c->capacity = capacity;
    c->words = (uint32_t)((capacity + 63) / 64);
    c->recip = (((uint64_t)1 << 32) + size - 1) / size;
    c->pages = (uint32_t)pages;
    c->header_offset = pages * PAGE_SIZE - header_bytes(capacity);
    c->slot_bytes = (uint64_t)1 << heap_order_of(pages * PAGE_SIZE);
    c->slot_mask = ~(c->slot_bytes - 1);
    c->window = SLAB_BASE + (uint64_t)cls * SLAB_WINDOW_BYTES;
    c->hint = 1; /* slot 0 is the window's guard */
    c->nvacant = 0;
    c->partial = SLAB_NONE;
}

void slab_setup(const uint32_t *sizes, size_t count)
{
    if (count > SLAB_MAX_CLASSES)
        panic("slab_setup: %lu classes, at most %d", count, SLAB_MAX_CLASSES);
    for (size_t i = 0; i < count; i++)
        setup_cache(&slab_caches[i], i, sizes[i]);
    for (size_t i = count; i < SLAB_MAX_CLASSES; i++) {
        memset(&slab_caches[i], 0, sizeof(slab_caches[i]));
        slab_caches[i].partial = SLAB_NONE;
    }
    cache_count = count;
}

/* ---- Lists ---------------------------------------------------------------- */

/* Lists are linked with NULL at both ends; an empty list's head is nil
 * (SLAB_NONE for partial lists, NULL for full ones). */
static void list_push(struct slab **head, struct slab *s, struct slab *nil)
{
    s->prev = NULL;
    s->next = *head == nil ? NULL : *head;
    if (s->next != NULL)
        s->next->prev = s;
    *head = s;
}

static void list_remove(struct slab **head, struct slab *s, struct slab *nil)
{
    if (s->prev != NULL)
        s->prev->next = s->next;
    else
        *head = s->next != NULL ? s->next : nil;
    if (s->next != NULL)
        s->next->prev = s->prev;
    s->prev = s->next = NULL;
}

static vaddr_t slab_base(const struct slab_cache *c, const struct slab *s)
{
    return (vaddr_t)s - c->header_offset;
}

/* ---- Slow paths ----------------------------------------------------------- */

/* Maps a slab in the lowest vacant slot of c's window; NULL if none. */
static struct slab *new_slab(struct slab_cache *c)
{
    uint64_t slots = SLAB_WINDOW_BYTES / c->slot_bytes;
    uint64_t i = c->hint;
    struct slab *s;

    if (c->nvacant > 0) { /* a slot given back lately: known vacant */
        i = c->vacant[--c->nvacant];
        if (heap_pages_claim(c->window + i * c->slot_bytes, c->pages) != HEAP_OK) {
            c->nvacant++;
            return NULL;
        }
    } else {
        while (i < slots && heap_page_claimed(c->window + i * c->slot_bytes))
            i++;
        if (i >= slots || heap_pages_claim(c->window + i * c->slot_bytes, c->pages) != HEAP_OK)
            return NULL;
        c->hint = i + 1;
    }
    c->slabs++;
    s = (struct slab *)(c->window + i * c->slot_bytes + c->header_offset);
    s->magic = SLAB_MAGIC;
    s->cls = (uint16_t)(c - slab_caches);
    s->free = (uint16_t)c->capacity;
    s->base = (char *)(c->window + i * c->slot_bytes);
    for (unsigned w = 0; w <= c->words; w++) /* a few words: cheaper than memset */
        s->bits[w] = 0;
    if (c->capacity % 64 != 0)
        s->bits[c->words - 1] = ~0ULL << (c->capacity % 64);
    return s;
}

void *slab_alloc_slow(struct slab_cache *c)
{
    struct slab *s = c->partial;
    uint64_t *w = s->bits;
    uint64_t index;
    char *p;

    if (s == SLAB_NONE) {
        s = new_slab(c);
        if (s == NULL)
            return NULL;
        list_push(&c->partial, s, SLAB_NONE);
        if (s->bits[0] != ~0ULL)
            return slab_cache_alloc(c);
        w = s->bits;
    }
    while (*w == ~0ULL)
        w++;
    index = (uint64_t)(w - s->bits) * 64 + (uint64_t)__builtin_ctzll(~*w);
    if (index >= c->capacity)
        heap_fail("kmalloc", "bitmap full but free objects counted in slab", s);
    *w |= 1ULL << (index & 63);
    p = s->base + index * c->size;
    if (--s->free == 0)
        return slab_now_full(c, s, p);
    return p;
}

void *slab_now_full(struct slab_cache *c, struct slab *s, void *p)
{
    list_remove(&c->partial, s, SLAB_NONE);
    list_push(&c->full, s, NULL);
    return p;
}

void slab_free_was_full(struct slab_cache *c, struct slab *s)
{
    s->free = 1;
    list_remove(&c->full, s, NULL);
    list_push(&c->partial, s, SLAB_NONE);
    if (s->free == c->capacity && s != c->spare) /* a slab of one object */
        slab_now_empty(c, s);
}

void slab_now_empty(struct slab_cache *c, struct slab *s)
{
    vaddr_t base = slab_base(c, s);
    uint64_t slot = (base - c->window) / c->slot_bytes;

    if (c->pages == 1 && (c->spare == NULL || c->spare->free != c->capacity)) {
        c->spare = s;
        return;
    }
    list_remove(&c->partial, s, SLAB_NONE);
    s->magic = 0;
    heap_pages_release(base, c->pages);
    c->slabs--;
    if (slot < c->hint)
        c->hint = slot;
    if (c->nvacant < SLAB_VACANT_SLOTS)
        c->vacant[c->nvacant++] = (uint32_t)slot;
}

void slab_bad_free(void *p)
{
    heap_fail("kfree", "invalid free of", p);
}

void slab_double_free(void *p)
{
    heap_fail("kfree", "double free of", p);
}

/* ---- Checked paths --------------------------------------------------------- */

void slab_free_checked(void *p)
{
    uint64_t cls = ((vaddr_t)p - SLAB_BASE) >> SLAB_WINDOW_SHIFT;
    const struct slab_cache *c = &slab_caches[cls];
    vaddr_t base;
    const struct slab *s;

    if (!slab_owns(p) || cls >= cache_count)
        heap_fail("kfree", "invalid free of", p);
    base = (vaddr_t)p & c->slot_mask;
    s = (const struct slab *)(base + c->header_offset);
    if (!heap_page_claimed(base) || !heap_page_claimed((vaddr_t)s) ||
        s->magic != SLAB_MAGIC || s->cls != cls)
        heap_fail("kfree", "invalid free of", p);
    slab_cache_free(p);
}

size_t slab_object_size(const void *p)
{
    return slab_caches[((vaddr_t)p - SLAB_BASE) >> SLAB_WINDOW_SHIFT].size;
}

/* ---- heap_check ------------------------------------------------------------ */

/* Objects marked allocated (the bits past the capacity not counted). */
static uint64_t popcount_bits(const struct slab_cache *c, const struct slab *s)
{
    uint64_t n = 0;

    for (unsigned i = 0; i < c->words; i++)
        n += (uint64_t)__builtin_popcountll(s->bits[i]);
    return n - (c->words * 64 - c->capacity);
}

/* One slab: header, bitmap, count; fn sees its allocated objects. */
static uint64_t check_slab(const struct slab_cache *c, const struct slab *s, heap_block_fn fn)
{
    vaddr_t base = slab_base(c, s);

    if ((vaddr_t)s < c->window || (vaddr_t)s >= c->window + SLAB_WINDOW_BYTES ||
        (base & ~c->slot_mask) != 0 || !heap_page_claimed(base) ||
        !heap_page_claimed((vaddr_t)s))
        heap_fail("heap_check", "slab outside its cache's window at", s);
    if (s->magic != SLAB_MAGIC || s->cls != c - slab_caches || s->free > c->capacity ||
        s->base != (char *)base)
        heap_fail("heap_check", "bad slab header at", s);
    if (c->capacity % 64 != 0 && (~s->bits[c->words - 1] >> (c->capacity % 64)) != 0)
        heap_fail("heap_check", "bitmap bit past the capacity clear in slab", s);
    if (s->bits[c->words] != 0)
        heap_fail("heap_check", "bitmap's closing zero word overwritten in slab", s);
    if (popcount_bits(c, s) != c->capacity - s->free)
        heap_fail("heap_check", "bitmap disagrees with the free count of slab", s);
    for (uint64_t i = 0; fn != NULL && i < c->capacity; i++) {
        if (s->bits[i / 64] & (1ULL << (i % 64)))
            fn((void *)(base + i * c->size), c->size);
    }
    return c->capacity - s->free;
}

enum slab_list_kind {
    SLABS_PARTIAL,
    SLABS_FULL,
};

struct list_tally {
    uint64_t slabs;   /* on the lists */
    uint64_t empty;   /* empty ones on the partial list */
    bool spare_seen;
};

static size_t check_list(const struct slab_cache *c, const struct slab *head,
                         enum slab_list_kind kind, heap_block_fn fn, struct list_tally *t)
{
    size_t used = 0;

    for (const struct slab *s = head == SLAB_NONE ? NULL : head, *prev = NULL; s != NULL;
         prev = s, s = s->next) {
        used += check_slab(c, s, fn);
        if (s->prev != prev)
            heap_fail("heap_check", "slab list back link broken at", s);
        if (kind == SLABS_FULL ? s->free != 0 : s->free == 0)
            heap_fail("heap_check", "slab on the wrong list for its count at", s);
        t->empty += kind == SLABS_PARTIAL && s->free == c->capacity;
        t->spare_seen |= s == c->spare;
        if (++t->slabs > c->slabs)
            heap_fail("heap_check", "more slabs on the lists than mapped, at", s);
    }
    return used;
}

size_t slab_check(heap_block_fn fn)
{
    size_t used = 0;

    for (size_t i = 0; i < cache_count; i++) {
        const struct slab_cache *c = &slab_caches[i];
        struct list_tally t = {0};

        used += check_list(c, c->partial, SLABS_PARTIAL, fn, &t);
        used += check_list(c, c->full, SLABS_FULL, fn, &t);
        if (t.slabs != c->slabs)
            heap_fail("heap_check", "slabs mapped but on no list, cache at", c);
        if (t.empty > 1 || (t.empty == 1 && c->spare->free != c->capacity) ||
            (c->spare != NULL && !t.spare_seen))
            heap_fail("heap_check", "empty slabs kept besides the spare, cache at", c);
    }
    return used;
}

/* ---- The slab heap (heap=slab) --------------------------------------------- */

static void slab_heap_init(void)
{
    uint32_t sizes[SLAB_HEAP_MAX_SHIFT - SLAB_HEAP_MIN_SHIFT + 1];

    for (unsigned s = SLAB_HEAP_MIN_SHIFT; s <= SLAB_HEAP_MAX_SHIFT; s++)
        sizes[s - SLAB_HEAP_MIN_SHIFT] = (uint32_t)1 << s;
    slab_setup(sizes, ARRAY_SIZE(sizes));
}

/* Objects are aligned to their size, so the class for max(size, align)
 * serves both. */
static void *slab_heap_alloc(size_t size, size_t align)
{
    size_t need = size > align ? size : align;
    unsigned order = heap_order_of(need);

    if (need > SLAB_HEAP_MAX)
        return NULL;
    if (order < SLAB_HEAP_MIN_SHIFT)
        order = SLAB_HEAP_MIN_SHIFT;
    return slab_cache_alloc(&slab_caches[order - SLAB_HEAP_MIN_SHIFT]);
}

static void slab_heap_free(void *p)
{
    if (heap_debug_state == HEAP_DEBUG_ON)
        slab_free_checked(p);
    else if (slab_owns(p))
        slab_cache_free(p);
    else
        heap_fail("kfree", "invalid free of", p);
}

static enum heap_resize slab_heap_resize(void *p, size_t size)
{
    return size <= slab_object_size(p) ? HEAP_RESIZED : HEAP_MOVE;
}

static size_t slab_heap_usable(const void *p)
{
    return slab_object_size(p);
}

const struct heap_backend heap_slab_backend = {
    .kind = HEAP_SLAB,
    .name = "slab",
    .init = slab_heap_init,
    .alloc = slab_heap_alloc,
    .free = slab_heap_free,
    .resize = slab_heap_resize,
    .usable = slab_heap_usable,
    .check = slab_check,
};
