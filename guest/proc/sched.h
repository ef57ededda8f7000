/*
 * sched.h - the scheduler: which process runs, blocking and waking.
 *
 * Owns: the scheduler's own context (the boot stack kmain runs on), the
 * round-robin choice among runnable processes, switching address space,
 * kernel stack (TSS.RSP0, the SYSCALL stack) and FPU state, sleeping on a
 * channel and waking everything asleep on it, and freeing the kernel stack
 * of a process that has exited (it cannot free the stack it runs on).
 * Does not own: process creation or teardown (proc.c), signals (which
 * interrupt sleeps: signal.c says which are pending).
 *
 * A process runs until it blocks, yields or exits, or, when the machine
 * has a timer (dev/timer.c), until a tick arrives while it is in user mode
 * and another process waits: then the next runnable process runs (round
 * robin). The tick runs only while one waits, so a process alone is never
 * interrupted. Ticks come at exact virtual times, so preemption is as
 * deterministic as the rest.
 */
#ifndef SCHED_H
#define SCHED_H

#include "proc/proc.h"

enum sleep_result {
    SLEEP_WOKEN = 0,
    SLEEP_INTERRUPTED = 1, /* a signal is pending: the call returns -EINTR */
};

/* Runs processes until none is left (then returns), or every one left is
 * asleep (a deadlock: reported, then the kernel exits). */
void sched_run(void);

/* The current process sleeps until wakeup(channel) or a deliverable
 * signal. Returns at once with SLEEP_INTERRUPTED if one is pending. */
enum sleep_result sleep_on(const void *channel);

/* Makes every process asleep on channel runnable. */
void wakeup(const void *channel);

/* A new process (proc_start) joins the runnable ones. */
void sched_add(struct proc *p);

/* Interrupts p's sleep (a signal arrived for it). */
void sched_interrupt(struct proc *p);

/* The current process gives up the CPU but stays runnable. */
void sched_yield(void);

/* Preemption on the local APIC tick at hz (0: none; call before sched_run).
 * The tick runs only while a process waits for the CPU. */
void sched_preempt(uint32_t hz);

/* The timer tick (dev/timer.h's on_tick, called after the EOI): a process
 * interrupted in user mode gives the CPU to the next runnable one and takes
 * the fatal signals sent to it meanwhile when it runs again. A tick in the
 * kernel changes nothing (the kernel is not preemptible: it runs to its
 * next sleep or its return to user mode); a tick that finds nobody waiting
 * stops the timer until a process waits again. */
void sched_tick(struct interrupt_frame *frame);

/* The current process (a zombie now) leaves the CPU for good. */
NORETURN void sched_leave(void);

/* Low-level context switch (proc/entry.S): saves the callee-saved
 * registers and RSP in *save, continues at the context saved at rsp. */
void switch_context(uint64_t *save, uint64_t rsp);

/* The entry a new process's first switch returns to (proc/entry.S): it
 * leaves through the interrupt return path to the user frame. */
extern const char proc_enter_user[];

/* The kernel stack top the SYSCALL entry switches to (proc/entry.S). */
extern uint64_t syscall_stack_top;

#endif
