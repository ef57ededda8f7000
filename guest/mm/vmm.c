/*
 * vmm.c - user address spaces (see vmm.h for the contracts).
 *
 * Owns: the region tree of each address space and every change to it
 * (insert, split, merge, punch a hole), the page-level consequences
 * (which leaves to map, reprotect, move or clear, through
 * vmm_walk_user), the fault resolver, fork and teardown.
 * Does not own: the entries themselves (mm/paging.c), frames and counts
 * (mm/frames.c), file contents (struct vm_object).
 *
 * Regions are disjoint, so ordered by start they are ordered by end too:
 * "the region holding a" and "the lowest region ending after a" are both
 * one descent of the tree. A page is mapped only inside a region; a
 * region's pages carry its rights, except that a private frame mapped by
 * more than one page-table entry is read-only until a write fault copies
 * it (copy-on-write), and PROT_NONE pages stay mapped supervisor-only so
 * that their contents survive a later mprotect.
 */
#include "mm/vmm.h"

#include "heap/heap.h"
#include "lib/panic.h"
#include "lib/string.h"
#include "mm/frames.h"
#include "mm/pmm.h"
#include "mm/swap.h"
#include "test/planted.h"

#define VMA_OF(n) ((struct vma *)(n)) /* node is the first member: NULL stays NULL */
#define MAX_SPARES 7

static size_t live_regions, live_spaces;
static struct address_space *current;

static uint64_t page_up(uint64_t a)
{
    return (a + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1);
}

static uint64_t page_down(uint64_t a)
{
    return a & ~(PAGE_SIZE - 1);
}

static uint64_t min_u64(uint64_t a, uint64_t b)
{
    return a < b ? a : b;
}

/* ---- The region tree -------------------------------------------------------- */

static bool vma_less(const struct avl_node *a, const struct avl_node *b)
{
    return VMA_OF(a)->start < VMA_OF(b)->start;
}

static struct vma *vma_next(const struct vma *v)
{
    return VMA_OF(avl_next(&v->node));
}

static struct vma *vma_prev(const struct vma *v)
{
    return VMA_OF(avl_prev(&v->node));
}

/* The region holding addr, or NULL. */
static struct vma *find(const struct address_space *as, vaddr_t addr)
{
    struct avl_node *n = as->regions.root;

    while (n != NULL) {
        struct vma *v = VMA_OF(n);

        if (addr < v->start)
            n = n->left;
        else if (addr >= v->end)
            n = n->right;
        else
            return v;
    }
    return NULL;
}

/* The lowest region ending after addr, or NULL. */
static struct vma *find_from(const struct address_space *as, vaddr_t addr)
{
    struct avl_node *n = as->regions.root;
    struct vma *best = NULL;

    while (n != NULL) {
        struct vma *v = VMA_OF(n);

        if (v->end > addr) {
            best = v;
            n = n->left;
        } else {
            n = n->right;
        }
    }
    return best;
}

/* The highest region starting below addr, or NULL. */
static struct vma *find_below(const struct address_space *as, vaddr_t addr)
{
    struct avl_node *n = as->regions.root;
    struct vma *best = NULL;

    while (n != NULL) {
        struct vma *v = VMA_OF(n);

        if (v->start < addr) {
            best = v;
            n = n->right;
        } else {
            n = n->left;
        }
    }
    return best;
}

const struct vma *as_find(const struct address_space *as, vaddr_t address)
{
    return find(as, address);
}

/* Nodes allocated before a change, so that the change cannot fail. */
struct spares {
    struct vma *node[MAX_SPARES];
    int count;
};

static bool spares_fill(struct spares *s, int n)
{
    while (s->count < n) {
        struct vma *v = kmalloc(sizeof(*v));

        if (v == NULL)
            return false;
        s->node[s->count++] = v;
    }
    return true;
}

static struct vma *spare_take(struct spares *s)
{
    if (s->count == 0)
        panic("vmm: no spare region node");
    return s->node[--s->count];
}

static void spares_release(struct spares *s)
{
    while (s->count > 0)
        kfree(s->node[--s->count]);
}

/* Enough nodes for n more regions, within the region limit. */
static int reserve(struct address_space *as, struct spares *s, int n)
{
    if (as->region_count + (uint64_t)n > AS_MAX_REGIONS || !spares_fill(s, n)) {
        spares_release(s);
        return AS_NO_MEMORY;
    }
    return AS_OK;
}

static void insert_region(struct address_space *as, struct vma *v)
{
    avl_insert(&as->regions, &v->node, vma_less);
    as->region_count++;
    live_regions++;
}

static void remove_region(struct address_space *as, struct vma *v)
{
    avl_remove(&as->regions, &v->node);
    as->region_count--;
    live_regions--;
    if (v->object != NULL)
        v->object->ops->put(v->object);
    kfree(v);
}

/* Splits v at at (inside it) into v = [start, at) and a new right part. */
static struct vma *split(struct address_space *as, struct vma *v, vaddr_t at, struct spares *s)
{
    struct vma *right = spare_take(s);
    uint64_t delta = at - v->start;

