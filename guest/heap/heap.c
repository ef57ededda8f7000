/*
 * heap.c - the kernel heap's interface: kmalloc and friends, the choice of
 * allocator and debug mode; the top of the heap, over every allocator.
 *
 * Owns: the five entry points and their argument rules, dispatch to the
 * backend chosen on the command line, the inline fast path of the chained
 * heap's small sizes, debug mode (red zones, guards, poison, the checks of
 * heapdebug=1) and heap_check.
 * Does not own: the algorithms (list.c, buddy.c, slab.c, chained.c), the
 * heap's pages, footprint and heap_descriptor (pages.c, under all of
 * them), frames (mm/pmm.c) or page tables (mm/paging.c).
 *
 * Debug mode wraps every block. The backend is asked for need bytes with
 * the block's alignment, laid out as
 *
 *   b                                    p = b + front         b + need
 *   | head | red zone ...   | guard     | payload (size) | red zone |
 *   | 16   |                | 16        |                | >= 16    |
 *
 * front is 32, or the alignment if larger; need = front + size rounded up
 * to 16 + 16. The head holds HEAD_MAGIC and front (so a walk from b finds
 * the guard); the guard holds GUARD_LIVE, front and size. The red zones
 * hold HEAP_REDZONE_BYTE, and the payload starts as HEAP_POISON_BYTE.
 * kfree checks guard and red zones, then poisons the whole need bytes, so
 * a second kfree finds a poisoned guard: "double free". kmalloc checks
 * that the bytes it hands out (after the first 16) still hold the poison
 * (backend.h's contract): a write after free is reported when the memory
 * is reused.
 */
#include "heap/heap.h"

#include "boot/cmdline.h"
#include "dev/serial.h"
#include "heap/backend.h"
#include "heap/pages.h"
#include "heap/slab.h"
#include "lib/panic.h"
#include "lib/string.h"
#include "mm/pmm.h"

#define HEAD_MAGIC 0x44414548u  /* "HEAD" */
#define GUARD_LIVE 0x4556494cu  /* "LIVE" */
#define DEBUG_FRONT 32
#define DEBUG_TAIL 16
#define POISON_WORD 0x6b6b6b6b6b6b6b6bULL
#define REDZONE_WORD 0xccccccccccccccccULL

static_assert((POISON_WORD & 0xff) == HEAP_POISON_BYTE, "poison byte");
static_assert((REDZONE_WORD & 0xff) == HEAP_REDZONE_BYTE, "red zone byte");

struct debug_head {
    uint32_t magic;   /* HEAD_MAGIC */
    uint32_t front;   /* p - b */
    uint64_t redzone; /* REDZONE_WORD */
};

struct debug_guard {
    uint32_t magic;   /* GUARD_LIVE */
    uint32_t front;
    uint64_t size;    /* bytes the caller asked for */
};

static_assert(sizeof(struct debug_head) == 16 && sizeof(struct debug_guard) == 16,
              "debug head and guard are 16 bytes");

/* kmalloc's and kfree's inline paths: nonzero only for the chained heap
 * (and the slab heap, for kfree) without debug mode. Not static, so the
 * compiler reads them as plain limits (one compare each). */
uint64_t heap_fast_small_limit;
uint64_t heap_fast_slab_span;

static void *not_ready_alloc(size_t size, size_t align)
{
    (void)size;
    (void)align;
    panic("kmalloc: called before heap_init");
}

static const struct heap_backend not_ready = {.name = "none", .alloc = not_ready_alloc};
static const struct heap_backend *backend = &not_ready;

/* ---- Helpers ---------------------------------------------------------------- */

/* The first byte of [p, p + n) that is not c, or NULL. */
static const uint8_t *first_not(const void *p, size_t n, uint8_t c, uint64_t word)
{
    const uint8_t *b = p;
    size_t i = 0;

    for (; i < n && ((vaddr_t)(b + i) & 7) != 0; i++) {
        if (b[i] != c)
            return b + i;
    }
    for (; i + 8 <= n; i += 8) {
        if (*(const uint64_t *)(b + i) != word)
            break;
    }
    for (; i < n; i++) {
        if (b[i] != c)
            return b + i;
    }
    return NULL;
}

