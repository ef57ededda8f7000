/*
 * vmm.h - user address spaces: VM regions, demand paging and copy-on-write,
 * and the work behind the memory system calls.
 *
 * Owns: struct address_space (a root, its VM regions, the program break,
 * the stack's place and limit, resident-set counts), the regions (struct
 * vma: kept in an AVL tree keyed by start, split when part of one is
 * unmapped or reprotected, merged with a neighbour when adjacent and
 * compatible), resolving user page faults (zero fill, file read, stack
 * growth, copy-on-write, or a verdict of SIGSEGV), fork's copy of an
 * address space and its teardown.
 * Does not own: page tables (mm/paging.c), frames and their reference
 * counts (mm/frames.c), files (fs/ implements struct vm_object for them),
 * Linux's flag and errno values (proc/sys_mem.c translates), or which
 * address space is live (proc/).
 *
 * This layer sits above the heap (region nodes come from kmalloc), below
 * fs/ and proc/. Every operation validates first and allocates every node
 * it may need before it changes anything: an error leaves the address
 * space as it was. Not thread-safe: one CPU, never from an interrupt
 * other than the page fault it resolves.
 */
#ifndef VMM_H
#define VMM_H

#include "lib/avl.h"
#include "mm/paging.h"

/* ---- Layout ------------------------------------------------------------- */

#define AS_STACK_TOP 0x00007ffffffff000ULL  /* Linux's TASK_SIZE: the stack ends here */
#define AS_STACK_INITIAL (128 * 1024)       /* the stack region a program starts with */
#define AS_STACK_LIMIT (8 * 1024 * 1024)    /* default RLIMIT_STACK */
#define AS_STACK_GUARD_GAP (256 * PAGE_SIZE) /* Linux's stack_guard_gap */
#define AS_MMAP_GAP (128 * 1024 * 1024)     /* Linux's minimum gap below the stack */
#define AS_MIN_ADDRESS 0x10000              /* Linux's default vm.mmap_min_addr */
#define AS_MAX_REGIONS 65530                /* Linux's default vm.max_map_count */

/* ---- Regions ------------------------------------------------------------- */

/* Access rights of a region: the values of Linux's PROT_* on purpose. */
enum vma_prot {
    VMA_READ = 1,
    VMA_WRITE = 2,
    VMA_EXEC = 4,
};

enum vma_sharing {
    VMA_PRIVATE = 0, /* copy-on-write after fork */
    VMA_SHARED = 1,  /* anonymous shared: frames shared after fork, populated at map time */
};

enum vma_growth {
    VMA_FIXED_SIZE = 0,
    VMA_GROWS_DOWN = 1, /* the stack: a fault just below extends it */
};

enum vma_backing {
    VMA_ANONYMOUS = 1,
    VMA_FILE = 2,
};

/* What a region is for: names in reports ([heap], [stack], a file). */
enum vma_role {
    VMA_ROLE_MAP = 0,   /* mmap */
    VMA_ROLE_IMAGE = 1, /* a PT_LOAD segment or its bss */
    VMA_ROLE_HEAP = 2,  /* the program break */
    VMA_ROLE_STACK = 3,
};

/* A file as the VMM sees it; fs/ implements the operations. */
struct vm_object;
struct vm_object_ops {
    /* Copies n bytes (n <= PAGE_SIZE) at offset into dst; bytes past the
     * file's end read as zero. */
    void (*read)(struct vm_object *o, uint64_t offset, void *dst, size_t n);
    void (*get)(struct vm_object *o); /* a region holds a reference */
    void (*put)(struct vm_object *o);
    const char *(*name)(const struct vm_object *o);
    uint64_t (*size)(const struct vm_object *o); /* bytes in the file */
};
struct vm_object {
    const struct vm_object_ops *ops;
};

/*
 * One region: [start, end), page aligned. The monitor walks the tree
 * (fixed layout below, 96 bytes): a page of the user half is mapped only
 * inside a region, with at most the region's rights.
 *
 *   off  field       meaning
 *     0  node        struct avl_node: left, right, parent, height
 *    32  start       first address
 *    40  end         first address past the region
 *    48  prot        enum vma_prot bits
 *    52  sharing     enum vma_sharing
 *    56  growth      enum vma_growth
 *    60  backing     enum vma_backing
 *    64  role        enum vma_role
 *    72  object      struct vm_object * (VMA_FILE), else NULL
 *    80  offset      file offset of start
 *    88  file_bytes  bytes from start that come from the file; the rest
 *                    of the region reads as zero (an ELF segment's bss)
 */
