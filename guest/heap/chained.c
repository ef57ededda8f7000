/*
 * chained.c - the chained heap (heap=chained, the default): small
 * sizes from slab caches, the rest from the buddy heap.
 *
 * Owns: the size classes and the rule that routes a request: a size up to
 * CHAINED_SMALL_MAX takes an object of the smallest class that holds it;
 * an aligned one up to CHAINED_ALIGNED_MAX takes the smallest power-of-two
 * class at least as large as both size and alignment (objects are aligned
 * to their size there);
 * anything larger goes to the buddy heap, whose blocks map only the pages
 * their bytes reach. kfree tells the two apart by address (the slab
 * windows, or the buddy arena).
 * Does not own: the slabs (slab.c), the buddy blocks (buddy.c).
 *
 * The classes: every multiple of 16 up to 128, then four per doubling
 * (160, 192, 224, 256, 320, ... 2048, 2560, 3072, 3584), so a small
 * request wastes at most a fifth of its object and never carries a header;
 * the last, 4080, is a page less 16 bytes: four objects and their slab
 * header fill four pages, so a request just under a page costs one page,
 * as in the buddy heap (a header and 4080 bytes in an order-12 block), with
 * no page of its own to map or unmap on each call. A resize stays in the
 * object while the new size fits it; a buddy block resizes as the buddy
 * heap does; anything else moves.
 */
#include "heap/slab.h"

#include "heap/large.h"
#include "heap/pages.h"
#include "lib/panic.h"

static const uint32_t classes[] = {
    16,  32,  48,  64,  80,  96,  112,  128,  160,  192,  224,  256,
    320, 384, 448, 512, 640, 768, 896, 1024, 1280, 1536, 1792, 2048,
    2560, 3072, 3584, CHAINED_SMALL_MAX,
};

/* The largest power-of-two class: aligned requests above it go to the buddy heap. */
#define CHAINED_ALIGNED_MAX 2048

static_assert(ARRAY_SIZE(classes) <= SLAB_MAX_CLASSES, "chained classes fit");

uint16_t chained_cache_offset[CHAINED_SMALL_MAX / 16];

static void chained_init(void)
{
    unsigned cls = 0;

    slab_setup(classes, ARRAY_SIZE(classes));
    for (unsigned i = 0; i < ARRAY_SIZE(chained_cache_offset); i++) {
        while (classes[cls] < (i + 1) * 16)
            cls++;
        chained_cache_offset[i] = (uint16_t)(cls * sizeof(struct slab_cache));
    }
    large_init();
    heap_buddy_backend.init();
}

static void *chained_alloc(size_t size, size_t align)
{
    size_t need = size > align ? size : align;

    if (align <= HEAP_MIN_ALIGN && size <= CHAINED_SMALL_MAX)
        return slab_cache_alloc(chained_cache(size));
    if (need <= CHAINED_ALIGNED_MAX) /* a power-of-two class: aligned to its size */
        return slab_cache_alloc(chained_cache((size_t)1 << heap_order_of(need)));
    if (align <= HEAP_MIN_ALIGN && size <= LARGE_MAX_SIZE)
        return large_alloc(size);
    return heap_buddy_backend.alloc(size, align);
}

static void chained_free(void *p)
{
    if (large_owns(p))
        large_free(p);
    else if (!slab_owns(p))
        heap_buddy_backend.free(p);
    else if (heap_debug_state == HEAP_DEBUG_ON)
        slab_free_checked(p);
    else
        slab_cache_free(p);
}

static enum heap_resize chained_resize(void *p, size_t size)
{
    if (large_owns(p))
        return large_resize(p, size);
    if (!slab_owns(p))
        return heap_buddy_backend.resize(p, size);
    return size <= slab_object_size(p) ? HEAP_RESIZED : HEAP_MOVE;
}

static size_t chained_usable(const void *p)
{
    if (large_owns(p))
        return large_usable(p);
    return slab_owns(p) ? slab_object_size(p) : heap_buddy_backend.usable(p);
}

static size_t chained_check(heap_block_fn fn)
{
    return slab_check(fn) + large_check(fn) + heap_buddy_backend.check(fn);
}

const struct heap_backend heap_chained_backend = {
    .kind = HEAP_CHAINED,
    .name = "chained",
    .init = chained_init,
    .alloc = chained_alloc,
    .free = chained_free,
    .resize = chained_resize,
    .usable = chained_usable,
    .check = chained_check,
};
