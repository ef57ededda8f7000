/*
 * sys_time.c - the clock and the time system calls: clock_gettime,
 * clock_getres, gettimeofday, time, nanosleep, clock_nanosleep.
 *
 * Owns: clock.h's virtual clock and the calls' Linux rules (clock ids,
 * EINVAL for a bad timespec, TIMER_ABSTIME). A sleep yields the CPU and
 * moves the clock, so it takes no host time and the run stays
 * reproducible.
 * Does not own: the TSC (the emulator's) or the boot date (the loader's).
 */
#include "boot/boot.h"
#include "lib/errno.h"
#include "mm/usercopy.h"
#include "proc/clock.h"
#include "proc/linux.h"
#include "proc/sched.h"
#include "proc/syscall.h"

static int64_t boot_epoch;
static uint64_t skipped_ns;
static uint64_t tsc_hz = CLOCK_DEFAULT_TSC_HZ;

static void cpuid(uint32_t leaf, uint32_t r[4])
{
    r[0] = leaf;
    r[2] = 0;
    __asm__ volatile("cpuid" : "+a"(r[0]), "=b"(r[1]), "+c"(r[2]), "=d"(r[3]));
}

/* The TSC's rate from CPUID leaf 0x15 (Intel SDM vol. 3, 19.7.3: crystal Hz in ECX times
 * EBX / EAX), when the CPU reports it. */
static void find_tsc_rate(void)
{
    uint32_t r[4];

    cpuid(0, r);
    if (r[0] < 0x15)
        return;
    cpuid(0x15, r);
    if (r[0] != 0 && r[1] != 0 && r[2] != 0)
        tsc_hz = (uint64_t)r[2] * r[1] / r[0];
}

void clock_save_boot_date(void)
{
    const struct limine_date_at_boot_response *date = boot_date();

    boot_epoch = date != NULL ? date->timestamp : 0;
    find_tsc_rate();
}

static uint64_t rdtsc(void)
{
    uint32_t lo, hi;

    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return ((uint64_t)hi << 32) | lo;
}

uint64_t clock_monotonic_ns(void)
{
    uint64_t ticks = rdtsc();

    return ticks / tsc_hz * NS_PER_SECOND + ticks % tsc_hz * NS_PER_SECOND / tsc_hz + skipped_ns;
}

int64_t clock_boot_epoch(void)
{
    return boot_epoch;
}

void clock_skip(uint64_t ns)
{
    skipped_ns += ns;
}

/* The time of clock id in ns; -EINVAL for an unknown clock. */
static int64_t clock_ns(uint64_t id, uint64_t *ns)
{
    switch (id) {
    case CLOCK_REALTIME:
    case CLOCK_REALTIME_COARSE:
        *ns = (uint64_t)boot_epoch * NS_PER_SECOND + clock_monotonic_ns();
        return 0;
    case CLOCK_MONOTONIC:
    case CLOCK_MONOTONIC_RAW:
    case CLOCK_MONOTONIC_COARSE:
    case CLOCK_BOOTTIME:
    case CLOCK_PROCESS_CPUTIME_ID:
    case CLOCK_THREAD_CPUTIME_ID:
        *ns = clock_monotonic_ns();
        return 0;
    default:
        return -EINVAL;
    }
}

SYSCALL(clock_gettime)
{
    uint64_t ns;
    struct linux_timespec ts;
    int64_t status = clock_ns(a[0], &ns);

    if (status != 0)
        return status;
    ts.sec = (int64_t)(ns / NS_PER_SECOND);
    ts.nsec = (int64_t)(ns % NS_PER_SECOND);
    return copy_to_user(a[1], &ts, sizeof(ts));
}

SYSCALL(clock_getres)
{
    uint64_t ns;
    struct linux_timespec res = {.sec = 0, .nsec = 1};
    int64_t status = clock_ns(a[0], &ns);

    if (status != 0 || a[1] == 0)
        return status;
    return copy_to_user(a[1], &res, sizeof(res));
}

SYSCALL(gettimeofday)
{
    uint64_t ns = (uint64_t)boot_epoch * NS_PER_SECOND + clock_monotonic_ns();
    int64_t tv[2] = {(int64_t)(ns / NS_PER_SECOND), (int64_t)(ns % NS_PER_SECOND / 1000)};
    static const int32_t zone[2];

    if (a[0] != 0 && copy_to_user(a[0], tv, sizeof(tv)) != 0)
        return -EFAULT;
    if (a[1] != 0 && copy_to_user(a[1], zone, sizeof(zone)) != 0)
        return -EFAULT;
    return 0;
}

SYSCALL(time)
{
    int64_t now = boot_epoch + (int64_t)(clock_monotonic_ns() / NS_PER_SECOND);

    if (a[0] != 0 && copy_to_user(a[0], &now, sizeof(now)) != 0)
        return -EFAULT;
    return now;
}

/* Sleeps ns: the clock moves on, others may run. */
static int64_t sleep_ns(uint64_t ns)
{
    clock_skip(ns);
    sched_yield();
    return 0;
}

static int64_t read_timespec(vaddr_t at, uint64_t *ns)
{
    struct linux_timespec ts;

    if (copy_from_user(&ts, at, sizeof(ts)) != 0)
        return -EFAULT;
    if (ts.sec < 0 || ts.nsec < 0 || (uint64_t)ts.nsec >= NS_PER_SECOND)
        return -EINVAL;
    *ns = (uint64_t)ts.sec * NS_PER_SECOND + (uint64_t)ts.nsec;
    return 0;
}

SYSCALL(nanosleep)
{
    uint64_t ns;
    int64_t status = read_timespec(a[0], &ns);

    return status != 0 ? status : sleep_ns(ns);
}

SYSCALL(clock_nanosleep)
{
    uint64_t ns, now;
    int64_t status = clock_ns(a[0], &now);

    if (status != 0)
        return status;
    status = read_timespec(a[2], &ns);
    if (status != 0)
        return status;
    if (a[1] & TIMER_ABSTIME)
        ns = ns > now ? ns - now : 0;
    return sleep_ns(ns);
}
