/*
 * trace.h - tracepoints: empty functions the monitor hooks to watch
 * processes (emu/monitor/processes.py).
 *
 * Owns: the records' layouts (the monitor reads them at the function's
 * entry, through RDI) and the functions, which are real, never inlined,
 * and do nothing: the kernel runs the same instructions whether anyone
 * watches or not, so instruction counts do not depend on tracing.
 * Does not own: what is recorded (the callers fill the records).
 *
 * Records, little-endian:
 *
 * struct trace_syscall (64 bytes): pid u32, number u32, args[6] u64,
 *   result i64 (a negative errno on failure).
 * struct trace_fault (48 bytes): pid u32, kind u32 (enum as_fault_kind),
 *   address u64, rip u64, access u32 (enum as_access), user u32 (1: the
 *   fault came from ring 3), region_start u64, region_end u64 (0, 0: no
 *   region).
 * struct trace_proc (160 bytes): pid u32, event u32 (enum trace_proc_event),
 *   ppid u32, wait_status u32, peak_rss_pages u64, syscalls u64,
 *   faults[8] u64 (by enum as_fault_kind), name[64].
 */
#ifndef TRACE_H
#define TRACE_H

#include "lib/types.h"
#include "mm/vmm.h"

struct trace_syscall {
    uint32_t pid;
    uint32_t number;
    uint64_t args[6];
    int64_t result;
};
static_assert(sizeof(struct trace_syscall) == 64, "trace_syscall layout");

struct trace_fault {
    uint32_t pid;
    uint32_t kind;
    uint64_t address;
    uint64_t rip;
    uint32_t access;
    uint32_t user;
    uint64_t region_start;
    uint64_t region_end;
};
static_assert(sizeof(struct trace_fault) == 48, "trace_fault layout");

enum trace_proc_event {
    TRACE_PROC_START = 1, /* the process exists (fork, or the first one) */
    TRACE_PROC_EXEC = 2,  /* a new program image (name is its path) */
    TRACE_PROC_EXIT = 3,  /* it ended: wait_status, peak RSS and counts final */
};

struct trace_proc {
    uint32_t pid;
    uint32_t event;
    uint32_t ppid;
    uint32_t wait_status;
    uint64_t peak_rss_pages;
    uint64_t syscalls;
    uint64_t faults[AS_FAULT_KINDS];
    char name[64];
};
static_assert(sizeof(struct trace_proc) == 160, "trace_proc layout");

#define TRACEPOINT __attribute__((noinline, used))

TRACEPOINT void trace_syscall(const struct trace_syscall *r);
/* A system call the kernel does not implement (it returned -ENOSYS). */
TRACEPOINT void trace_syscall_unimplemented(const struct trace_syscall *r);
TRACEPOINT void trace_fault(const struct trace_fault *r);
TRACEPOINT void trace_proc(const struct trace_proc *r);

#endif
