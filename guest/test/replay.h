/*
 * replay.h - allocation traces replayed against the kernel heap, and the
 * op-list test entry the monitor's model test drives.
 *
 * Owns: reading the first Limine module as a trace, replaying it through
 * kmalloc/krealloc/kfree (kmalloc_aligned, kcalloc for heaptest) with
 * checks of every block, the figures (operations, errors, peak payload,
 * peak footprint, utilization), the result line and the replay_result
 * record, and the markers of the measured region.
 * Does not own: the allocators (heap/) or the trace's meaning beyond
 * replaying it (the monitor validates traces too: emu/heapreplay.py).
 *
 * ---- Command line ----------------------------------------------------------
 *   replay=1      replay the module, checking every block (below)
 *   replay=bare   replay it with no fills or checks: the allocator alone
 *   heaptest=ops  replay it in the op-list form, printing every address
 *   heapcheck=N   with heapdebug=1, heap_check() every N operations
 *                 (default REPLAY_CHECK_PERIOD; 0: only at the end)
 * Together with heap=, heapfit= and heapdebug= (heap.h). Each of them ends
 * the run: kernel_exit(0) if there were no errors, else kernel_exit(1); a
 * broken heap panics instead (exit 1, "panic: ..." on the console).
 *
 * ---- The module ---------------------------------------------------------------
 * The loader's module response lives in BOOTLOADER_RECLAIMABLE memory,
 * which mm_init hands to the PMM; the module's bytes live in
 * EXECUTABLE_AND_MODULES memory, which the PMM never manages and the
 * kernel's HHDM maps. So kmain calls replay_save_module() before mm_init:
 * it copies the first module's address, size and path, and the bytes are
 * read in place later. (paging.c's reclaim keep-list is left alone.)
 *
 * ---- Trace format (replay=) ------------------------------------------------------
 * CS:APP malloc-lab: a header of 2 integers (ids, operations) or 4 (heap
 * size, ids, operations, weight), one per line, then one operation per
 * line: "a ID SIZE", "r ID SIZE", "f ID". Blank lines are skipped. An id
 * is allocated only when it is not live, reallocated or freed only when
 * it is; ids are below the header's count; the operations number as the
 * header says. Any violation panics "replay: line N: ...".
 *
 * ---- Op-list format (heaptest=ops) -------------------------------------------------
 * The same, with the header optional (0, 2 or 4 integer lines), and
 *   a ID SIZE ALIGN   kmalloc_aligned(SIZE, ALIGN) (ALIGN 0: kmalloc)
 *   c ID COUNT SIZE   kcalloc(COUNT, SIZE), checked to be zeroed
 *   r ID 0            krealloc(p, 0): frees, the id is no longer live
 * and four misuses, to see the heap's checks fire (a panic is expected;
 * a kfree that returns counts an error):
 *   d ID              kfree again the block a freed id held (double free)
 *   i ID OFFSET       kfree(p + OFFSET) of a live id (invalid free)
 *   o ID OFFSET       flip the byte at p + OFFSET of a live id (an overflow
 *                     when OFFSET >= SIZE; heapdebug=1 finds it at kfree)
 *   u ID              flip the first byte of a freed id's old block (a
 *                     write after free; heapdebug=1 finds it on reuse)
 * For every a, c and r, in order, the kernel prints
 *   heap op <n> <id> 0x<address as 16 hex digits>
 * where n counts operations from 0 (frees included) and the address is
 * what the call returned (0x0000000000000000 for NULL; a NULL is not an
 * error in this mode, and the id then holds NULL: r on it is kmalloc, f
 * is kfree(NULL)). The last line is
 *   heaptest: heap=<kind> ops=<n> errors=<e> live=<blocks still allocated>
 *
 * ---- The checks (replay=1 and heaptest) --------------------------------------------
 * Each block is filled with a pattern derived from its id and its size at
 * allocation (64-bit words seed + i * K), checked in full before every
 * krealloc (the kept prefix) and kfree, and after a krealloc that moved
 * the block (the copy).
 * Every returned pointer must be aligned (16, or ALIGN), inside
 * [HEAP_BASE, HEAP_END), and must not overlap any live block (the live
 * blocks are kept sorted by address in a treap). kcalloc's bytes must be
 * zero. With heapdebug=1, heap_check() runs every heapcheck=N operations
 * and at the end, and the number of allocated blocks it counts must match
 * the live blocks. In replay=1 a NULL for a nonzero size is an error.
 * Each failed check counts one error; the first REPLAY_MAX_REPORTED are
 * printed as "replay: error: op <n> (<op>): <what>".
 *
 * ---- Measurement ----------------------------------------------------------------
 * The replayer writes 1 to port REPLAY_MARKER_PORT (an 8-bit OUT) right
 * before the first operation and 2 right after the last: the region holds
 * the operations and, in replay=1, their checks; parsing, the result line
 * and the final heap_check are outside. replay=bare brackets the
 * allocator calls and the loop around them only.
 *
 * ---- Figures ------------------------------------------------------------------
 * peak_payload: the most bytes live at once (the sizes asked for);
 * peak_footprint: heap_peak_footprint(), the most bytes of pages the heap
 * held at once (since boot; nothing else allocates before a replay);
 * utilization = peak_payload / peak_footprint, printed truncated to four
 * decimals: floor(10000 * peak_payload / peak_footprint) / 10000.
 * The one result line (replay= only):
 *   replay: heap=<kind> ops=<N> errors=<E> peak_payload=<bytes>
 *           peak_footprint=<bytes> utilization=<0.xxxx>   (on one line)
 */