struct vma {
    struct avl_node node;
    vaddr_t start;
    vaddr_t end;
    uint32_t prot;
    uint32_t sharing;
    uint32_t growth;
    uint32_t backing;
    uint32_t role;
    uint32_t reserved;
    struct vm_object *object;
    uint64_t offset;
    uint64_t file_bytes;
};
static_assert(sizeof(struct vma) == 96, "vma layout");
static_assert(offsetof(struct vma, start) == 32, "vma start");
static_assert(offsetof(struct vma, prot) == 48, "vma prot");
static_assert(offsetof(struct vma, sharing) == 52, "vma sharing");
static_assert(offsetof(struct vma, object) == 72, "vma object");

/* What a new region is. */
struct as_mapping {
    uint32_t prot;                /* enum vma_prot bits */
    enum vma_sharing sharing;
    enum vma_growth growth;
    enum vma_role role;
    struct vm_object *object;     /* NULL: anonymous */
    uint64_t offset;              /* file offset of the first byte */
    uint64_t file_bytes;          /* bytes that come from the file (<= the length) */
};

/* ---- Address spaces ---------------------------------------------------------- */

/* How a page fault was resolved, for counts and traces. */
enum as_fault_kind {
    AS_FAULT_ZERO_FILL = 0,
    AS_FAULT_FILE = 1,
    AS_FAULT_COPY_ON_WRITE = 2,
    AS_FAULT_STACK_GROWTH = 3,
    AS_FAULT_SIGSEGV = 4,
    AS_FAULT_OUT_OF_MEMORY = 5, /* no frame: the process is killed */
    AS_FAULT_SIGBUS = 6,        /* a file page wholly past the file's end, as Linux */
    AS_FAULT_SWAP_IN = 7,       /* the page came back from swap (mm/swap.c) */
    AS_FAULT_KINDS = 8,
};

/*
 * An address space. The monitor reads it (fixed layout, 152 bytes):
 *
 *   off  field            meaning
 *     0  root             pml4_t * (kernel virtual) of its page tables
 *     8  regions          struct avl_tree: the root node (struct vma *)
 *    16  region_count
 *    24  generation       the kernel-half generation of root (paging.c)
 *    32  brk_start        where the program break region starts
 *    40  brk              the program break
 *    48  mmap_top         mmap places regions top-down below this
 *    56  stack_top
 *    64  stack_limit      the most the stack region may grow to
 *    72  rss_pages        user pages mapped now
 *    80  peak_rss_pages
 *    88  faults[8]        faults resolved, by enum as_fault_kind
 */
struct address_space {
    pml4_t *root;
    struct avl_tree regions;
    uint64_t region_count;
    uint64_t generation;
    vaddr_t brk_start;
    vaddr_t brk;
    vaddr_t mmap_top;
    vaddr_t stack_top;
    uint64_t stack_limit;
    uint64_t rss_pages;
    uint64_t peak_rss_pages;
    uint64_t faults[AS_FAULT_KINDS];
};
static_assert(sizeof(struct address_space) == 152, "address_space layout");
static_assert(offsetof(struct address_space, rss_pages) == 72, "address_space rss");
static_assert(offsetof(struct address_space, faults) == 88, "address_space faults");

/* Results of the as_* calls (as int: 0 or negative). */
enum as_status {
    AS_OK = 0,
    AS_NO_MEMORY = -1,  /* frames, nodes, or the region limit */
    AS_EXISTS = -2,     /* AS_FIXED_NOREPLACE over a mapping */
    AS_INVALID = -3,    /* a bad range or argument */
    AS_NOT_MAPPED = -4, /* part of the range has no region */
    AS_NO_SPACE = -5,   /* no free virtual range is large enough */
};

enum as_placement {
    AS_ANYWHERE = 0,         /* addr is a hint (0: none) */
    AS_FIXED = 1,            /* exactly at addr, replacing what is there */
    AS_FIXED_NOREPLACE = 2,  /* exactly at addr, AS_EXISTS if anything is there */
};

enum as_access {
    AS_ACCESS_READ = 0,
    AS_ACCESS_WRITE = 1,
    AS_ACCESS_EXEC = 2,
};

/* An empty address space (a new root); NULL if no memory. */
struct address_space *as_create(void);

/* Unmaps everything, frees every frame reference, region and table, and
 * the root. as must not be live (activate the kernel's root first). */
void as_destroy(struct address_space *as);

/* A copy of parent for fork: regions copied, private pages shared
 * copy-on-write (read-only in both), shared pages shared. NULL if no
 * memory (parent unchanged but for pages made read-only). */
struct address_space *as_fork(struct address_space *parent);

