/*
 * clock.h - the time processes see: virtual, deterministic.
 *
 * Owns: the date at boot (from the loader, saved before mm_init), the
 * time since boot (the TSC, which the emulator advances by one per
 * instruction, at the rate CPUID leaf 0x15 reports: emu/hw/clock.py's
 * virtual instructions per second, 100 MHz unless --ips says otherwise),
 * and the time sleeps skipped (nanosleep advances the clock instead of
 * waiting).
 * Does not own: any timer interrupt.
 */
#ifndef PROC_CLOCK_H
#define PROC_CLOCK_H

#include "lib/types.h"

#define CLOCK_DEFAULT_TSC_HZ 100000000ULL /* without CPUID leaf 0x15 */
#define NS_PER_SECOND 1000000000ULL

/* Remembers the loader's date at boot; call before mm_init. */
void clock_save_boot_date(void);

/* Nanoseconds since boot. */
uint64_t clock_monotonic_ns(void);

/* Seconds since the epoch at boot. */
int64_t clock_boot_epoch(void);

/* Moves the clock forward by ns (a sleep). */
void clock_skip(uint64_t ns);

#endif
