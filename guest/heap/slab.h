/*
 * slab.h - slab caches of fixed-size objects; private to heap/.
 *
 * Owns: the layout of a slab and of a cache, and the fast paths (taking
 * and returning one object) that slab.c, chained.c and kmalloc's
 * inline path in heap.c share.
 * Does not own: which sizes the caches hold (the standalone slab heap uses
 * powers of two, the chained heap finer classes) or the slow paths
 * (slab.c: new slabs, list moves, checks).
 *
 * A slab is a run of pages holding objects of one size from its first
 * byte, and at its end a header with a bitmap: bit i set means object i is
 * allocated (as in the osdev-notes book), and a count of free objects.
 * Bits past the capacity are always set, so a clear bit is a real object,
 * and a zero word follows the bitmap, so a search for a clear bit always
 * stops (past the capacity only if the bitmap and the count disagree,
 * which panics). Each size class has a window of SLAB_WINDOW_BYTES in
 * the heap's range, cut into slots of a power of two of bytes at least the
 * slab's size, so kfree finds the cache from the address (the window) and
 * the slab from the address masked to its slot. A cache keeps its slabs on
 * a partial list and a full list, plus at most one empty slab (the spare);
 * further empty slabs are unmapped and their pages go back to the PMM.
 */
#ifndef HEAP_SLAB_H
#define HEAP_SLAB_H

#include "heap/backend.h"
#include "test/planted.h"

#define SLAB_MAX_CLASSES 32
#define SLAB_WINDOW_SHIFT 36 /* 64 GiB per class */
#define SLAB_WINDOW_BYTES ((uint64_t)1 << SLAB_WINDOW_SHIFT)
#define SLAB_BASE (HEAP_BASE + 2 * HEAP_WINDOW)
#define SLAB_SPAN ((uint64_t)SLAB_MAX_CLASSES << SLAB_WINDOW_SHIFT)
#define SLAB_MAGIC 0x42414c53u /* "SLAB" */
#define SLAB_NO_CLASS 0xffu

static_assert(SLAB_BASE + SLAB_SPAN == HEAP_END, "slab windows end the heap range");

struct slab {
    uint32_t magic;     /* SLAB_MAGIC */
    uint16_t cls;       /* index of the cache */
    uint16_t free;      /* objects not allocated */
    struct slab *prev;  /* on the cache's partial or full list */
    struct slab *next;
    char *base;         /* the slab's first byte: object 0 */
    uint64_t bits[];    /* capacity bits, ones up to a word's end, a zero word */
};

/* A cache remembers the slots of this many slabs it gave back, so a new
 * slab needs no search for a vacant slot (a search asks the page layer
 * about every slot it passes). */
#define SLAB_VACANT_SLOTS 4

/* Hot fields first; 128 bytes, so an index becomes an offset by a shift. */
struct slab_cache {
    struct slab *partial;   /* slabs with a free object (at most one empty);
                             * when there is none, a stand-in whose first
                             * bitmap word is full (never NULL) */
    uint64_t slot_mask;     /* ~(slot bytes - 1) */
    uint64_t recip;         /* ceil(2^32 / size): index = offset * recip >> 32 */
    uint64_t size;          /* object size, a multiple of 16 */
    uint64_t header_offset; /* of struct slab from the slab's first byte */
    uint64_t capacity;      /* objects per slab */
    struct slab *spare;     /* the empty slab kept (see slab_now_empty), or NULL */
    struct slab *full;      /* slabs with no free object */
    vaddr_t window;
    uint64_t slot_bytes;
    uint64_t hint;          /* lowest slot index that may be vacant */
    uint64_t slabs;         /* slabs mapped */
    uint32_t pages;         /* mapped per slab */
    uint32_t words;         /* bitmap words, the zero word not counted */
    uint32_t vacant[SLAB_VACANT_SLOTS]; /* slots of the slabs given back last */
    uint32_t nvacant;       /* entries in vacant[] */
    uint8_t reserved[4];
};

static_assert(sizeof(struct slab_cache) == 128, "slab_cache is 128 bytes");

extern struct slab_cache slab_caches[SLAB_MAX_CLASSES];

/*
 * Configures count caches (count <= SLAB_MAX_CLASSES) for the object sizes
 * sizes[] (multiples of 16, increasing); forgets any earlier setup. Panics
 * if a size cannot be laid out.
 */
void slab_setup(const uint32_t *sizes, size_t count);

