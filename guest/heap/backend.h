/*
 * backend.h - what heap.c and the allocators share; private to heap/.
 *
 * Owns: the backend interface heap.c drives, the heap's page layer (the
 * only code that maps and unmaps heap pages, and counts the footprint),
 * the panic helper that names the allocator, and the debug-mode contract
 * between heap.c's red zones and the allocators.
 * Does not own: the public interface (heap.h) or any algorithm.
 *
 * The debug-mode contract (heapdebug=1): every byte of a free block that
 * a backend could hand out again, except the first 16 (where the list and
 * buddy heaps keep their free-list links), holds HEAP_POISON_BYTE. heap.c
 * poisons what the caller had on kfree; a backend poisons what it gives up
 * itself (a header absorbed by coalescing or merging, an alignment gap),
 * and heap_map poisons fresh pages. heap.c checks the poison on every
 * allocation, so a write after free is caught when the memory is reused.
 */
#ifndef HEAP_BACKEND_H
#define HEAP_BACKEND_H

#include "heap/heap.h"

#ifndef PLANT_BUG
#define PLANT_BUG 0
#endif

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

/* ---- The page layer (heap.c) --------------------------------------------- */

enum heap_status {
    HEAP_OK = 0,
    HEAP_NO_MEMORY = -1,
};

/*
 * Maps pages fresh frames at va (page aligned, inside the heap range,
 * every page unmapped), read/write and global. All or nothing: HEAP_OK,
 * or HEAP_NO_MEMORY with nothing mapped. With heapdebug=1 the pages are
 * filled with HEAP_POISON_BYTE. Panics "heap_map: 0x... already mapped".
 */
int heap_map(vaddr_t va, size_t pages);

/* Unmaps pages pages at va and frees their frames; every page must be
 * mapped (panics "heap_unmap: 0x... not mapped"). */
void heap_unmap(vaddr_t va, size_t pages);

/* True if the page holding va is mapped. */
bool heap_mapped(vaddr_t va);

/* ---- Helpers -------------------------------------------------------------- */

/* Panics "fn: rule 0x<p> (heap=KIND)", e.g. "kfree: double free of 0x...". */
NORETURN void heap_fail(const char *fn, const char *rule, const void *p);

/* With heapdebug=1 fills [p, p + n) with HEAP_POISON_BYTE; else nothing. */
void heap_poison(void *p, size_t n);

/* True when heapdebug=1 (a plain global read, for the backends' hot paths). */
extern enum heap_debug heap_debug_state;

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
