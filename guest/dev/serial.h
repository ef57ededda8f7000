/*
 * serial.h - the kernel console on COM1, and kprintf.
 *
 * Owns: the 16550 UART at I/O port 0x3f8, formatted output to it, and the
 * console's verbosity.
 * Does not own: formatting itself (format.c) or input.
 */
#ifndef SERIAL_H
#define SERIAL_H

#include "lib/types.h"

enum serial_status {
    SERIAL_OK,
    SERIAL_FAULTY, /* the loopback self-test did not read back its byte */
};

/*
 * Programs COM1 for 115200 baud 8N1 with FIFOs and checks it with a
 * loopback self-test. On SERIAL_FAULTY the port is still left in normal
 * mode and output is still attempted.
 */
enum serial_status serial_init(void);

/* Sends one byte, waiting (bounded) until the transmitter can take it. */
void serial_putc(char c);
void serial_puts(const char *s);

/* What kprintf prints: everything, or (quiet, the kernel command line's
 * "quiet") nothing; kreport, kvprintf and panics always print. */
enum console_mode {
    CONSOLE_VERBOSE = 0,
    CONSOLE_QUIET = 1,
};
void console_set_mode(enum console_mode mode);

/* printf to COM1 (see format.h for the conversions); returns the length.
 * Nothing in CONSOLE_QUIET mode. */
int kprintf(const char *fmt, ...) PRINTF_LIKE(1, 2);

/* printf to COM1 in every mode: lines the user must see (a process's
 * fatal fault, a leak, a deadlock). */
int kreport(const char *fmt, ...) PRINTF_LIKE(1, 2);
int kvprintf(const char *fmt, va_list ap);

#endif
