/*
 * frame.h - the general registers of struct interrupt_frame (idt.h), as the
 * assembly entries push them: rax first, so that the lowest address holds
 * r15, as the struct declares.
 *
 * Owns: that order, for isr.S (interrupts and exceptions) and
 * proc/entry.S (SYSCALL), which must build the very same frame.
 * Does not own: the words below the registers (error code, vector, the
 * CPU's or SYSCALL's return frame) or the way back (isr_return).
 */
#ifndef FRAME_H
#define FRAME_H

#ifdef __ASSEMBLER__
.macro push_general_registers
    pushq %rax
    pushq %rbx
    pushq %rcx
    pushq %rdx
    pushq %rsi
    pushq %rdi
    pushq %rbp
    pushq %r8
    pushq %r9
    pushq %r10
    pushq %r11
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
.endm
#endif

#endif
