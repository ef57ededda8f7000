/*
 * oom.h - the out-of-memory killer: what happens when a user page can get
 * no frame, RAM and swap both being full (see oom.c).
 */
#ifndef OOM_H
#define OOM_H

#include "lib/types.h"

enum oom_outcome {
    OOM_OTHER_KILLED = 0, /* another process was the victim and is gone: retry the access */
    OOM_KILL_CURRENT = 1, /* the faulting process is the victim: the caller ends it */
};

/*
 * The current process could not get a frame for address. Chooses the live
 * process with the largest resident set (ties: the lowest pid), prints one
 * report line (the fault, the user frames and swap slots in use, the
 * victim and its RSS) and counts the kill in swap_descriptor. If the
 * victim is another process it gets SIGKILL and the current one yields
 * until the victim's address space is gone; OOM_KILL_CURRENT also when
 * the victim does not go (then the report says so).
 */
enum oom_outcome oom_kill(vaddr_t address, uint64_t rip);

#endif
