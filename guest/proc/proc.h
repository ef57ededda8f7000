/*
 * proc.h - processes: the process table, creating them (the first from the
 * command line, the rest by fork), replacing their image (execve), their
 * end (exit, a fatal signal) and waiting for it, and what the monitor
 * reads about them.
 *
 * Owns: struct proc and the table of them, pids, parent links and
 * reparenting, zombies and reaping, the kernel stack and FPU state of
 * each process, proc_descriptor, and the order of a process's teardown
 * (address space, files, then the rest once it is reaped).
 * Does not own: address spaces (mm/vmm.c), files and descriptors (fs/),
 * choosing who runs (proc/sched.c), loading programs (proc/exec.c),
 * signal rules (proc/signal.c), the system calls (proc/sys_*.c).
 *
 * One CPU, no kernel preemption: a process runs in the kernel until it
 * blocks (sleep_on), yields or exits. Never from an interrupt handler
 * other than the exceptions of the process itself.
 */
#ifndef PROC_H
#define PROC_H

#include "arch/x86_64/idt.h"
#include "fs/fdtable.h"
#include "lib/types.h"
#include "mm/vmm.h"
#include "proc/linux.h"
#include "proc/trace.h"

#define PROC_MAX 128               /* processes alive at once (zombies included) */
#define PROC_NAME_MAX 64
#define KSTACK_SIZE (16 * 1024)
#define FPU_STATE_SIZE 512         /* FXSAVE area */
#define MSR_FS_BASE 0xc0000100u    /* a process's FS base (its TLS) */
#define MSR_GS_BASE 0xc0000101u

enum proc_state {
    PROC_FREE = 0,
    PROC_RUNNABLE = 1,
    PROC_RUNNING = 2,
    PROC_SLEEPING = 3,
    PROC_ZOMBIE = 4,
};

/* A process's signal state (no handler ever runs: see proc/signal.c). */
struct sigstate {
    struct linux_sigaction action[NSIG + 1];
    uint64_t blocked; /* bit n - 1 for signal n */
    uint64_t pending;
};

/*
 * One process. The first 96 bytes are read by the monitor (layout in the
 * proc_descriptor comment below); the rest is the kernel's.
 */
struct proc {
    uint32_t pid;
    uint32_t state;               /* enum proc_state */
    uint32_t ppid;                /* 0: the kernel itself */
    uint32_t wait_status;         /* a zombie's Linux wait status */
    struct address_space *as;     /* NULL once a zombie */
    uint64_t syscalls;
    char name[PROC_NAME_MAX];     /* the program's path */
    uint8_t fpu[FPU_STATE_SIZE] ALIGNED(16);
    uint8_t *kstack;              /* KSTACK_SIZE bytes, NULL once freed */
    uint64_t kctx_rsp;            /* where switch_context left the kernel stack */
    struct interrupt_frame *frame; /* the user frame at the top of kstack */
    struct fdtable *fds;
    const void *sleep_channel;
    struct sigstate signals;
    uint64_t fs_base;
    uint64_t gs_base;
    vaddr_t clear_child_tid;
    uint64_t stack_limit;          /* RLIMIT_STACK for the next exec */
    uint32_t vfork_parent;         /* pid suspended until this one execs or exits; 0 */
    uint32_t reserved;
    uint64_t peak_rss_pages;       /* kept after the address space is gone */
    uint64_t faults[AS_FAULT_KINDS];
    struct proc *run_next;         /* the next in the run queue (sched.c) */
};
static_assert(offsetof(struct proc, as) == 16, "proc layout");
static_assert(offsetof(struct proc, syscalls) == 24, "proc layout");
static_assert(offsetof(struct proc, name) == 32, "proc layout");
static_assert(offsetof(struct proc, fpu) == 96, "proc layout");

