/*
 * signal.h - signals: dispositions, masks, pending sets, and what a
 * signal does to a process.
 *
 * Owns: Linux's default action of each signal (signal(7): terminate,
 * terminate with a core, ignore, stop, continue), sending (pending set,
 * interrupted sleeps), and delivery on the way back to user mode.
 * Does not own: the system calls' argument checks (sys_signal.c) or
 * ending a process (proc_exit).
 *
 * No user handler ever runs: a signal whose disposition is a handler gets
 * its default action, as if the handler had not been installed (enough
 * for a single-threaded libc: abort() ends with SIGABRT, 134 in a shell).
 * Stop and continue signals are ignored (no job control). A fatal signal
 * ends the process with the wait status of that signal, no core flag.
 */
#ifndef SIGNAL_H
#define SIGNAL_H

#include "proc/proc.h"

#define SIG_BIT(sig) ((uint64_t)1 << ((sig) - 1))

/* Marks sig pending for p (dropped if ignored) and interrupts p's sleep
 * when it can be delivered. sig in 1..NSIG. */
void signal_send(struct proc *p, int sig);

/* Is a signal pending that delivery would act on (unblocked, not ignored)? */
bool signal_deliverable(const struct proc *p);

/* Acts on the pending signals of the current process before it returns to
 * user mode: ignored ones are dropped, the first fatal one ends it. */
void signal_deliver(void);

/* Ends the current process with sig now, whatever its mask or
 * disposition (a fault: Linux's force_sig). */
NORETURN void signal_force(int sig);

/* What exec keeps: ignored signals stay ignored, handlers go back to the
 * default (signal(7), "execve"); the mask and pending set stay. */
void signal_exec_reset(struct proc *p);

#endif
