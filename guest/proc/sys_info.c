/*
 * sys_info.c - the rest: uname, getrandom, futex.
 *
 * Owns: the machine's name (Linux 6.1 on x86_64, host "emu"), random
 * bytes from the seeded generator (random.h), and the futex operations a
 * single-threaded libc makes: FUTEX_WAKE wakes no one, FUTEX_WAIT on a
 * matching value sleeps (a timeout passes in virtual time), other
 * operations are -ENOSYS.
 * Does not own: the generator (random.c) or the clock (sys_time.c).
 */
#include "lib/errno.h"
#include "lib/string.h"
#include "mm/usercopy.h"
#include "proc/clock.h"
#include "proc/linux.h"
#include "proc/random.h"
#include "proc/sched.h"
#include "proc/syscall.h"

#define UTS_FIELD 65
#define GETRANDOM_MAX 33554431 /* Linux returns at most this per call */
#define GRND_NONBLOCK 1
#define GRND_RANDOM 2
#define GRND_INSECURE 4

SYSCALL(uname)
{
    static const char *const fields[6] = {"Linux", "emu", "6.1.0-emu", "#1 SMP emu",
                                          "x86_64", "(none)"};
    char uts[6][UTS_FIELD];

    memset(uts, 0, sizeof(uts));
    for (int i = 0; i < 6; i++)
        memcpy(uts[i], fields[i], strlen(fields[i]));
    return copy_to_user(a[0], uts, sizeof(uts));
}

SYSCALL(getrandom)
{
    uint8_t chunk[256];
    uint64_t n = a[1] < GETRANDOM_MAX ? a[1] : GETRANDOM_MAX, done = 0;

    if (a[2] & ~(uint64_t)(GRND_NONBLOCK | GRND_RANDOM | GRND_INSECURE))
        return -EINVAL;
    while (done < n) {
        uint64_t k = n - done < sizeof(chunk) ? n - done : sizeof(chunk);

        random_fill(chunk, k);
        if (copy_to_user(a[0] + done, chunk, k) != 0)
            return done > 0 ? (int64_t)done : -EFAULT;
        done += k;
    }
    return (int64_t)n;
}

SYSCALL(futex)
{
    uint32_t value;

    switch (a[1] & ~(uint64_t)(FUTEX_PRIVATE_FLAG | FUTEX_CLOCK_REALTIME)) {
    case FUTEX_WAKE:
    case FUTEX_WAKE_BITSET:
        wakeup((const void *)a[0]);
        return 0;
    case FUTEX_WAIT:
    case FUTEX_WAIT_BITSET:
        if (copy_from_user(&value, a[0], sizeof(value)) != 0)
            return -EFAULT;
        if (value != (uint32_t)a[2])
            return -EAGAIN;
        if (a[3] != 0) {
            struct linux_timespec ts;

            if (copy_from_user(&ts, a[3], sizeof(ts)) != 0)
                return -EFAULT;
            clock_skip((uint64_t)ts.sec * NS_PER_SECOND + (uint64_t)ts.nsec);
            return -ETIMEDOUT;
        }
        return sleep_on((const void *)a[0]) == SLEEP_INTERRUPTED ? -EINTR : 0;
    default:
        return -ENOSYS;
    }
}
