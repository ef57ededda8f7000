/*
 * frames.h - the frames behind user pages, and their reference counts.
 *
 * Owns: allocating and freeing every frame a user address space maps
 * (anonymous, file copies, copy-on-write copies), and one reference count
 * per such frame: the number of page-table entries, over all address
 * spaces, that map it. Copy-on-write (mm/vmm.c) reads the count to decide
 * between copying a shared frame and taking over a frame it alone maps.
 * Does not own: page tables (mm/paging.c) or which addresses map a frame
 * (mm/vmm.c); frames of the kernel (page tables, heap) are never counted.
 *
 * The counts live in chunks of UFRAME_CHUNK_FRAMES 32-bit counters, one
 * page each, taken from the PMM when a frame of the chunk gets its first
 * reference and given back when the chunk's last count drops to zero: a
 * machine with no user frames holds no chunk. A directory (one pointer per
 * chunk, over every frame number the PMM can hand out) finds them.
 *
 * Not thread-safe; never from an interrupt handler.
 */
#ifndef FRAMES_H
#define FRAMES_H

#include "lib/types.h"

#define UFRAME_CHUNK_FRAMES 1024 /* 4-byte counts in one 4 KiB chunk */

enum uframe_fill {
    UFRAME_UNINIT = 0, /* contents undefined: the caller fills the whole frame */
    UFRAME_ZEROED = 1,
};

/* Allocates the directory; once, after heap_init. Panics if it cannot. */
void uframes_init(void);

/*
 * A frame for a user page, with a reference count of 1. Returns its
 * physical address, or 0 if the PMM (or a count chunk) ran out; then
 * nothing changed.
 */
paddr_t uframe_alloc(enum uframe_fill fill);

/* One more mapping of pa (a counted frame). */
void uframe_get(paddr_t pa);

/* One mapping fewer; the frame goes back to the PMM at zero. Panics
 * "uframe_put: 0x... has no references" for an uncounted frame. */
void uframe_put(paddr_t pa);

/* The reference count of pa (0 for a frame that is not a user frame). */
uint32_t uframe_refs(paddr_t pa);

/* Counted frames now (those with a count above zero). */
size_t uframe_count(void);

/*
 * Where the counts are, for the monitor (copied into proc_descriptor):
 * dir is an array of chunks pointers (kernel virtual, HHDM; NULL for a
 * chunk with no counted frame); chunk c holds the counts of frames
 * c * UFRAME_CHUNK_FRAMES + i, i < UFRAME_CHUNK_FRAMES, as uint32_t.
 */
struct uframe_layout {
    uint32_t *const *dir;
    size_t chunks;
};
struct uframe_layout uframe_layout(void);

#endif
