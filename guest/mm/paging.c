/*
 * paging.c - x86-64 page tables and the kernel's memory bring-up.
 *
 * Owns: walking, creating, splitting and freeing page-table pages under
 * any root; the one translation between VM_* flags and entry bits; TLB
 * invalidation; the kernel's PML4 (HHDM, kernel image, framebuffer); the
 * control-register bits paging depends on (CR0.WP, EFER.NXE, CR4.PGE, the
 * PAT); and mm_init, the bring-up order.
 * Does not own: the frames mappings point to, physical allocation
 * (pmm.c), or #PF handling.
 *
 * Levels are numbered from the leaf: 0 = page table (4 KiB entries),
 * 1 = page directory (2 MiB), 2 = PDPT (1 GiB), 3 = PML4 (512 GiB).
 * Tables are reached through the HHDM. A table entry (non-leaf) is always
 * present+writable, plus user if any user leaf lies below; leaves carry
 * the real permissions.
 */
#include "mm/paging.h"

#include "arch/x86_64/io.h"
#include "boot/boot.h"
#include "boot/cmdline.h"
#include "dev/serial.h"
#include "lib/panic.h"
#include "lib/string.h"
#include "mm/pmm.h"
#include "test/planted.h"

#define PTE_PRESENT ((uint64_t)1 << 0)
#define PTE_WRITE ((uint64_t)1 << 1)
#define PTE_USER ((uint64_t)1 << 2)
#define PTE_PWT ((uint64_t)1 << 3)
#define PTE_PCD ((uint64_t)1 << 4)
#define PTE_ACCESSED ((uint64_t)1 << 5)
#define PTE_DIRTY ((uint64_t)1 << 6)
#define PTE_LARGE ((uint64_t)1 << 7)   /* PS in a PD or PDPT entry */
#define PTE_PAT_4K ((uint64_t)1 << 7)  /* PAT in a PT entry */
#define PTE_GLOBAL ((uint64_t)1 << 8)
#define PTE_PAT_LARGE ((uint64_t)1 << 12)
#define PTE_NX ((uint64_t)1 << 63)
#define PTE_ADDR 0x000ffffffffff000ULL
#define TABLE_ENTRY (PTE_PRESENT | PTE_WRITE)

#define ENTRIES 512
#define LEVEL_TOP 3
#define LEVEL_MAX_LEAF 2

#define MSR_EFER 0xc0000080u
#define MSR_PAT 0x277u
#define EFER_NXE ((uint64_t)1 << 11)
#define CR0_WP ((uint64_t)1 << 16)
#define CR4_PGE ((uint64_t)1 << 7)
/* PAT entries 0-7: WB, WT, UC-, UC, WP, WC, UC-, UC (Limine's, entry 5 = WC). */
#define PAT_VALUE 0x0000010500070406ULL

struct pml4 {
    uint64_t entry[ENTRIES];
};

static pml4_t *kernel_root;
static size_t table_frames;
static bool user_roots_exist;               /* kernel-half PDPTs are permanent from then on */
static uint64_t kernel_half_generation = 1; /* bumped when the kernel root gains a PML4 entry */
static bool have_1g;
static size_t kept_frames;

/* ---- Entry bits: the one place VM_* flags meet the hardware -------------- */

static uint64_t leaf_bits(vm_flags_t flags, int level)
{
    uint64_t e = PTE_PRESENT;

    if (flags & VM_WRITE)
        e |= PTE_WRITE;
    if (flags & VM_USER)
        e |= PTE_USER;
    if (flags & VM_GLOBAL)
        e |= PTE_GLOBAL;
    if (!(flags & VM_EXEC))
        e |= PTE_NX;
    if (flags & VM_WRITE_COMBINE) /* PAT entry 5: PAT bit + PWT */
        e |= PTE_PWT | (level == 0 ? PTE_PAT_4K : PTE_PAT_LARGE);
    else if (flags & VM_UNCACHED) /* PAT entry 3: PCD + PWT */
        e |= PTE_PCD | PTE_PWT;
    if (level > 0)
        e |= PTE_LARGE;
    return e;
}

static vm_flags_t leaf_flags(uint64_t e, int level)
{
    uint64_t pat = level == 0 ? PTE_PAT_4K : PTE_PAT_LARGE;
    vm_flags_t flags = VM_READ;

    if (e & PTE_WRITE)
        flags |= VM_WRITE;
    if (e & PTE_USER)
        flags |= VM_USER;
    if (e & PTE_GLOBAL)
        flags |= VM_GLOBAL;
    if (!(e & PTE_NX))
        flags |= VM_EXEC;
    if ((e & pat) && (e & PTE_PWT) && !(e & PTE_PCD))
        flags |= VM_WRITE_COMBINE;
    else if (!(e & pat) && (e & PTE_PWT) && (e & PTE_PCD))
        flags |= VM_UNCACHED;
    return flags;
}

/* Bytes one entry at level covers; the page size of a leaf there. */
static uint64_t level_bytes(int level)
{
    return PAGE_SIZE << (9 * level);
}

static paddr_t leaf_address(uint64_t e, int level)
{
    return e & PTE_ADDR & ~(level_bytes(level) - 1);
}

static unsigned index_of(vaddr_t va, int level)
{
    return (va >> (PAGE_SHIFT + 9 * level)) & (ENTRIES - 1);
}

static bool is_leaf(uint64_t e, int level)
{
    return level == 0 || (level <= LEVEL_MAX_LEAF && (e & PTE_LARGE));
}

static uint64_t *table_of(uint64_t e)
{
    return phys_to_virt(e & PTE_ADDR);
}

static bool in_kernel_half(vaddr_t va)
{
    return va >= 0xffff800000000000ULL;
}

/* ---- Walking ------------------------------------------------------------- */

/* The leaf entry mapping va, or the first non-present entry on the way. */
struct walk {
    uint64_t *entry;
    int level;
};

static struct walk walk(pml4_t *root, vaddr_t va)
{
    uint64_t *table = root->entry;

