/*
 * apic.c - local APIC (xAPIC, MMIO) and IOAPIC (82093AA) programming.
 *
 * Owns: the register access of both and the IOAPIC redirection table.
 * Does not own: the timer (timer.c), what a vector means (idt.c).
 */
#include "dev/apic.h"

#include "arch/x86_64/idt.h"
#include "arch/x86_64/io.h"
#include "mm/paging.h"
#include "mm/pmm.h"

#define SVR_ENABLE (1u << 8)
#define IOREGSEL 0x00
#define IOWIN 0x10
#define IOAPIC_VERSION 0x01
#define IOAPIC_REDIRECTION(pin) (0x10 + 2 * (pin))
#define REDIRECTION_MASKED (1u << 16)
#define REDIRECTION_LEVEL (1u << 15)
#define REDIRECTION_ACTIVE_LOW (1u << 13)

/* The 8259 pair's data ports (their masks). */
#define PIC_MASTER_DATA 0x21
#define PIC_SLAVE_DATA 0xa1

static volatile uint32_t *lapic;
static volatile uint32_t *ioapic;
static uint32_t ioapic_gsi_base, ioapic_pins;

volatile void *apic_map_device(paddr_t pa, size_t size)
{
    paddr_t first = pa & ~(PAGE_SIZE - 1);
    size_t pages = (pa + size - first + PAGE_SIZE - 1) / PAGE_SIZE;
    vaddr_t va = (vaddr_t)phys_to_virt(first);
    int status = vmm_map(vmm_kernel_root(), va, first, pages, VM_WRITE | VM_UNCACHED);

    if (status != VMM_OK && status != VMM_ALREADY_MAPPED)
        return NULL;
    return phys_to_virt(pa);
}

uint32_t lapic_read(enum lapic_register reg)
{
    return lapic[reg / 4];
}

void lapic_write(enum lapic_register reg, uint32_t value)
{
    lapic[reg / 4] = value;
}

void apic_eoi(void)
{
    lapic_write(LAPIC_EOI, 0);
}

static uint32_t ioapic_read(uint32_t reg)
{
    ioapic[IOREGSEL / 4] = reg;
    return ioapic[IOWIN / 4];
}

static void ioapic_write(uint32_t reg, uint32_t value)
{
    ioapic[IOREGSEL / 4] = reg;
    ioapic[IOWIN / 4] = value;
}

/* A spurious interrupt needs no EOI (SDM 11.9). */
static void on_spurious(struct interrupt_frame *frame)
{
    (void)frame;
}

int apic_init(const struct acpi_platform *p)
{
    lapic = apic_map_device(p->lapic, PAGE_SIZE);
    if (lapic == NULL)
        return APIC_NO_MEMORY;
    idt_set_handler(APIC_SPURIOUS_VECTOR, on_spurious);
    if (p->has_8259) { /* masked for good: the IOAPIC carries ISA interrupts */
        outb(PIC_MASTER_DATA, 0xff);
        outb(PIC_SLAVE_DATA, 0xff);
    }
    lapic_write(LAPIC_TPR, 0);
    lapic_write(LAPIC_SVR, SVR_ENABLE | APIC_SPURIOUS_VECTOR);
    if (p->ioapic == 0)
        return APIC_NO_IOAPIC;
    ioapic = apic_map_device(p->ioapic, PAGE_SIZE);
    if (ioapic == NULL)
        return APIC_NO_MEMORY;
    ioapic_gsi_base = p->ioapic_gsi_base;
    ioapic_pins = ((ioapic_read(IOAPIC_VERSION) >> 16) & 0xff) + 1;
    for (uint32_t pin = 0; pin < ioapic_pins; pin++)
        ioapic_write(IOAPIC_REDIRECTION(pin), REDIRECTION_MASKED);
    return APIC_OK;
}

/* The IOAPIC pin of ISA irq, or -1 when it is not on this IOAPIC. */
static int isa_pin(uint8_t irq, uint16_t *flags)
{
    uint32_t gsi = acpi_isa_gsi(irq, flags);

    if (ioapic == NULL || gsi < ioapic_gsi_base || gsi - ioapic_gsi_base >= ioapic_pins)
        return -1;
    return (int)(gsi - ioapic_gsi_base);
}

int apic_route_isa(uint8_t irq, uint8_t vector)
{
    uint16_t flags;
    int pin = isa_pin(irq, &flags);
    uint32_t low = vector; /* fixed delivery, physical destination */

    if (pin < 0)
        return APIC_BAD_GSI;
    if ((flags & ACPI_TRIGGER_MASK) == ACPI_LEVEL)
        low |= REDIRECTION_LEVEL;
    if ((flags & ACPI_POLARITY_MASK) == ACPI_ACTIVE_LOW)
        low |= REDIRECTION_ACTIVE_LOW;
    ioapic_write(IOAPIC_REDIRECTION(pin) + 1, lapic_read(LAPIC_ID) & 0xff000000);
    ioapic_write(IOAPIC_REDIRECTION(pin), low);
    return APIC_OK;
}

void apic_mask_isa(uint8_t irq)
{
    uint16_t flags;
    int pin = isa_pin(irq, &flags);

    if (pin >= 0)
        ioapic_write(IOAPIC_REDIRECTION(pin), REDIRECTION_MASKED);
}
