/*
 * pmm_host.c - the guest PMM (guest/mm/pmm.c, pmm_bitmap.c, pmm_buddy.c) as
 * a host shared library, for tests/pmm_host.py.
 *
 * Owns: what the kernel around the PMM would provide: the Limine memory map
 * and HHDM answers (boot_memmap, boot_hhdm), panic(), and a guarded entry
 * point, pmm_host_call, that turns a panic into a return value.
 * Does not own: the PMM itself; the guest sources are compiled unchanged.
 *
 * Built with -nostdinc against the guest headers, like the kernel, so no
 * host header is mixed in; the C library provides memset, memmove (which
 * the guest's lib/string.h declares) and vsnprintf. The HHDM is a host
 * buffer: the caller passes its address as the HHDM offset, so physical
 * address pa is buffer[pa].
 *
 * panic() records its message and jumps back to the pmm_host_call that is
 * running (__builtin_setjmp/__builtin_longjmp: the C frames in between are
 * plain guest code, nothing needs unwinding). A Python exception could not
 * cross those frames; the caller raises one from the return value.
 */
#include "boot/boot.h"
#include "lib/panic.h"
#include "mm/pmm.h"

int vsnprintf(char *buf, size_t size, const char *fmt, va_list ap);

#define HOST_MAX_ENTRIES 1100 /* more than pmm.c accepts, to test its limit */
#define PANIC_BYTES 512

enum pmm_host_op {
    OP_INIT = 1,        /* a = enum pmm_kind */
    OP_ALLOC,           /* result = pmm_alloc() */
    OP_FREE,            /* pmm_free(a) */
    OP_ALLOC_CONTIG,    /* result = pmm_alloc_contiguous(a, b) */
    OP_FREE_CONTIG,     /* pmm_free_contiguous(a, b) */
    OP_RECLAIM,         /* result = pmm_reclaim_bootloader((frame_range *)a, b) */
    OP_FREE_COUNT,
    OP_USED_COUNT,
    OP_TOTAL_COUNT,
    OP_METADATA_FRAMES,
    OP_RECLAIMED_FRAMES,
};

static struct limine_memmap_entry entries[HOST_MAX_ENTRIES];
static struct limine_memmap_entry *entry_ptrs[HOST_MAX_ENTRIES];
static struct limine_memmap_response memmap = {.entries = entry_ptrs};
static struct limine_hhdm_response hhdm;
static bool have_memmap, have_hhdm;

static void *panic_jump[5]; /* __builtin_setjmp's buffer: five words */
static bool guarded;
static char panic_message[PANIC_BYTES];

/* ---- What boot/boot.c gives the kernel ---------------------------------- */

const struct limine_memmap_response *boot_memmap(void)
{
    return have_memmap ? &memmap : NULL;
}

const struct limine_hhdm_response *boot_hhdm(void)
{
    return have_hhdm ? &hhdm : NULL;
}

/* ---- What lib/panic.c gives the kernel ---------------------------------- */

NORETURN void panic(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(panic_message, sizeof(panic_message), fmt, ap);
    va_end(ap);
    if (!guarded)
        __builtin_trap(); /* a panic outside pmm_host_call: nowhere to return to */
    guarded = false;
    __builtin_longjmp(panic_jump, 1);
}

/* ---- The interface tests/pmm_host.py drives ----------------------------- */

/*
 * Installs the loader's answers: count entries of {base, length, type}
 * (NULL entries: no memory map answer) and the HHDM offset (no answer if
 * with_hhdm is 0). Returns -1 if there are more than HOST_MAX_ENTRIES.
 */
int pmm_host_setup(const struct limine_memmap_entry *from, uint64_t count, uint64_t offset,
                   int with_hhdm)
{
    if (count > HOST_MAX_ENTRIES)
        return -1;
    for (uint64_t i = 0; from != NULL && i < count; i++) {
        entries[i] = from[i];
        entry_ptrs[i] = &entries[i];
    }
    memmap.entry_count = count;
    have_memmap = from != NULL;
    hhdm.offset = offset;
    have_hhdm = with_hhdm != 0;
    return 0;
}

static uint64_t dispatch(int op, uint64_t a, uint64_t b)
{
    switch (op) {
    case OP_INIT:
        pmm_init((enum pmm_kind)a);
        return 0;
    case OP_ALLOC:
        return pmm_alloc();
    case OP_FREE:
        pmm_free(a);
        return 0;
    case OP_ALLOC_CONTIG:
        return pmm_alloc_contiguous(a, b);
    case OP_FREE_CONTIG:
        pmm_free_contiguous(a, b);
        return 0;
    case OP_RECLAIM:
        return pmm_reclaim_bootloader((const struct frame_range *)a, b);
    case OP_FREE_COUNT:
        return pmm_free_count();
    case OP_USED_COUNT:
        return pmm_used_count();
    case OP_TOTAL_COUNT:
        return pmm_total_count();
    case OP_METADATA_FRAMES:
        return pmm_metadata_frames();
    case OP_RECLAIMED_FRAMES:
        return pmm_reclaimed_frames();
    }
    panic("pmm_host_call: unknown operation %d", op);
}

/*
 * Runs one PMM call. Returns 0 and stores its result (0 for void calls) in
 * *result, or returns 1 if it panicked: pmm_host_panic_message() says why.
 */
int pmm_host_call(int op, uint64_t a, uint64_t b, uint64_t *result)
{
    panic_message[0] = '\0';
    if (__builtin_setjmp(panic_jump) != 0)
        return 1;
    guarded = true;
    *result = dispatch(op, a, b);
    guarded = false;
    return 0;
}

const char *pmm_host_panic_message(void)
{
    return panic_message;
}