    for (int level = LEVEL_TOP;; level--) {
        uint64_t *e = &table[index_of(va, level)];

        if (!(*e & PTE_PRESENT) || is_leaf(*e, level))
            return (struct walk){.entry = e, .level = level};
        table = table_of(*e);
    }
}

/* Bytes from va to the end of what walk() found (a leaf or a hole). */
static uint64_t walk_extent(vaddr_t va, int level)
{
    return level_bytes(level) - (va & (level_bytes(level) - 1));
}

enum presence {
    ALL_UNMAPPED,
    ALL_MAPPED,
};

static bool range_is(pml4_t *root, vaddr_t va, uint64_t bytes, enum presence want)
{
    while (bytes > 0) {
        struct walk w = walk(root, va);
        uint64_t step = walk_extent(va, w.level);
        bool present = (*w.entry & PTE_PRESENT) != 0;

        if (present != (want == ALL_MAPPED))
            return false;
        if (step >= bytes)
            return true;
        va += step;
        bytes -= step;
    }
    return true;
}

static bool is_canonical(vaddr_t va)
{
    uint64_t top = va >> 47;

    return top == 0 || top == 0x1ffff;
}

/* Page aligned, nonempty, not wrapping, entirely in one canonical half. */
static bool valid_range(vaddr_t va, size_t pages)
{
    vaddr_t last;

    if ((va & (PAGE_SIZE - 1)) != 0 || pages == 0 || pages > (~va >> PAGE_SHIFT) + 1)
        return false;
    last = va + (pages - 1) * PAGE_SIZE + (PAGE_SIZE - 1);
    return is_canonical(va) && is_canonical(last) && (va >> 47) == (last >> 47);
}

/* ---- Table pages ---------------------------------------------------------- */

/* A zeroed page-table page; 0 if the PMM has none. Never inlined, so that
 * every call is seen by a fault injector at its entry (emu --inject
 * fail-function:function=table_alloc). */
static __attribute__((noinline)) paddr_t table_alloc(void)
{
    paddr_t pa = pmm_alloc();

    if (pa == 0)
        return 0;
    page_zero(phys_to_virt(pa)); /* 512 rep stosq iterations, not 4,096 of rep stosb */
    table_frames++;
    return pa;
}

/* The kernel-half leaf tables vmm_map_frames and vmm_unmap_frames used
 * last, direct-mapped by the 2 MiB they map (a window mapped and unmapped
 * run by run, as the heap's, finds them without a walk); all forgotten
 * when any table is freed. */
#define LEAF_TABLE_SHIFT (PAGE_SHIFT + 9)
#define LEAF_CACHE_SLOTS 16u

static struct leaf_slot {
    pml4_t *root;
    vaddr_t span;       /* va >> LEAF_TABLE_SHIFT of the 2 MiB it maps */
    uint64_t *table;    /* NULL: empty */
} leaf_cache[LEAF_CACHE_SLOTS];

static struct leaf_slot *leaf_slot(vaddr_t va)
{
    return &leaf_cache[(va >> LEAF_TABLE_SHIFT) % LEAF_CACHE_SLOTS];
}

/* The remembered leaf table of va's 2 MiB in root, or NULL. */
static uint64_t *leaf_cached(pml4_t *root, vaddr_t va)
{
    struct leaf_slot *slot = leaf_slot(va);

    if (slot->root == root && slot->span == va >> LEAF_TABLE_SHIFT)
        return slot->table;
    return NULL;
}

static void leaf_cache_forget(void)
{
    for (unsigned i = 0; i < LEAF_CACHE_SLOTS; i++)
        leaf_cache[i].table = NULL;
}

static void table_free(uint64_t *table)
{
    leaf_cache_forget();
    table_frames--;
    pmm_free(virt_to_phys(table));
}

/* Eight entries per test: about 1.5 instructions per entry instead of 5, and
 * every munmap that empties a table scans it (and its parents) whole. */
static bool table_empty(const uint64_t *table)
{
    for (int i = 0; i < ENTRIES; i += 8) {
        if ((table[i] | table[i + 1] | table[i + 2] | table[i + 3] | table[i + 4] |
             table[i + 5] | table[i + 6] | table[i + 7]) != 0)
            return false;
    }
    return true;
}

/* The entry for va at level, creating the tables above it; NULL if out of memory. */
static uint64_t *entry_create(pml4_t *root, vaddr_t va, int level, vm_flags_t flags)
{
    uint64_t *table = root->entry;

    for (int l = LEVEL_TOP; l > level; l--) {
        uint64_t *e = &table[index_of(va, l)];

        if (!(*e & PTE_PRESENT)) {
            paddr_t pa = table_alloc();

            if (pa == 0)
                return NULL;
            *e = pa | TABLE_ENTRY;
            if (l == LEVEL_TOP && root == kernel_root && in_kernel_half(va))
                kernel_half_generation++;
        }
        if ((flags & VM_USER) || va < VMM_USER_END)
            *e |= PTE_USER; /* user-half tables: the leaves alone decide */
        table = table_of(*e);
    }
    return &table[index_of(va, level)];
}

/* Frees the tables on va's path that became empty, lowest first. */
static void prune(pml4_t *root, vaddr_t va)
{
    uint64_t *path[LEVEL_TOP + 1];
    int level = LEVEL_TOP;

    path[LEVEL_TOP] = root->entry;
    while (level > 0) {
        uint64_t e = path[level][index_of(va, level)];

        if (!(e & PTE_PRESENT) || is_leaf(e, level))
            break;
        path[level - 1] = table_of(e);
        level--;
    }
    for (; level < LEVEL_TOP && table_empty(path[level]); level++) {
        if (level == LEVEL_TOP - 1 && user_roots_exist && in_kernel_half(va))
            break; /* user roots point at this PDPT too */
#if PLANT_BUG != 7 /* planted bug 7: the parent keeps pointing at the freed table */
        path[level + 1][index_of(va, level + 1)] = 0;
#endif
        invlpg(va); /* drops cached paging-structure entries for va, too */
        table_free(path[level]);
#if PLANT_BUG == 5 /* planted bug 5: the table is freed twice */
        table_free(path[level]);
#endif
    }
}

