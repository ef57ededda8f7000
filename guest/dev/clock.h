/*
 * clock.h - what time it is: the date from the CMOS RTC, and a monotonic
 * nanosecond clock from the HPET's main counter.
 *
 * Owns: reading the MC146818 RTC (waiting out an update, BCD and 12-hour
 * formats), enabling the HPET's main counter and converting its count.
 * Does not own: the HPET's comparators, timers (timer.c), the tables.
 */
#ifndef CLOCK_H
#define CLOCK_H

#include "lib/types.h"

/* The RTC's date and time as UNIX seconds (UTC), or -1 if it never settles. */
int64_t clock_rtc_unix(void);

/* Maps the HPET at physical hpet (0: none) and starts its main counter.
 * false without an HPET (clock_ns then returns 0). */
bool clock_init(paddr_t hpet);

/* Nanoseconds since clock_init, from the HPET. */
uint64_t clock_ns(void);

/* The HPET's counter period in femtoseconds (0 without one). */
uint64_t clock_hpet_period_fs(void);

#endif
