/*
 * serial.c - a 16550 UART on COM1 as the kernel console.
 *
 * Owns: the UART registers at 0x3f8..0x3ff (initialisation, loopback
 * self-test, polled transmit) and kprintf.
 * Does not own: interrupts (the port is polled; its interrupts stay off),
 * receiving, or the formatting rules (format.c).
 *
 * Output is not translated: '\n' goes out as a single LF.
 */
#include "dev/serial.h"

#include "arch/x86_64/io.h"
#include "lib/format.h"

#define COM1 0x3f8

/* Register offsets from the base port. DLL/DLM replace RBR/IER while the
 * divisor latch access bit (LCR bit 7) is set. */
enum uart_reg {
    UART_RBR = 0, /* receive buffer (read) */
    UART_THR = 0, /* transmit holding (write) */
    UART_DLL = 0, /* divisor latch low (DLAB=1) */
    UART_IER = 1, /* interrupt enable */
    UART_DLM = 1, /* divisor latch high (DLAB=1) */
    UART_FCR = 2, /* FIFO control (write) */
    UART_LCR = 3, /* line control */
    UART_MCR = 4, /* modem control */
    UART_LSR = 5, /* line status */
};

#define LCR_8N1 0x03
#define LCR_DLAB 0x80
#define FCR_ENABLE_CLEAR_14 0xc7 /* enable, clear both FIFOs, 14-byte trigger */
#define MCR_DTR_RTS_OUT1_OUT2 0x0f
#define MCR_LOOPBACK 0x10
#define LSR_THR_EMPTY 0x20
#define DIVISOR_115200 1
#define SELFTEST_BYTE 0xae
#define TX_SPIN_LIMIT 100000

static void uart_write(enum uart_reg reg, uint8_t value)
{
    outb(COM1 + reg, value);
}

static uint8_t uart_read(enum uart_reg reg)
{
    return inb(COM1 + reg);
}

enum serial_status serial_init(void)
{
    enum serial_status status = SERIAL_OK;

    uart_write(UART_IER, 0x00);
    uart_write(UART_LCR, LCR_DLAB);
    uart_write(UART_DLL, DIVISOR_115200 & 0xff);
    uart_write(UART_DLM, DIVISOR_115200 >> 8);
    uart_write(UART_LCR, LCR_8N1);
    uart_write(UART_FCR, FCR_ENABLE_CLEAR_14);

    /* In loopback mode the transmitter feeds the receiver directly. */
    uart_write(UART_MCR, MCR_LOOPBACK | MCR_DTR_RTS_OUT1_OUT2);
    uart_write(UART_THR, SELFTEST_BYTE);
    if (uart_read(UART_RBR) != SELFTEST_BYTE)
        status = SERIAL_FAULTY;

    uart_write(UART_MCR, MCR_DTR_RTS_OUT1_OUT2);
    return status;
}

void serial_putc(char c)
{
    for (int spins = 0; spins < TX_SPIN_LIMIT; spins++) {
        if (uart_read(UART_LSR) & LSR_THR_EMPTY)
            break;
    }
    uart_write(UART_THR, (uint8_t)c);
}

void serial_puts(const char *s)
{
    while (*s != '\0')
        serial_putc(*s++);
}

static void serial_sink(char c, void *ctx)
{
    (void)ctx;
    serial_putc(c);
}

int kvprintf(const char *fmt, va_list ap)
{
    return kvformat(serial_sink, NULL, fmt, ap);
}

static enum console_mode console_mode = CONSOLE_VERBOSE;

void console_set_mode(enum console_mode mode)
{
    console_mode = mode;
}

int kreport(const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = kvprintf(fmt, ap);
    va_end(ap);
    return n;
}

int kprintf(const char *fmt, ...)
{
    va_list ap;
    int n;

    if (console_mode == CONSOLE_QUIET)
        return 0;
    va_start(ap, fmt);
    n = kvprintf(fmt, ap);
    va_end(ap);
    return n;
}
