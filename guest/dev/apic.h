/*
 * apic.h - the local APIC and the IOAPIC, where the MADT says they are.
 *
 * Owns: mapping their registers (uncached, at their HHDM address), enabling
 * the local APIC, end of interrupt, masking the 8259 pair, and routing an
 * ISA IRQ to a vector through the IOAPIC (with the MADT's overrides).
 * Does not own: the local APIC timer (timer.c), the IDT (idt.c), the tables
 * (acpi.c).
 */
#ifndef APIC_H
#define APIC_H

#include "dev/acpi.h"
#include "lib/types.h"

/* Local APIC registers (Intel SDM vol. 3, table 11-1), byte offsets. */
enum lapic_register {
    LAPIC_ID = 0x20,
    LAPIC_VERSION = 0x30,
    LAPIC_TPR = 0x80,
    LAPIC_EOI = 0xb0,
    LAPIC_SVR = 0xf0,
    LAPIC_LVT_TIMER = 0x320,
    LAPIC_TIMER_INITIAL = 0x380,
    LAPIC_TIMER_CURRENT = 0x390,
    LAPIC_TIMER_DIVIDE = 0x3e0,
};

#define APIC_SPURIOUS_VECTOR 0xff

enum apic_status {
    APIC_OK = 0,
    APIC_NO_MEMORY = -1,     /* mapping the registers needed a page table */
    APIC_NO_IOAPIC = -2,     /* the MADT lists none */
    APIC_BAD_GSI = -3,       /* the IRQ's GSI is not on the IOAPIC */
};

/* Maps the local APIC and IOAPIC of p, masks the 8259s (when present) and
 * every IOAPIC input, enables the local APIC with TPR 0. */
int apic_init(const struct acpi_platform *p);

uint32_t lapic_read(enum lapic_register reg);
void lapic_write(enum lapic_register reg, uint32_t value);

/* Signals the end of the interrupt being handled. */
void apic_eoi(void);

/* Delivers ISA irq as vector to this CPU (edge/high unless overridden), or
 * masks it again with apic_mask_isa. */
int apic_route_isa(uint8_t irq, uint8_t vector);
void apic_mask_isa(uint8_t irq);

/* Maps size bytes of device registers at physical pa uncached at their HHDM
 * address (if not mapped yet) and returns that address, or 0 without memory. */
volatile void *apic_map_device(paddr_t pa, size_t size);

#endif
