/*
 * syscall.c - the system call table and dispatch (see syscall.h).
 *
 * Owns: the MSRs SYSCALL needs, the table from Linux numbers to the
 * sys_* functions, the trace records, and the signal check before the
 * return to user mode.
 * Does not own: the entry stub (entry.S) or any call's work.
 */
#include "proc/syscall.h"

#include "arch/x86_64/gdt.h"
#include "arch/x86_64/io.h"
#include "lib/errno.h"
#include "proc/linux.h"
#include "proc/proc.h"
#include "proc/signal.h"
#include "proc/trace.h"

#define MSR_EFER 0xc0000080u
#define MSR_STAR 0xc0000081u
#define MSR_LSTAR 0xc0000082u
#define MSR_FMASK 0xc0000084u
#define EFER_SCE ((uint64_t)1 << 0)
/* RFLAGS bits SYSCALL clears: TF, DF, IF, IOPL, NT, AC (as Linux does). */
#define SYSCALL_FMASK 0x47700u

extern const char syscall_entry[];

static const syscall_fn table[SYS_COUNT] = {
    [SYS_read] = sys_read, [SYS_write] = sys_write, [SYS_open] = sys_open,
    [SYS_close] = sys_close, [SYS_stat] = sys_stat, [SYS_fstat] = sys_fstat,
    [SYS_lstat] = sys_lstat, [SYS_lseek] = sys_lseek, [SYS_mmap] = sys_mmap,
    [SYS_mprotect] = sys_mprotect, [SYS_munmap] = sys_munmap, [SYS_brk] = sys_brk,
    [SYS_rt_sigaction] = sys_rt_sigaction, [SYS_rt_sigprocmask] = sys_rt_sigprocmask,
    [SYS_ioctl] = sys_ioctl, [SYS_pread64] = sys_pread64, [SYS_readv] = sys_readv,
    [SYS_writev] = sys_writev, [SYS_access] = sys_access, [SYS_pipe] = sys_pipe,
    [SYS_sched_yield] = sys_sched_yield, [SYS_mremap] = sys_mremap,
    [SYS_mincore] = sys_mincore, [SYS_madvise] = sys_madvise, [SYS_dup] = sys_dup,
    [SYS_dup2] = sys_dup2, [SYS_nanosleep] = sys_nanosleep, [SYS_getpid] = sys_getpid,
    [SYS_fork] = sys_fork, [SYS_vfork] = sys_vfork, [SYS_execve] = sys_execve,
    [SYS_exit] = sys_exit, [SYS_wait4] = sys_wait4, [SYS_kill] = sys_kill,
    [SYS_pause] = sys_pause,
    [SYS_uname] = sys_uname, [SYS_fcntl] = sys_fcntl, [SYS_getcwd] = sys_getcwd,
    [SYS_gettimeofday] = sys_gettimeofday, [SYS_getrlimit] = sys_getrlimit,
    [SYS_getuid] = sys_getuid, [SYS_getgid] = sys_getuid, [SYS_geteuid] = sys_getuid,
    [SYS_getegid] = sys_getuid, [SYS_getppid] = sys_getppid, [SYS_getpgrp] = sys_getpgrp,
    [SYS_setrlimit] = sys_setrlimit, [SYS_arch_prctl] = sys_arch_prctl,
    [SYS_gettid] = sys_gettid, [SYS_tkill] = sys_tkill, [SYS_time] = sys_time,
    [SYS_futex] = sys_futex, [SYS_sched_getaffinity] = sys_sched_getaffinity,
    [SYS_set_tid_address] = sys_set_tid_address, [SYS_clock_gettime] = sys_clock_gettime,
    [SYS_clock_getres] = sys_clock_getres, [SYS_clock_nanosleep] = sys_clock_nanosleep,
    [SYS_exit_group] = sys_exit_group, [SYS_tgkill] = sys_tgkill, [SYS_openat] = sys_openat,
    [SYS_newfstatat] = sys_newfstatat, [SYS_faccessat] = sys_faccessat,
    [SYS_dup3] = sys_dup3, [SYS_pipe2] = sys_pipe2, [SYS_prlimit64] = sys_prlimit64,
    [SYS_getrandom] = sys_getrandom,
};

void syscall_init(void)
{
    wrmsr(MSR_STAR, ((uint64_t)GDT_KERNEL_DATA << 48) | ((uint64_t)GDT_KERNEL_CODE << 32));
    wrmsr(MSR_LSTAR, (uint64_t)syscall_entry);
    wrmsr(MSR_FMASK, SYSCALL_FMASK);
    wrmsr(MSR_EFER, rdmsr(MSR_EFER) | EFER_SCE);
}

void syscall_dispatch(struct interrupt_frame *frame)
{
    struct proc *p = proc_current();
    struct trace_syscall r = {
        .pid = p->pid, .number = (uint32_t)frame->rax,
        .args = {frame->rdi, frame->rsi, frame->rdx, frame->r10, frame->r8, frame->r9},
    };
    syscall_fn fn = frame->rax < SYS_COUNT ? table[frame->rax] : NULL;

    p->syscalls++;
    if (fn != NULL) {
        r.result = fn(r.args, frame);
    } else {
        r.result = -ENOSYS;
        trace_syscall_unimplemented(&r);
    }
    frame->rax = (uint64_t)r.result;
    trace_syscall(&r);
    signal_deliver();
}
