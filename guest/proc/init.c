/*
 * init.c - running the program the command line names, to its end.
 *
 * Owns: proc_init (everything processes need, in order), reading the
 * command line's program (init=PATH, its arguments after "--", env=NAME=VALUE
 * words, argv0=NAME, seed=N), starting it as pid 1 with the host's
 * streams as descriptors 0, 1 and 2, the rate of the tick that preempts
 * processes (preempt_hz=N, when the platform has a timer), running the
 * scheduler until every process is gone, checking that the PMM is back at
 * its baseline, and reporting the first process's wait status to the host.
 * Does not own: processes (proc.c), programs (exec.c), the host channel
 * (dev/hostio.c).
 *
 * Command-line words are split at spaces and tabs; inside a word \xHH
 * stands for the byte 0xHH, so any argument can be passed (emu exec
 * escapes spaces, tabs, backslashes and bytes outside printable ASCII).
 */
#include "proc/init.h"

#include "boot/boot.h"
#include "boot/cmdline.h"
#include "dev/hostio.h"
#include "dev/serial.h"
#include "dev/timer.h"
#include "fs/fdtable.h"
#include "heap/heap.h"
#include "lib/errno.h"
#include "lib/panic.h"
#include "lib/string.h"
#include "mm/frames.h"
#include "mm/swap.h"
#include "proc/exec.h"
#include "proc/random.h"
#include "proc/sched.h"
#include "proc/syscall.h"
#include "proc/trap.h"
#include "test/checkpoint.h"

#define PREEMPT_HZ 100         /* a slice of 10 ms of virtual time, as Linux's HZ=100 */
#define PREEMPT_HZ_MAX 100000  /* a tick every 1,000 instructions at the default rate */

#define INIT_WORDS_MAX 256
#define EXIT_NOT_FOUND 127 /* as a shell reports a command it cannot find */
#define EXIT_CANNOT_RUN 126

struct init_line {
    char *buffer;
    const char *path;
    char *argv[INIT_WORDS_MAX + 1];
    char *envp[INIT_WORDS_MAX + 1];
    size_t argc;
    size_t envc;
    uint64_t seed;
};

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Replaces each \xHH of word by its byte, in place. */
static void unescape(char *word)
{
    char *out = word;

    for (const char *in = word; *in != '\0'; in++) {
        if (in[0] == '\\' && in[1] == 'x' && hex_digit(in[2]) >= 0 && hex_digit(in[3]) >= 0) {
            *out++ = (char)(hex_digit(in[2]) * 16 + hex_digit(in[3]));
            in += 3;
        } else {
            *out++ = *in;
        }
    }
    *out = '\0';
}

static uint64_t decimal(const char *s)
{
    uint64_t v = 0;

    while (*s >= '0' && *s <= '9')
        v = v * 10 + (uint64_t)(*s++ - '0');
    return v;
}

/* One option word before "--". */
static void option(struct init_line *l, char *word)
{
    if (strncmp(word, "init=", 5) == 0) {
        unescape(word + 5);
        l->path = word + 5;
    } else if (strncmp(word, "env=", 4) == 0 && l->envc < INIT_WORDS_MAX) {
        unescape(word + 4);
        l->envp[l->envc++] = word + 4;
    } else if (strncmp(word, "argv0=", 6) == 0) {
        unescape(word + 6);
        l->argv[0] = word + 6;
    } else if (strncmp(word, "seed=", 5) == 0) {
        l->seed = decimal(word + 5);
    }
}

static void parse(struct init_line *l)
{
    const char *line = boot_cmdline();
    size_t len = strlen(line);
    bool arguments = false;
    char *p;

    memset(l, 0, sizeof(*l));
    l->buffer = kmalloc(len + 1);
    if (l->buffer == NULL)
        panic("init: no memory for the command line");
    memcpy(l->buffer, line, len + 1);
    l->argc = 1;
    for (p = l->buffer; *p != '\0';) {
        char *word;

        while (*p == ' ' || *p == '\t')
            p++;
        if (*p == '\0')
            break;
        word = p;
        while (*p != '\0' && *p != ' ' && *p != '\t')
            p++;
        if (*p != '\0')
            *p++ = '\0';
        if (!arguments && strcmp(word, "--") == 0) {
            arguments = true;
        } else if (!arguments) {
            option(l, word);
        } else if (l->argc < INIT_WORDS_MAX) {
            unescape(word);
            l->argv[l->argc++] = word;
        }
    }
    if (l->argv[0] == NULL)
        l->argv[0] = (char *)l->path;
}

