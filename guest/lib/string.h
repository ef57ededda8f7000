/*
 * string.h - memory and string primitives.
 *
 * Owns: the C library functions the kernel and the compiler need
 * (clang may emit calls to memset, memcpy, memmove and memcmp itself),
 * and whole-page zeroing and copying.
 * Does not own: formatting (format.c) or anything that allocates.
 */
#ifndef STRING_H
#define STRING_H

#include "lib/types.h"

void *memset(void *dst, int c, size_t n);
void *memcpy(void *restrict dst, const void *restrict src, size_t n);
void *memmove(void *dst, const void *src, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
int strcmp(const char *a, const char *b);
int strncmp(const char *a, const char *b, size_t n);

/* One 4 KiB page (both page aligned), 8 bytes per step: 512 steps of a
 * REP string instruction, where memset and memcpy take 4096. */
void page_zero(void *page);
void page_copy(void *dst, const void *src);

#endif