static void fill_redzone(void *p, size_t n)
{
    memset(p, HEAP_REDZONE_BYTE, n);
}

/* ---- Debug mode ------------------------------------------------------------------ */

static size_t debug_front(size_t align)
{
    return align > DEBUG_FRONT ? align : DEBUG_FRONT;
}

static size_t debug_need(size_t front, size_t size)
{
    return front + heap_round_up(size, 16) + DEBUG_TAIL;
}

/* Writes head, red zones and guard around p's size bytes. */
static void debug_dress(uint8_t *b, size_t front, size_t size)
{
    struct debug_head *head = (struct debug_head *)b;
    struct debug_guard *guard = (struct debug_guard *)(b + front) - 1;

    head->magic = HEAD_MAGIC;
    head->front = (uint32_t)front;
    head->redzone = REDZONE_WORD;
    fill_redzone(b + sizeof(*head), front - sizeof(*head) - sizeof(*guard));
    guard->magic = GUARD_LIVE;
    guard->front = (uint32_t)front;
    guard->size = size;
    fill_redzone(b + front + size, debug_need(front, size) - front - size);
}

static void *debug_alloc(size_t size, size_t align)
{
    size_t front = debug_front(align);
    size_t need = debug_need(front, size);
    uint8_t *b = backend->alloc(need, align);
    const uint8_t *bad;

    if (b == NULL)
        return NULL;
    bad = first_not(b + 16, need - 16, HEAP_POISON_BYTE, POISON_WORD);
    if (bad != NULL)
        heap_fail("kmalloc", "freed memory was written after kfree, at", bad);
    debug_dress(b, front, size);
    return b + front;
}

/* The guard of the live block p, after every check; fn names the caller. */
static struct debug_guard *debug_live(void *p, const char *fn)
{
    struct debug_guard *guard = (struct debug_guard *)p - 1;
    uint8_t *b;

    if (!heap_in_range((vaddr_t)p) || ((vaddr_t)p & 15) != 0 || !heap_page_claimed((vaddr_t)guard))
        heap_fail(fn, "invalid free of", p);
    if (first_not(guard, sizeof(*guard), HEAP_POISON_BYTE, POISON_WORD) == NULL)
        heap_fail(fn, "double free of", p);
    if (guard->magic != GUARD_LIVE || guard->front < DEBUG_FRONT ||
        guard->front > HEAP_MAX_ALIGN || (guard->front & (guard->front - 1)) != 0 ||
        !heap_page_claimed((vaddr_t)p - guard->front))
        heap_fail(fn, "invalid free of", p);
    b = (uint8_t *)p - guard->front;
    if (((struct debug_head *)b)->magic != HEAD_MAGIC ||
        ((struct debug_head *)b)->front != guard->front ||
        first_not(b + 8, guard->front - 24, HEAP_REDZONE_BYTE, REDZONE_WORD) != NULL)
        heap_fail(fn, "red zone before the block overwritten, block", p);
    if (first_not((uint8_t *)p + guard->size,
                  debug_need(guard->front, guard->size) - guard->front - guard->size,
                  HEAP_REDZONE_BYTE, REDZONE_WORD) != NULL)
        heap_fail(fn, "red zone after the block overwritten, block", p);
    return guard;
}

static void debug_free(void *p)
{
    struct debug_guard *guard = debug_live(p, "kfree");
    uint8_t *b = (uint8_t *)p - guard->front;

    memset(b, HEAP_POISON_BYTE, debug_need(guard->front, guard->size));
    backend->free(b);
}