/*
 * The global symbol proc_descriptor, for the monitor. Layout,
 * little-endian, 96 bytes:
 *
 *   off  field             meaning
 *     0  magic             PROC_DESCRIPTOR_MAGIC ("PROC") once proc_init ran
 *     4  version           PROC_DESCRIPTOR_VERSION
 *     8  proc_max          entries in the table
 *    12  proc_stride       bytes per entry (sizeof(struct proc))
 *    16  procs             kernel virtual address of entry 0
 *    24  frame_refs        the frame reference-count directory (mm/frames.h:
 *                          uint32_t *dir[chunks], kernel virtual)
 *    32  frame_ref_chunks  entries in the directory
 *    40  frames_per_chunk  UFRAME_CHUNK_FRAMES
 *    48  baseline_frames   the PMM baseline before the first process:
 *                          free frames + heap pages + page-table frames
 *    56  final_frames      the same measure after the last process was
 *                          reaped (0 until then)
 *    64  user_end          VMM_USER_END: user addresses lie below
 *    72  reaped            processes reaped so far
 *    80  init_status       the first process's wait status, once reaped
 *    84  init_done         1 once the first process was reaped
 *    88  reserved
 *
 * An entry (struct proc), the monitor's part:
 *   off  field        meaning
 *     0  pid          0 in a free entry
 *     4  state        enum proc_state (0 free)
 *     8  ppid
 *    12  wait_status  of a zombie
 *    16  as           struct address_space * (mm/vmm.h), NULL for a zombie
 *    24  syscalls     system calls made
 *    32  name         NUL-terminated path, 64 bytes
 */
#define PROC_DESCRIPTOR_MAGIC 0x434f5250u /* "PROC" */
#define PROC_DESCRIPTOR_VERSION 1u

struct proc_descriptor {
    uint32_t magic;
    uint32_t version;
    uint32_t proc_max;
    uint32_t proc_stride;
    vaddr_t procs;
    vaddr_t frame_refs;
    uint64_t frame_ref_chunks;
    uint64_t frames_per_chunk;
    uint64_t baseline_frames;
    uint64_t final_frames;
    uint64_t user_end;
    uint64_t reaped;
    uint32_t init_status;
    uint32_t init_done;
    uint64_t reserved;
};
static_assert(sizeof(struct proc_descriptor) == 96, "proc_descriptor layout");
static_assert(offsetof(struct proc_descriptor, baseline_frames) == 48, "proc_descriptor");
static_assert(offsetof(struct proc_descriptor, init_status) == 80, "proc_descriptor");

extern struct proc_descriptor proc_descriptor;

/* ---- Life cycle ---------------------------------------------------------- */

/* Gets the kernel ready for processes: traps, SYSCALL, FPU, frame counts,
 * the descriptor. Once, after heap_init and initrd_init. */
void proc_init(void);

/* The running process (NULL in the scheduler). */
struct proc *proc_current(void);

/* The live (non-free) process with that pid, or NULL. */
struct proc *proc_by_pid(uint32_t pid);

/* The table entry i (0 <= i < PROC_MAX), for scans. */
struct proc *proc_slot(size_t i);

/* A new process with a fresh kernel stack, no address space, no files;
 * NULL if the table is full or no memory. */
struct proc *proc_alloc(uint32_t ppid);

/* Makes p run its user frame the first time it is scheduled. */
void proc_start(struct proc *p);

/*
 * fork/vfork: a copy of the current process (address space copy-on-write,
 * descriptors shared, signal state copied) that returns 0 from the system
 * call whose frame is given. Returns the child's pid or -ENOMEM/-EAGAIN.
 */
int64_t proc_fork(struct interrupt_frame *frame);

/* Ends the current process with a Linux wait status. Never returns. */
NORETURN void proc_exit(uint32_t wait_status);

/* wait4 for the current process: the pid reaped (0 with WNOHANG and none
 * ready), -ECHILD, -EINTR; *status gets the wait status. */
int64_t proc_wait(int64_t pid, int options, uint32_t *status);

/* Frees a zombie's entry (its parent waited, or the kernel reaps it). */
void proc_reap(struct proc *p);

/* Copies path into p->name (truncated). */
void proc_set_name(struct proc *p, const char *path);

/* Enables the FPU for user mode and fills proc_descriptor (proc_init). */
void proc_describe(void);

/* Calls the trace_proc tracepoint for p. */
void proc_trace(const struct proc *p, enum trace_proc_event event);

/* A new program's user state: a fresh FPU, no FS/GS base (loaded now if
 * p is running). */
void proc_reset_user_state(struct proc *p);

/* vfork: wakes the parent suspended until p execs or exits. */
void proc_release_vfork(struct proc *p);

/* The PMM measure of proc_descriptor: free frames + heap pages (claimed or
 * held in the heap's page cache: the leak baseline of heap.h, "free frames
 * + frames held in heap caches") + page-table frames. The PMM's shrinker
 * moves frames between the first two, never out of the sum. */
uint64_t proc_frames_measure(void);

#endif
