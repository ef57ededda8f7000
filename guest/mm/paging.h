/*
 * paging.h - virtual address spaces: x86-64 4-level page tables, and the
 * kernel's memory bring-up (mm_init).
 *
 * Owns: the kernel's PML4 and every page-table page under any root, the
 * translation of architecture-independent VM_* flags into entry bits (one
 * place, paging.c), TLB invalidation after changes, and the order of the
 * bring-up: PMM, own page tables, CR3 switch, bootloader reclaim.
 * Does not own: the frames that mappings point to (callers allocate and
 * free those), physical memory (pmm.c), page-fault handling (a later
 * layer registers a #PF handler).
 *
 * Addresses and lengths are page-granular: va and pa page aligned, a
 * length in 4 KiB pages. vmm_map uses 2 MiB and 1 GiB entries wherever
 * va, pa and the rest of the range are aligned to them (1 GiB only if the
 * CPU has them); unmap and protect split such a large page when a range
 * covers only part of it. Page-table pages come from the PMM, zeroed, and
 * go back to it as soon as they hold no entry (the PML4 itself is the
 * caller's). Not thread-safe.
 */
#ifndef PAGING_H
#define PAGING_H

#include "lib/types.h"

/* The top-level table of an address space, reached through the HHDM. */
typedef struct pml4 pml4_t;

/* What a mapping allows. Every mapping can be read by the kernel. */
typedef uint32_t vm_flags_t;
enum vm_flag {
    VM_READ = 0,                   /* implied: nothing to set */
    VM_WRITE = 1u << 0,
    VM_EXEC = 1u << 1,
    VM_USER = 1u << 2,             /* reachable from ring 3 */
    VM_GLOBAL = 1u << 3,           /* survives CR3 switches (kernel only) */
    VM_WRITE_COMBINE = 1u << 4,    /* framebuffers */
    VM_UNCACHED = 1u << 5,         /* device registers */
};

enum vm_page_size {
    VM_PAGE_4K = 0,
    VM_PAGE_2M = 1,
    VM_PAGE_1G = 2,
};

/* Results of the vmm_* calls that change mappings (as int: 0 or negative). */
enum vmm_status {
    VMM_OK = 0,
    VMM_NO_MEMORY = -1,      /* a page-table page could not be allocated */
    VMM_ALREADY_MAPPED = -2, /* vmm_map: some page of the range is mapped */
    VMM_NOT_MAPPED = -3,     /* unmap/protect/lookup: some page is not mapped */
    VMM_BAD_ADDRESS = -4,    /* unaligned, empty, non-canonical or wrapping */
};

/* vmm_translate's answer for an address with no mapping. */
#define VMM_NO_TRANSLATION ((paddr_t)-1)

struct vm_mapping {
    paddr_t paddr;           /* of the queried address itself */
    vm_flags_t flags;
    enum vm_page_size size;  /* of the entry that maps it */
};

/* The kernel's own address space (valid after mm_init). */
pml4_t *vmm_kernel_root(void);

/*
 * Maps pages pages at va to the physical pages at pa. The whole range must
 * be unmapped: otherwise VMM_ALREADY_MAPPED and nothing changes. On
 * VMM_NO_MEMORY whatever was mapped is unmapped again. No TLB flush is
 * needed: the range had no translations.
 */
int vmm_map(pml4_t *root, vaddr_t va, paddr_t pa, size_t pages, vm_flags_t flags);

/*
 * Removes the mappings of pages pages at va, with an invlpg for each, and
 * frees page-table pages left empty. Every page must be mapped, else
 * VMM_NOT_MAPPED and nothing changes. VMM_NO_MEMORY if splitting a large
 * page at an end of the range needed a table (translations unchanged).
 * Does not free the mapped frames.
 */
int vmm_unmap(pml4_t *root, vaddr_t va, size_t pages);

/*
 * The page-array forms, for callers that move frames between addresses
 * (the heap's page cache): 4 KiB leaves only, one walk per page table.
 *
 * vmm_map_frames maps frames[i] (page aligned) at va + i pages, i < pages;
 * errors and rollback as for vmm_map.
 * vmm_unmap_frames removes the mappings of pages pages at va, each a 4 KiB
 * leaf (else VMM_NOT_MAPPED and nothing changes), with an invlpg for each,
 * and stores their frames in frames[] (the caller frees them); with
 * VMM_PRUNE it frees page-table pages left empty, with VMM_KEEP_TABLES it
 * keeps them for the next mapping there (a window whose addresses are
 * mapped again and again: the heap).
 * vmm_unmapped_prefix counts the pages from va on, at most pages, before
 * the first mapped one.
 */
