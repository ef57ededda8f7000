/*
 * sched.c - the scheduler (see sched.h).
 *
 * Owns: the scheduler context (kmain's boot stack: a process always
 * switches back to it, never directly to another process, as in xv6),
 * the current process, round-robin order, sleeping and waking, and
 * preemption on the timer tick.
 * Does not own: the processes' lives (proc.c).
 */
#include "proc/sched.h"

#include "arch/x86_64/fpu.h"
#include "arch/x86_64/gdt.h"
#include "arch/x86_64/io.h"
#include "dev/serial.h"
#include "heap/heap.h"
#include "lib/panic.h"
#include "proc/signal.h"

static uint64_t scheduler_rsp;
static struct proc *running;
static size_t next_slot;
static size_t runnable; /* processes in PROC_RUNNABLE: the tick asks on every slice */

/* Every change to or from PROC_RUNNABLE goes through here, to keep the count. */
static void set_state(struct proc *p, enum proc_state state)
{
    runnable += (state == PROC_RUNNABLE) - (p->state == PROC_RUNNABLE);
    p->state = state;
}

struct proc *proc_current(void)
{
    return running;
}

static vaddr_t kstack_top(const struct proc *p)
{
    return (vaddr_t)p->kstack + KSTACK_SIZE;
}

/* The next runnable process after the last one chosen, or NULL. */
static struct proc *pick(void)
{
    for (size_t i = 0; i < PROC_MAX; i++) {
        struct proc *p = proc_slot((next_slot + i) % PROC_MAX);

        if (p->state == PROC_RUNNABLE) {
            next_slot = (next_slot + i + 1) % PROC_MAX;
            return p;
        }
    }
    return NULL;
}

static void run(struct proc *p)
{
    running = p;
    set_state(p, PROC_RUNNING);
    as_activate(p->as);
    tss_set_rsp0(kstack_top(p));
    syscall_stack_top = kstack_top(p);
    wrmsr(MSR_FS_BASE, p->fs_base);
    wrmsr(MSR_GS_BASE, p->gs_base);
    fxrstor(p->fpu);
    switch_context(&scheduler_rsp, p->kctx_rsp);
    /* p blocked, yielded or exited; the FPU still holds its state. */
    running = NULL;
    if (p->state == PROC_RUNNING)
        set_state(p, PROC_RUNNABLE);
    if (p->state == PROC_ZOMBIE) {
        kfree(p->kstack);
        p->kstack = NULL;
    } else {
        fxsave(p->fpu);
    }
}

/* Zombies whose parent is the kernel itself (the first process, orphans
 * after it): nobody else will reap them. */
static void reap_orphans(void)
{
    for (size_t i = 0; i < PROC_MAX; i++) {
        struct proc *p = proc_slot(i);

        if (p->state == PROC_ZOMBIE && p->ppid == 0)
            proc_reap(p);
    }
}

static bool any_left(void)
{
    for (size_t i = 0; i < PROC_MAX; i++) {
        if (proc_slot(i)->state != PROC_FREE)
            return true;
    }
    return false;
}

static NORETURN void deadlock(void)
{
    kreport("sched: deadlock: every process is blocked for good:\n");
    for (size_t i = 0; i < PROC_MAX; i++) {
        struct proc *p = proc_slot(i);

        if (p->state == PROC_SLEEPING)
            kreport("sched:   %s[%u] asleep\n", p->name, p->pid);
    }
    kernel_exit(EXIT_DEADLOCK);
}

void sched_run(void)
{
    for (;;) {
        struct proc *p;

        reap_orphans();
        p = pick();
        if (p != NULL) {
            run(p);
            continue;
        }
        if (!any_left())
            return;
        deadlock();
    }
}

static void leave_cpu(void)
{
    switch_context(&running->kctx_rsp, scheduler_rsp);
}

enum sleep_result sleep_on(const void *channel)
{
    struct proc *p = running;

    if (signal_deliverable(p))
        return SLEEP_INTERRUPTED;
    p->sleep_channel = channel;
    set_state(p, PROC_SLEEPING);
    leave_cpu();
    p->sleep_channel = NULL;
    return signal_deliverable(p) ? SLEEP_INTERRUPTED : SLEEP_WOKEN;
}

void wakeup(const void *channel)
{
    for (size_t i = 0; i < PROC_MAX; i++) {
        struct proc *p = proc_slot(i);

        if (p->state == PROC_SLEEPING && p->sleep_channel == channel)
            set_state(p, PROC_RUNNABLE);
    }
}

void sched_interrupt(struct proc *p)
{
    if (p->state == PROC_SLEEPING)
        set_state(p, PROC_RUNNABLE);
}

void sched_add(struct proc *p)
{
    set_state(p, PROC_RUNNABLE);
}

void sched_yield(void)
{
    leave_cpu();
}

void sched_tick(struct interrupt_frame *frame)
{
    if ((frame->cs & 3) != 3 || running == NULL)
        return; /* the kernel is not preemptible: it runs to its next block or return */
    if (runnable > 0) /* the running process is PROC_RUNNING, not counted */
        sched_yield(); /* alone, it keeps the CPU (and its TLB: no CR3 reload) */
    signal_deliver(); /* what arrived meanwhile (a SIGKILL), as a system call's return does */
}

NORETURN void sched_leave(void)
{
    leave_cpu();
    panic("sched_leave: a zombie was scheduled");
}