    *right = *v;
    right->start = at;
    right->offset += delta;
    right->file_bytes = v->file_bytes > delta ? v->file_bytes - delta : 0;
    v->end = at;
    v->file_bytes = min_u64(v->file_bytes, delta);
    if (right->object != NULL)
        right->object->ops->get(right->object);
    insert_region(as, right);
    return right;
}

/* Can b (starting where a ends) join a? */
static bool compatible(const struct vma *a, const struct vma *b)
{
    if (a->end != b->start || a->prot != b->prot || a->sharing != b->sharing ||
        a->growth != b->growth || a->backing != b->backing || a->role != b->role ||
        a->object != b->object)
        return false;
    if (a->backing == VMA_ANONYMOUS)
        return true;
    return b->offset == a->offset + (a->end - a->start) && a->file_bytes == a->end - a->start;
}

/* Merges v with its neighbours where compatible; returns the region holding v's pages. */
static struct vma *merge_around(struct address_space *as, struct vma *v)
{
    struct vma *prev = vma_prev(v), *next = vma_next(v);

    if (next != NULL && compatible(v, next)) {
        v->end = next->end;
        v->file_bytes += next->file_bytes;
        remove_region(as, next);
    }
    if (prev != NULL && compatible(prev, v)) {
        prev->end = v->end;
        prev->file_bytes += v->file_bytes;
        remove_region(as, v);
        v = prev;
    }
    return v;
}

/* Merges every mergeable pair among the regions that touch [start, end]. */
static void merge_range(struct address_space *as, vaddr_t start, vaddr_t end)
{
    struct vma *v = find_from(as, start > 0 ? start - 1 : 0);

    while (v != NULL && v->start <= end) {
        struct vma *next = vma_next(v);

        if (next != NULL && compatible(v, next)) {
            v->end = next->end;
            v->file_bytes += next->file_bytes;
            remove_region(as, next);
            continue;
        }
        v = next;
    }
}

/* ---- Pages -------------------------------------------------------------------- */

/* The entry flags of a page of v mapping the frame pa. */
static vm_flags_t page_flags(const struct vma *v, paddr_t pa)
{
    vm_flags_t flags = VM_USER;

    if (v->prot == 0)
        return VM_READ; /* PROT_NONE: kept, but not reachable from ring 3 */
    if (v->prot & VMA_EXEC)
        flags |= VM_EXEC;
    if ((v->prot & VMA_WRITE) && (v->sharing == VMA_SHARED || uframe_refs(pa) == 1))
        flags |= VM_WRITE;
    return flags;
}

static void count_mapped(struct address_space *as, int64_t pages)
{
    as->rss_pages += (uint64_t)pages;
    if (as->rss_pages > as->peak_rss_pages)
        as->peak_rss_pages = as->rss_pages;
}

#if PLANT_BUG == 305 /* planted bug 305: the kernel's zero page in user address spaces */
static const uint8_t zero_page[PAGE_SIZE] ALIGNED(PAGE_SIZE);

static paddr_t zero_page_paddr(void)
{
    return vmm_translate(vmm_kernel_root(), (vaddr_t)zero_page);
}
#endif

static enum vmm_leaf_action drop_leaf(void *ctx, struct vmm_leaf *leaf)
{
    struct address_space *as = ctx;

#if PLANT_BUG == 305 /* planted bug 305: the zero page is not counted, so not put */
    if (leaf->pa != zero_page_paddr())
        uframe_put(leaf->pa);
#elif PLANT_BUG != 301 /* planted bug 301: unmapped user frames are never freed */
    uframe_put(leaf->pa);
#else
    (void)leaf;
#endif
    as->rss_pages--;
    return VMM_CLEAR;
}

/* A swap entry goes: its slot loses a reference. */
static enum vmm_leaf_action drop_swapped(void *ctx, struct vmm_leaf *leaf)
{
    (void)ctx;
    swap_entry_free(leaf->entry);
    return VMM_CLEAR;
}

static void unmap_pages(struct address_space *as, vaddr_t start, vaddr_t end)
{
    if (start < end) {
        vmm_walk_user(as->root, start, end, drop_leaf, as);
        vmm_walk_swapped(as->root, start, end, drop_swapped, as);
    }
}

struct reprotect {
    const struct vma *v;
};

static enum vmm_leaf_action reprotect_leaf(void *ctx, struct vmm_leaf *leaf)
{
    struct reprotect *r = ctx;

    leaf->flags = page_flags(r->v, leaf->pa);
    return VMM_REPROTECT;
}

/* ---- Address spaces ------------------------------------------------------------- */

struct address_space *as_create(void)
{
    struct address_space *as = kcalloc(1, sizeof(*as));

    if (as == NULL)
        return NULL;
    as->root = vmm_root_create();
    if (as->root == NULL) {
        kfree(as);
        return NULL;
    }
    as->stack_top = AS_STACK_TOP;
    as->stack_limit = AS_STACK_LIMIT;
    as->mmap_top = AS_STACK_TOP - AS_MMAP_GAP;
    live_spaces++;
    return as;
}

void as_destroy(struct address_space *as)
{
    struct vma *v;

    vmm_walk_user(as->root, 0, VMM_USER_END, drop_leaf, as);
    vmm_walk_swapped(as->root, 0, VMM_USER_END, drop_swapped, as);
    swap_space_gone(as);
    while ((v = VMA_OF(avl_first(&as->regions))) != NULL)
        remove_region(as, v);
    vmm_root_destroy(as->root);
    live_spaces--;
    kfree(as);
}

