/*
 * isr.S - interrupt entry stubs and the common save/restore path.
 *
 * Owns: the 256 entry points the IDT points at (one per vector, each 16
 * bytes, starting at isr_stubs), building struct interrupt_frame, and
 * isr_return, the one way back from a frame.
 * Does not own: deciding what an interrupt means (isr_dispatch in idt.c).
 *
 * Each stub makes the stack uniform: it pushes a dummy error code unless
 * the CPU pushed one (vectors 8, 10-14, 17, 21, 29, 30), then the vector
 * number, and jumps to isr_common. isr_common pushes rax..r15 so that the
 * lowest address holds r15, as struct interrupt_frame declares.
 *
 * Stack alignment: the CPU aligns RSP to 16 before pushing its 5-word
 * frame; error code + vector + 15 registers = 17 words, so RSP is 16-byte
 * aligned at the call, as the SysV ABI requires.
 */
#include "arch/x86_64/frame.h"

#define STUB_SIZE 16

/* Vectors for which the CPU pushes an error code itself. */
#define HAS_ERROR_CODE(v)                                                  \
    ((v) == 8 || (v) == 10 || (v) == 11 || (v) == 12 || (v) == 13 ||   \
     (v) == 14 || (v) == 17 || (v) == 21 || (v) == 29 || (v) == 30)

    .section .text
    .code64

    .balign STUB_SIZE
    .globl isr_stubs
isr_stubs:
    .set vec, 0
    .rept 256
    .if !HAS_ERROR_CODE(vec)
    pushq $0
    .endif
    pushq $vec
    jmp isr_common
    /* Pad with int3 to the next stub; fails to assemble if a stub is too
     * large (.org cannot move backwards). */
    .org isr_stubs + (vec + 1) * STUB_SIZE, 0xcc
    .set vec, vec + 1
    .endr

isr_common:
    push_general_registers
    cld
    movq %rsp, %rdi
    call isr_dispatch
    /* isr_return: RSP points at a struct interrupt_frame; restores it and
     * returns from the interrupt (proc/entry.S leaves system calls and
     * enters new processes this way too). */
    .globl isr_return
isr_return:
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %r11
    popq %r10
    popq %r9
    popq %r8
    popq %rbp
    popq %rdi
    popq %rsi
    popq %rdx
    popq %rcx
    popq %rbx
    popq %rax
    addq $16, %rsp /* vector and error code */
    iretq

    .section .note.GNU-stack, "", @progbits
