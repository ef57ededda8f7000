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
 * Gives every page of the range the permissions flags (same physical
 * pages), with an invlpg for every entry that changes. Errors as for
 * vmm_unmap; on error no permission has changed.
 */
int vmm_protect(pml4_t *root, vaddr_t va, size_t pages, vm_flags_t flags);

/* The physical address va maps to, or VMM_NO_TRANSLATION. */
paddr_t vmm_translate(pml4_t *root, vaddr_t va);

/* Fills *out for va; VMM_OK, or VMM_NOT_MAPPED (then *out is untouched). */
int vmm_lookup(pml4_t *root, vaddr_t va, struct vm_mapping *out);

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
