/*
 * timer.c - local APIC timer calibration and the periodic tick.
 *
 * Owns: the LVT timer entry, divide and counts; the calibration wait.
 * Does not own: routing IRQ0 (apic.c), the IDT (idt.c).
 *
 * Calibration: the PIT's channel 0 in mode 0 (interrupt on terminal count)
 * raises IRQ0 after PIT_COUNT clocks of 1,193,182 Hz; meanwhile the local
 * APIC timer counts down from its maximum and the TSC counts up. The CPU
 * waits in hlt, so an emulator that skips halted time spends nothing.
 */
#include "dev/timer.h"

#include "arch/x86_64/io.h"
#include "dev/apic.h"

#define PIT_HZ 1193182u
#define PIT_COUNT 11932u /* 10 ms */
#define PIT_CHANNEL0 0x40
#define PIT_COMMAND 0x43
#define PIT_CH0_MODE0_LOHI 0x30
#define LVT_MASKED (1u << 16)
#define LVT_PERIODIC (1u << 17)
#define DIVIDE_BY_1 0xb

static uint64_t lapic_hz, tsc_hz;
static volatile uint64_t ticks;
static volatile bool pit_fired;
static interrupt_handler_t tick_function;

static inline uint64_t rdtsc(void)
{
    uint32_t lo, hi;

    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return (uint64_t)hi << 32 | lo;
}

static void on_pit(struct interrupt_frame *frame)
{
    (void)frame;
    pit_fired = true;
    apic_eoi();
}

static void on_tick(struct interrupt_frame *frame)
{
    ticks++;
    apic_eoi(); /* first: the tick function may switch away (the scheduler's) */
    if (tick_function != NULL)
        tick_function(frame);
}

int timer_calibrate(void)
{
    uint64_t tsc_start, tsc_end;
    uint32_t remaining;

    idt_set_handler(TIMER_PIT_VECTOR, on_pit);
    if (apic_route_isa(0, TIMER_PIT_VECTOR) != APIC_OK)
        return TIMER_NO_PIT;
    pit_fired = false;
    lapic_write(LAPIC_LVT_TIMER, LVT_MASKED);
    lapic_write(LAPIC_TIMER_DIVIDE, DIVIDE_BY_1);
    outb(PIT_COMMAND, PIT_CH0_MODE0_LOHI);
    outb(PIT_CHANNEL0, PIT_COUNT & 0xff);
    outb(PIT_CHANNEL0, PIT_COUNT >> 8); /* the count starts here */
    lapic_write(LAPIC_TIMER_INITIAL, 0xffffffffu);
    tsc_start = rdtsc();
    while (!pit_fired)
        __asm__ volatile("sti; hlt; cli" : : : "memory");
    remaining = lapic_read(LAPIC_TIMER_CURRENT);
    tsc_end = rdtsc();
    apic_mask_isa(0);
    lapic_write(LAPIC_TIMER_INITIAL, 0);
    lapic_hz = (uint64_t)(0xffffffffu - remaining) * PIT_HZ / PIT_COUNT;
    tsc_hz = (tsc_end - tsc_start) * PIT_HZ / PIT_COUNT;
    return TIMER_OK;
}

uint64_t timer_lapic_hz(void)
{
    return lapic_hz;
}

uint64_t timer_tsc_hz(void)
{
    return tsc_hz;
}

int timer_start(uint32_t hz, interrupt_handler_t fn)
{
    if (lapic_hz == 0)
        return TIMER_NOT_CALIBRATED;
    tick_function = fn;
    ticks = 0;
    idt_set_handler(TIMER_VECTOR, on_tick);
    lapic_write(LAPIC_TIMER_DIVIDE, DIVIDE_BY_1);
    lapic_write(LAPIC_LVT_TIMER, LVT_PERIODIC | TIMER_VECTOR);
    lapic_write(LAPIC_TIMER_INITIAL, (uint32_t)(lapic_hz / hz));
    return TIMER_OK;
}

void timer_stop(void)
{
    lapic_write(LAPIC_LVT_TIMER, LVT_MASKED);
    lapic_write(LAPIC_TIMER_INITIAL, 0);
}

uint64_t timer_ticks(void)
{
    return ticks;
}
