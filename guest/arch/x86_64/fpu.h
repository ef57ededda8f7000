/*
 * fpu.h - the x87/SSE state user programs own (the kernel itself is built
 * without SSE and never touches it).
 *
 * Owns: turning SSE on for user mode (CR0.MP set, CR0.EM and CR0.TS clear,
 * CR4.OSFXSR and CR4.OSXMMEXCPT set: Intel SDM vol. 3, 13.1.3), and
 * FXSAVE/FXRSTOR of a 512-byte, 16-byte aligned area.
 * Does not own: when state is saved (the scheduler, fork, exec).
 */
#ifndef FPU_H
#define FPU_H

#include "lib/types.h"

#define CR0_MP ((uint64_t)1 << 1)
#define CR0_EM ((uint64_t)1 << 2)
#define CR0_TS ((uint64_t)1 << 3)
#define CR4_OSFXSR ((uint64_t)1 << 9)
#define CR4_OSXMMEXCPT ((uint64_t)1 << 10)
#define MXCSR_DEFAULT 0x1f80u

static inline void fxsave(void *area)
{
    __asm__ volatile("fxsave64 (%0)" : : "r"(area) : "memory");
}

static inline void fxrstor(const void *area)
{
    __asm__ volatile("fxrstor64 (%0)" : : "r"(area) : "memory");
}

/* Enables SSE and stores the state of a fresh CPU (FNINIT, MXCSR
 * 0x1f80: what a new program starts with) in area. */
static inline void fpu_init(void *area)
{
    uint64_t cr0, cr4;
    uint32_t mxcsr = MXCSR_DEFAULT;

    __asm__ volatile("mov %%cr0, %0" : "=r"(cr0));
    __asm__ volatile("mov %%cr4, %0" : "=r"(cr4));
    cr0 = (cr0 | CR0_MP) & ~(CR0_EM | CR0_TS);
    cr4 |= CR4_OSFXSR | CR4_OSXMMEXCPT;
    __asm__ volatile("mov %0, %%cr0" : : "r"(cr0) : "memory");
    __asm__ volatile("mov %0, %%cr4" : : "r"(cr4) : "memory");
    __asm__ volatile("fninit; ldmxcsr %0" : : "m"(mxcsr) : "memory");
    fxsave(area);
}

#endif