/*
 * Replaces the large leaf *e (at level, mapping va) by a table of 512
 * leaves one level down with the same frames and permissions. The
 * translation does not change. VMM_NO_MEMORY if no table page is free.
 */
static int split_leaf(uint64_t *e, int level, vaddr_t va)
{
    vm_flags_t flags = leaf_flags(*e, level);
    paddr_t base = leaf_address(*e, level);
    uint64_t bits = leaf_bits(flags, level - 1);
    paddr_t pa = table_alloc();
    uint64_t *table;

    if (pa == 0)
        return VMM_NO_MEMORY;
    table = phys_to_virt(pa);
    for (int i = 0; i < ENTRIES; i++)
        table[i] = (base + (uint64_t)i * level_bytes(level - 1)) | bits;
    *e = pa | TABLE_ENTRY | (*e & PTE_USER);
    invlpg(va & ~(level_bytes(level) - 1));
    return VMM_OK;
}

/* Splits the large leaves covering at until one starts exactly at at. */
static int split_at(pml4_t *root, vaddr_t at)
{
    for (;;) {
        struct walk w = walk(root, at);

        if (!(*w.entry & PTE_PRESENT) || w.level == 0 ||
            (at & (level_bytes(w.level) - 1)) == 0)
            return VMM_OK;
        if (split_leaf(w.entry, w.level, at) != VMM_OK)
            return VMM_NO_MEMORY;
    }
}

/* Makes both ends of [va, va + bytes) fall on leaf boundaries. */
static int split_ends(pml4_t *root, vaddr_t va, uint64_t bytes)
{
    vaddr_t end = va + bytes;

    if (split_at(root, va) != VMM_OK)
        return VMM_NO_MEMORY;
    if (end != 0 && is_canonical(end))
        return split_at(root, end);
    return VMM_OK;
}

/* ---- Map, unmap, protect, translate ---------------------------------------- */

/* The highest leaf level that va, pa and the bytes left allow. */
static int leaf_level_for(vaddr_t va, paddr_t pa, uint64_t left)
{
    for (int level = have_1g ? LEVEL_MAX_LEAF : 1; level > 0; level--) {
        uint64_t size = level_bytes(level);

        if (((va | pa) & (size - 1)) == 0 && left >= size)
            return level;
    }
    return 0;
}

/* Clears every leaf of [va, va + bytes) (all mapped, ends split). */
static void clear_range(pml4_t *root, vaddr_t va, uint64_t bytes)
{
    while (bytes > 0) {
        struct walk w = walk(root, va);
        uint64_t size = level_bytes(w.level);
        vaddr_t next = va + size;

        *w.entry = 0;
#if PLANT_BUG != 3 /* planted bug 3: the TLB keeps the old translation */
        invlpg(va);
#endif
        bytes -= size;
        /* Prune once per table: when leaving it, or at the end. */
        if (bytes == 0 || (next & (level_bytes(w.level + 1) - 1)) == 0)
            prune(root, va);
        va = next;
    }
}

/* Remembers table as the leaf table of va's 2 MiB in root (kernel half
 * only: user tables come and go with their address spaces). */
static void remember_leaf(pml4_t *root, vaddr_t va, uint64_t *table)
{
    struct leaf_slot *slot = leaf_slot(va);

    if (!in_kernel_half(va))
        return;
    slot->root = root;
    slot->span = va >> LEAF_TABLE_SHIFT;
    slot->table = table;
}

/* The 4 KiB leaf table holding va's entry, creating the tables missing
 * above it; NULL with *status VMM_ALREADY_MAPPED (a large leaf covers va)
 * or VMM_NO_MEMORY. */
static uint64_t *leaf_table_create(pml4_t *root, vaddr_t va, vm_flags_t flags, int *status)
{
    uint64_t *table = root->entry, *known = leaf_cached(root, va);

    if (known != NULL && !(flags & VM_USER))
        return known;
    for (int l = LEVEL_TOP; l > 0; l--) {
        uint64_t *e = &table[index_of(va, l)];

        if ((*e & PTE_PRESENT) && is_leaf(*e, l)) {
            *status = VMM_ALREADY_MAPPED;
            return NULL;
        }
        if (!(*e & PTE_PRESENT)) {
            paddr_t t = table_alloc();

            if (t == 0) {
                *status = VMM_NO_MEMORY;
                return NULL;
            }
            *e = t | TABLE_ENTRY;
            if (l == LEVEL_TOP && root == kernel_root && in_kernel_half(va))
                kernel_half_generation++;
        }
        if ((flags & VM_USER) || va < VMM_USER_END)
            *e |= PTE_USER; /* user-half tables: the leaves alone decide */
        table = table_of(*e);
    }
    remember_leaf(root, va, table);
    return table;
}

/* The 4 KiB leaf table holding va's entry; NULL if there is none. */
static uint64_t *leaf_table(pml4_t *root, vaddr_t va)
{
    uint64_t *known = leaf_cached(root, va);
    struct walk w;

    if (known != NULL)
        return known;
    w = walk(root, va);
    if (w.level != 0)
        return NULL;
    remember_leaf(root, va, w.entry - index_of(va, 0));
    return w.entry - index_of(va, 0);
}

/* Entries of the leaf table holding va's entry from it on, at most left. */
static size_t table_stretch(vaddr_t va, size_t left)
{
    size_t room = ENTRIES - index_of(va, 0);

    return room < left ? room : left;
}

/* True if no entry of e[0..n) is present. */
static bool entries_clear(const uint64_t *e, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (e[i] & PTE_PRESENT)
            return false;
    }
    return true;
}