int vmm_map_frames(pml4_t *root, vaddr_t va, const paddr_t *frames, size_t pages,
                   vm_flags_t flags);
enum vmm_tables {
    VMM_PRUNE = 0,
    VMM_KEEP_TABLES = 1,
};
int vmm_unmap_frames(pml4_t *root, vaddr_t va, size_t pages, paddr_t *frames,
                     enum vmm_tables tables);
size_t vmm_unmapped_prefix(pml4_t *root, vaddr_t va, size_t pages);

/*
 * Gives every page of the range the permissions flags (same physical
 * pages), with an invlpg for every entry that changes. Errors as for
 * vmm_unmap; on error no permission has changed.
 */
int vmm_protect(pml4_t *root, vaddr_t va, size_t pages, vm_flags_t flags);

/* The physical address va maps to, or VMM_NO_TRANSLATION. */
paddr_t vmm_translate(pml4_t *root, vaddr_t va);

/* Fills *out for va; VMM_OK, or VMM_NOT_MAPPED (then *out is untouched). */
int vmm_lookup(pml4_t *root, vaddr_t va, struct vm_mapping *out);

/* ---- User address spaces (mm/vmm.c drives these) ------------------------ */

/*
 * The user half is [0, VMM_USER_END): PML4 entries 0-255. Every root
 * made by vmm_root_create shares the kernel half (entries 256-511) with
 * the kernel's root by pointing at the same tables. From the first such
 * root on, a kernel-half PDPT is never freed (a root that shares it could
 * not be told), and a kernel-half PML4 entry the kernel's root gains later
 * reaches the other roots through vmm_activate and vmm_sync_kernel_entry.
 * User mappings are 4 KiB pages only.
 */
#define VMM_USER_END 0x0000800000000000ULL

/* A new root: the kernel half shared, the user half empty. NULL if no
 * frame is free. */
pml4_t *vmm_root_create(void);

/* Frees a root whose user half is empty (vmm_walk_user with VMM_CLEAR
 * empties it). Panics "vmm_root_destroy: user mappings left" otherwise,
 * and for the kernel's root or the live one. */
void vmm_root_destroy(pml4_t *root);

/* Makes root the live address space (CR3), after bringing its kernel half
 * up to date if *generation (the caller's record for root, 0 for a new
 * root) is behind. */
void vmm_activate(pml4_t *root, uint64_t *generation);

/* For a kernel-mode fault at a kernel-half va: copies the kernel root's
 * PML4 entry for va into root if root lacks it. True if it did (the
 * access can be retried). */
bool vmm_sync_kernel_entry(pml4_t *root, vaddr_t va);

/* Gives every PML4 slot of the kernel-half range [start, end) of the
 * kernel's root a PDPT now, so that roots made later share it from the
 * start (the heap's range, before the first process). Panics if no frame
 * is free. */
void vmm_kernel_range_prepare(vaddr_t start, vaddr_t end);

/* The physical address of root (what CR3 holds). */
paddr_t vmm_root_paddr(const pml4_t *root);

/* One 4 KiB user leaf as vmm_walk_user shows it. */
struct vmm_leaf {
    vaddr_t va;
    paddr_t pa;       /* 0 for a swap entry (vmm_walk_swapped) */
    vm_flags_t flags; /* a VMM_REPROTECT callback sets the new ones here */
    bool dirty;       /* the entry's D bit: written since it was made */
    uint64_t entry;   /* the raw entry (a swap entry: mm/swap.h decodes it) */
};

/* What a vmm_walk_user callback does with the leaf it was shown. */
enum vmm_leaf_action {
    VMM_KEEP,      /* leave it */
    VMM_REPROTECT, /* same frame, leaf->flags as the new permissions */
    VMM_CLEAR,     /* unmap it; tables left empty are freed */
};

typedef enum vmm_leaf_action (*vmm_leaf_fn)(void *ctx, struct vmm_leaf *leaf);

