/*
 * proc.c - processes (see proc.h).
 *
 * Owns: the process table, pids, the kernel stack of each process and the
 * first frames on it, fork, exit (teardown in a fixed order: address space,
 * descriptors, children handed on, parent woken), wait and reaping, and
 * proc_descriptor.
 * Does not own: scheduling (sched.c), the image a process runs (exec.c),
 * signal rules (signal.c).
 *
 * Children of an exiting process go to the first process (pid 1) while it
 * lives, else to the kernel, which reaps them (sched.c). When the first
 * process exits every other process gets SIGKILL: the program emu was
 * asked to run is over.
 */
#include "proc/proc.h"

#include "arch/x86_64/fpu.h"
#include "arch/x86_64/io.h"
#include "heap/heap.h"
#include "lib/errno.h"
#include "lib/panic.h"
#include "lib/string.h"
#include "mm/frames.h"
#include "mm/pmm.h"
#include "proc/sched.h"
#include "proc/signal.h"
#include "proc/trace.h"
#include "test/checkpoint.h"
#include "test/planted.h"

#define INIT_PID 1

struct proc_descriptor proc_descriptor;
static struct proc table[PROC_MAX] ALIGNED(64);
static uint32_t next_pid = INIT_PID;
static uint8_t clean_fpu[FPU_STATE_SIZE] ALIGNED(16);

struct proc *proc_slot(size_t i)
{
    return &table[i];
}

struct proc *proc_by_pid(uint32_t pid)
{
    for (size_t i = 0; i < PROC_MAX && pid != 0; i++) {
        if (table[i].state != PROC_FREE && table[i].pid == pid)
            return &table[i];
    }
    return NULL;
}

uint64_t proc_frames_measure(void)
{
    return pmm_free_count() + heap_descriptor.pages + vmm_table_frames();
}

void proc_set_name(struct proc *p, const char *path)
{
    size_t n = strlen(path);

    if (n >= PROC_NAME_MAX)
        n = PROC_NAME_MAX - 1;
    memcpy(p->name, path, n);
    p->name[n] = '\0';
}

void proc_describe(void)
{
    struct uframe_layout refs = uframe_layout();

    fpu_init(clean_fpu);
    proc_descriptor.version = PROC_DESCRIPTOR_VERSION;
    proc_descriptor.proc_max = PROC_MAX;
    proc_descriptor.proc_stride = sizeof(struct proc);
    proc_descriptor.procs = (vaddr_t)table;
    proc_descriptor.frame_refs = (vaddr_t)refs.dir;
    proc_descriptor.frame_ref_chunks = refs.chunks;
    proc_descriptor.frames_per_chunk = UFRAME_CHUNK_FRAMES;
    proc_descriptor.user_end = VMM_USER_END;
    proc_descriptor.magic = PROC_DESCRIPTOR_MAGIC;
}

/* ---- Creating ----------------------------------------------------------------------- */

struct proc *proc_alloc(uint32_t ppid)
{
    for (size_t i = 0; i < PROC_MAX; i++) {
        struct proc *p = &table[i];

        if (p->state != PROC_FREE)
            continue;
        memset(p, 0, sizeof(*p));
        p->kstack = kmalloc(KSTACK_SIZE);
        if (p->kstack == NULL)
            return NULL;
        p->pid = next_pid++;
        p->ppid = ppid;
        p->state = PROC_SLEEPING; /* not runnable until proc_start */
        p->frame = (struct interrupt_frame *)(p->kstack + KSTACK_SIZE) - 1;
        p->stack_limit = AS_STACK_LIMIT;
        memcpy(p->fpu, clean_fpu, FPU_STATE_SIZE);
        return p;
    }
    return NULL;
}

void proc_reset_user_state(struct proc *p)
{
    memcpy(p->fpu, clean_fpu, FPU_STATE_SIZE);
    p->fs_base = p->gs_base = 0;
    if (p == proc_current()) {
        fxrstor(p->fpu);
        wrmsr(MSR_FS_BASE, 0);
        wrmsr(MSR_GS_BASE, 0);
    }
}

void proc_start(struct proc *p)
{
    uint64_t *sp = (uint64_t *)p->frame;

    *--sp = (uint64_t)proc_enter_user;
    for (int i = 0; i < 6; i++) /* rbp, rbx, r12-r15 of switch_context */
        *--sp = 0;
    p->kctx_rsp = (uint64_t)sp;
    sched_add(p);
}

/* Releases a process that never ran (fork failed half-way). */
static void proc_discard(struct proc *p)
{
    if (p->as != NULL)
        as_destroy(p->as);
    if (p->fds != NULL)
        fdtable_destroy(p->fds);
    kfree(p->kstack);
    memset(p, 0, sizeof(*p));
}

static void trace_event(const struct proc *p, enum trace_proc_event event)
{
    struct trace_proc r;

    memset(&r, 0, sizeof(r));
    r.pid = p->pid;
    r.event = event;
    r.ppid = p->ppid;
    r.wait_status = p->wait_status;
    r.peak_rss_pages = p->as != NULL ? p->as->peak_rss_pages : p->peak_rss_pages;
    r.syscalls = p->syscalls;
    memcpy(r.faults, p->as != NULL ? p->as->faults : p->faults, sizeof(r.faults));
    memcpy(r.name, p->name, sizeof(r.name));
    trace_proc(&r);
}