int vmm_map_frames(pml4_t *root, vaddr_t va, const paddr_t *frames, size_t pages,
                   vm_flags_t flags)
{
    uint64_t bits = leaf_bits(flags, 0);
    size_t done = 0;

    if (!valid_range(va, pages))
        return VMM_BAD_ADDRESS;
    for (size_t i = 0; i < pages; i++) {
        if ((frames[i] & ~PTE_ADDR) != 0)
            return VMM_BAD_ADDRESS;
    }
    do { /* a stretch of one leaf table at a time */
        vaddr_t at = va + done * PAGE_SIZE;
        size_t n = table_stretch(at, pages - done);
        int status = VMM_ALREADY_MAPPED;
        uint64_t *table = leaf_table_create(root, at, flags, &status);
        uint64_t *e = table != NULL ? table + index_of(at, 0) : NULL;

        if (e == NULL || !entries_clear(e, n)) {
            prune(root, at); /* tables created on the way, now empty */
            if (done > 0)
                clear_range(root, va, done * PAGE_SIZE);
            return status;
        }
        for (size_t i = 0; i < n; i++)
            e[i] = frames[done + i] | bits;
        done += n;
    } while (done < pages);
    return VMM_OK;
}

/* Clears e[0..n), the entries of the pages from at on, with an invlpg for
 * each. */
static void clear_entries(uint64_t *e, size_t n, vaddr_t at)
{
    for (size_t i = 0; i < n; i++) {
        e[i] = 0;
#if PLANT_BUG == 3 /* planted bug 3: the TLB keeps the old translation */
        (void)at;
#else
        invlpg(at + i * PAGE_SIZE);
#endif
    }
}

int vmm_unmap_frames(pml4_t *root, vaddr_t va, size_t pages, paddr_t *frames,
                     enum vmm_tables tables)
{
    size_t done = 0;

    if (!valid_range(va, pages))
        return VMM_BAD_ADDRESS;
    do { /* validate first, one leaf table at a time */
        vaddr_t at = va + done * PAGE_SIZE;
        size_t n = table_stretch(at, pages - done);
        const uint64_t *table = leaf_table(root, at), *e;

        if (table == NULL)
            return VMM_NOT_MAPPED;
        e = table + index_of(at, 0);
        for (size_t i = 0; i < n; i++) {
            if (!(e[i] & PTE_PRESENT))
                return VMM_NOT_MAPPED;
            frames[done + i] = e[i] & PTE_ADDR;
        }
        done += n;
    } while (done < pages);
    done = 0;
    do {
        vaddr_t at = va + done * PAGE_SIZE;
        size_t n = table_stretch(at, pages - done);

        clear_entries(leaf_table(root, at) + index_of(at, 0), n, at);
        if (tables == VMM_PRUNE)
            prune(root, at); /* once per table */
        done += n;
    } while (done < pages);
    return VMM_OK;
}

size_t vmm_unmapped_prefix(pml4_t *root, vaddr_t va, size_t pages)
{
    size_t n = 0;

    while (n < pages) {
        vaddr_t at = va + n * PAGE_SIZE;
        struct walk w = walk(root, at);

        if (*w.entry & PTE_PRESENT)
            return n;
        if (w.level > 0) {
            n += walk_extent(at, w.level) / PAGE_SIZE;
            continue;
        }
        for (size_t i = 0, left = table_stretch(at, pages - n); i < left; i++, n++) {
            if (w.entry[i] & PTE_PRESENT)
                return n;
        }
    }
    return pages;
}

int vmm_map(pml4_t *root, vaddr_t va, paddr_t pa, size_t pages, vm_flags_t flags)
{
    uint64_t bytes = (uint64_t)pages * PAGE_SIZE;
    uint64_t done = 0;

    if (!valid_range(va, pages) || (pa & (PAGE_SIZE - 1)) != 0 ||
        pa + bytes < pa || ((pa + bytes - 1) & ~PTE_ADDR & ~(PAGE_SIZE - 1)) != 0)
        return VMM_BAD_ADDRESS;
    if (pages == 1)
        return vmm_map_frames(root, va, &pa, 1, flags);
    if (!range_is(root, va, bytes, ALL_UNMAPPED))
        return VMM_ALREADY_MAPPED;
    leaf_cache_forget(); /* a large leaf may take the place of an empty table */
    while (done < bytes) {
        int level = leaf_level_for(va + done, pa + done, bytes - done);
        uint64_t *e = entry_create(root, va + done, level, flags);

        if (e == NULL) {
            prune(root, va + done); /* tables created for the failed entry */
            if (done > 0)
                clear_range(root, va, done);
            return VMM_NO_MEMORY;
        }
        *e = (pa + done) | leaf_bits(flags, level);
        done += level_bytes(level);
    }
    return VMM_OK;
}

int vmm_unmap(pml4_t *root, vaddr_t va, size_t pages)
{
    uint64_t bytes = (uint64_t)pages * PAGE_SIZE;

    if (!valid_range(va, pages))
        return VMM_BAD_ADDRESS;
    if (pages == 1) { /* a 4 KiB leaf needs no split: one walk */
        struct walk w = walk(root, va);

        if (!(*w.entry & PTE_PRESENT))
            return VMM_NOT_MAPPED;
        if (w.level == 0) {
            clear_range(root, va, bytes);
            return VMM_OK;
        }
    }
    if (!range_is(root, va, bytes, ALL_MAPPED))
        return VMM_NOT_MAPPED;
    if (split_ends(root, va, bytes) != VMM_OK)
        return VMM_NO_MEMORY;
    clear_range(root, va, bytes);
    return VMM_OK;
}

/* Sets the user bit on the table entries above va's leaf at level. */
static void mark_user_path(pml4_t *root, vaddr_t va, int level)
{
    uint64_t *table = root->entry;

    for (int l = LEVEL_TOP; l > level; l--) {
        uint64_t *e = &table[index_of(va, l)];

        *e |= PTE_USER;
        table = table_of(*e);
    }
}