/*
 * Slow paths of the inline functions below (slab.c), shaped as tail
 * calls so the fast paths keep nothing alive across a call.
 * slab_alloc_slow: the first bitmap word of the partial list's first slab
 * is full: searches the rest of it, or maps a new slab (NULL: out of
 * memory). slab_now_full: s has no free object left; moves it to the full
 * list and returns p. slab_free_was_full: s was full and got one object
 * back; moves it to the partial list. slab_now_empty: s got its last
 * object back and is not the spare: a slab of one page becomes the spare
 * (it stays on the partial list) unless the spare is still empty;
 * otherwise its pages go back to the page layer (a spare of several pages
 * would hold memory out of every other claim's reach, while released
 * pages wait in the page cache, ready for this class or any other). The
 * spare pointer is lazy: the slab it names may have been allocated from
 * since.
 */
void *slab_alloc_slow(struct slab_cache *c);
void *slab_now_full(struct slab_cache *c, struct slab *s, void *p);
void slab_free_was_full(struct slab_cache *c, struct slab *s);
void slab_now_empty(struct slab_cache *c, struct slab *s);
/* Panics "kfree: invalid free of 0x..." / "kfree: double free of 0x...";
 * not declared noreturn so that the inline paths reach them by a jump. */
void slab_bad_free(void *p);
void slab_double_free(void *p);

/* Full checks of a pointer into the slab windows (debug mode); panics
 * like kfree, then frees. */
void slab_free_checked(void *p);

/* Object size at p (p in the slab windows, allocated). */
size_t slab_object_size(const void *p);

/* heap_check for every cache; fn sees each allocated object. */
size_t slab_check(heap_block_fn fn);

/* The chained heap's small sizes (chained.c), for kmalloc's inline
 * path: size s in 1..CHAINED_SMALL_MAX uses the cache at byte offset
 * chained_cache_offset[(s - 1) / 16] in slab_caches. */
#define CHAINED_SMALL_MAX 4080
extern uint16_t chained_cache_offset[CHAINED_SMALL_MAX / 16];

static inline struct slab_cache *chained_cache(size_t size)
{
    return (struct slab_cache *)((char *)slab_caches + chained_cache_offset[(size - 1) >> 4]);
}

static inline bool slab_owns(const void *p)
{
    return (vaddr_t)p - SLAB_BASE < SLAB_SPAN;
}

/* One object of cache c; NULL if no memory is left. Looks at the first
 * bitmap word only; slab_alloc_slow does the rest. */
static inline void *slab_cache_alloc(struct slab_cache *c)
{
    struct slab *s = c->partial;
    uint64_t x = s->bits[0];
    uint64_t index;
    char *p;

    if (__builtin_expect(x == ~0ULL, 0))
        return slab_alloc_slow(c);
    s->bits[0] = x | (x + 1); /* sets the lowest clear bit */
    index = (uint64_t)__builtin_ctzll(~x);
    p = s->base + index * c->size;
    if (__builtin_expect(--s->free == 0, 0))
        return slab_now_full(c, s, p);
    return p;
}

/* Clears bit index of the bitmap; returns whether it was set. */
static inline bool bitmap_take_back(uint64_t *bits, uint64_t index)
{
    bool was_set;

#if PLANT_BUG == 103 /* planted bug 103: the freed object's bit is tested, never cleared */
    __asm__ volatile("btq %2, %1" : "=@ccc"(was_set), "+m"(*bits) : "r"(index) : "memory");
#else
    __asm__ volatile("btrq %2, %1" : "=@ccc"(was_set), "+m"(*bits) : "r"(index) : "memory");
#endif
    return was_set;
}

/*
 * Returns the object p (inside the slab windows, in a mapped slab). Checks
 * that p is an object's first byte (offset * recip has low 32 bits below
 * recip exactly for multiples of the size) and that it is allocated.
 */
static inline void slab_cache_free(void *p)
{
    vaddr_t va = (vaddr_t)p;
    struct slab_cache *c = &slab_caches[(va - SLAB_BASE) >> SLAB_WINDOW_SHIFT];
    vaddr_t base = va & c->slot_mask;
    uint64_t product = (va - base) * c->recip;
    uint64_t index = product >> 32;
    struct slab *s;

    uint64_t free;

    if ((uint32_t)product >= (uint32_t)c->recip || index >= c->capacity) {
        slab_bad_free(p);
        return;
    }
    s = (struct slab *)(base + c->header_offset);
    if (!bitmap_take_back(s->bits, index)) {
        slab_double_free(p);
        return;
    }
    free = s->free;
    if (__builtin_expect(free == 0, 0)) {
        slab_free_was_full(c, s);
        return;
    }
    s->free = (uint16_t)++free;
    if (__builtin_expect(free == c->capacity, 0) && s != c->spare)
        slab_now_empty(c, s);
}

#endif