/*
 * Calls fn for every present leaf in the user range [start, end) (page
 * aligned, start < end <= VMM_USER_END), in address order, and applies
 * what it returns. When root is live the TLB is flushed for every change
 * before the walk returns (an invlpg each, or one CR3 reload for more
 * than a few dozen). Holes
 * cost one step per missing table, not per page. The frames are the
 * callback's business (it drops its reference on VMM_CLEAR). fn may map
 * pages outside [start, end) in root; it must not unmap any. Panics on a
 * large page in the range.
 */
void vmm_walk_user(pml4_t *root, vaddr_t start, vaddr_t end, vmm_leaf_fn fn, void *ctx);

/*
 * As vmm_walk_user, but visits the user leaves that are not present and not
 * zero: swap entries (mm/swap.h). VMM_KEEP or VMM_CLEAR only.
 */
void vmm_walk_swapped(pml4_t *root, vaddr_t start, vaddr_t end, vmm_leaf_fn fn, void *ctx);

/* The raw 4 KiB user leaf entry for va (0 if there is none), and its
 * physical address (0 if no table holds it), for swap entries. */
uint64_t vmm_user_entry(pml4_t *root, vaddr_t va);
paddr_t vmm_user_entry_paddr(pml4_t *root, vaddr_t va);

/* Writes the not-present, nonzero entry at va (a swap entry), creating the
 * tables; the leaf must be zero (VMM_ALREADY_MAPPED) and entry not present
 * (VMM_BAD_ADDRESS). VMM_NO_MEMORY if a table could not be allocated. */
int vmm_set_swapped(pml4_t *root, vaddr_t va, uint64_t entry);

/* Replaces the present leaf at va that maps pa by the not-present entry,
 * with an invlpg if root is live. VMM_NOT_MAPPED if va does not map pa. */
int vmm_swap_out(pml4_t *root, vaddr_t va, paddr_t pa, uint64_t entry);

/* Puts back old (a present leaf) where vmm_swap_out left a swap entry: a
 * write that failed. */
int vmm_restore_leaf(pml4_t *root, vaddr_t va, uint64_t old);

/* What the clock learns from a leaf's Accessed and Dirty bits. */
enum vmm_reference {
    VMM_REF_GONE = 0,       /* va no longer maps pa */
    VMM_REF_ACCESSED = 1,   /* A was set: now cleared (with an invlpg if live) */
    VMM_REF_IDLE_CLEAN = 2, /* A clear, D clear */
    VMM_REF_IDLE_DIRTY = 3, /* A clear, D set */
};
enum vmm_reference vmm_test_and_clear_accessed(pml4_t *root, vaddr_t va, paddr_t pa);

/*
 * Points the present 4 KiB leaf at va to the frame pa with flags (a
 * copy-on-write copy), with an invlpg. VMM_NOT_MAPPED if va has no 4 KiB
 * leaf (nothing changes).
 */
int vmm_replace(pml4_t *root, vaddr_t va, paddr_t pa, vm_flags_t flags);

/* Page-table pages currently allocated from the PMM under every root. */
size_t vmm_table_frames(void);

/* True if vmm_map may use 1 GiB entries (CPUID.80000001h:EDX.Page1GB). */
bool vmm_has_1g_pages(void);

/*
 * Memory bring-up, once, from kmain: the PMM (pmm=bitmap|buddy on the
 * command line, default bitmap) from the Limine memory map; the kernel's
 * own PML4 with the HHDM at the loader's offset over RAM, ACPI memory
 * (read-only), the kernel image and modules and the framebuffer (2 MiB /
 * 1 GiB pages where aligned), the kernel image section by section (text
 * RX, rodata R+NX, data and bss RW+NX, all global); CR0.WP, EFER.NXE,
 * CR4.PGE and the PAT on; CR3 switched; then the BOOTLOADER_RECLAIMABLE
 * memory handed to the PMM.
 *
 * After mm_init the loader's responses are gone, except what boot.c's
 * accessors still read: boot_cmdline() and boot_hhdm() stay valid (their
 * pages, and the boot stack kmain runs on, are kept out of the reclaim).
 * Everything else (memory map, framebuffer, modules' limine_file...) must
 * be copied before mm_init by whoever needs it; pmm_region() keeps the map.
 */
void mm_init(void);

/* Frames mm_init kept out of the reclaim (boot stack, responses). */
size_t mm_kept_frames(void);

#endif