int vmm_protect(pml4_t *root, vaddr_t va, size_t pages, vm_flags_t flags)
{
    uint64_t bytes = (uint64_t)pages * PAGE_SIZE;

    if (!valid_range(va, pages))
        return VMM_BAD_ADDRESS;
    if (!range_is(root, va, bytes, ALL_MAPPED))
        return VMM_NOT_MAPPED;
    if (split_ends(root, va, bytes) != VMM_OK)
        return VMM_NO_MEMORY;
    while (bytes > 0) {
        struct walk w = walk(root, va);
        uint64_t old = *w.entry;
        uint64_t new = leaf_address(old, w.level) | leaf_bits(flags, w.level) |
                       (old & (PTE_ACCESSED | PTE_DIRTY));

        if (flags & VM_USER)
            mark_user_path(root, va, w.level);
        if (new != old) {
            *w.entry = new;
            invlpg(va);
        }
        va += level_bytes(w.level);
        bytes -= level_bytes(w.level);
    }
    return VMM_OK;
}

int vmm_lookup(pml4_t *root, vaddr_t va, struct vm_mapping *out)
{
    struct walk w;

    if (!is_canonical(va))
        return VMM_NOT_MAPPED;
    w = walk(root, va);
    if (!(*w.entry & PTE_PRESENT))
        return VMM_NOT_MAPPED;
    out->paddr = leaf_address(*w.entry, w.level) + (va & (level_bytes(w.level) - 1));
    out->flags = leaf_flags(*w.entry, w.level);
    out->size = (enum vm_page_size)w.level;
    return VMM_OK;
}

paddr_t vmm_translate(pml4_t *root, vaddr_t va)
{
    struct vm_mapping m;

    return vmm_lookup(root, va, &m) == VMM_OK ? m.paddr : VMM_NO_TRANSLATION;
}

/* ---- User address spaces ------------------------------------------------ */

#define KERNEL_HALF_FIRST (ENTRIES / 2)

static bool is_live(const pml4_t *root)
{
    return (read_cr3() & PTE_ADDR) == virt_to_phys(root);
}

void vmm_kernel_range_prepare(vaddr_t start, vaddr_t end)
{
    uint64_t slot = level_bytes(LEVEL_TOP);
    vaddr_t first = start & ~(slot - 1);
    uint64_t slots = (end - first + slot - 1) / slot;

    for (uint64_t i = 0; i < slots; i++) {
        vaddr_t va = first + i * slot;

        if (!in_kernel_half(va) || entry_create(kernel_root, va, LEVEL_TOP - 1, VM_READ) == NULL)
            panic("vmm_kernel_range_prepare: cannot give 0x%lx a PDPT", va);
    }
}

paddr_t vmm_root_paddr(const pml4_t *root)
{
    return virt_to_phys(root);
}

pml4_t *vmm_root_create(void)
{
    paddr_t pa = table_alloc();
    pml4_t *root;

    if (pa == 0)
        return NULL;
    root = phys_to_virt(pa);
    for (int i = KERNEL_HALF_FIRST; i < ENTRIES; i++)
        root->entry[i] = kernel_root->entry[i];
    user_roots_exist = true;
    return root;
}

void vmm_root_destroy(pml4_t *root)
{
    if (root == kernel_root || is_live(root))
        panic("vmm_root_destroy: 0x%lx is the kernel's or the live root", virt_to_phys(root));
    for (int i = 0; i < KERNEL_HALF_FIRST; i++) {
        if (root->entry[i] != 0)
            panic("vmm_root_destroy: user mappings left (PML4 entry %d)", i);
    }
    table_free(root->entry);
}

void vmm_activate(pml4_t *root, uint64_t *generation)
{
    if (*generation != kernel_half_generation) {
        for (int i = KERNEL_HALF_FIRST; i < ENTRIES; i++)
            root->entry[i] = kernel_root->entry[i];
        *generation = kernel_half_generation;
    }
    if (!is_live(root))
        write_cr3(virt_to_phys(root));
}

bool vmm_sync_kernel_entry(pml4_t *root, vaddr_t va)
{
    unsigned i = index_of(va, LEVEL_TOP);

    if (!in_kernel_half(va) || (root->entry[i] & PTE_PRESENT) ||
        !(kernel_root->entry[i] & PTE_PRESENT))
        return false;
    root->entry[i] = kernel_root->entry[i];
    return true;
}

/*
 * A walk's TLB work: up to FLUSH_BATCH pages are invalidated one by one at
 * the end of the walk; beyond that one CR3 reload flushes everything (as
 * Linux's flush_tlb_mm_range gives up on ranges past a ceiling). Nothing
 * touches the walked pages before the walk ends.
 */
#define FLUSH_BATCH 32

struct user_walk {
    vmm_leaf_fn fn;
    void *ctx;
    bool live;
    bool swapped;   /* visit the non-present, nonzero leaves instead of the present ones */
    size_t flushes;
    vaddr_t flush[FLUSH_BATCH];
};

static void flush_later(struct user_walk *w, vaddr_t va)
{
    if (!w->live)
        return;
    if (w->flushes < FLUSH_BATCH)
        w->flush[w->flushes] = va;
    w->flushes++;
}

static void flush_now(struct user_walk *w)
{
    if (w->flushes > FLUSH_BATCH) {
        write_cr3(read_cr3());
        return;
    }
    for (size_t i = 0; i < w->flushes; i++)
        invlpg(w->flush[i]);
}

/* Applies the callback's verdict to the leaf *e; returns 1 if it was cleared. */
static size_t visit_leaf(struct user_walk *w, uint64_t *e, vaddr_t va)
{
    struct vmm_leaf leaf = {.va = va, .pa = *e & PTE_ADDR, .flags = leaf_flags(*e, 0),
                            .dirty = (*e & PTE_DIRTY) != 0, .entry = *e};
    uint64_t updated;

    if (w->swapped)
        leaf.pa = 0; /* a swap entry names no frame */

    switch (w->fn(w->ctx, &leaf)) {
    case VMM_KEEP:
        return 0;
    case VMM_REPROTECT:
        updated = (*e & PTE_ADDR) | leaf_bits(leaf.flags, 0) | (*e & (PTE_ACCESSED | PTE_DIRTY));
        if (updated != *e) {
            *e = updated;
            flush_later(w, va);
        }
        return 0;
    case VMM_CLEAR:
        *e = 0;
        flush_later(w, va);
        return 1;
    }
    panic("vmm_walk_user: unknown action");
}

