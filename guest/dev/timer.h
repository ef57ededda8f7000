/*
 * timer.h - the kernel tick on the local APIC timer, and the TSC rate.
 *
 * Owns: calibrating the local APIC timer and the TSC against the PIT (one
 * 10 ms wait, spent in hlt), the periodic tick interrupt, the tick count and
 * the function called on every tick (the scheduler's).
 * Does not own: the local APIC (apic.c), the PIT beyond that one wait, what
 * a tick means.
 */
#ifndef TIMER_H
#define TIMER_H

#include "arch/x86_64/idt.h"
#include "lib/types.h"

#define TIMER_VECTOR 0x30       /* the periodic tick */
#define TIMER_PIT_VECTOR 0x31   /* the PIT's one interrupt during calibration */

enum timer_status {
    TIMER_OK = 0,
    TIMER_NO_PIT = -1,          /* IRQ0 cannot be routed to this CPU */
    TIMER_NOT_CALIBRATED = -2,  /* timer_start before timer_calibrate */
};

/* Measures the local APIC timer's input clock and the TSC against 10 ms of
 * the PIT. Needs apic_init; leaves interrupts disabled, IRQ0 masked. */
int timer_calibrate(void);

uint64_t timer_lapic_hz(void); /* after timer_calibrate; 0 before */
uint64_t timer_tsc_hz(void);

/* Starts the periodic tick at hz (the local APIC timer, divide by 1);
 * on_tick (may be NULL) runs on each, in interrupt context, after the EOI
 * (so it may switch to another stack and come back much later). Interrupts
 * are left as they were: the caller enables them. */
int timer_start(uint32_t hz, interrupt_handler_t on_tick);

/* Stops the tick (masks the LVT entry). */
void timer_stop(void);

/* Ticks since timer_start. */
uint64_t timer_ticks(void);

#endif
