/*
 * usercopy.h - system calls' access to the memory of the live address
 * space (copy_from_user and friends).
 *
 * Owns: checking a user range against the live address space's regions
 * (as_allows) before touching it, and the copy itself: pages not yet
 * present fault in on the way (the page-fault handler resolves kernel
 * faults on user addresses by the same rules as user faults), and a fault
 * that cannot be resolved ends the copy (usercopy_fixup) with -EFAULT.
 * Does not own: the routines' machine code (arch/x86_64/usercopy.S) or
 * fault resolution (mm/vmm.c, called by the page-fault handler).
 */
#ifndef USERCOPY_H
#define USERCOPY_H

#include "arch/x86_64/idt.h"
#include "lib/types.h"

/* 0, or -EFAULT if [src, src + n) is not readable user memory. */
int copy_from_user(void *dst, vaddr_t src, size_t n);

/* 0, or -EFAULT if [dst, dst + n) is not writable user memory. */
int copy_to_user(vaddr_t dst, const void *src, size_t n);

/* Copies a NUL-terminated string of at most max bytes (with its NUL);
 * returns its length, -EFAULT, or -ENAMETOOLONG if there is no NUL
 * within max bytes. */
int64_t copy_string_from_user(char *dst, vaddr_t src, size_t max);

/* For the page-fault handler: a kernel fault inside a copy routine is
 * redirected to its error exit (frame->rip changed); true if it was one. */
bool usercopy_fixup(struct interrupt_frame *frame);

#endif
