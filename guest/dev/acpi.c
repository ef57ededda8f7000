/*
 * acpi.c - the ACPI tables: RSDP, RSDT/XSDT, MADT and HPET (ACPI 6.0, ch. 5).
 *
 * Owns: validating and walking the tables, and struct acpi_platform.
 * Does not own: programming any device; AML (the DSDT is not read).
 */
#include "dev/acpi.h"

#include "lib/string.h"
#include "mm/pmm.h"

/* Every table after the RSDP starts with this header (5.2.6). */
struct PACKED sdt_header {
    char signature[4];
    uint32_t length;
    uint8_t revision;
    uint8_t checksum;
    char oem_id[6];
    char oem_table_id[8];
    uint32_t oem_revision;
    uint32_t creator_id;
    uint32_t creator_revision;
};
static_assert(sizeof(struct sdt_header) == 36, "sdt header");

struct PACKED rsdp {
    char signature[8];
    uint8_t checksum;
    char oem_id[6];
    uint8_t revision;
    uint32_t rsdt_address;
    uint32_t length; /* revision 2 and later from here */
    uint64_t xsdt_address;
    uint8_t extended_checksum;
    uint8_t reserved[3];
};
static_assert(sizeof(struct rsdp) == 36, "rsdp");

enum madt_entry_type {
    MADT_LOCAL_APIC = 0,
    MADT_IO_APIC = 1,
    MADT_OVERRIDE = 2,
    MADT_LAPIC_ADDRESS_OVERRIDE = 5,
};
#define MADT_PCAT_COMPAT 1u

static struct acpi_platform platform;

static bool checksum_ok(const void *data, size_t length)
{
    const uint8_t *bytes = data;
    uint8_t sum = 0;

    for (size_t i = 0; i < length; i++)
        sum += bytes[i];
    return sum == 0;
}

/* The table at pa if its signature is sig (NULL: any) and its checksum holds. */
static const struct sdt_header *table_at(paddr_t pa, const char *sig)
{
    const struct sdt_header *table = phys_to_virt(pa);

    if (pa == 0 || (sig != NULL && memcmp(table->signature, sig, 4) != 0))
        return NULL;
    if (table->length < sizeof(*table) || !checksum_ok(table, table->length))
        return NULL;
    return table;
}

/* The root table's index-th entry (32-bit in the RSDT, 64-bit in the XSDT). */
static paddr_t root_entry(const struct sdt_header *root, bool wide, size_t index)
{
    const uint8_t *entries = (const uint8_t *)(root + 1);
    uint64_t address = 0;

    memcpy(&address, entries + index * (wide ? 8 : 4), wide ? 8 : 4);
    return address;
}

static const struct sdt_header *find_table(const struct sdt_header *root, bool wide,
                                           const char *sig)
{
    for (size_t i = 0; i < platform.table_count; i++) {
        const struct sdt_header *table = table_at(root_entry(root, wide, i), sig);
        if (table != NULL)
            return table;
    }
    return NULL;
}

static void read_madt_entry(uint8_t type, const uint8_t *entry)
{
    if (type == MADT_IO_APIC && platform.ioapic == 0) {
        uint32_t address, gsi_base;
        memcpy(&address, entry + 4, 4);
        memcpy(&gsi_base, entry + 8, 4);
        platform.ioapic = address;
        platform.ioapic_id = entry[2];
        platform.ioapic_gsi_base = gsi_base;
    } else if (type == MADT_OVERRIDE && platform.override_count < ACPI_MAX_OVERRIDES) {
        struct acpi_override *o = &platform.overrides[platform.override_count++];
        o->irq = entry[3];
        memcpy(&o->gsi, entry + 4, 4);
        memcpy(&o->flags, entry + 8, 2);
    } else if (type == MADT_LAPIC_ADDRESS_OVERRIDE) {
        memcpy(&platform.lapic, entry + 4, 8);
    }
}

static void read_madt(const struct sdt_header *madt)
{
    const uint8_t *body = (const uint8_t *)(madt + 1);
    const uint8_t *end = (const uint8_t *)madt + madt->length;
    uint32_t lapic, flags;

    memcpy(&lapic, body, 4);
    memcpy(&flags, body + 4, 4);
    platform.lapic = lapic;
    platform.has_8259 = (flags & MADT_PCAT_COMPAT) != 0;
    for (const uint8_t *entry = body + 8; entry + 2 <= end && entry[1] >= 2;
         entry += entry[1])
        read_madt_entry(entry[0], entry);
}

int acpi_init(paddr_t rsdp_pa)
{
    const struct rsdp *rsdp = phys_to_virt(rsdp_pa);
    const struct sdt_header *root, *madt, *hpet;
    bool wide;

    memset(&platform, 0, sizeof(platform));
    if (rsdp_pa == 0)
        return ACPI_NO_RSDP;
    if (memcmp(rsdp->signature, "RSD PTR ", 8) != 0 || !checksum_ok(rsdp, 20))
        return ACPI_BAD_TABLE;
    wide = rsdp->revision >= 2 && checksum_ok(rsdp, sizeof(*rsdp));
    root = wide ? table_at(rsdp->xsdt_address, "XSDT") : table_at(rsdp->rsdt_address, "RSDT");
    if (root == NULL)
        return ACPI_BAD_TABLE;
    platform.rsdp_revision = rsdp->revision;
    platform.table_count = (root->length - sizeof(*root)) / (wide ? 8 : 4);
    madt = find_table(root, wide, "APIC");
    if (madt == NULL)
        return ACPI_NO_MADT;
    read_madt(madt);
    hpet = find_table(root, wide, "HPET");
    if (hpet != NULL) /* base address: the GAS at offset 40, its address at +4 */
        memcpy(&platform.hpet, (const uint8_t *)hpet + 44, 8);
    return ACPI_OK;
}

const struct acpi_platform *acpi_platform(void)
{
    return &platform;
}

uint32_t acpi_isa_gsi(uint8_t irq, uint16_t *flags)
{
    for (size_t i = 0; i < platform.override_count; i++) {
        if (platform.overrides[i].irq == irq) {
            *flags = platform.overrides[i].flags;
            return platform.overrides[i].gsi;
        }
    }
    *flags = 0;
    return irq;
}

const char *acpi_status_name(int status)
{
    switch (status) {
    case ACPI_OK:
        return "ok";
    case ACPI_NO_RSDP:
        return "no RSDP from the loader";
    case ACPI_BAD_TABLE:
        return "a bad signature or checksum";
    case ACPI_NO_MADT:
        return "no MADT";
    }
    return "unknown";
}