void as_activate(struct address_space *as)
{
    vmm_activate(as->root, &as->generation);
    current = as;
}

struct address_space *as_current(void)
{
    return current;
}

void as_deactivate(void)
{
    static uint64_t kernel_generation; /* the kernel's root is always current */

    vmm_activate(vmm_kernel_root(), &kernel_generation);
    current = NULL;
}

struct fork_walk {
    struct address_space *child;
    const struct vma *v;
    bool failed;
};

/* Shares one parent page with the child: private pages read-only in both. */
static enum vmm_leaf_action fork_leaf(void *ctx, struct vmm_leaf *leaf)
{
    struct fork_walk *f = ctx;
    vm_flags_t flags = leaf->flags;

    if (f->failed)
        return VMM_KEEP;
#if PLANT_BUG != 302 /* planted bug 302: fork leaves private pages writable in both */
    if (f->v->sharing == VMA_PRIVATE)
        flags &= ~VM_WRITE;
#endif
    if (vmm_map(f->child->root, leaf->va, leaf->pa, 1, flags) != VMM_OK) {
        f->failed = true;
        return VMM_KEEP;
    }
#if PLANT_BUG != 303 /* planted bug 303: fork does not count the child's references */
    uframe_get(leaf->pa);
#endif
    if (leaf->dirty)
        swap_frame_dirtied(leaf->pa); /* the child's entry starts clean: the slot is stale */
    count_mapped(f->child, 1);
    if (flags == leaf->flags)
        return VMM_KEEP;
    leaf->flags = flags;
    return VMM_REPROTECT;
}

/* The child names the parent's slot too. */
static enum vmm_leaf_action fork_swapped(void *ctx, struct vmm_leaf *leaf)
{
    struct fork_walk *f = ctx;

    if (f->failed)
        return VMM_KEEP;
    if (vmm_set_swapped(f->child->root, leaf->va, leaf->entry) != VMM_OK) {
        f->failed = true;
        return VMM_KEEP;
    }
    swap_entry_dup(leaf->entry);
    return VMM_KEEP;
}

struct address_space *as_fork(struct address_space *parent)
{
    struct address_space *child = as_create();
    struct fork_walk f = {.child = child, .failed = false};

    if (child == NULL)
        return NULL;
    child->brk_start = parent->brk_start;
    child->brk = parent->brk;
    child->mmap_top = parent->mmap_top;
    child->stack_top = parent->stack_top;
    child->stack_limit = parent->stack_limit;
    for (struct vma *v = VMA_OF(avl_first(&parent->regions)); v != NULL && !f.failed;
         v = vma_next(v)) {
        struct vma *copy = kmalloc(sizeof(*copy));

        if (copy == NULL) {
            f.failed = true;
            break;
        }
        *copy = *v;
        if (copy->object != NULL)
            copy->object->ops->get(copy->object);
        insert_region(child, copy);
        f.v = v;
        vmm_walk_user(parent->root, v->start, v->end, fork_leaf, &f);
        if (!f.failed)
            vmm_walk_swapped(parent->root, v->start, v->end, fork_swapped, &f);
    }
    if (f.failed) {
        as_destroy(child);
        return NULL;
    }
    return child;
}

/* ---- Placement ------------------------------------------------------------------- */

/* Is [start, end) free of regions, and of a stack's guard gap? */
static bool range_free(const struct address_space *as, vaddr_t start, vaddr_t end)
{
    const struct vma *v = find_from(as, start);

    if (v == NULL)
        return true;
    if (v->start < end)
        return false;
    return v->growth != VMA_GROWS_DOWN || v->start - end >= AS_STACK_GUARD_GAP;
}

/* The highest free length-byte range ending at or below top; 0 if none. */
static vaddr_t top_down(const struct address_space *as, uint64_t length, vaddr_t top)
{
    struct vma *v = find_below(as, top);
    vaddr_t ceiling = top;

    if (v != NULL && v->end > top) { /* v straddles top */
        ceiling = v->start;
        v = vma_prev(v);
    }
    for (;;) {
        vaddr_t floor = v != NULL ? v->end : AS_MIN_ADDRESS;

        if (ceiling > floor && ceiling - floor >= length)
            return ceiling - length;
        if (v == NULL)
            return 0;
        ceiling = v->start;
        if (v->growth == VMA_GROWS_DOWN)
            ceiling = ceiling > AS_STACK_GUARD_GAP ? ceiling - AS_STACK_GUARD_GAP : 0;
        v = vma_prev(v);
    }
}

static bool user_range(vaddr_t start, uint64_t length)
{
    return start + length >= start && start + length <= AS_STACK_TOP;
}

/* Where an AS_ANYWHERE mapping goes: the hint if free, else top-down. */
static vaddr_t choose(const struct address_space *as, vaddr_t hint, uint64_t length)
{
    hint = page_down(hint);
    if (hint >= AS_MIN_ADDRESS && user_range(hint, length) && range_free(as, hint, hint + length))
        return hint;
    return top_down(as, length, as->mmap_top);
}

/* ---- Changing the regions ----------------------------------------------------------- */

