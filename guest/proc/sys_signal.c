/*
 * sys_signal.c - the signal system calls: rt_sigaction, rt_sigprocmask,
 * kill, tkill, tgkill, pause.
 *
 * Owns: their argument rules (the sigset size must be 8; SIGKILL and
 * SIGSTOP cannot be caught, ignored or blocked; who a pid of 0 or -1
 * reaches: everyone, as there is one process group).
 * Does not own: what signals do (signal.c).
 */
#include "lib/errno.h"
#include "mm/usercopy.h"
#include "proc/proc.h"
#include "proc/sched.h"
#include "proc/signal.h"
#include "proc/syscall.h"

#define UNCATCHABLE (SIG_BIT(SIGKILL) | SIG_BIT(SIGSTOP))

SYSCALL(rt_sigaction)
{
    struct proc *p = proc_current();
    int sig = (int)a[0];
    struct linux_sigaction act;

    if (a[3] != SIGSET_SIZE || sig < 1 || sig > NSIG)
        return -EINVAL;
    if (a[1] != 0 && (sig == SIGKILL || sig == SIGSTOP))
        return -EINVAL;
    if (a[1] != 0 && copy_from_user(&act, a[1], sizeof(act)) != 0)
        return -EFAULT;
    if (a[2] != 0 && copy_to_user(a[2], &p->signals.action[sig], sizeof(act)) != 0)
        return -EFAULT;
    if (a[1] != 0) {
        act.mask &= ~UNCATCHABLE;
        p->signals.action[sig] = act;
        if (act.handler == SIG_IGN)
            p->signals.pending &= ~SIG_BIT(sig);
    }
    return 0;
}

SYSCALL(rt_sigprocmask)
{
    struct proc *p = proc_current();
    uint64_t set, old = p->signals.blocked;

    if (a[3] != SIGSET_SIZE)
        return -EINVAL;
    if (a[1] != 0) {
        if (copy_from_user(&set, a[1], sizeof(set)) != 0)
            return -EFAULT;
        switch (a[0]) {
        case SIG_BLOCK:
            p->signals.blocked |= set;
            break;
        case SIG_UNBLOCK:
            p->signals.blocked &= ~set;
            break;
        case SIG_SETMASK:
            p->signals.blocked = set;
            break;
        default:
            return -EINVAL;
        }
        p->signals.blocked &= ~UNCATCHABLE;
    }
    if (a[2] != 0 && copy_to_user(a[2], &old, sizeof(old)) != 0)
        return -EFAULT;
    return 0;
}

/* Sends sig (0: only check) to one pid; -ESRCH if there is none. */
static int64_t send_to(int64_t pid, int sig)
{
    struct proc *p = proc_by_pid((uint32_t)pid);

    if (pid <= 0 || p == NULL)
        return -ESRCH;
    if (sig != 0)
        signal_send(p, sig);
    return 0;
}

SYSCALL(kill)
{
    int64_t pid = (int32_t)a[0];
    int sig = (int)a[1];
    bool found = false;

    if (sig < 0 || sig > NSIG)
        return -EINVAL;
    if (pid > 0)
        return send_to(pid, sig);
    for (size_t i = 0; i < PROC_MAX; i++) { /* 0, -1, -pgrp: everyone (one group) */
        struct proc *p = proc_slot(i);

        if (p->state == PROC_FREE || (pid == -1 && p->pid == 1))
            continue;
        found = true;
        if (sig != 0)
            signal_send(p, sig);
    }
    return found ? 0 : -ESRCH;
}

SYSCALL(tkill)
{
    if ((int)a[1] < 0 || (int)a[1] > NSIG || (int32_t)a[0] <= 0)
        return -EINVAL;
    return send_to((int32_t)a[0], (int)a[1]);
}

SYSCALL(tgkill)
{
    if ((int)a[2] < 0 || (int)a[2] > NSIG || (int32_t)a[0] <= 0 || (int32_t)a[1] <= 0)
        return -EINVAL;
    if (a[0] != a[1])
        return -ESRCH; /* one thread per process: the tid is the pid */
    return send_to((int32_t)a[1], (int)a[2]);
}

/* Sleeps until a signal is delivered (nothing wakes this channel). With no
 * user handlers, only a fatal signal ends the sleep, at the return. */
SYSCALL(pause)
{
    static const char paused;

    (void)a;
    while (sleep_on(&paused) == SLEEP_WOKEN)
        ;
    return -EINTR;
}
