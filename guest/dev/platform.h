/*
 * platform.h - bringing up the PC platform the ACPI tables describe.
 *
 * Owns: the order (tables, APICs, clocks, timer calibration) and the boot
 * report lines about them.
 * Does not own: any device's programming (acpi.c, apic.c, clock.c, timer.c).
 */
#ifndef PLATFORM_H
#define PLATFORM_H

#include "lib/types.h"

/* After mm_init: reads the tables at rsdp (0: none, then nothing else is
 * done), sets up the APICs, the HPET clock and the calibrated timer.
 * true if the timer can be started. */
bool platform_init(paddr_t rsdp);

#endif
