/*
 * trap.h - exceptions of processes (see trap.c).
 */
#ifndef TRAP_H
#define TRAP_H

/* Installs the page-fault handler and the user-mode exception handlers
 * (proc_init). */
void trap_init(void);

#endif
