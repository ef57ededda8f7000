/*
 * large.h - the chained heap's large blocks: whole page runs; private to
 * heap/.
 *
 * Owns: the interface chained.c routes requests above the slab classes
 * to (large.c has the layout and the rules).
 * Does not own: the routing (chained.c), pages (pages.c).
 */
#ifndef HEAP_LARGE_H
#define HEAP_LARGE_H

#include "heap/backend.h"

/* The window of the large runs: the list heap's (chained never uses it). */
#define LARGE_BASE (HEAP_BASE + PAGE_SIZE)
#define LARGE_END (HEAP_BASE + HEAP_WINDOW - PAGE_SIZE)
/* Blocks of at most this many pages (1 MiB); larger ones go to the buddy heap. */
#define LARGE_MAX_PAGES 256u
#define LARGE_MAX_SIZE ((size_t)LARGE_MAX_PAGES * PAGE_SIZE)

static inline bool large_owns(const void *p)
{
    return (vaddr_t)p - LARGE_BASE < LARGE_END - LARGE_BASE;
}

void large_init(void);
/* size bytes (1..LARGE_MAX_SIZE), page aligned; NULL if out of memory. */
void *large_alloc(size_t size);
/* p large_owns; panics (heap_fail) on a double or invalid free it can see. */
void large_free(void *p);
enum heap_resize large_resize(void *p, size_t size);
size_t large_usable(const void *p);
size_t large_check(heap_block_fn fn);

#endif
