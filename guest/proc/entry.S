/*
 * entry.S - the ways into and out of user mode that are not interrupts:
 * the SYSCALL entry, the first entry of a new process, and the context
 * switch between kernel stacks.
 *
 * Owns: syscall_entry (LSTAR points here), building the same struct
 * interrupt_frame an interrupt from user mode builds (arch/x86_64/idt.h),
 * at the same place (the top of the process's kernel stack), so fork,
 * execve and signals see one kind of frame; switch_context; and
 * syscall_stack_top, which the scheduler keeps equal to TSS.RSP0.
 * Does not own: what a system call does (syscall_dispatch in syscall.c).
 *
 * SYSCALL leaves the user RSP in place and RIP in RCX, RFLAGS in R11
 * (Intel SDM vol. 2, SYSCALL); FMASK has cleared IF, so nothing can run
 * between the RSP switch below and the frame being complete. The return
 * is the interrupt path's iretq: RCX and R11 come back as SYSCALL left
 * them, as after a Linux sysret.
 */
#include "arch/x86_64/frame.h"

#define USER_DATA (0x18 | 3)
#define USER_CODE (0x20 | 3)
#define SYSCALL_VECTOR 0x100 /* frame->vector of a system call: no IDT vector */

    .section .data
    .balign 8
    .globl syscall_stack_top
syscall_stack_top:
    .quad 0
syscall_user_rsp:
    .quad 0

    .section .text
    .code64

    .globl syscall_entry
syscall_entry:
    movq %rsp, syscall_user_rsp(%rip)
    movq syscall_stack_top(%rip), %rsp
    pushq $USER_DATA                /* ss */
    pushq syscall_user_rsp(%rip)    /* rsp */
    pushq %r11                      /* rflags */
    pushq $USER_CODE                /* cs */
    pushq %rcx                      /* rip */
    pushq $0                        /* error code */
    pushq $SYSCALL_VECTOR
    push_general_registers
    cld
    movq %rsp, %rdi
    call syscall_dispatch
    jmp isr_return

/* A new process's first switch lands here, RSP at its user frame. */
    .globl proc_enter_user
proc_enter_user:
    jmp isr_return

/* void switch_context(uint64_t *save, uint64_t rsp) */
    .globl switch_context
switch_context:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret

    .section .note.GNU-stack, "", @progbits