/* Removes [start, end) from the regions and unmaps its pages (2 spares). */
static void punch(struct address_space *as, vaddr_t start, vaddr_t end, struct spares *s)
{
    struct vma *v = find(as, start);

    if (v != NULL && v->start < start)
        split(as, v, start, s);
    v = find(as, end - 1);
    if (v != NULL && v->end > end)
        split(as, v, end, s);
    v = find_from(as, start);
    while (v != NULL && v->start < end) {
        struct vma *next = vma_next(v);

        remove_region(as, v);
        v = next;
    }
#if PLANT_BUG == 306 /* planted bug 306: the last page of a longer range stays mapped */
    if (end - start > PAGE_SIZE)
        end -= PAGE_SIZE;
#endif
    unmap_pages(as, start, end);
}

static void fill_region(struct vma *v, vaddr_t start, uint64_t length, const struct as_mapping *m)
{
    memset(v, 0, sizeof(*v));
    v->start = start;
    v->end = start + length;
    v->prot = m->prot;
    v->sharing = m->sharing;
    v->growth = m->growth;
    v->role = m->role;
    v->backing = m->object != NULL ? VMA_FILE : VMA_ANONYMOUS;
    v->object = m->object;
    v->offset = m->offset;
    v->file_bytes = m->object != NULL ? min_u64(m->file_bytes, length) : 0;
    if (v->object != NULL)
        v->object->ops->get(v->object);
}

int as_map(struct address_space *as, vaddr_t addr, uint64_t length, const struct as_mapping *m,
           enum as_placement placement, vaddr_t *out)
{
    uint64_t len = page_up(length);
    struct spares s = {.count = 0};
    vaddr_t at = addr;
    struct vma *v;

    if (length == 0 || len < length || m->prot & ~(uint32_t)(VMA_READ | VMA_WRITE | VMA_EXEC))
        return AS_INVALID;
    if (placement == AS_ANYWHERE) {
        at = choose(as, addr, len);
        if (at == 0)
            return AS_NO_SPACE;
    } else if ((addr & (PAGE_SIZE - 1)) != 0 || addr < AS_MIN_ADDRESS || !user_range(addr, len)) {
        return AS_INVALID;
    } else if (placement == AS_FIXED_NOREPLACE && !range_free(as, addr, addr + len)) {
        const struct vma *hit = find_from(as, addr);

        if (hit != NULL && hit->start < addr + len)
            return AS_EXISTS;
    }
    if (reserve(as, &s, 3) != AS_OK)
        return AS_NO_MEMORY;
    punch(as, at, at + len, &s);
    v = spare_take(&s);
    fill_region(v, at, len, m);
    insert_region(as, v);
    merge_around(as, v);
    spares_release(&s);
    if (m->sharing == VMA_SHARED && as_populate(as, at, len, AS_ACCESS_WRITE) != AS_OK) {
        as_unmap(as, at, len);
        return AS_NO_MEMORY;
    }
    *out = at;
    return AS_OK;
}

int as_unmap(struct address_space *as, vaddr_t addr, uint64_t length)
{
    uint64_t len = page_up(length);
    struct spares s = {.count = 0};

    if ((addr & (PAGE_SIZE - 1)) != 0 || length == 0 || len < length ||
        addr + len < addr || addr + len > VMM_USER_END)
        return AS_INVALID;
    if (reserve(as, &s, 2) != AS_OK)
        return AS_NO_MEMORY;
    punch(as, addr, addr + len, &s);
    spares_release(&s);
    return AS_OK;
}

/* Validates a page-aligned [addr, addr + length) for protect/discard/residency. */
static bool valid_span(vaddr_t addr, uint64_t length, uint64_t *len)
{
    *len = page_up(length);
    return (addr & (PAGE_SIZE - 1)) == 0 && *len >= length && addr + *len >= addr &&
           addr + *len <= VMM_USER_END;
}

/*
 * New rights for [addr, addr + length). As Linux does, the regions from addr
 * up to the first hole change, and a hole gives AS_NOT_MAPPED.
 */
int as_protect(struct address_space *as, vaddr_t addr, uint64_t length, uint32_t prot)
{
    struct spares s = {.count = 0};
    uint64_t len;
    vaddr_t cursor = addr, end;
    struct vma *v;
    int status = AS_OK;

    if (!valid_span(addr, length, &len) || prot & ~(uint32_t)(VMA_READ | VMA_WRITE | VMA_EXEC))
        return AS_INVALID;
    end = addr + len;
    if (len == 0)
        return AS_OK;
    v = find(as, addr);
    if (v == NULL)
        return AS_NOT_MAPPED;
    if (reserve(as, &s, 2) != AS_OK)
        return AS_NO_MEMORY;
    if (v->start < addr)
        v = split(as, v, addr, &s);
    while (cursor < end) {
        struct reprotect r = {.v = v};

        if (v == NULL || v->start != cursor) {
            status = AS_NOT_MAPPED;
            break;
        }
        if (v->end > end)
            split(as, v, end, &s);
        v->prot = prot;
        vmm_walk_user(as->root, v->start, v->end, reprotect_leaf, &r);
        cursor = v->end;
        v = vma_next(v);
    }
    merge_range(as, addr, cursor);
    spares_release(&s);
    return status;
}