/* Walks [start, end) inside table (at level); returns the leaves cleared. */
static size_t walk_user_table(struct user_walk *w, uint64_t *table, int level, vaddr_t start,
                              vaddr_t end)
{
    uint64_t size = level_bytes(level);
    size_t cleared = 0;

    for (vaddr_t va = start; va < end;) {
        vaddr_t next = (va & ~(size - 1)) + size;
        vaddr_t stop = next < end ? next : end;
        uint64_t *e = &table[index_of(va, level)];

        if (level == 0 && w->swapped && !(*e & PTE_PRESENT) && *e != 0) {
            cleared += visit_leaf(w, e, va);
            va = stop;
            continue;
        }
        if (!(*e & PTE_PRESENT) || (level == 0 && w->swapped)) {
            va = stop;
            continue;
        }
        if (level == 0) {
            cleared += visit_leaf(w, e, va);
        } else if (is_leaf(*e, level)) {
            panic("vmm_walk_user: a large page at 0x%lx", va);
        } else {
            uint64_t *child = table_of(*e);
            size_t n = walk_user_table(w, child, level - 1, va, stop);

            if (n > 0 && table_empty(child)) {
                *e = 0;
                flush_later(w, va); /* drops cached paging-structure entries too */
                table_free(child);
            }
            cleared += n;
        }
        va = stop;
    }
    return cleared;
}

static void walk_user(pml4_t *root, vaddr_t start, vaddr_t end, vmm_leaf_fn fn, void *ctx,
                      bool swapped)
{
    struct user_walk w = {.fn = fn, .ctx = ctx, .live = is_live(root), .swapped = swapped,
                          .flushes = 0};

    if (start >= end || end > VMM_USER_END || ((start | end) & (PAGE_SIZE - 1)) != 0)
        panic("vmm_walk_user: bad range 0x%lx-0x%lx", start, end);
    walk_user_table(&w, root->entry, LEVEL_TOP, start, end);
    flush_now(&w);
}

void vmm_walk_user(pml4_t *root, vaddr_t start, vaddr_t end, vmm_leaf_fn fn, void *ctx)
{
    walk_user(root, start, end, fn, ctx, false);
}

void vmm_walk_swapped(pml4_t *root, vaddr_t start, vaddr_t end, vmm_leaf_fn fn, void *ctx)
{
    walk_user(root, start, end, fn, ctx, true);
}

/* The 4 KiB user leaf entry for va, or NULL if no table holds one. */
static uint64_t *user_leaf(pml4_t *root, vaddr_t va)
{
    struct walk w = walk(root, va);

    return w.level == 0 ? w.entry : NULL;
}

uint64_t vmm_user_entry(pml4_t *root, vaddr_t va)
{
    uint64_t *e = user_leaf(root, va);

    return e != NULL ? *e : 0;
}

paddr_t vmm_user_entry_paddr(pml4_t *root, vaddr_t va)
{
    uint64_t *e = user_leaf(root, va);

    return e != NULL ? virt_to_phys(e) : 0;
}

int vmm_set_swapped(pml4_t *root, vaddr_t va, uint64_t entry)
{
    uint64_t *e;

    if ((entry & PTE_PRESENT) || entry == 0 || va >= VMM_USER_END)
        return VMM_BAD_ADDRESS;
    e = user_leaf(root, va);
    if (e == NULL)
        e = entry_create(root, va, 0, VM_USER);
    if (e == NULL)
        return VMM_NO_MEMORY;
    if (*e != 0)
        return VMM_ALREADY_MAPPED;
    *e = entry;
    return VMM_OK;
}

int vmm_swap_out(pml4_t *root, vaddr_t va, paddr_t pa, uint64_t entry)
{
    uint64_t *e = user_leaf(root, va);

    if ((entry & PTE_PRESENT) || entry == 0 || e == NULL || !(*e & PTE_PRESENT) ||
        (*e & PTE_ADDR) != pa)
        return VMM_NOT_MAPPED;
    *e = entry;
#if PLANT_BUG != 404 /* planted bug 404: a page swapped out keeps its TLB entry */
    if (is_live(root))
        invlpg(va);
#endif
    return VMM_OK;
}

int vmm_restore_leaf(pml4_t *root, vaddr_t va, uint64_t old)
{
    uint64_t *e = user_leaf(root, va);

    if (e == NULL || (*e & PTE_PRESENT) || !(old & PTE_PRESENT))
        return VMM_NOT_MAPPED;
    *e = old;
    return VMM_OK;
}

enum vmm_reference vmm_test_and_clear_accessed(pml4_t *root, vaddr_t va, paddr_t pa)
{
    uint64_t *e = user_leaf(root, va);

    if (e == NULL || !(*e & PTE_PRESENT) || (*e & PTE_ADDR) != pa)
        return VMM_REF_GONE;
    if (!(*e & PTE_ACCESSED))
        return (*e & PTE_DIRTY) ? VMM_REF_IDLE_DIRTY : VMM_REF_IDLE_CLEAN;
    *e &= ~PTE_ACCESSED;
    if (is_live(root))
        invlpg(va); /* the next access must set A again (SDM 4.8) */
    return VMM_REF_ACCESSED;
}

int vmm_replace(pml4_t *root, vaddr_t va, paddr_t pa, vm_flags_t flags)
{
    struct walk w = walk(root, va);

    if (!(*w.entry & PTE_PRESENT) || w.level != 0)
        return VMM_NOT_MAPPED;
    *w.entry = pa | leaf_bits(flags, 0);
    invlpg(va);
    return VMM_OK;
}

