/*
 * init.h - running the program the kernel command line names (init.c).
 */
#ifndef INIT_H
#define INIT_H

#include "lib/types.h"

/* Gets processes ready: frame counts, kernel-half tables, the
 * descriptor, SYSCALL, the traps, the file layer's wakeups. Once. */
void proc_init(void);

/* Runs init=PATH (with its arguments) as the first process until every
 * process has exited, reports its status to the host and ends the run.
 * kmain calls it after heap_init when the command line has init=. */
NORETURN void proc_main(void);

#endif
