#define _GNU_SOURCE
/* The clock, sleeping, random bytes, identity and limits: only what is the same everywhere
 * is printed (the clock moves forward, a sleep of 50 ms moves CLOCK_MONOTONIC at least that
 * far, getrandom gives what was asked, the stack limit is 8 MiB). */
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

static long long ns(clockid_t id)
{
    struct timespec ts;

    clock_gettime(id, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(void)
{
    long long t0 = ns(CLOCK_MONOTONIC), r0 = ns(CLOCK_REALTIME);
    struct timespec nap = {0, 50 * 1000 * 1000};

    nanosleep(&nap, NULL);
    long long t1 = ns(CLOCK_MONOTONIC);
    printf("monotonic moved at least 50 ms: %d\n", t1 - t0 >= 50000000LL);
    printf("realtime after 2020: %d\n", r0 > 1577836800LL * 1000000000LL);
    printf("time() agrees: %d\n", (long long)time(NULL) - r0 / 1000000000LL <= 2);
    unsigned char rnd[100];
    printf("getrandom %zd\n", getrandom(rnd, sizeof(rnd), 0));
    struct utsname u;
    uname(&u);
    printf("uname %s %s\n", u.sysname, u.machine);
    struct rlimit rl;
    getrlimit(RLIMIT_STACK, &rl);
    printf("stack limit %lu\n", (unsigned long)rl.rlim_cur);
    cpu_set_t set;
    printf("affinity %d cpus>0 %d\n", sched_getaffinity(0, sizeof(set), &set), CPU_COUNT(&set) > 0);
    printf("yield %d\n", sched_yield());
    printf("pid positive %d, ppid >= 0 %d, tid is pid %d\n", getpid() > 0, getppid() >= 0,
           gettid() == getpid());
    printf("bad clock %d errno %d\n", clock_gettime(12345, &nap), errno);
    printf("bad timespec %d errno %d\n", nanosleep(&(struct timespec){0, 2000000000}, NULL), errno);
    return 0;
}
