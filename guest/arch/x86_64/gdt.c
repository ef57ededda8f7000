/*
 * gdt.c - the kernel's GDT and TSS.
 *
 * Owns: the descriptor table replacing the loader's, the 64-bit TSS, the
 * RSP0 and IST1 stacks, and loading all of them (lgdt, segment reloads,
 * ltr).
 * Does not own: interrupt gates (idt.c) or the SYSCALL MSRs.
 *
 * In long mode base and limit of code and data segments are ignored; the
 * descriptors still carry the flat 4 GiB values so that no CPU or emulator
 * that does check them is surprised.
 */
#include "arch/x86_64/gdt.h"

#include "lib/string.h"

/* A 64-bit task state segment (Intel SDM vol. 3, 8.7). */
struct PACKED tss {
    uint32_t reserved0;
    uint64_t rsp[3];
    uint64_t reserved1;
    uint64_t ist[7];
    uint64_t reserved2;
    uint16_t reserved3;
    uint16_t iomap_base;
};
static_assert(sizeof(struct tss) == 104, "TSS size");

struct PACKED gdt_pointer {
    uint16_t limit;
    uint64_t base;
};

/* Access byte and flags, combined into 8-byte descriptors below. */
#define SEG_KERNEL_CODE 0x00af9b000000ffffULL /* P, DPL0, code r/x, L, G */
#define SEG_KERNEL_DATA 0x00cf93000000ffffULL /* P, DPL0, data r/w, D/B, G */
#define SEG_USER_DATA 0x00cff3000000ffffULL   /* P, DPL3, data r/w, D/B, G */
#define SEG_USER_CODE 0x00affb000000ffffULL   /* P, DPL3, code r/x, L, G */
#define TSS_TYPE_AVAILABLE 0x89ULL            /* P, DPL0, 64-bit TSS (available) */

enum { GDT_ENTRIES = 7 }; /* five segments, then the TSS taking two slots */

static uint64_t gdt[GDT_ENTRIES] ALIGNED(16);
static struct tss tss ALIGNED(16);
static uint8_t rsp0_stack[KERNEL_STACK_SIZE] ALIGNED(16);
static uint8_t ist1_stack[KERNEL_STACK_SIZE] ALIGNED(16);

/* Fills the 16-byte system descriptor for the TSS at gdt[index]. */
static void set_tss_descriptor(int index, vaddr_t base, uint32_t limit)
{
    uint64_t low = 0;

    low |= limit & 0xffffULL;
    low |= (base & 0xffffffULL) << 16;
    low |= TSS_TYPE_AVAILABLE << 40;
    low |= ((uint64_t)(limit >> 16) & 0xf) << 48;
    low |= ((base >> 24) & 0xffULL) << 56;
    gdt[index] = low;
    gdt[index + 1] = base >> 32;
}

static void tss_init(void)
{
    memset(&tss, 0, sizeof(tss));
    tss.rsp[0] = (vaddr_t)(rsp0_stack + sizeof(rsp0_stack));
    tss.ist[TSS_IST_DOUBLE_FAULT - 1] = (vaddr_t)(ist1_stack + sizeof(ist1_stack));
    tss.iomap_base = sizeof(tss); /* no I/O permission bitmap */
}

/* lgdt, then a far return to reload CS, then the data segment registers. */
static void load_gdt(void)
{
    struct gdt_pointer ptr = {.limit = sizeof(gdt) - 1, .base = (vaddr_t)gdt};

    __asm__ volatile(
        "lgdt %0\n\t"
        "pushq %1\n\t"
        "leaq 1f(%%rip), %%rax\n\t"
        "pushq %%rax\n\t"
        "lretq\n"
        "1:\n\t"
        "movw %w2, %%ds\n\t"
        "movw %w2, %%es\n\t"
        "movw %w2, %%fs\n\t"
        "movw %w2, %%gs\n\t"
        "movw %w2, %%ss\n\t"
        :
        : "m"(ptr), "i"(GDT_KERNEL_CODE), "r"((uint64_t)GDT_KERNEL_DATA)
        : "rax", "memory");
}

void gdt_init(void)
{
    gdt[0] = 0;
    gdt[GDT_KERNEL_CODE >> 3] = SEG_KERNEL_CODE;
    gdt[GDT_KERNEL_DATA >> 3] = SEG_KERNEL_DATA;
    gdt[GDT_USER_DATA >> 3] = SEG_USER_DATA;
    gdt[GDT_USER_CODE >> 3] = SEG_USER_CODE;
    tss_init();
    set_tss_descriptor(GDT_TSS >> 3, (vaddr_t)&tss, sizeof(tss) - 1);

    load_gdt();
    __asm__ volatile("ltr %w0" : : "r"((uint16_t)GDT_TSS) : "memory");
}

void tss_set_rsp0(vaddr_t top)
{
    tss.rsp[0] = top;
}