static void *debug_realloc(void *p, size_t size)
{
    struct debug_guard *guard = debug_live(p, "krealloc");
    size_t front = guard->front, old = guard->size;
    uint8_t *b = (uint8_t *)p - front;
    size_t old_need = debug_need(front, old), need = debug_need(front, size);
    void *q;

    if (need < old_need)
        memset(b + need, HEAP_POISON_BYTE, old_need - need);
    if (backend->resize(b, need) == HEAP_RESIZED) {
        debug_dress(b, front, size);
        return p;
    }
    q = debug_alloc(size, front == DEBUG_FRONT ? HEAP_MIN_ALIGN : front);
    if (q == NULL) {
        debug_dress(b, front, old);
        return NULL;
    }
    memcpy(q, p, old < size ? old : size);
    debug_free(p);
    return q;
}

/* heap_check's view of an allocated block b (as the backend returned it). */
static void debug_check_block(void *block, size_t usable)
{
    uint8_t *b = block;
    struct debug_head *head = block;
    struct debug_guard *guard;

    if (first_not(b, sizeof(*head), HEAP_POISON_BYTE, POISON_WORD) == NULL)
        heap_fail("heap_check", "allocated block holds poison (freed but still in use?) at",
                  b);
    if (head->magic != HEAD_MAGIC || head->front < DEBUG_FRONT || head->front > usable)
        heap_fail("heap_check", "red zone before the block overwritten at", b);
    guard = (struct debug_guard *)(b + head->front) - 1;
    if (guard->magic != GUARD_LIVE || guard->front != head->front ||
        debug_need(guard->front, guard->size) > usable)
        heap_fail("heap_check", "guard before the payload overwritten at", b);
    (void)debug_live(b + head->front, "heap_check");
}

/* ---- The interface ------------------------------------------------------------------ */

static bool size_ok(size_t size)
{
    return size - 1 < HEAP_MAX_ALLOC;
}

static __attribute__((noinline)) void *heap_alloc(size_t size, size_t align)
{
    if (!size_ok(size))
        return NULL;
    if (heap_debug_state == HEAP_DEBUG_ON)
        return debug_alloc(size, align);
    return backend->alloc(size, align);
}

static __attribute__((noinline)) void heap_free(void *p)
{
    if (p == NULL)
        return;
    if (heap_debug_state == HEAP_DEBUG_ON) {
        debug_free(p);
        return;
    }
    if (!heap_in_range((vaddr_t)p) || ((vaddr_t)p & 15) != 0)
        heap_fail("kfree", "invalid free of", p);
    backend->free(p);
}

__attribute__((noinline)) void *kmalloc(size_t size)
{
    if (size - 1 < heap_fast_small_limit)
        return slab_cache_alloc(chained_cache(size));
    return heap_alloc(size, HEAP_MIN_ALIGN);
}

__attribute__((noinline)) void kfree(void *p)
{
    if ((vaddr_t)p - SLAB_BASE < heap_fast_slab_span) {
        slab_cache_free(p);
        return;
    }
    heap_free(p);
}

__attribute__((noinline)) void *kmalloc_aligned(size_t size, size_t align)
{
    if (align == 0 || (align & (align - 1)) != 0)
        panic("kmalloc_aligned: alignment 0x%lx is not a power of two", align);
    if (align > HEAP_MAX_ALIGN)
        return NULL;
    return heap_alloc(size, align < HEAP_MIN_ALIGN ? HEAP_MIN_ALIGN : align);
}

__attribute__((noinline)) void *kcalloc(size_t n, size_t size)
{
    void *p;

    if (size != 0 && n > HEAP_MAX_ALLOC / size)
        return NULL;
    p = kmalloc(n * size);
    if (p != NULL)
        memset(p, 0, n * size);
    return p;
}

