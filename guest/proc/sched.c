/*
 * sched.c - the scheduler (see sched.h).
 *
 * Owns: the scheduler context (kmain's boot stack: a process always
 * switches back to it, never directly to another process, as in xv6),
 * the current process, the run queue (round robin), sleeping and waking, and
 * preemption on the timer tick.
 * Does not own: the processes' lives (proc.c).
 */
#include "proc/sched.h"

#include "arch/x86_64/fpu.h"
#include "arch/x86_64/gdt.h"
#include "arch/x86_64/io.h"
#include "dev/serial.h"
#include "dev/timer.h"
#include "heap/heap.h"
#include "lib/panic.h"
#include "proc/signal.h"

static uint64_t scheduler_rsp;
static struct proc *running;
/* The run queue: every PROC_RUNNABLE process, in the order it became
 * runnable (round robin), so that choosing the next one and the tick's
 * question "is anyone waiting?" take O(1), not a walk of the table. */
static struct proc *queue_head, *queue_tail;

/* The tick runs only while a process waits for the CPU: a process alone is
 * never interrupted for nothing (each tick stops the emulator, whose cost is
 * far above the guest's 91 instructions). */
static uint32_t preempt_hz;
static bool ticking;

static void tick_on(void)
{
    if (preempt_hz != 0 && !ticking)
        ticking = timer_start(preempt_hz, sched_tick) == TIMER_OK;
}

static void tick_off(void)
{
    if (ticking)
        timer_stop();
    ticking = false;
}

static void enqueue(struct proc *p)
{
    p->run_next = NULL;
    if (queue_tail != NULL)
        queue_tail->run_next = p;
    else
        queue_head = p;
    queue_tail = p;
    if (running != NULL)
        tick_on(); /* p waits while another runs */
}

static void dequeue(struct proc *p)
{
    struct proc **link = &queue_head, *before = NULL;

    while (*link != p) {
        if (*link == NULL)
            panic("sched: %s[%u] is runnable but not in the run queue", p->name, p->pid);
        before = *link;
        link = &before->run_next;
    }
    *link = p->run_next;
    if (queue_tail == p)
        queue_tail = before;
    p->run_next = NULL;
}

/* Every change to or from PROC_RUNNABLE goes through here, to keep the queue. */
static void set_state(struct proc *p, enum proc_state state)
{
    if (p->state == PROC_RUNNABLE && state != PROC_RUNNABLE)
        dequeue(p);
    else if (p->state != PROC_RUNNABLE && state == PROC_RUNNABLE)
        enqueue(p);
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

static void run(struct proc *p)
{
    running = p;
    set_state(p, PROC_RUNNING);
    if (queue_head != NULL)
        tick_on(); /* others wait behind p */
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
        struct proc *p = queue_head; /* the runnable one that waited longest */

        if (p != NULL) {
            run(p);
            if (p->state == PROC_ZOMBIE)
                reap_orphans(); /* it, if the kernel was its parent, and its orphans */
            continue;
        }
        if (!any_left()) {
            tick_off();
            return;
        }
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

void sched_preempt(uint32_t hz)
{
    preempt_hz = hz;
}

void sched_tick(struct interrupt_frame *frame)
{
    if (queue_head == NULL) {
        tick_off(); /* nobody waits: the next enqueue starts it again */
        return;
    }
    if ((frame->cs & 3) != 3 || running == NULL)
        return; /* the kernel is not preemptible: it runs to its next block or return */
    sched_yield(); /* the running process is PROC_RUNNING, not queued */
    signal_deliver(); /* what arrived meanwhile (a SIGKILL), as a system call's return does */
}

NORETURN void sched_leave(void)
{
    leave_cpu();
    panic("sched_leave: a zombie was scheduled");
}
