/*
 * gdt.h - segments, the task state segment and the kernel's own stacks.
 *
 * Owns: the GDT, the TSS and the stacks it names (RSP0 for entries from
 * user mode, IST1 for double faults and NMIs).
 * Does not own: the IDT (idt.c chooses which vectors use IST1) or the boot
 * stack, which the loader provides and kmain keeps running on.
 *
 * Selector order null, kernel code, kernel data, user data, user code is
 * what SYSCALL/SYSRET expect with STAR[47:32] = 0x08, STAR[63:48] = 0x10:
 * SYSRET loads CS = 0x10 + 16 = 0x20 and SS = 0x10 + 8 = 0x18 (RPL 3).
 */
#ifndef GDT_H
#define GDT_H

#include "lib/types.h"

#define GDT_KERNEL_CODE 0x08
#define GDT_KERNEL_DATA 0x10
#define GDT_USER_DATA (0x18 | 3)
#define GDT_USER_CODE (0x20 | 3)
#define GDT_TSS 0x28

#define TSS_IST_DOUBLE_FAULT 1 /* IST index used by #DF and NMI */
#define KERNEL_STACK_SIZE (16 * 1024)

/* Loads the GDT, reloads every segment register, loads the TSS. Call once. */
void gdt_init(void);

/* Sets the stack the CPU switches to on an interrupt from user mode. */
void tss_set_rsp0(vaddr_t top);

#endif
