/*
 * checkpoint.h - tells the monitor "look now".
 *
 * Owns: the checkpoint port and the checkpoint numbers.
 * Does not own: what the monitor does then (emu/checker.py checks its
 * invariants, `emu pt --at-checkpoint` lists the address space).
 *
 * checkpoint(n) is a 32-bit OUT of n to port 0xf0; the emulator turns it
 * into a Checkpoint event. On a PC nothing answers there (0xf0 clears the
 * x87 busy latch), so the call is harmless outside the emulator.
 */
#ifndef CHECKPOINT_H
#define CHECKPOINT_H

#include "arch/x86_64/io.h"

#define CHECKPOINT_PORT 0xf0

enum checkpoint_number {
    CHECKPOINT_MM_INIT = 1,  /* mm_init returned: own page tables, PMM ready */
    CHECKPOINT_SELFTEST = 2, /* a selftest=NAME returned */
    CHECKPOINT_PLANTED = 3,  /* selftest=planted: a planted bug has been exercised */
};

static inline void checkpoint(enum checkpoint_number n)
{
    outl(CHECKPOINT_PORT, (uint32_t)n);
}

/*
 * Planted bugs, for testing the checker: a build with -DPLANT_BUG=N has
 * exactly one deliberate bug, which selftest=planted exercises before a
 * checkpoint. 0 (the default) is the correct kernel.
 *   1 paging.c maps the kernel's data and bss writable AND executable
 *   2 paging.c maps the kernel's rodata user-accessible
 *   3 paging.c unmaps without invlpg; selftest=planted then reads the page
 *   4 pmm.c accepts frees of frames it does not manage; selftest=planted
 *     frees a RESERVED frame, which the PMM will hand out
 *   5 paging.c frees an emptied page table twice (pmm_free panics)
 *   6 selftest=planted frees a frame that is still mapped (use after free)
 *   7 paging.c frees an emptied page table but leaves its parent entry
 */
#ifndef PLANT_BUG
#define PLANT_BUG 0
#endif

#endif
