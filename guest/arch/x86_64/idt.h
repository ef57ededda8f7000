/*
 * idt.h - interrupt and exception dispatch.
 *
 * Owns: the IDT, the saved-register frame every interrupt sees, and the
 * per-vector handler table.
 * Does not own: the stubs that build the frame (isr.S), the stacks
 * (gdt.c), or any device interrupt controller.
 */
#ifndef IDT_H
#define IDT_H

#include "lib/types.h"

/*
 * The stack at the time the dispatcher runs, lowest address first: the
 * general registers pushed by isr.S, the vector and error code (a dummy 0
 * for vectors where the CPU pushes none), then the frame the CPU pushed.
 * isr.S depends on this exact layout.
 */
struct interrupt_frame {
    uint64_t r15, r14, r13, r12, r11, r10, r9, r8;
    uint64_t rbp, rdi, rsi, rdx, rcx, rbx, rax;
    uint64_t vector;
    uint64_t error_code;
    uint64_t rip, cs, rflags, rsp, ss;
};
static_assert(sizeof(struct interrupt_frame) == 22 * 8, "interrupt_frame size");
static_assert(offsetof(struct interrupt_frame, vector) == 15 * 8, "vector offset");
static_assert(offsetof(struct interrupt_frame, rip) == 17 * 8, "rip offset");

/* Exception vectors the kernel refers to by name. */
enum {
    VEC_DIVIDE_ERROR = 0,
    VEC_DEBUG = 1,
    VEC_NMI = 2,
    VEC_BREAKPOINT = 3,
    VEC_INVALID_OPCODE = 6,
    VEC_DOUBLE_FAULT = 8,
    VEC_GENERAL_PROTECTION = 13,
    VEC_PAGE_FAULT = 14,
    VEC_SYSCALL = 0x80,
};

/* Page-fault error code bits. */
#define PF_PRESENT (1u << 0) /* protection violation, not a missing page */
#define PF_WRITE (1u << 1)
#define PF_USER (1u << 2)
#define PF_RESERVED (1u << 3) /* a reserved bit was set in a paging entry */
#define PF_INSTR (1u << 4)    /* instruction fetch */

/*
 * A handler may change the frame (e.g. rip, rax); the stub restores from it.
 * Returning resumes the interrupted code.
 */
typedef void (*interrupt_handler_t)(struct interrupt_frame *frame);

/* Builds and loads the IDT and installs the default int3 handler. */
void idt_init(void);

/* Routes vector to fn; NULL restores the default (report, then panic). */
void idt_set_handler(uint8_t vector, interrupt_handler_t fn);

/* Prints the registers and exception details of frame to the console. */
void interrupt_frame_dump(const struct interrupt_frame *frame);

/* What happens to an interrupt nobody handles: the console turns verbose,
 * the frame is dumped, and the kernel panics. Handlers call it for the
 * cases they do not own (a kernel-mode fault). */
NORETURN void interrupt_unhandled(const struct interrupt_frame *frame);

/* The name of an exception vector ("#PF page fault", ...), or NULL above 31. */
const char *exception_name(uint64_t vector);

#endif
