/*
 * trap.c - what an exception means to a process.
 *
 * Owns: the page-fault handler once processes exist (a fault from ring 3,
 * or from the kernel on a user address in a system call, goes to the
 * VMM; an unresolvable user fault ends the process with SIGSEGV after one
 * report line, one that finds no frame goes to the OOM killer (oom.c); a
 * kernel fault on a kernel address missing from a process's
 * root is synced from the kernel's root), and the signals the other
 * exceptions raise in user mode (SIGFPE, SIGTRAP, SIGILL, SIGBUS,
 * SIGSEGV, as Linux's arch/x86/kernel/traps.c maps them).
 * Does not own: resolving faults (mm/vmm.c), ending processes (proc.c);
 * exceptions in the kernel itself stay fatal (interrupt_unhandled).
 */
#include "proc/trap.h"

#include "arch/x86_64/io.h"
#include "dev/serial.h"
#include "lib/panic.h"
#include "mm/usercopy.h"
#include "proc/oom.h"
#include "proc/proc.h"
#include "proc/signal.h"
#include "proc/trace.h"

static bool from_user(const struct interrupt_frame *f)
{
    return (f->cs & 3) == 3;
}

static const char *access_name(enum as_access access)
{
    switch (access) {
    case AS_ACCESS_WRITE:
        return "write";
    case AS_ACCESS_EXEC:
        return "execute";
    default:
        return "read";
    }
}

static void prot_string(uint32_t prot, char out[4])
{
    out[0] = (prot & VMA_READ) ? 'r' : '-';
    out[1] = (prot & VMA_WRITE) ? 'w' : '-';
    out[2] = (prot & VMA_EXEC) ? 'x' : '-';
    out[3] = '\0';
}

/* The one line a fatal user fault prints. */
static void report_segv(const struct proc *p, const struct interrupt_frame *f, vaddr_t address,
                        enum as_access access, const struct vma *v)
{
    char prot[4];

    if (v == NULL) {
        kreport("%s[%u]: segfault at 0x%lx rip 0x%lx: %s, no mapping\n", p->name, p->pid,
                address, f->rip, access_name(access));
        return;
    }
    prot_string(v->prot, prot);
    kreport("%s[%u]: segfault at 0x%lx rip 0x%lx: %s, region 0x%lx-0x%lx %s %s\n", p->name,
            p->pid, address, f->rip, access_name(access), v->start, v->end, prot, vma_name(v));
}

static void trace(const struct proc *p, const struct interrupt_frame *f, vaddr_t address,
                  enum as_access access, const struct as_fault_report *r)
{
    struct trace_fault t = {
        .pid = p->pid, .kind = r->kind, .address = address, .rip = f->rip,
        .access = access, .user = from_user(f),
        .region_start = r->region != NULL ? r->region->start : 0,
        .region_end = r->region != NULL ? r->region->end : 0,
    };

    trace_fault(&t);
}

/* No frame for the access: the OOM killer picks a victim. Another process's death gives
 * frames back, so the access is retried; the current process's ends it, or, for a
 * kernel access during a system call, fails the copy and ends it on the way out. */
static void out_of_memory(struct proc *p, struct interrupt_frame *f, vaddr_t address)
{
    if (oom_kill(address, f->rip) == OOM_OTHER_KILLED) {
        if (from_user(f) && signal_deliverable(p))
            signal_deliver(); /* killed meanwhile, as init's death kills all */
        return;
    }
    if (from_user(f))
        signal_force(SIGKILL);
    signal_send(p, SIGKILL);
    if (!usercopy_fixup(f))
        interrupt_unhandled(f);
}

static void page_fault(struct interrupt_frame *f)
{
    vaddr_t address = read_cr2();
    struct proc *p = proc_current();
    enum as_access access = (f->error_code & PF_INSTR)   ? AS_ACCESS_EXEC
                            : (f->error_code & PF_WRITE) ? AS_ACCESS_WRITE
                                                         : AS_ACCESS_READ;
    struct as_fault_report r = {.kind = AS_FAULT_SIGSEGV, .region = NULL, .swap_error = false};

    if (p == NULL || p->as == NULL || (f->error_code & PF_RESERVED))
        interrupt_unhandled(f);
    if (address >= VMM_USER_END) {
        if (!from_user(f) && vmm_sync_kernel_entry(p->as->root, address))
            return;
        if (!from_user(f))
            interrupt_unhandled(f);
    } else {
        as_fault(p->as, address, access, (f->error_code & PF_PRESENT) != 0, &r);
    }
    trace(p, f, address, access, &r);
    if (r.kind == AS_FAULT_OUT_OF_MEMORY) {
        out_of_memory(p, f, address);
        return;
    }
    if (r.kind != AS_FAULT_SIGSEGV && r.kind != AS_FAULT_SIGBUS)
        return;
    if (!from_user(f)) {
        if (usercopy_fixup(f))
            return;
        interrupt_unhandled(f);
    }
    if (r.kind == AS_FAULT_SIGBUS && r.swap_error) {
        kreport("%s[%u]: bus error at 0x%lx rip 0x%lx: %s, the page could not be read back "
                "from swap\n", p->name, p->pid, address, f->rip, access_name(access));
        signal_force(SIGBUS);
    } else if (r.kind == AS_FAULT_SIGBUS) {
        kreport("%s[%u]: bus error at 0x%lx rip 0x%lx: %s, past the end of the file\n",
                p->name, p->pid, address, f->rip, access_name(access));
        signal_force(SIGBUS);
    }
    report_segv(p, f, address, access, r.region);
    signal_force(SIGSEGV);
}

/* The signal a user-mode exception raises, 0 for none. */
static int signal_of(uint64_t vector)
{
    switch (vector) {
    case VEC_DIVIDE_ERROR:
    case 16: /* #MF */
    case 19: /* #XM */
        return SIGFPE;
    case VEC_DEBUG:
    case VEC_BREAKPOINT:
        return SIGTRAP;
    case VEC_INVALID_OPCODE:
        return SIGILL;
    case 12: /* #SS */
    case 17: /* #AC */
        return SIGBUS;
    default:
        return SIGSEGV;
    }
}

static void user_exception(struct interrupt_frame *f)
{
    struct proc *p = proc_current();
    const char *name = exception_name(f->vector);
    int sig = signal_of(f->vector);

    if (!from_user(f) || p == NULL) {
        if (f->vector == VEC_BREAKPOINT) {
            kprintf("breakpoint at rip=0x%lx (after the int3), resuming\n", f->rip);
            return;
        }
        interrupt_unhandled(f);
    }
    if (sig != SIGTRAP)
        kreport("%s[%u]: %s at rip 0x%lx: signal %d\n", p->name, p->pid,
                name != NULL ? name : "interrupt", f->rip, sig);
    signal_force(sig);
}

void trap_init(void)
{
    for (int v = 0; v < 32; v++) {
        if (v != VEC_PAGE_FAULT && v != VEC_DOUBLE_FAULT && v != VEC_NMI)
            idt_set_handler((uint8_t)v, user_exception);
    }
    idt_set_handler(VEC_SYSCALL, user_exception); /* int 0x80: no 32-bit ABI here */
    idt_set_handler(VEC_PAGE_FAULT, page_fault);
}
