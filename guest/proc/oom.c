/*
 * oom.c - the out-of-memory killer (see oom.h).
 *
 * Owns: choosing the victim, the report line, and waiting for the victim's
 * memory to come back.
 * Does not own: signals (signal.c), ending processes (proc.c), reclaim
 * (mm/swap.c, which gave up before this is called).
 *
 * Linux's mm/oom_kill.c scores a process by its RSS, swap entries and page
 * tables; here the score is the RSS alone: the frames a kill gives back at
 * once. The victim ends through its own SIGKILL: a sleeping process is
 * woken (every sleep here is interruptible) and dies on its way back to
 * user mode, its address space destroyed by proc_exit. The faulting
 * process yields meanwhile, then retries the access that failed.
 */
#include "proc/oom.h"

#include "dev/serial.h"
#include "mm/frames.h"
#include "mm/swap.h"
#include "proc/proc.h"
#include "proc/sched.h"
#include "proc/signal.h"

#define OOM_YIELDS_MAX 64 /* rounds of the scheduler to wait for the victim's exit */

static bool alive(const struct proc *p)
{
    return (p->state == PROC_RUNNABLE || p->state == PROC_RUNNING ||
            p->state == PROC_SLEEPING) && p->as != NULL;
}

/* The live process with the largest RSS, the current one if no other holds more;
 * *candidates gets the number of processes compared. A process sharing the
 * current one's address space (a vfork parent) frees nothing by dying: skipped. */
static struct proc *choose(struct proc *current, uint32_t *candidates)
{
    struct proc *victim = current;

    *candidates = 0;
    for (size_t i = 0; i < PROC_MAX; i++) {
        struct proc *p = proc_slot(i);

        if (!alive(p) || (p != current && p->as == current->as))
            continue;
        (*candidates)++;
        if (p->as->rss_pages > victim->as->rss_pages ||
            (p->as->rss_pages == victim->as->rss_pages && p->pid < victim->pid))
            victim = p;
    }
    return victim;
}

static bool gone(uint32_t pid)
{
    struct proc *p = proc_by_pid(pid);

    return p == NULL || !alive(p);
}

enum oom_outcome oom_kill(vaddr_t address, uint64_t rip)
{
    struct proc *current = proc_current();
    uint32_t candidates, pid;
    struct proc *victim = choose(current, &candidates);
    uint64_t slots = swap_descriptor.slots > 0 ? swap_descriptor.slots - 1 : 0;

    swap_descriptor.oom_kills++;
    kreport("%s[%u]: out of memory at 0x%lx rip 0x%lx (RSS %lu KiB; user frames %lu of %lu, "
            "swap %lu of %lu KiB in use): killed %s[%u], RSS %lu KiB, the largest of %u "
            "processes\n", current->name, current->pid, address, rip,
            current->as->rss_pages * 4, uframe_count(), swap_user_limit(),
            swap_slots_in_use() * 4, slots * 4, victim->name, victim->pid,
            victim->as->rss_pages * 4, candidates);
    if (victim == current)
        return OOM_KILL_CURRENT;
    pid = victim->pid;
    signal_send(victim, SIGKILL);
    for (int i = 0; i < OOM_YIELDS_MAX && !gone(pid); i++)
        sched_yield();
    if (gone(pid))
        return OOM_OTHER_KILLED;
    kreport("%s[%u]: out of memory: %s[%u] did not exit: killed instead\n", current->name,
            current->pid, victim->name, pid);
    return OOM_KILL_CURRENT;
}