/* krealloc of a live block to a valid size. */
static void *resize_block(void *p, size_t size)
{
    size_t old;
    void *q;

    if (heap_debug_state == HEAP_DEBUG_ON)
        return debug_realloc(p, size);
    if (!heap_in_range((vaddr_t)p) || ((vaddr_t)p & 15) != 0)
        heap_fail("krealloc", "invalid free of", p);
    if (backend->resize(p, size) == HEAP_RESIZED)
        return p;
    q = backend->alloc(size, HEAP_MIN_ALIGN);
    if (q == NULL)
        return NULL;
    old = backend->usable(p);
    memcpy(q, p, old < size ? old : size);
    backend->free(p);
    return q;
}

__attribute__((noinline)) void *krealloc(void *p, size_t size)
{
    if (p == NULL)
        return kmalloc(size);
    if (size == 0) {
        kfree(p);
        return NULL;
    }
    if (!size_ok(size))
        return NULL;
    return resize_block(p, size);
}

/* ---- Choice and checks ---------------------------------------------------------------- */

static const struct heap_backend *backend_named(const char *name)
{
    static const struct heap_backend *const all[] = {
        &heap_list_backend, &heap_buddy_backend, &heap_slab_backend, &heap_chained_backend};

    for (size_t i = 0; i < ARRAY_SIZE(all); i++) {
        if (strcmp(all[i]->name, name) == 0)
            return all[i];
    }
    panic("heap_init: unknown heap=%s (use list, buddy, slab or chained)", name);
}

static enum heap_debug debug_choice(void)
{
    char value[8];

    if (cmdline_get("heapdebug", value, sizeof(value)) < 0 || strcmp(value, "0") == 0)
        return HEAP_DEBUG_OFF;
    if (strcmp(value, "1") == 0 || value[0] == '\0')
        return HEAP_DEBUG_ON;
    panic("heap_init: heapdebug=%s (use 0 or 1)", value);
}

/* A sixteenth of the managed RAM, at most HEAP_CACHE_MAX_PAGES (Linux sizes
 * its per-CPU page lists from the zone's size the same way). */
static uint64_t heap_cache_default_pages(void)
{
    uint64_t pages = pmm_total_count() / HEAP_CACHE_RAM_FRACTION;

    return pages < HEAP_CACHE_MAX_PAGES ? pages : HEAP_CACHE_MAX_PAGES;
}

void heap_init(void)
{
    char name[16];
    enum heap_debug debug;

    if (backend != &not_ready)
        panic("heap_init: called twice");
    if (cmdline_get("heap", name, sizeof(name)) < 0)
        memcpy(name, "chained", sizeof("chained"));
    debug = debug_choice();
    backend = backend_named(name);
    heap_pages_init(backend->kind, backend->name, debug,
                    cmdline_u64("heapcache", heap_cache_default_pages()));
    backend->init();
    if (debug == HEAP_DEBUG_OFF && backend->kind == HEAP_CHAINED)
        heap_fast_small_limit = CHAINED_SMALL_MAX;
    if (debug == HEAP_DEBUG_OFF && (backend->kind == HEAP_CHAINED || backend->kind == HEAP_SLAB))
        heap_fast_slab_span = SLAB_SPAN;
    kprintf("heap: %s, debug %s, range 0x%lx-0x%lx\n", backend->name,
            debug == HEAP_DEBUG_ON ? "on" : "off", (vaddr_t)HEAP_BASE, (vaddr_t)HEAP_END - 1);
}

enum heap_kind heap_kind(void)
{
    return backend->kind;
}

const char *heap_kind_name(enum heap_kind kind)
{
    switch (kind) {
    case HEAP_LIST:
        return "list";
    case HEAP_BUDDY:
        return "buddy";
    case HEAP_SLAB:
        return "slab";
    case HEAP_CHAINED:
        return "chained";
    }
    return "unknown";
}

enum heap_debug heap_debug_mode(void)
{
    return heap_debug_state;
}

size_t heap_check(void)
{
    if (backend->check == NULL)
        panic("heap_check: called before heap_init");
    return backend->check(heap_debug_state == HEAP_DEBUG_ON ? debug_check_block : NULL);
}
