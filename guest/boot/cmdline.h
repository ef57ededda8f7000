/*
 * cmdline.h - reading options from the kernel command line.
 *
 * Owns: the syntax of the command line: words separated by spaces or tabs,
 * each either "key=value" or a bare "key" (whose value is "").
 * Does not own: the meaning of any option, or where the line comes from
 * (boot.c).
 */
#ifndef CMDLINE_H
#define CMDLINE_H

#include "lib/types.h"

/*
 * Looks up key in the boot command line and copies its value into buf
 * (always NUL-terminated when len > 0). The first occurrence wins.
 * Returns -1 if key is absent; otherwise the full length of the value,
 * which is >= len when the copy was truncated.
 */
int cmdline_get(const char *key, char *buf, size_t len);

/* The same lookup in an arbitrary command line string. */
int cmdline_find(const char *cmdline, const char *key, char *buf, size_t len);

/* True if key appears at all (with or without a value). */
bool cmdline_has(const char *key);

/* The decimal value of key=, or dflt if absent; a value that is not a
 * decimal number panics (a mistyped test option). */
uint64_t cmdline_u64(const char *key, uint64_t dflt);

#endif
