/*
 * backend.h - what heap.c and the allocators share; private to heap/.
 *
 * Owns: the backend interface heap.c drives, the debug-mode contract
 * between heap.c's red zones and the allocators, and small arithmetic
 * helpers.
 * Does not own: the public interface (heap.h), any algorithm, or pages:
 * the allocators get those from the page layer (pages.h), never from
 * heap.c.
 *
 * The debug-mode contract (heapdebug=1): every byte of a free block that
 * a backend could hand out again, except the first 16 (where the list and
 * buddy heaps keep their free-list links), holds HEAP_POISON_BYTE. heap.c
 * poisons what the caller had on kfree; a backend poisons what it gives up
 * itself (a header absorbed by coalescing or merging, an alignment gap),
 * and the page layer hands out claimed pages poisoned. heap.c checks the
 * poison on every allocation, so a write after free is caught when the
 * memory is reused.
 */
#ifndef HEAP_BACKEND_H
#define HEAP_BACKEND_H

#include "heap/heap.h"

/* What a backend's resize did. */
enum heap_resize {
    HEAP_RESIZED = 0, /* in place: the block now has room for the new size */
    HEAP_MOVE = 1,    /* not possible in place; nothing changed */
};

/* A backend's check calls this for each allocated block: p as alloc
 * returned it, and the bytes usable there. */
typedef void (*heap_block_fn)(void *p, size_t usable);

/*
 * heap.c calls these only with valid arguments: 1 <= size <= HEAP_MAX_ALLOC,
 * align a power of two with 16 <= align <= HEAP_MAX_ALIGN, and pointers
 * only if they lie in the heap's range (the backend checks the rest).
 */
struct heap_backend {
    enum heap_kind kind;
    const char *name;
    void (*init)(void);
    /* size bytes aligned to align; NULL if out of memory or too large. */
    void *(*alloc)(size_t size, size_t align);
    /* Panics (heap_fail) on a double or invalid free it can see. */
    void (*free)(void *p);
    /* Makes room for size bytes at p in place, or HEAP_MOVE (nothing
     * changed). A shrink always succeeds. */
    enum heap_resize (*resize)(void *p, size_t size);
    /* Bytes usable at p (at least the size last asked for). */
    size_t (*usable)(const void *p);
    /* Checks every block (panics); fn (may be NULL) sees the allocated
     * ones. Returns their number. */
    size_t (*check)(heap_block_fn fn);
};

extern const struct heap_backend heap_list_backend;
extern const struct heap_backend heap_buddy_backend;
extern const struct heap_backend heap_slab_backend;
extern const struct heap_backend heap_chained_backend;

/* ---- Helpers -------------------------------------------------------------- */

static inline uint64_t heap_round_up(uint64_t x, uint64_t to) /* to: a power of two */
{
    return (x + to - 1) & ~(to - 1);
}

/* The smallest order with 1 << order >= x (x >= 1). */
static inline unsigned heap_order_of(uint64_t x)
{
    return x <= 1 ? 0 : 64 - (unsigned)__builtin_clzll(x - 1);
}

#endif