void proc_trace(const struct proc *p, enum trace_proc_event event)
{
    trace_event(p, event);
}

int64_t proc_fork(struct interrupt_frame *frame)
{
    struct proc *parent = proc_current();
    struct proc *child = proc_alloc(parent->pid);

    if (child == NULL)
        return -EAGAIN;
    child->as = as_fork(parent->as);
    child->fds = fdtable_clone(parent->fds);
    if (child->as == NULL || child->fds == NULL) {
        proc_discard(child);
        return -ENOMEM;
    }
    *child->frame = *frame;
    child->frame->rax = 0;
    fxsave(child->fpu); /* the parent's live registers */
    child->signals = parent->signals;
    child->signals.pending = 0;
    child->fs_base = parent->fs_base;
    child->gs_base = parent->gs_base;
    child->stack_limit = parent->stack_limit;
    memcpy(child->name, parent->name, sizeof(child->name));
    proc_start(child);
    trace_event(child, TRACE_PROC_START);
    return child->pid;
}

/* ---- Ending ------------------------------------------------------------------------------ */

static bool init_alive(void)
{
    struct proc *init = proc_by_pid(INIT_PID);

    return init != NULL && init->state != PROC_ZOMBIE;
}

/* Hands p's children to the first process, or to the kernel. */
static void reparent_children(const struct proc *p)
{
    uint32_t heir = init_alive() && p->pid != INIT_PID ? INIT_PID : 0;

    for (size_t i = 0; i < PROC_MAX; i++) {
        struct proc *c = &table[i];

        if (c->state == PROC_FREE || c->ppid != p->pid)
            continue;
        c->ppid = heir;
        if (c->state == PROC_ZOMBIE && heir != 0)
            wakeup(proc_by_pid(heir));
    }
}

static void kill_all_but(const struct proc *p)
{
    for (size_t i = 0; i < PROC_MAX; i++) {
        struct proc *q = &table[i];

        if (q != p && q->state != PROC_FREE && q->state != PROC_ZOMBIE)
            signal_send(q, SIGKILL);
    }
}

void proc_release_vfork(struct proc *p)
{
    if (p->vfork_parent != 0) {
        p->vfork_parent = 0;
        wakeup(&p->vfork_parent);
    }
}

NORETURN void proc_exit(uint32_t wait_status)
{
    struct proc *p = proc_current();
    struct proc *parent;

    if (p->pid == INIT_PID)
        kill_all_but(p);
    p->peak_rss_pages = p->as->peak_rss_pages;
    memcpy(p->faults, p->as->faults, sizeof(p->faults));
    as_deactivate();
#if PLANT_BUG != 304 /* planted bug 304: an exiting process keeps its address space */
    as_destroy(p->as);
#endif
    p->as = NULL;
    fdtable_destroy(p->fds);
    p->fds = NULL;
    reparent_children(p);
    proc_release_vfork(p);
    p->wait_status = wait_status;
    p->state = PROC_ZOMBIE;
    parent = proc_by_pid(p->ppid);
    if (parent != NULL)
        wakeup(parent);
    trace_event(p, TRACE_PROC_EXIT);
    sched_leave();
}

void proc_reap(struct proc *p)
{
    if (p->state != PROC_ZOMBIE || p->kstack != NULL)
        panic("proc_reap: %s[%u] is not a finished zombie", p->name, p->pid);
    if (p->pid == INIT_PID) {
        proc_descriptor.init_status = p->wait_status;
        proc_descriptor.init_done = 1;
    }
    memset(p, 0, sizeof(*p));
    proc_descriptor.reaped++;
    checkpoint(CHECKPOINT_PROC_REAPED);
}

/* A child of p matching pid (wait4's rules, one process group); *any says
 * whether some child matched at all. */
static struct proc *zombie_child(const struct proc *p, int64_t pid, bool *any)
{
    *any = false;
    for (size_t i = 0; i < PROC_MAX; i++) {
        struct proc *c = &table[i];

        if (c->state == PROC_FREE || c->ppid != p->pid || (pid > 0 && c->pid != pid))
            continue;
        *any = true;
        if (c->state == PROC_ZOMBIE && c->kstack == NULL)
            return c;
    }
    return NULL;
}

int64_t proc_wait(int64_t pid, int options, uint32_t *status)
{
    struct proc *p = proc_current();

    for (;;) {
        bool any;
        struct proc *c = zombie_child(p, pid, &any);

        if (c != NULL) {
            int64_t reaped = c->pid;

            *status = c->wait_status;
            proc_reap(c);
            return reaped;
        }
        if (!any)
            return -ECHILD;
        if (options & WNOHANG)
            return 0;
        if (sleep_on(p) == SLEEP_INTERRUPTED)
            return -EINTR;
    }
}
