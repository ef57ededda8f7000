/*
 * idt.c - the interrupt descriptor table and the C side of dispatch.
 *
 * Owns: the 256 interrupt gates, the handler table, the default int3
 * handler and the report printed for an exception nobody handles.
 * Does not own: the entry stubs (isr.S), the IST stack (gdt.c), or what a
 * page fault should do (the VM layer registers a handler for vector 14).
 *
 * All gates are interrupt gates (IF cleared on entry) with selector
 * GDT_KERNEL_CODE. Gates for int3 and 0x80 have DPL 3 so user code may
 * raise them with an INT instruction; #DF and NMI switch to IST1 so that
 * they get a good stack even when the kernel stack is what failed.
 */
#include "arch/x86_64/idt.h"

#include "arch/x86_64/gdt.h"
#include "arch/x86_64/io.h"
#include "dev/serial.h"
#include "lib/panic.h"

#define IDT_ENTRIES 256
#define STUB_SIZE 16 /* must match isr.S */
#define GATE_INTERRUPT 0x8e /* P, DPL 0, 64-bit interrupt gate */
#define GATE_DPL3 0x60

struct PACKED idt_gate {
    uint16_t offset_low;
    uint16_t selector;
    uint8_t ist;
    uint8_t type_attr;
    uint16_t offset_mid;
    uint32_t offset_high;
    uint32_t reserved;
};
static_assert(sizeof(struct idt_gate) == 16, "IDT gate size");

struct PACKED idt_pointer {
    uint16_t limit;
    uint64_t base;
};

extern const char isr_stubs[]; /* isr.S: 256 stubs of STUB_SIZE bytes */

static struct idt_gate idt[IDT_ENTRIES] ALIGNED(16);
static interrupt_handler_t handlers[IDT_ENTRIES];

void isr_dispatch(struct interrupt_frame *frame); /* called from isr.S */

static const char *const exception_names[32] = {
    "#DE divide error", "#DB debug", "NMI non-maskable interrupt", "#BP breakpoint",
    "#OF overflow", "#BR bound range exceeded", "#UD invalid opcode",
    "#NM device not available", "#DF double fault", "coprocessor segment overrun",
    "#TS invalid TSS", "#NP segment not present", "#SS stack-segment fault",
    "#GP general protection fault", "#PF page fault", "reserved 15",
    "#MF x87 floating-point error", "#AC alignment check", "#MC machine check",
    "#XM SIMD floating-point error", "#VE virtualization exception",
    "#CP control protection exception", "reserved 22", "reserved 23", "reserved 24",
    "reserved 25", "reserved 26", "reserved 27", "#HV hypervisor injection exception",
    "#VC VMM communication exception", "#SX security exception", "reserved 31",
};

const char *exception_name(uint64_t vector)
{
    return vector < ARRAY_SIZE(exception_names) ? exception_names[vector] : NULL;
}

static void set_gate(uint8_t vector, vaddr_t target, uint8_t ist, uint8_t type_attr)
{
    idt[vector] = (struct idt_gate){
        .offset_low = target & 0xffff,
        .selector = GDT_KERNEL_CODE,
        .ist = ist,
        .type_attr = type_attr,
        .offset_mid = (target >> 16) & 0xffff,
        .offset_high = (uint32_t)(target >> 32),
        .reserved = 0,
    };
}

static void breakpoint_handler(struct interrupt_frame *frame)
{
    kprintf("breakpoint at rip=0x%lx (after the int3), resuming\n", frame->rip);
}

void idt_init(void)
{
    struct idt_pointer ptr = {.limit = sizeof(idt) - 1, .base = (vaddr_t)idt};

    for (int v = 0; v < IDT_ENTRIES; v++)
        set_gate(v, (vaddr_t)(isr_stubs + v * STUB_SIZE), 0, GATE_INTERRUPT);
    set_gate(VEC_DOUBLE_FAULT, (vaddr_t)(isr_stubs + VEC_DOUBLE_FAULT * STUB_SIZE),
             TSS_IST_DOUBLE_FAULT, GATE_INTERRUPT);
    set_gate(VEC_NMI, (vaddr_t)(isr_stubs + VEC_NMI * STUB_SIZE),
             TSS_IST_DOUBLE_FAULT, GATE_INTERRUPT);
    idt[VEC_BREAKPOINT].type_attr |= GATE_DPL3;
    idt[VEC_SYSCALL].type_attr |= GATE_DPL3;

    handlers[VEC_BREAKPOINT] = breakpoint_handler;
    __asm__ volatile("lidt %0" : : "m"(ptr) : "memory");
}

void idt_set_handler(uint8_t vector, interrupt_handler_t fn)
{
    handlers[vector] = fn;
}

static void dump_page_fault(const struct interrupt_frame *frame)
{
    uint64_t e = frame->error_code;

    kprintf("  cr2 0x%016lx  [P=%d W=%d U=%d RSVD=%d I=%d]\n", read_cr2(),
            !!(e & PF_PRESENT), !!(e & PF_WRITE), !!(e & PF_USER),
            !!(e & PF_RESERVED), !!(e & PF_INSTR));
}

void interrupt_frame_dump(const struct interrupt_frame *f)
{
    const char *name = exception_name(f->vector);

    kprintf("exception: %s (vector %lu) error code 0x%lx\n",
            name != NULL ? name : "interrupt", f->vector, f->error_code);
    kprintf("  rip 0x%016lx  cs 0x%lx  rflags 0x%lx\n", f->rip, f->cs, f->rflags);
    kprintf("  rsp 0x%016lx  ss 0x%lx\n", f->rsp, f->ss);
    if (f->vector == VEC_PAGE_FAULT)
        dump_page_fault(f);
    kprintf("  rax 0x%016lx rbx 0x%016lx rcx 0x%016lx rdx 0x%016lx\n",
            f->rax, f->rbx, f->rcx, f->rdx);
    kprintf("  rsi 0x%016lx rdi 0x%016lx rbp 0x%016lx r8  0x%016lx\n",
            f->rsi, f->rdi, f->rbp, f->r8);
    kprintf("  r9  0x%016lx r10 0x%016lx r11 0x%016lx r12 0x%016lx\n",
            f->r9, f->r10, f->r11, f->r12);
    kprintf("  r13 0x%016lx r14 0x%016lx r15 0x%016lx\n", f->r13, f->r14, f->r15);
}

/* Entered from isr_common with interrupts off, on the interrupted stack
 * (or IST1, or RSP0 from user mode). */
NORETURN void interrupt_unhandled(const struct interrupt_frame *frame)
{
    const char *name = exception_name(frame->vector);

    console_set_mode(CONSOLE_VERBOSE);
    interrupt_frame_dump(frame);
    if (name != NULL)
        panic("unhandled exception: %s at rip 0x%lx", name, frame->rip);
    panic("unhandled interrupt vector %lu at rip 0x%lx", frame->vector, frame->rip);
}

void isr_dispatch(struct interrupt_frame *frame)
{
    interrupt_handler_t fn = handlers[frame->vector & 0xff];

    if (fn != NULL) {
        fn(frame);
        return;
    }
    interrupt_unhandled(frame);
}
