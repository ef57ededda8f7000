/*
 * trace.c - the tracepoints of trace.h: each an empty function the monitor
 * may hook; the asm statement keeps the compiler from dropping the call.
 */
#include "proc/trace.h"

TRACEPOINT void trace_syscall(const struct trace_syscall *r)
{
    __asm__ volatile("" : : "r"(r) : "memory");
}

TRACEPOINT void trace_syscall_unimplemented(const struct trace_syscall *r)
{
    __asm__ volatile("" : : "r"(r) : "memory");
}

TRACEPOINT void trace_fault(const struct trace_fault *r)
{
    __asm__ volatile("" : : "r"(r) : "memory");
}

TRACEPOINT void trace_proc(const struct trace_proc *r)
{
    __asm__ volatile("" : : "r"(r) : "memory");
}