#ifndef REPLAY_H
#define REPLAY_H

#include "lib/types.h"

#define REPLAY_MARKER_PORT 0xf1
#define REPLAY_MARK_START 1
#define REPLAY_MARK_END 2
#define REPLAY_CHECK_PERIOD 64
#define REPLAY_MAX_REPORTED 10
#define REPLAY_MAX_IDS (1u << 20)

enum replay_mode {
    REPLAY_NONE = 0,
    REPLAY_CHECKED = 1, /* replay=1 */
    REPLAY_BARE = 2,    /* replay=bare */
    REPLAY_HEAPTEST = 3 /* heaptest=ops */
};

/*
 * The global symbol replay_result, for the monitor (emu/heapreplay.py).
 * Layout, little-endian, 64 bytes:
 *
 *   off  field           meaning
 *     0  magic           REPLAY_RESULT_MAGIC ("RPLY") once the figures are
 *                        final (written last), else 0
 *     4  heap_kind       enum heap_kind: 1 list, 2 buddy, 3 slab, 4 chained
 *     8  ops             operations replayed
 *    16  errors          failed checks
 *    24  peak_payload    bytes
 *    32  peak_footprint  bytes
 *    40  utilization_e4  floor(10000 * peak_payload / peak_footprint): the
 *                        printed digits (0 if the footprint is 0)
 *    48  mode            enum replay_mode
 *    52  debug           enum heap_debug
 *    56  tsc             RDTSC difference between the two markers (under
 *                        the emulator: instructions retired, about)
 */
#define REPLAY_RESULT_MAGIC 0x594c5052u /* "RPLY" */

struct replay_result {
    uint32_t magic;
    uint32_t heap_kind;
    uint64_t ops;
    uint64_t errors;
    uint64_t peak_payload;
    uint64_t peak_footprint;
    uint64_t utilization_e4;
    uint32_t mode;
    uint32_t debug;
    uint64_t tsc;
};
static_assert(sizeof(struct replay_result) == 64, "replay_result size");
static_assert(__builtin_offsetof(struct replay_result, ops) == 8, "replay_result ops");
static_assert(__builtin_offsetof(struct replay_result, peak_footprint) == 32,
              "replay_result footprint");

extern struct replay_result replay_result;

/* Copies the first module's address, size and path; call before mm_init. */
void replay_save_module(void);

/*
 * If the command line asks for replay= or heaptest=, runs it and ends the
 * run (never returns); otherwise returns at once. Call after heap_init.
 * Panics "replay: no module" if the loader gave none.
 */
void replay_main(void);

#endif
