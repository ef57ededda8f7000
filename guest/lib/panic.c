/*
 * panic.c - the two ways out of the kernel.
 *
 * Owns: panic() and kernel_exit(), and the guard against panicking while
 * already panicking.
 * Does not own: the meaning of exit codes to the host (the monitor's
 * debug-exit device maps the code written to port 0xf4 to its own exit).
 */
#include "lib/panic.h"

#include "arch/x86_64/io.h"
#include "dev/serial.h"

static volatile bool panicking;

NORETURN void kernel_exit(int code)
{
    cli();
    outl(DEBUG_EXIT_PORT, (uint32_t)code);
    for (;;)
        hlt();
}

NORETURN void panic(const char *fmt, ...)
{
    va_list ap;

    cli();
    if (panicking)
        kernel_exit(EXIT_PANIC); /* printing the first panic faulted */
    panicking = true;

    console_set_mode(CONSOLE_VERBOSE);
    serial_puts("panic: ");
    va_start(ap, fmt);
    kvprintf(fmt, ap);
    va_end(ap);
    serial_putc('\n');
    kernel_exit(EXIT_PANIC);
}
