/*
 * signal.c - signal rules (see signal.h).
 *
 * Owns: the default-action table and the pending/blocked arithmetic.
 * Does not own: the processes they end.
 */
#include "proc/signal.h"

#include "proc/sched.h"

enum default_action {
    ACT_TERMINATE,
    ACT_CORE,   /* terminate; no core file is written */
    ACT_IGNORE,
    ACT_STOP,   /* treated as ignore */
    ACT_CONTINUE,
};

static enum default_action default_action(int sig)
{
    switch (sig) {
    case SIGQUIT:
    case SIGILL:
    case SIGTRAP:
    case SIGABRT:
    case SIGBUS:
    case SIGFPE:
    case SIGSEGV:
    case 24: /* SIGXCPU */
    case 25: /* SIGXFSZ */
    case SIGSYS:
        return ACT_CORE;
    case SIGCHLD:
    case SIGURG:
    case SIGWINCH:
        return ACT_IGNORE;
    case SIGSTOP:
    case SIGTSTP:
    case SIGTTIN:
    case SIGTTOU:
        return ACT_STOP;
    case SIGCONT:
        return ACT_CONTINUE;
    default:
        return ACT_TERMINATE;
    }
}

/* Does delivering sig to p end p? (False: it is dropped.) */
static bool fatal(const struct proc *p, int sig)
{
    enum default_action act = default_action(sig);

    if (sig == SIGKILL)
        return true;
    if (p->signals.action[sig].handler == SIG_IGN)
        return false;
    return act == ACT_TERMINATE || act == ACT_CORE;
}

void signal_send(struct proc *p, int sig)
{
    if (p->state == PROC_ZOMBIE || p->state == PROC_FREE)
        return;
    if (!fatal(p, sig))
        return; /* ignored now: never pending (Linux drops it at send time too) */
    p->signals.pending |= SIG_BIT(sig);
    if (signal_deliverable(p))
        sched_interrupt(p);
}

static uint64_t deliverable_set(const struct proc *p)
{
    return p->signals.pending & (~p->signals.blocked | SIG_BIT(SIGKILL));
}

bool signal_deliverable(const struct proc *p)
{
    return deliverable_set(p) != 0;
}

void signal_deliver(void)
{
    struct proc *p = proc_current();
    uint64_t set = deliverable_set(p);

    for (int sig = 1; set != 0 && sig <= NSIG; sig++) {
        if (!(set & SIG_BIT(sig)))
            continue;
        set &= ~SIG_BIT(sig);
        p->signals.pending &= ~SIG_BIT(sig);
        if (fatal(p, sig))
            proc_exit(WAIT_SIGNALED(sig));
    }
}

NORETURN void signal_force(int sig)
{
    proc_exit(WAIT_SIGNALED(sig));
}

void signal_exec_reset(struct proc *p)
{
    for (int sig = 1; sig <= NSIG; sig++) {
        struct linux_sigaction *a = &p->signals.action[sig];

        if (a->handler != SIG_IGN) {
            a->handler = SIG_DFL;
            a->flags = 0;
            a->restorer = 0;
            a->mask = 0;
        }
    }
}