/* Makes as the live address space. */
void as_activate(struct address_space *as);

/* The live user address space (the last as_activate'd), or NULL after
 * as_deactivate. */
struct address_space *as_current(void);

/* Makes the kernel's own root live (no user address space). */
void as_deactivate(void);

/*
 * Maps length bytes (rounded up to pages) as m says. AS_ANYWHERE places
 * it at the hint addr if that range is free, else top-down below
 * mmap_top. *out gets the address. Shared regions are populated now.
 */
int as_map(struct address_space *as, vaddr_t addr, uint64_t length,
           const struct as_mapping *m, enum as_placement placement, vaddr_t *out);

/* Unmaps [addr, addr + length): pages and regions (partly covered ones
 * are split). Holes are fine. AS_INVALID for a misaligned or bad range. */
int as_unmap(struct address_space *as, vaddr_t addr, uint64_t length);

/* New rights for [addr, addr + length); AS_NOT_MAPPED if part of the range
 * has no region (nothing changes). Shared frames stay read-only. */
int as_protect(struct address_space *as, vaddr_t addr, uint64_t length, uint32_t prot);

/* How as_remap may move a region. */
enum as_remap_move {
    AS_REMAP_IN_PLACE = 0, /* grow or shrink where it is */
    AS_REMAP_MAY_MOVE = 1, /* move if it cannot grow in place */
    AS_REMAP_FIXED = 2,    /* move to new_addr (replacing what is there) */
};

/*
 * Resizes [addr, addr + old_length), which must lie in one region, to
 * new_length, moving its pages (not copying them) if allowed. *out gets
 * the new address. AS_NOT_MAPPED (the range is not one region), AS_NO_MEMORY
 * (cannot grow in place, or no space to move), AS_INVALID.
 */
int as_remap(struct address_space *as, vaddr_t addr, uint64_t old_length,
             uint64_t new_length, enum as_remap_move move, vaddr_t new_addr, vaddr_t *out);

/* Moves the program break to brk if it can (the heap region grows or
 * shrinks); returns the break in force afterwards. */
vaddr_t as_brk(struct address_space *as, vaddr_t brk);

/* Drops the pages of [addr, addr + length) (MADV_DONTNEED): they read as
 * zero (anonymous) or as the file again on the next touch. */
int as_discard(struct address_space *as, vaddr_t addr, uint64_t length);

/* vec[i] = 1 if page i of [addr, addr + length) is resident, else 0, for at
 * most max pages: mapped, or (a file mapping) held by the file, as Linux's
 * page cache would hold it. AS_NOT_MAPPED if part of the range has no region. */
int as_residency(struct address_space *as, vaddr_t addr, uint64_t length, uint8_t *vec,
                 size_t max);

/* Faults in every page of [addr, addr + length) (MAP_POPULATE), as a read
 * (AS_ACCESS_WRITE: as a write, breaking copy-on-write). */
int as_populate(struct address_space *as, vaddr_t addr, uint64_t length,
                enum as_access access);

/* True if every page of [addr, addr + length) lies in some region. */
bool as_covered(const struct address_space *as, vaddr_t addr, uint64_t length);

/* True if every byte of [addr, addr + length) lies in regions allowing
 * access (what a system call checks before it copies to or from user). */
bool as_allows(struct address_space *as, vaddr_t addr, uint64_t length,
               enum as_access access);

/* ---- Page faults ---------------------------------------------------------------- */

/* What as_fault decided, for the report line and the trace. */
struct as_fault_report {
    enum as_fault_kind kind;
    const struct vma *region; /* the region involved; NULL: no mapping */
    bool swap_error;          /* SIGBUS because the swap device failed the read */
};

/*
 * Resolves a fault at address (user half) for access; present says the
 * page was mapped (a protection fault). Every kind but AS_FAULT_SIGSEGV,
 * AS_FAULT_SIGBUS and AS_FAULT_OUT_OF_MEMORY leaves the access able to succeed when
 * retried. Counts the fault in as->faults.
 */
enum as_fault_kind as_fault(struct address_space *as, vaddr_t address, enum as_access access,
                            bool present, struct as_fault_report *report);

/* The region holding address, or NULL. */
const struct vma *as_find(const struct address_space *as, vaddr_t address);

/* "[heap]", "[stack]", "[anon]", or the file's name. */
const char *vma_name(const struct vma *v);

/* Checks the region tree (order, no overlap, balance, count); panics
 * "as_check: <rule>" on the first broken rule. */
void as_check(const struct address_space *as);

/* Live regions and address spaces over all processes (leak checks). */
size_t as_live_regions(void);
size_t as_live_spaces(void);

#endif
