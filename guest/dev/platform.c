/*
 * platform.c - bring-up of the ACPI-described PC platform, in order.
 *
 * Owns: what is initialised when, and the lines the boot report prints.
 * Does not own: the devices (acpi.c, apic.c, clock.c, timer.c).
 */
#include "dev/platform.h"

#include "boot/boot.h"
#include "dev/acpi.h"
#include "dev/apic.h"
#include "dev/clock.h"
#include "dev/timer.h"
#include "dev/serial.h"

static void print_madt(const struct acpi_platform *p)
{
    kprintf("acpi: RSDP revision %d, %lu tables; local APIC 0x%lx, IOAPIC %u at 0x%lx "
            "(GSI %u), 8259s %s\n",
            p->rsdp_revision, p->table_count, p->lapic, p->ioapic_id, p->ioapic,
            p->ioapic_gsi_base, p->has_8259 ? "present" : "absent");
    for (size_t i = 0; i < p->override_count; i++)
        kprintf("acpi: IRQ %u -> GSI %u, flags 0x%x\n", p->overrides[i].irq,
                p->overrides[i].gsi, p->overrides[i].flags);
}

static void print_date(void)
{
    const struct limine_date_at_boot_response *date = boot_date();
    int64_t rtc = clock_rtc_unix();

    kprintf("rtc: %ld (UNIX seconds)%s\n", rtc,
            date == NULL ? "" : (date->timestamp == rtc ? ", as the loader said"
                                                        : ", NOT the loader's date"));
}

bool platform_init(paddr_t rsdp)
{
    int status = acpi_init(rsdp);
    const struct acpi_platform *p = acpi_platform();

    if (status != ACPI_OK) {
        kprintf("acpi: %s; no APIC, timer or clock\n", acpi_status_name(status));
        return false;
    }
    print_madt(p);
    status = apic_init(p);
    if (status != APIC_OK) {
        kprintf("apic: cannot set up (%d); no timer\n", status);
        return false;
    }
    print_date();
    if (clock_init(p->hpet))
        kprintf("hpet: 0x%lx, period %lu fs\n", p->hpet, clock_hpet_period_fs());
    if (timer_calibrate() != TIMER_OK) {
        kprintf("timer: IRQ0 cannot reach this CPU; no timer\n");
        return false;
    }
    kprintf("timer: local APIC timer %lu Hz, TSC %lu Hz (against the PIT)\n",
            timer_lapic_hz(), timer_tsc_hz());
    return true;
}
