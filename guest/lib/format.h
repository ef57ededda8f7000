/*
 * format.h - printf-style formatting into any character sink.
 *
 * Owns: the conversion of a format string and arguments into characters.
 * Does not own: where the characters go (serial.c sends them to COM1,
 * ksnprintf into a buffer).
 *
 * Supported: %d %i %u %x %X %p %s %c %%, the length modifiers hh h l ll z,
 * the flags '-' (left-justify) and '0' (zero padding), a width and a
 * precision (digits or '*'; for %s the maximum length, for integers the
 * minimum number of digits). %p prints 0x and 16 hex digits. An unknown
 * conversion character is printed after a '%', without its flags.
 */
#ifndef FORMAT_H
#define FORMAT_H

#include "lib/types.h"

/* Receives one output character; ctx is the caller's. */
typedef void (*format_sink_t)(char c, void *ctx);

/* Formats into sink; returns the number of characters produced. */
int kvformat(format_sink_t sink, void *ctx, const char *fmt, va_list ap);

/*
 * Formats into buf, which always ends up NUL-terminated when size > 0.
 * Returns the length the full output would have (as C's snprintf): the
 * output was truncated if the result is >= size.
 */
int kvsnprintf(char *buf, size_t size, const char *fmt, va_list ap);
int ksnprintf(char *buf, size_t size, const char *fmt, ...) PRINTF_LIKE(3, 4);

#endif