void proc_init(void)
{
    uframes_init();
    swap_init();
    vmm_kernel_range_prepare(HEAP_BASE, HEAP_END);
    proc_describe();
    syscall_init();
    trap_init();
    file_set_wakeup(wakeup);
}

/* Descriptors 0, 1, 2: the host's streams. */
static void host_streams(struct proc *p)
{
    static const uint32_t modes[3] = {O_RDONLY, O_WRONLY, O_WRONLY};

    p->fds = fdtable_create();
    if (p->fds == NULL)
        panic("init: no memory for a descriptor table");
    for (int fd = 0; fd < 3; fd++) {
        struct file *f = file_host((enum hostio_stream)fd, modes[fd]);

        if (f == NULL || fd_install(p->fds, f, fd, FD_KEEP_ON_EXEC) != fd)
            panic("init: no memory for descriptor %d", fd);
    }
}

static void finish(uint32_t wait_status)
{
    if (hostio_present())
        hostio_exit(wait_status);
    kprintf("init: exited with wait status 0x%x\n", wait_status);
    kernel_exit(EXIT_OK);
}

/* Starts the first process; false (reported) if its program cannot run. */
static bool start(const struct init_line *l)
{
    struct proc *p = proc_alloc(0);
    struct exec_args args;
    struct exec_image image;
    int status;

    if (p == NULL)
        panic("init: no memory for the first process");
    status = exec_args_from_kernel(l->path, l->argv, (char *const *)l->envp, &args);
    if (status == 0) {
        status = exec_load(&args, p->stack_limit, &image);
        if (status == 0) {
            host_streams(p);
            exec_commit(p, &args, &image);
            proc_start(p);
            proc_trace(p, TRACE_PROC_START);
        }
        exec_args_free(&args);
    }
    if (status == 0)
        return true;
    kreport("init: cannot run %s (error %d)\n", l->path, -status);
    kfree(p->kstack);
    memset(p, 0, sizeof(*p));
    finish(WAIT_EXITED(status == -ENOENT ? EXIT_NOT_FOUND : EXIT_CANNOT_RUN));
    return false;
}

/* The rate of the tick that preempts processes: preempt_hz=N (default
 * PREEMPT_HZ), 0 for none, also when the platform gave the kernel no
 * calibrated timer. Read before anything runs: a bad value panics. */
static uint32_t preempt_hz(void)
{
    uint64_t hz = cmdline_u64("preempt_hz", PREEMPT_HZ);

    if (hz > PREEMPT_HZ_MAX)
        panic("init: preempt_hz=%lu is more than %u", hz, PREEMPT_HZ_MAX);
    return timer_lapic_hz() != 0 ? (uint32_t)hz : 0;
}

NORETURN void proc_main(void)
{
    struct init_line line;
    uint64_t baseline, after;
    uint32_t hz = preempt_hz();

    parse(&line);
    if (line.path == NULL || line.path[0] == '\0')
        panic("init: the command line says init= without a program");
    random_seed(line.seed);
    proc_init();
    baseline = proc_frames_measure();
    proc_descriptor.baseline_frames = baseline;
    if (start(&line))
        checkpoint(CHECKPOINT_INIT_STARTED); /* failures from here are no longer boot's */
    kfree(line.buffer);
    sched_preempt(hz);
    sched_run();
    after = proc_frames_measure();
    proc_descriptor.final_frames = after;
    checkpoint(CHECKPOINT_PROCS_DONE);
    if (after != baseline)
        kreport("proc: %ld frames did not come back after the last process (baseline %lu, "
                "now %lu)\n", (int64_t)(baseline - after), baseline, after);
    swap_report();
    finish(proc_descriptor.init_status);
    kernel_exit(EXIT_OK);
}