/* Every byte of [addr, end) in some region? */
static bool covered(const struct address_space *as, vaddr_t addr, vaddr_t end)
{
    const struct vma *v = find(as, addr);

    while (v != NULL && v->end < end) {
        const struct vma *next = vma_next(v);

        if (next == NULL || next->start != v->end)
            return false;
        v = next;
    }
    return v != NULL;
}

bool as_covered(const struct address_space *as, vaddr_t addr, uint64_t length)
{
    uint64_t len = page_up(length);

    return len >= length && addr + len >= addr && (len == 0 || covered(as, addr, addr + len));
}

static enum vmm_leaf_action discard_leaf(void *ctx, struct vmm_leaf *leaf)
{
    return drop_leaf(ctx, leaf);
}

int as_discard(struct address_space *as, vaddr_t addr, uint64_t length)
{
    uint64_t len;
    vaddr_t end;

    if (!valid_span(addr, length, &len))
        return AS_INVALID;
    end = addr + len;
    for (struct vma *v = find_from(as, addr); v != NULL && v->start < end; v = vma_next(v)) {
        vaddr_t from = v->start > addr ? v->start : addr;
        vaddr_t to = v->end < end ? v->end : end;

        if (v->sharing == VMA_PRIVATE) { /* shared pages keep their contents */
            vmm_walk_user(as->root, from, to, discard_leaf, as);
            vmm_walk_swapped(as->root, from, to, drop_swapped, as);
        }
    }
    return len == 0 || covered(as, addr, end) ? AS_OK : AS_NOT_MAPPED;
}

struct residency {
    vaddr_t start;
    uint8_t *vec;
};

static enum vmm_leaf_action resident_leaf(void *ctx, struct vmm_leaf *leaf)
{
    struct residency *r = ctx;

    r->vec[(leaf->va - r->start) / PAGE_SIZE] = 1;
    return VMM_KEEP;
}

/* File pages are resident whether mapped or not: the initrd is the page cache, and
 * Linux's mincore answers for a file mapping from the page cache (mm/mincore.c). */
static void cached_file_pages(const struct address_space *as, vaddr_t start, vaddr_t end,
                              uint8_t *vec)
{
    for (const struct vma *v = find_from(as, start); v != NULL && v->start < end;
         v = vma_next(v)) {
        uint64_t size;

        if (v->backing != VMA_FILE)
            continue;
        size = v->object->ops->size(v->object);
        for (vaddr_t page = v->start > start ? v->start : start; page < v->end && page < end;
             page += PAGE_SIZE) {
            if (v->offset + (page - v->start) < size)
                vec[(page - start) / PAGE_SIZE] = 1;
        }
    }
}

int as_residency(struct address_space *as, vaddr_t addr, uint64_t length, uint8_t *vec,
                 size_t max)
{
    struct residency r = {.start = addr, .vec = vec};
    uint64_t len;

    if (!valid_span(addr, length, &len) || len / PAGE_SIZE > max)
        return AS_INVALID;
    if (len == 0)
        return AS_OK;
    if (!covered(as, addr, addr + len))
        return AS_NOT_MAPPED;
    memset(vec, 0, len / PAGE_SIZE);
    cached_file_pages(as, addr, addr + len, vec);
    vmm_walk_user(as->root, addr, addr + len, resident_leaf, &r);
    return AS_OK;
}

/* ---- mremap ------------------------------------------------------------------------ */

struct move_walk {
    struct address_space *as;
    vaddr_t from;
    vaddr_t to;
    bool failed;
};

/* Moves one leaf from its address to the same offset at to (no copy). */
static enum vmm_leaf_action move_leaf(void *ctx, struct vmm_leaf *leaf)
{
    struct move_walk *m = ctx;

    vaddr_t to = m->to + (leaf->va - m->from);

    if (vmm_map(m->as->root, to, leaf->pa, 1, leaf->flags) != VMM_OK) {
        uframe_put(leaf->pa); /* no table for it: the page is lost, and said so */
        m->as->rss_pages--;
        m->failed = true;
        return VMM_CLEAR;
    }
    if (leaf->dirty)
        swap_frame_dirtied(leaf->pa); /* the new entry starts clean */
    if (uframe_refs(leaf->pa) == 1)
        swap_frame_mapped(leaf->pa, m->as, to);
    return VMM_CLEAR;
}

/* Moves one swap entry the same way. */
static enum vmm_leaf_action move_swapped(void *ctx, struct vmm_leaf *leaf)
{
    struct move_walk *m = ctx;

    if (vmm_set_swapped(m->as->root, m->to + (leaf->va - m->from), leaf->entry) != VMM_OK) {
        swap_entry_free(leaf->entry); /* no table for it: the page is lost, and said so */
        m->failed = true;
    }
    return VMM_CLEAR;
}

/*
 * Moves [addr, addr + old) of v to a new region [to, to + new): pages move
 * with their frames, the source range is removed, the tail beyond old (if
 * new is larger) is empty. 3 spares.
 */