pml4_t *vmm_kernel_root(void)
{
    return kernel_root;
}

size_t vmm_table_frames(void)
{
    return table_frames;
}

bool vmm_has_1g_pages(void)
{
    return have_1g;
}

/* ---- The kernel's address space ------------------------------------------- */

extern char __text_start[], __text_end[], __rodata_start[], __rodata_end[];
extern char __data_start[], __data_end[], __kernel_end[];

static void map_or_panic(vaddr_t va, paddr_t pa, size_t pages, vm_flags_t flags,
                         const char *what)
{
    int status = vmm_map(kernel_root, va, pa, pages, flags);

    if (status != VMM_OK)
        panic("paging_init: mapping %s at 0x%lx failed (%d)", what, va, status);
}

static paddr_t page_down(paddr_t a) { return a & ~(PAGE_SIZE - 1); }
static paddr_t page_up(paddr_t a) { return (a + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1); }

/* How a memory map type appears in the HHDM: 0 if not at all. */
enum hhdm_use {
    HHDM_SKIP,
    HHDM_MEMORY,
    HHDM_FIRMWARE, /* ACPI tables and NVS, reserved-mapped: the kernel only reads them */
    HHDM_FRAMEBUFFER,
};

static enum hhdm_use hhdm_use(uint64_t type)
{
    switch (type) {
    case LIMINE_MEMMAP_USABLE:
    case LIMINE_MEMMAP_BOOTLOADER_RECLAIMABLE:
    case LIMINE_MEMMAP_EXECUTABLE_AND_MODULES:
        return HHDM_MEMORY;
    case LIMINE_MEMMAP_ACPI_RECLAIMABLE:
    case LIMINE_MEMMAP_ACPI_NVS:
    case LIMINE_MEMMAP_RESERVED_MAPPED:
        return HHDM_FIRMWARE;
    case LIMINE_MEMMAP_FRAMEBUFFER:
        return HHDM_FRAMEBUFFER;
    default:
        return HHDM_SKIP;
    }
}

static vm_flags_t hhdm_flags(enum hhdm_use use)
{
    if (use == HHDM_FIRMWARE)
        return VM_READ | VM_GLOBAL;
    return VM_WRITE | VM_GLOBAL | (use == HHDM_FRAMEBUFFER ? VM_WRITE_COMBINE : 0);
}

/* Maps the memory map's entries at hhdm_base + pa, merging neighbours of
 * the same kind into one run so large pages can cross entry boundaries. */
static void map_hhdm(void)
{
    paddr_t run_start = 0, run_end = 0;
    enum hhdm_use run_use = HHDM_SKIP;

    for (size_t i = 0; i < pmm_region_count(); i++) {
        const struct pmm_region *r = pmm_region(i);
        enum hhdm_use use = hhdm_use(r->type);
        paddr_t start = page_down(r->base), end = page_up(r->base + r->length);

        if (use == HHDM_SKIP)
            continue;
        if (start < run_end)
            start = run_end; /* a page shared with the previous entry */
        if (start >= end)
            continue;
        if (start == run_end && use == run_use) {
            run_end = end;
            continue;
        }
        if (run_end > run_start)
            map_or_panic(hhdm_base + run_start, run_start, (run_end - run_start) / PAGE_SIZE,
                         hhdm_flags(run_use), "the HHDM");
        run_start = start;
        run_end = end;
        run_use = use;
    }
    if (run_end > run_start)
        map_or_panic(hhdm_base + run_start, run_start, (run_end - run_start) / PAGE_SIZE,
                     hhdm_flags(run_use), "the HHDM");
}

/* One kernel section [start, end) rounded out to pages. */
static void map_section(const struct limine_executable_address_response *k, const char *start,
                        const char *end, vm_flags_t flags, const char *what)
{
    vaddr_t va = page_down((vaddr_t)start);
    vaddr_t va_end = page_up((vaddr_t)end);

    if (va_end > va)
        map_or_panic(va, k->physical_base + (va - k->virtual_base), (va_end - va) / PAGE_SIZE,
                     flags | VM_GLOBAL, what);
}

static void map_kernel(void)
{
    const struct limine_executable_address_response *k = boot_executable_address();

    if (k == NULL)
        panic("paging_init: the loader gave no executable address");
    map_section(k, __text_start, __text_end, VM_EXEC, "kernel text");
#if PLANT_BUG == 2 /* planted bug 2: ring 3 can read the kernel's rodata */
    map_section(k, __rodata_start, __rodata_end, VM_READ | VM_USER, "kernel rodata");
#else
    map_section(k, __rodata_start, __rodata_end, VM_READ, "kernel rodata");
#endif
#if PLANT_BUG == 1 /* planted bug 1: data and bss executable too (W+X) */
    map_section(k, __data_start, __kernel_end, VM_WRITE | VM_EXEC, "kernel data and bss");
#else
    map_section(k, __data_start, __kernel_end, VM_WRITE, "kernel data and bss");
#endif
}

/* Framebuffers the memory map did not list as FRAMEBUFFER. */
static void map_framebuffers(void)
{
    const struct limine_framebuffer_response *fbs = boot_framebuffers();

    for (uint64_t i = 0; fbs != NULL && i < fbs->framebuffer_count; i++) {
        const struct limine_framebuffer *fb = fbs->framebuffers[i];
        vaddr_t va = page_down((vaddr_t)fb->address);
        vaddr_t end = page_up((vaddr_t)fb->address + fb->pitch * fb->height);

        if (vmm_translate(kernel_root, va) == VMM_NO_TRANSLATION)
            map_or_panic(va, va - hhdm_base, (end - va) / PAGE_SIZE,
                         hhdm_flags(HHDM_FRAMEBUFFER), "a framebuffer");
    }
}

/* CPUID leaf: returns EAX, stores EDX in *edx. */
static uint32_t cpuid(uint32_t leaf, uint32_t *edx)
{
    uint32_t a = leaf, b, c = 0, d;

    __asm__ volatile("cpuid" : "+a"(a), "=b"(b), "+c"(c), "=d"(d));
    *edx = d;
    return a;
}

