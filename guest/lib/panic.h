/*
 * panic.h - stopping the kernel: success, failure and broken invariants.
 *
 * Owns: the exit codes and the debug-exit port protocol.
 * Does not own: diagnostics of exceptions (idt.c prints those, then panics).
 *
 * kernel_exit(code) writes code with a 32-bit OUT to port 0xf4; the monitor
 * ends the emulation and the emu process exits with that same code. On a
 * machine without the device the CPU halts with interrupts off instead.
 */
#ifndef PANIC_H
#define PANIC_H

#include "lib/types.h"

#define DEBUG_EXIT_PORT 0xf4

enum exit_code {
    EXIT_OK = 0,            /* kmain ran to its end */
    EXIT_PANIC = 1,         /* panic(): a broken invariant or an unhandled exception */
    EXIT_BAD_REVISION = 2,  /* the loader did not accept our base revision */
    EXIT_SERIAL_FAULTY = 3, /* COM1 failed its loopback self-test */
    EXIT_NO_BOOT_INFO = 4,  /* a response the kernel cannot run without is missing */
    EXIT_DEADLOCK = 5,      /* every process is blocked for good (proc/sched.c) */
};

/* Prints "panic: <message>" on COM1 and exits with EXIT_PANIC. */
NORETURN void panic(const char *fmt, ...) PRINTF_LIKE(1, 2);

/* Ends the run with the given status; never returns. */
NORETURN void kernel_exit(int code);

#endif