static int move_range(struct address_space *as, struct vma *v, vaddr_t addr, uint64_t old,
                      uint64_t new, vaddr_t to, struct spares *s)
{
    struct move_walk m = {.as = as, .from = addr, .to = to, .failed = false};
    struct vma *dst = spare_take(s);
    uint64_t moved = min_u64(old, new);
    uint64_t delta = addr - v->start;

    *dst = *v;
    dst->start = to;
    dst->end = to + new;
    dst->offset = v->offset + delta;
    dst->file_bytes = v->file_bytes > delta ? min_u64(v->file_bytes - delta, new) : 0;
    if (dst->growth == VMA_GROWS_DOWN)
        dst->growth = VMA_FIXED_SIZE;
    if (dst->object != NULL)
        dst->object->ops->get(dst->object);
    insert_region(as, dst);
    vmm_walk_user(as->root, addr, addr + moved, move_leaf, &m);
    vmm_walk_swapped(as->root, addr, addr + moved, move_swapped, &m);
    punch(as, addr, addr + old, s);
    merge_around(as, dst);
    return m.failed ? AS_NO_MEMORY : AS_OK;
}

/* Grows v's tail range [addr, addr + old) to new bytes in place if free. */
static bool grow_in_place(struct address_space *as, struct vma *v, vaddr_t addr, uint64_t old,
                          uint64_t new)
{
    if (addr + old != v->end || !user_range(addr, new) || !range_free(as, v->end, addr + new))
        return false;
    v->end = addr + new;
    if (v->backing == VMA_FILE && v->role == VMA_ROLE_MAP) {
        uint64_t size = v->object->ops->size(v->object);

        v->file_bytes = size > v->offset ? min_u64(size - v->offset, v->end - v->start) : 0;
    }
    merge_around(as, v);
    return true;
}

/* MREMAP_FIXED, in Linux's order (mm/mremap.c, mremap_to): the destination is unmapped,
 * then the source's tail beyond new, and only then must the source lie in one region. */
static int remap_fixed(struct address_space *as, vaddr_t addr, uint64_t old, uint64_t new,
                       vaddr_t to)
{
    struct spares s = {.count = 0};
    struct vma *v;
    int status;

    if ((to & (PAGE_SIZE - 1)) != 0 || to < AS_MIN_ADDRESS || !user_range(to, new) ||
        (to < addr + old && addr < to + new))
        return AS_INVALID;
    /* Two punches (2 spares each) and a move (3): a shrink taken from the middle of
     * a region splits it twice before the move splits it again. */
    if (reserve(as, &s, 7) != AS_OK)
        return AS_NO_MEMORY;
    punch(as, to, to + new, &s);
    if (new < old) {
        punch(as, addr + new, addr + old, &s);
        old = new;
    }
    v = find(as, addr);
    if (v == NULL || addr + old > v->end) {
        spares_release(&s);
        return AS_NOT_MAPPED;
    }
    status = move_range(as, v, addr, old, new, to, &s);
    spares_release(&s);
    return status;
}

int as_remap(struct address_space *as, vaddr_t addr, uint64_t old_length, uint64_t new_length,
             enum as_remap_move move, vaddr_t new_addr, vaddr_t *out)
{
    uint64_t old = page_up(old_length), new = page_up(new_length);
    struct spares s = {.count = 0};
    struct vma *v;
    int status;

    if ((addr & (PAGE_SIZE - 1)) != 0 || new == 0 || new < new_length || old < old_length ||
        old == 0 || !user_range(addr, old))
        return AS_INVALID;
    if (move == AS_REMAP_FIXED) {
        status = remap_fixed(as, addr, old, new, new_addr);
        *out = new_addr;
        return status;
    }
    if (new <= old) { /* a shrink is an munmap of the tail, holes or not */
        *out = addr;
        return new < old ? as_unmap(as, addr + new, old - new) : AS_OK;
    }
    v = find(as, addr);
    if (v == NULL || addr + old > v->end)
        return AS_NOT_MAPPED;
    if (grow_in_place(as, v, addr, old, new)) {
        *out = addr;
        return AS_OK;
    }
    if (move == AS_REMAP_IN_PLACE)
        return AS_NO_MEMORY;
    new_addr = top_down(as, new, as->mmap_top);
    if (new_addr == 0 || reserve(as, &s, 3) != AS_OK)
        return AS_NO_MEMORY;
    status = move_range(as, v, addr, old, new, new_addr, &s);
    spares_release(&s);
    *out = new_addr;
    return status;
}

/* ---- The program break -------------------------------------------------------------- */

vaddr_t as_brk(struct address_space *as, vaddr_t brk)
{
    static const struct as_mapping heap = {
        .prot = VMA_READ | VMA_WRITE, .sharing = VMA_PRIVATE, .growth = VMA_FIXED_SIZE,
        .role = VMA_ROLE_HEAP, .object = NULL, .offset = 0, .file_bytes = 0};
    vaddr_t old_end = page_up(as->brk), new_end = page_up(brk), at;

    if (brk < as->brk_start || brk > AS_STACK_TOP)
        return as->brk;
    if (new_end > old_end) {
        if (!range_free(as, old_end, new_end) ||
            as_map(as, old_end, new_end - old_end, &heap, AS_FIXED_NOREPLACE, &at) != AS_OK)
            return as->brk;
    } else if (new_end < old_end && as_unmap(as, new_end, old_end - new_end) != AS_OK) {
        return as->brk;
    }
    as->brk = brk;
    return brk;
}

