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
    CHECKPOINT_PLANTED = 3,  /* selftest=planted: a planted bug (planted.h) has been exercised */
    CHECKPOINT_PROC_REAPED = 4, /* a process was reaped: nothing of it may be left */
    CHECKPOINT_INIT_STARTED = 5, /* the first process exists: boot is over */
    CHECKPOINT_PROCS_DONE = 6,  /* the last process is gone: proc_descriptor.final_frames set */
};

static inline void checkpoint(enum checkpoint_number n)
{
    outl(CHECKPOINT_PORT, (uint32_t)n);
}

#endif
