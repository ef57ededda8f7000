/*
 * acpi.h - what the ACPI tables say about this machine.
 *
 * Owns: finding the tables through the RSDP (the XSDT from RSDP revision 2,
 * else the RSDT), checking their checksums, and reading the MADT (local
 * APIC, IOAPIC, interrupt source overrides, whether 8259s exist) and the
 * HPET table into struct acpi_platform.
 * Does not own: the devices the tables describe (apic.c, clock.c), AML.
 *
 * The tables are read through the HHDM, which covers ACPI memory once
 * mm_init has built the kernel's page tables: call acpi_init after it.
 */
#ifndef ACPI_H
#define ACPI_H

#include "lib/types.h"

#define ACPI_MAX_OVERRIDES 16

/* MPS INTI flags of an override (ACPI 6.0, 5.2.12.5). */
#define ACPI_POLARITY_MASK 0x3
#define ACPI_ACTIVE_LOW 0x3
#define ACPI_TRIGGER_MASK 0xc
#define ACPI_LEVEL 0xc

/* An ISA IRQ that reaches the IOAPIC on another pin, or not as edge/high. */
struct acpi_override {
    uint8_t irq;
    uint32_t gsi;
    uint16_t flags;
};

struct acpi_platform {
    int rsdp_revision;       /* 0: ACPI 1.0 (RSDT only), 2 and later: XSDT */
    size_t table_count;      /* tables the root table lists */
    paddr_t lapic;           /* local APIC registers */
    bool has_8259;           /* MADT PCAT_COMPAT: a dual 8259 is present */
    paddr_t ioapic;          /* the first IOAPIC's registers; 0: none */
    uint8_t ioapic_id;
    uint32_t ioapic_gsi_base;
    size_t override_count;
    struct acpi_override overrides[ACPI_MAX_OVERRIDES];
    paddr_t hpet;            /* the HPET's registers; 0: no HPET table */
};

enum acpi_status {
    ACPI_OK = 0,
    ACPI_NO_RSDP = -1,       /* the loader gave no RSDP */
    ACPI_BAD_TABLE = -2,     /* a signature or checksum is wrong */
    ACPI_NO_MADT = -3,       /* no APIC description table */
};

/* Reads the tables from the RSDP at physical rsdp; ACPI_OK or why not. */
int acpi_init(paddr_t rsdp);

/* What acpi_init found (valid after it returned ACPI_OK). */
const struct acpi_platform *acpi_platform(void);

/* The GSI an ISA IRQ arrives on, and its INTI flags (0: conforms to ISA). */
uint32_t acpi_isa_gsi(uint8_t irq, uint16_t *flags);

/* "ok", "no RSDP", ...: for messages. */
const char *acpi_status_name(int status);

#endif