/* ---- Faults ------------------------------------------------------------------------- */

static bool allows(uint32_t prot, enum as_access access)
{
    switch (access) {
    case AS_ACCESS_READ:
        return prot != 0; /* x86: writable and executable pages are readable */
    case AS_ACCESS_WRITE:
        return (prot & VMA_WRITE) != 0;
    case AS_ACCESS_EXEC:
        return (prot & VMA_EXEC) != 0;
    }
    return false;
}

/* The stack region below which addr lies, grown down to addr's page if the
 * limit and the guard gap allow; else NULL. */
static struct vma *grow_stack(struct address_space *as, vaddr_t addr)
{
    struct vma *v = find_from(as, addr);
    struct vma *prev;
    vaddr_t page = page_down(addr);

    if (v == NULL || v->growth != VMA_GROWS_DOWN || page < AS_MIN_ADDRESS ||
        v->end - page > as->stack_limit)
        return NULL;
    prev = vma_prev(v);
    if (prev != NULL && prev->end + AS_STACK_GUARD_GAP > page)
        return NULL;
    v->start = page; /* no region lies between: the tree's order holds */
    return v;
}

/* Can the stack grow down to cover addr (without growing it)? */
static bool stack_could_grow(const struct address_space *as, vaddr_t addr)
{
    const struct vma *v = find_from(as, addr);
    const struct vma *prev;
    vaddr_t page = page_down(addr);

    if (v == NULL || v->growth != VMA_GROWS_DOWN || page < AS_MIN_ADDRESS ||
        v->end - page > as->stack_limit)
        return false;
    prev = vma_prev(v);
    return prev == NULL || prev->end + AS_STACK_GUARD_GAP <= page;
}

/* Is page of a file mapping wholly past the file's end? Linux answers SIGBUS there
 * (the page holding the end shows zeros after it). An ELF segment's region covers
 * only pages with file bytes, its bss beyond them is an anonymous region. */
static bool past_file_end(const struct vma *v, vaddr_t page)
{
    return v->backing == VMA_FILE &&
           v->offset + (page - v->start) >= page_up(v->object->ops->size(v->object));
}

#if PLANT_BUG == 305
/* planted bug 305: a read of fresh anonymous memory maps the kernel's zero page (a frame
 * of the kernel image), uncounted, and with the region's rights: writable too. */
static enum as_fault_kind map_zero_page(struct address_space *as, const struct vma *v,
                                        vaddr_t page)
{
    vm_flags_t flags = VM_USER | ((v->prot & VMA_WRITE) ? VM_WRITE : 0);

    if (vmm_map(as->root, page, zero_page_paddr(), 1, flags) != VMM_OK)
        return AS_FAULT_OUT_OF_MEMORY;
    count_mapped(as, 1);
    return AS_FAULT_ZERO_FILL;
}
#endif

/* Maps a new frame at page, from v's file or zeroed. */
static enum as_fault_kind fill_page(struct address_space *as, struct vma *v, vaddr_t page)
{
    uint64_t rel = page - v->start;
    enum as_fault_kind kind = AS_FAULT_ZERO_FILL;
    paddr_t pa;

    if (v->backing == VMA_FILE && rel < v->file_bytes) {
        uint64_t n = min_u64(PAGE_SIZE, v->file_bytes - rel);

        pa = uframe_alloc(n == PAGE_SIZE ? UFRAME_UNINIT : UFRAME_ZEROED);
        if (pa != 0)
            v->object->ops->read(v->object, v->offset + rel, phys_to_virt(pa), n);
        kind = AS_FAULT_FILE;
    } else {
        pa = uframe_alloc(UFRAME_ZEROED);
    }
    if (pa == 0)
        return AS_FAULT_OUT_OF_MEMORY;
    if (vmm_map(as->root, page, pa, 1, page_flags(v, pa)) != VMM_OK) {
        uframe_put(pa);
        return AS_FAULT_OUT_OF_MEMORY;
    }
    swap_frame_mapped(pa, as, page);
    count_mapped(as, 1);
    return kind;
}

/* A write to a present, read-only page of a writable region. */
static enum as_fault_kind break_cow(struct address_space *as, struct vma *v, vaddr_t page)
{
    struct vm_mapping m;
    paddr_t old, copy;

    if (vmm_lookup(as->root, page, &m) != VMM_OK)
        return fill_page(as, v, page);
    old = m.paddr;
    if (uframe_refs(old) <= 1 || v->sharing == VMA_SHARED) {
        vmm_protect(as->root, page, 1, page_flags(v, old));
        if (uframe_refs(old) == 1)
            swap_frame_mapped(old, as, page);
        return AS_FAULT_COPY_ON_WRITE;
    }
    copy = uframe_alloc(UFRAME_UNINIT);
    if (copy == 0)
        return AS_FAULT_OUT_OF_MEMORY;
    page_copy(phys_to_virt(copy), phys_to_virt(old));
    vmm_replace(as->root, page, copy, page_flags(v, copy));
    uframe_put(old);
    swap_frame_mapped(copy, as, page);
    return AS_FAULT_COPY_ON_WRITE;
}

