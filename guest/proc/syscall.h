/*
 * syscall.h - the system call layer: the SYSCALL entry's C side and the
 * table of implemented calls; private to proc/ (sys_*.c define them).
 *
 * Owns: the calling convention (number in RAX, arguments in RDI, RSI,
 * RDX, R10, R8, R9, result in RAX, a negative errno on failure), the
 * table, the tracepoint records, -ENOSYS for the rest, and signal
 * delivery on the way out.
 * Does not own: what each call does (one file per family: sys_file.c,
 * sys_mem.c, sys_proc.c, sys_signal.c, sys_time.c, sys_info.c).
 */
#ifndef SYSCALL_H
#define SYSCALL_H

#include "arch/x86_64/idt.h"
#include "lib/types.h"

#define UNUSED __attribute__((unused))
#define SYSCALL(name) \
    int64_t sys_##name(const uint64_t *a UNUSED, struct interrupt_frame *f UNUSED)

typedef int64_t (*syscall_fn)(const uint64_t *a, struct interrupt_frame *f);

/* Sets up SYSCALL (EFER.SCE, STAR, LSTAR, FMASK); proc_init calls it. */
void syscall_init(void);

/* Called from proc/entry.S with the frame of the system call. */
void syscall_dispatch(struct interrupt_frame *frame);

/* sys_file.c */
SYSCALL(read); SYSCALL(write); SYSCALL(readv); SYSCALL(writev); SYSCALL(open);
SYSCALL(openat); SYSCALL(close); SYSCALL(lseek); SYSCALL(fstat); SYSCALL(stat);
SYSCALL(lstat); SYSCALL(newfstatat); SYSCALL(ioctl); SYSCALL(pipe); SYSCALL(pipe2);
SYSCALL(dup); SYSCALL(dup2); SYSCALL(dup3); SYSCALL(fcntl); SYSCALL(getcwd);
SYSCALL(pread64); SYSCALL(access); SYSCALL(faccessat);
/* sys_mem.c */
SYSCALL(mmap); SYSCALL(munmap); SYSCALL(mprotect); SYSCALL(mremap); SYSCALL(brk);
SYSCALL(madvise); SYSCALL(mincore);
/* sys_proc.c */
SYSCALL(exit); SYSCALL(exit_group); SYSCALL(fork); SYSCALL(vfork); SYSCALL(execve);
SYSCALL(wait4); SYSCALL(getpid); SYSCALL(gettid); SYSCALL(getppid); SYSCALL(getuid);
SYSCALL(getpgrp); SYSCALL(set_tid_address); SYSCALL(arch_prctl); SYSCALL(prlimit64);
SYSCALL(getrlimit); SYSCALL(setrlimit); SYSCALL(sched_yield); SYSCALL(sched_getaffinity);
/* sys_signal.c */
SYSCALL(rt_sigaction); SYSCALL(rt_sigprocmask); SYSCALL(kill); SYSCALL(tkill);
SYSCALL(tgkill); SYSCALL(pause);
/* sys_time.c */
SYSCALL(clock_gettime); SYSCALL(clock_getres); SYSCALL(gettimeofday); SYSCALL(time);
SYSCALL(nanosleep); SYSCALL(clock_nanosleep);
/* sys_info.c */
SYSCALL(uname); SYSCALL(getrandom); SYSCALL(futex);

#endif
