/*
 * usercopy.S - copying between the kernel and user memory, with a way out
 * when a page fault cannot be resolved.
 *
 * Owns: the copy loops and the range [usercopy_start, usercopy_end) the
 * page-fault handler recognizes (mm/usercopy.c, usercopy_fixup): a fault
 * there that the VMM cannot resolve resumes at usercopy_fault, which
 * returns -1 from whichever routine faulted.
 * Does not own: checking the user range first (mm/usercopy.c does), or
 * resolving faults (the page-fault handler).
 *
 * The routines use only caller-saved registers and no stack, so the
 * fixup needs nothing but a new RIP.
 */
    .section .text
    .code64

    .globl usercopy_start, usercopy_end, usercopy_fault
    .globl usercopy_raw, usercopy_string_raw

/* int64_t usercopy_raw(void *dst, const void *src, size_t n): 0, or -1. */
usercopy_start:
usercopy_raw:
    movq %rdx, %rcx
    shrq $3, %rcx
    rep movsq
    movq %rdx, %rcx
    andq $7, %rcx
    rep movsb
    xorl %eax, %eax
    ret

/* int64_t usercopy_string_raw(char *dst, const char *src, size_t max): the
 * length without the NUL (copied too), -2 if no NUL within max bytes, or
 * -1 after a fault. */
usercopy_string_raw:
    xorl %eax, %eax
1:  cmpq %rdx, %rax
    jae 3f
    movb (%rsi,%rax), %cl
    movb %cl, (%rdi,%rax)
    testb %cl, %cl
    jz 2f
    incq %rax
    jmp 1b
2:  ret
3:  movq $-2, %rax
    ret
usercopy_end:

usercopy_fault:
    movq $-1, %rax
    ret

    .section .note.GNU-stack, "", @progbits