static uint32_t swapped_page_flags(const void *region, paddr_t pa)
{
    return page_flags(region, pa);
}

/* A fault on a not-present entry that is not zero: a swap entry. */
static enum as_fault_kind swap_page_in(struct address_space *as, struct vma *v, vaddr_t page,
                                       uint64_t entry, enum as_access access,
                                       struct as_fault_report *report)
{
    paddr_t pa;

    switch (swap_in(as, page, v->end, entry, access == AS_ACCESS_WRITE, swapped_page_flags, v,
                    &pa)) {
    case SWAP_IN_OK:
        return AS_FAULT_SWAP_IN;
    case SWAP_IN_NO_MEMORY:
        return AS_FAULT_OUT_OF_MEMORY;
    default:
        report->swap_error = true;
        return AS_FAULT_SIGBUS;
    }
}

static enum as_fault_kind resolve(struct address_space *as, vaddr_t address,
                                  enum as_access access, bool present,
                                  struct as_fault_report *report)
{
    struct vma *v = find(as, address);
    enum as_fault_kind kind;
    uint64_t entry;
    bool grew = false;

    if (v == NULL && address < VMM_USER_END) {
        v = grow_stack(as, address);
        grew = v != NULL;
    }
    report->region = v;
    if (v == NULL || !allows(v->prot, access))
        return AS_FAULT_SIGSEGV;
    if (present && access == AS_ACCESS_WRITE)
        return break_cow(as, v, page_down(address));
    if (present)
        return AS_FAULT_SIGSEGV; /* a present page denied a right its region grants: none */
    entry = vmm_user_entry(as->root, page_down(address));
    if (entry != 0)
        return swap_page_in(as, v, page_down(address), entry, access, report);
    if (past_file_end(v, page_down(address)))
        return AS_FAULT_SIGBUS;
#if PLANT_BUG == 305 /* planted bug 305: fresh anonymous memory read: the kernel's zero page */
    if (access == AS_ACCESS_READ && v->backing == VMA_ANONYMOUS && v->prot != 0)
        return map_zero_page(as, v, page_down(address));
#endif
    kind = fill_page(as, v, page_down(address));
    return grew && kind == AS_FAULT_ZERO_FILL ? AS_FAULT_STACK_GROWTH : kind;
}

enum as_fault_kind as_fault(struct address_space *as, vaddr_t address, enum as_access access,
                            bool present, struct as_fault_report *report)
{
    enum as_fault_kind kind;

    report->swap_error = false;
    kind = resolve(as, address, access, present, report);
    report->kind = kind;
    as->faults[kind]++;
    return kind;
}

int as_populate(struct address_space *as, vaddr_t addr, uint64_t length, enum as_access access)
{
    struct as_fault_report report;

    for (vaddr_t page = page_down(addr); page < addr + length; page += PAGE_SIZE) {
        struct vm_mapping m;
        bool present = vmm_lookup(as->root, page, &m) == VMM_OK;
        enum as_fault_kind kind;

        if (present && (access != AS_ACCESS_WRITE || (m.flags & VM_WRITE)))
            continue;
        kind = resolve(as, page, access, present, &report);
        if (kind == AS_FAULT_OUT_OF_MEMORY)
            return AS_NO_MEMORY;
        if (kind == AS_FAULT_SIGSEGV || kind == AS_FAULT_SIGBUS)
            return AS_NOT_MAPPED;
    }
    return AS_OK;
}

bool as_allows(struct address_space *as, vaddr_t addr, uint64_t length, enum as_access access)
{
    vaddr_t end = addr + length;
    const struct vma *v;

    if (end < addr || end > VMM_USER_END)
        return false;
    while (addr < end) {
        v = find(as, addr);
        if (v == NULL) {
            if (!stack_could_grow(as, addr))
                return false;
            v = find_from(as, addr); /* the stack region above */
            if (!allows(v->prot, access))
                return false;
            addr = v->start;
            continue;
        }
        if (!allows(v->prot, access))
            return false;
        addr = v->end;
    }
    return true;
}

/* ---- Names and checks ------------------------------------------------------------------- */

const char *vma_name(const struct vma *v)
{
    switch (v->role) {
    case VMA_ROLE_HEAP:
        return "[heap]";
    case VMA_ROLE_STACK:
        return "[stack]";
    default:
        return v->object != NULL ? v->object->ops->name(v->object) : "[anon]";
    }
}

void as_check(const struct address_space *as)
{
    const struct vma *prev = NULL;
    size_t n = avl_check(&as->regions, vma_less);

    if (n != as->region_count)
        panic("as_check: %lu regions in the tree, %lu counted", n, as->region_count);
    for (const struct vma *v = VMA_OF(avl_first(&as->regions)); v != NULL; v = vma_next(v)) {
        if (v->start >= v->end || ((v->start | v->end) & (PAGE_SIZE - 1)) != 0)
            panic("as_check: bad region 0x%lx-0x%lx", v->start, v->end);
        if (prev != NULL && prev->end > v->start)
            panic("as_check: regions overlap at 0x%lx", v->start);
        prev = v;
    }
}

size_t as_live_regions(void)
{
    return live_regions;
}

size_t as_live_spaces(void)
{
    return live_spaces;
}
