/*
 * sys_proc.c - the process system calls: exit, exit_group, fork, vfork,
 * execve, wait4, getpid, gettid, getppid, getuid (and getgid, geteuid,
 * getegid: everything runs as root), getpgrp, set_tid_address,
 * arch_prctl, prlimit64, getrlimit, setrlimit, sched_yield,
 * sched_getaffinity.
 *
 * Owns: their arguments and Linux's answers (one thread per process: the
 * tid is the pid; one CPU; one process group), resource limits (only
 * RLIMIT_STACK can change, and applies to the stack's growth at once).
 * Does not own: processes (proc.c), images (exec.c).
 */
#include "arch/x86_64/io.h"
#include "heap/heap.h"
#include "lib/errno.h"
#include "lib/string.h"
#include "mm/usercopy.h"
#include "proc/exec.h"
#include "proc/proc.h"
#include "proc/sched.h"
#include "proc/syscall.h"

SYSCALL(exit)
{
    proc_exit(WAIT_EXITED(a[0]));
}

SYSCALL(exit_group)
{
    proc_exit(WAIT_EXITED(a[0]));
}

SYSCALL(fork)
{
    return proc_fork(f);
}

SYSCALL(vfork)
{
    int64_t pid = proc_fork(f);
    struct proc *child = pid > 0 ? proc_by_pid((uint32_t)pid) : NULL;

    if (child == NULL)
        return pid;
    child->vfork_parent = proc_current()->pid;
    while (child->pid == (uint32_t)pid && child->vfork_parent != 0) {
        if (sleep_on(&child->vfork_parent) == SLEEP_INTERRUPTED)
            break;
    }
    return pid;
}

SYSCALL(execve)
{
    struct proc *p = proc_current();
    struct exec_args args;
    struct exec_image image;
    int status = exec_args_from_user(a[0], a[1], a[2], &args);

    if (status != 0)
        return status;
    status = exec_load(&args, p->stack_limit, &image);
    if (status == 0)
        exec_commit(p, &args, &image);
    exec_args_free(&args);
    return status;
}

SYSCALL(wait4)
{
    int64_t pid = (int32_t)a[0];
    uint32_t status = 0;
    int64_t reaped;

    if (a[2] & ~(uint64_t)(WNOHANG | WUNTRACED | WCONTINUED | 0x80000000u /* __WALL */))
        return -EINVAL;
    reaped = proc_wait(pid, (int)a[2], &status);
    if (reaped > 0 && a[1] != 0 && copy_to_user(a[1], &status, sizeof(status)) != 0)
        return -EFAULT;
    if (reaped > 0 && a[3] != 0) {
        static const uint8_t rusage[144];

        if (copy_to_user(a[3], rusage, sizeof(rusage)) != 0)
            return -EFAULT;
    }
    return reaped;
}

SYSCALL(getpid)
{
    return proc_current()->pid;
}

SYSCALL(gettid)
{
    return proc_current()->pid;
}

SYSCALL(getppid)
{
    return proc_current()->ppid;
}

SYSCALL(getuid)
{
    return 0;
}

SYSCALL(getpgrp)
{
    return 1;
}

SYSCALL(set_tid_address)
{
    struct proc *p = proc_current();

    p->clear_child_tid = a[0];
    return p->pid;
}

SYSCALL(arch_prctl)
{
    struct proc *p = proc_current();

    switch (a[0]) {
    case ARCH_SET_FS:
    case ARCH_SET_GS:
        if (a[1] >= VMM_USER_END)
            return -EPERM;
        if (a[0] == ARCH_SET_FS) {
            p->fs_base = a[1];
            wrmsr(MSR_FS_BASE, a[1]);
        } else {
            p->gs_base = a[1];
            wrmsr(MSR_GS_BASE, a[1]);
        }
        return 0;
    case ARCH_GET_FS:
        return copy_to_user(a[1], &p->fs_base, 8);
    case ARCH_GET_GS:
        return copy_to_user(a[1], &p->gs_base, 8);
    default:
        return -EINVAL;
    }
}

static struct linux_rlimit limit_of(const struct proc *p, uint64_t resource)
{
    switch (resource) {
    case RLIMIT_STACK:
        return (struct linux_rlimit){.cur = p->stack_limit, .max = RLIM_INFINITY};
    case RLIMIT_NOFILE:
        return (struct linux_rlimit){.cur = FD_MAX, .max = FD_MAX};
    case RLIMIT_CORE:
        return (struct linux_rlimit){.cur = 0, .max = RLIM_INFINITY};
    default:
        return (struct linux_rlimit){.cur = RLIM_INFINITY, .max = RLIM_INFINITY};
    }
}

/* Only RLIMIT_STACK changes; other limits accept their own values. */
static int64_t set_limit(struct proc *p, uint64_t resource, const struct linux_rlimit *new)
{
    struct linux_rlimit old = limit_of(p, resource);

    if (new->cur > new->max)
        return -EINVAL;
    if (resource == RLIMIT_STACK) {
        p->stack_limit = new->cur;
        p->as->stack_limit = new->cur;
        return 0;
    }
    return new->cur == old.cur && new->max == old.max ? 0 : -EPERM;
}

SYSCALL(prlimit64)
{
    struct proc *p = a[0] == 0 ? proc_current() : proc_by_pid((uint32_t)a[0]);
    struct linux_rlimit old, new;

    if (p == NULL || p->state == PROC_ZOMBIE)
        return -ESRCH;
    if (a[1] >= RLIMIT_NLIMITS)
        return -EINVAL;
    old = limit_of(p, a[1]);
    if (a[2] != 0) {
        int64_t status;

        if (copy_from_user(&new, a[2], sizeof(new)) != 0)
            return -EFAULT;
        status = set_limit(p, a[1], &new);
        if (status != 0)
            return status;
    }
    return a[3] != 0 ? copy_to_user(a[3], &old, sizeof(old)) : 0;
}

SYSCALL(getrlimit)
{
    struct linux_rlimit old;

    if (a[0] >= RLIMIT_NLIMITS)
        return -EINVAL;
    old = limit_of(proc_current(), a[0]);
    return copy_to_user(a[1], &old, sizeof(old));
}

SYSCALL(setrlimit)
{
    struct linux_rlimit new;

    if (a[0] >= RLIMIT_NLIMITS)
        return -EINVAL;
    if (copy_from_user(&new, a[1], sizeof(new)) != 0)
        return -EFAULT;
    return set_limit(proc_current(), a[0], &new);
}

SYSCALL(sched_yield)
{
    sched_yield();
    return 0;
}

SYSCALL(sched_getaffinity)
{
    static const uint64_t mask = 1; /* CPU 0 */

    if (a[0] != 0 && proc_by_pid((uint32_t)a[0]) == NULL)
        return -ESRCH;
    if (a[1] < sizeof(mask) || (a[1] & 7) != 0)
        return -EINVAL;
    return copy_to_user(a[2], &mask, sizeof(mask)) != 0 ? -EFAULT : (int64_t)sizeof(mask);
}