/*
 * PAGING_FORCE_1G=1 (a build define for tests) uses 1 GiB entries even when
 * CPUID does not list them: Unicorn's CPU model omits Page1GB from CPUID
 * but its MMU walks 1 GiB entries. Never set it for real hardware.
 */
#ifndef PAGING_FORCE_1G
#define PAGING_FORCE_1G 0
#endif

static bool cpu_has_1g_pages(void)
{
    uint32_t edx;

    if (PAGING_FORCE_1G)
        return true;

    if (cpuid(0x80000000u, &edx) < 0x80000001u)
        return false;
    cpuid(0x80000001u, &edx);
    return (edx >> 26) & 1; /* Page1GB */
}

/* NX before any NX entry is live; WP so the kernel honours read-only pages. */
static void enable_protection(void)
{
    uint64_t cr0 = read_cr0() | CR0_WP;
    uint64_t cr4 = read_cr4() | CR4_PGE;

    wrmsr(MSR_EFER, rdmsr(MSR_EFER) | EFER_NXE);
    wrmsr(MSR_PAT, PAT_VALUE);
    __asm__ volatile("mov %0, %%cr0" : : "r"(cr0) : "memory");
    __asm__ volatile("mov %0, %%cr4" : : "r"(cr4) : "memory");
}

/* Builds the kernel PML4 and switches to it. */
static void paging_init(void)
{
    paddr_t root = table_alloc();

    if (root == 0)
        panic("paging_init: no frame for the PML4");
    kernel_root = phys_to_virt(root);
    have_1g = cpu_has_1g_pages();
    map_hhdm();
    map_kernel();
    map_framebuffers();
    enable_protection();
    write_cr3(root);
}

/* ---- Bring-up -------------------------------------------------------------- */

#define HHDM_LIMIT ((uint64_t)1 << 46)    /* physical addresses the HHDM can hold */
#define BOOT_STACK_BELOW (64 * 1024)      /* what boot.c asks the loader for */
#define BOOT_STACK_ABOVE (4 * 1024)       /* kmain's frame and the loader's slot */

/* The frames of [va, va + bytes) if va is an HHDM address; else nothing. */
static size_t keep_hhdm(struct frame_range *keep, size_t n, vaddr_t va, uint64_t below,
                        uint64_t bytes)
{
    paddr_t pa;

    if (va < hhdm_base || va - hhdm_base >= HHDM_LIMIT)
        return n;
    pa = va - hhdm_base;
    pa = pa > below ? pa - below : 0;
    keep[n].start = paddr_to_pfn(pa);
    keep[n].end = paddr_to_pfn(page_up(va - hhdm_base + bytes));
    return n + 1;
}

/*
 * The executable-cmdline response: boot.c reads it in boot_cmdline() but
 * offers no accessor for it, so find the kernel's request object in its
 * .limine_requests section (at __data_start) by the request ID.
 */
static vaddr_t cmdline_response(void)
{
    static const uint64_t id[4] = LIMINE_EXECUTABLE_CMDLINE_ID;

    for (volatile uint64_t *w = (volatile uint64_t *)__data_start;
         w + 6 <= (volatile uint64_t *)__data_end; w++) {
        if (w[0] == id[0] && w[1] == id[1] && w[2] == id[2] && w[3] == id[3])
            return (vaddr_t)w[5];
    }
    return 0;
}

/* Bootloader memory the kernel still reads after mm_init. */
static size_t still_in_use(struct frame_range *keep)
{
    vaddr_t rsp;
    const char *cmdline = boot_cmdline();
    size_t n = 0;

    __asm__ volatile("mov %%rsp, %0" : "=r"(rsp));
    n = keep_hhdm(keep, n, rsp, BOOT_STACK_BELOW, BOOT_STACK_ABOVE);
    n = keep_hhdm(keep, n, (vaddr_t)cmdline, 0, strlen(cmdline) + 1);
    n = keep_hhdm(keep, n, cmdline_response(), 0,
                  sizeof(struct limine_executable_cmdline_response));
    n = keep_hhdm(keep, n, (vaddr_t)boot_hhdm(), 0, sizeof(struct limine_hhdm_response));
    return n;
}

static enum pmm_kind pmm_choice(void)
{
    char name[16];

    if (cmdline_get("pmm", name, sizeof(name)) < 0 || strcmp(name, "bitmap") == 0)
        return PMM_BITMAP;
    if (strcmp(name, "buddy") == 0)
        return PMM_BUDDY;
    panic("mm_init: unknown pmm=%s (use bitmap or buddy)", name);
}

void mm_init(void)
{
    struct frame_range keep[4];
    size_t nkeep, before;

    pmm_init(pmm_choice());
    kprintf("mm: %s pmm, %lu frames managed, metadata %lu frames at 0x%lx\n",
            pmm_kind_name(pmm_kind()), pmm_total_count(), pmm_metadata_frames(),
            pmm_descriptor.meta_base);
    paging_init();
    kprintf("mm: kernel page tables at 0x%lx, %lu table frames, 1 GiB pages %s\n",
            virt_to_phys(kernel_root), table_frames, have_1g ? "on" : "off");
    nkeep = still_in_use(keep);
    before = pmm_total_count();
    pmm_reclaim_bootloader(keep, nkeep);
    for (size_t i = 0; i < pmm_region_count(); i++) {
        if (pmm_region(i)->type == LIMINE_MEMMAP_BOOTLOADER_RECLAIMABLE)
            kept_frames += pmm_region(i)->length / PAGE_SIZE;
    }
    kept_frames -= pmm_total_count() - before;
    kprintf("mm: reclaimed %lu bootloader frames, kept %lu; %lu of %lu frames free\n",
            pmm_reclaimed_frames(), kept_frames, pmm_free_count(), pmm_total_count());
}

size_t mm_kept_frames(void)
{
    return kept_frames;
}
