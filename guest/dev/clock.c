/*
 * clock.c - the CMOS RTC (MC146818A registers) and the HPET main counter
 * (IA-PC HPET 1.0a, 2.3).
 *
 * Owns: the RTC read protocol and the date conversion; the HPET's general
 * configuration enable bit and its counter.
 * Does not own: RTC interrupts, HPET comparators.
 */
#include "dev/clock.h"

#include "arch/x86_64/io.h"
#include "dev/apic.h"

#define CMOS_INDEX 0x70
#define CMOS_DATA 0x71
#define RTC_SECONDS 0x00
#define RTC_MINUTES 0x02
#define RTC_HOURS 0x04
#define RTC_DAY 0x07
#define RTC_MONTH 0x08
#define RTC_YEAR 0x09
#define RTC_STATUS_A 0x0a
#define RTC_STATUS_B 0x0b
#define RTC_CENTURY 0x32 /* the FADT's CENTURY field names this register */
#define STATUS_A_UPDATING 0x80
#define STATUS_B_24_HOUR 0x02
#define STATUS_B_BINARY 0x04
#define HOUR_PM 0x80
#define RTC_TRIES 100000

#define HPET_CAPABILITIES 0x000
#define HPET_CONFIG 0x010
#define HPET_COUNTER 0x0f0
#define HPET_ENABLE 1u

static volatile uint64_t *hpet;
static uint64_t hpet_period_fs, hpet_start;

static uint8_t cmos_read(uint8_t reg)
{
    outb(CMOS_INDEX, reg);
    return inb(CMOS_DATA);
}

struct rtc_time {
    uint8_t second, minute, hour, day, month, year, century;
};

static void rtc_read_raw(struct rtc_time *t)
{
    t->second = cmos_read(RTC_SECONDS);
    t->minute = cmos_read(RTC_MINUTES);
    t->hour = cmos_read(RTC_HOURS);
    t->day = cmos_read(RTC_DAY);
    t->month = cmos_read(RTC_MONTH);
    t->year = cmos_read(RTC_YEAR);
    t->century = cmos_read(RTC_CENTURY);
}

static uint8_t from_bcd(uint8_t value)
{
    return (uint8_t)((value >> 4) * 10 + (value & 0xf));
}

/* Days from 1970-01-01 to year-month-day (proleptic Gregorian). */
static int64_t days_from_civil(int64_t year, unsigned month, unsigned day)
{
    year -= month <= 2;
    int64_t era = (year >= 0 ? year : year - 399) / 400;
    unsigned yoe = (unsigned)(year - era * 400);
    unsigned doy = (153 * (month + (month > 2 ? -3 : 9)) + 2) / 5 + day - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static void rtc_to_binary(struct rtc_time *t, uint8_t status_b)
{
    bool pm = (t->hour & HOUR_PM) != 0;

    t->hour &= (uint8_t)~HOUR_PM;
    if (!(status_b & STATUS_B_BINARY)) {
        uint8_t *fields[] = {&t->second, &t->minute, &t->hour, &t->day,
                             &t->month, &t->year, &t->century};
        for (size_t i = 0; i < ARRAY_SIZE(fields); i++)
            *fields[i] = from_bcd(*fields[i]);
    }
    if (!(status_b & STATUS_B_24_HOUR))
        t->hour = (uint8_t)(t->hour % 12 + (pm ? 12 : 0));
}

/* Reads the time outside an update: two equal reads in a row are consistent. */
static bool rtc_read_settled(struct rtc_time *out)
{
    struct rtc_time again;

    for (int tries = 0; tries < RTC_TRIES; tries++) {
        if (cmos_read(RTC_STATUS_A) & STATUS_A_UPDATING)
            continue;
        rtc_read_raw(out);
        rtc_read_raw(&again);
        if (out->second == again.second && out->minute == again.minute &&
            out->hour == again.hour && out->day == again.day &&
            out->month == again.month && out->year == again.year)
            return true;
    }
    return false;
}

int64_t clock_rtc_unix(void)
{
    struct rtc_time t;

    if (!rtc_read_settled(&t))
        return -1;
    rtc_to_binary(&t, cmos_read(RTC_STATUS_B));
    int64_t year = (int64_t)(t.century ? t.century : 20) * 100 + t.year;
    return days_from_civil(year, t.month, t.day) * 86400 + t.hour * 3600 + t.minute * 60 +
           t.second;
}

bool clock_init(paddr_t hpet_pa)
{
    if (hpet_pa == 0)
        return false;
    hpet = apic_map_device(hpet_pa, 0x400);
    if (hpet == NULL)
        return false;
    hpet_period_fs = hpet[HPET_CAPABILITIES / 8] >> 32;
    hpet[HPET_CONFIG / 8] |= HPET_ENABLE;
    hpet_start = hpet[HPET_COUNTER / 8];
    return hpet_period_fs != 0;
}

uint64_t clock_ns(void)
{
    if (hpet == NULL)
        return 0;
    uint64_t count = hpet[HPET_COUNTER / 8] - hpet_start;
    /* count * period / 10^6 without overflow for the counts of a long run */
    return count / 1000000 * hpet_period_fs + count % 1000000 * hpet_period_fs / 1000000;
}

uint64_t clock_hpet_period_fs(void)
{
    return hpet_period_fs;
}
