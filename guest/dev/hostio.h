/*
 * hostio.h - the emulator's host I/O channel: what the program the kernel
 * runs reads and writes on its standard streams, and its exit status.
 *
 * Owns: the request block and the ports (emu/hw/devices/hostio.py is the
 * other side): the kernel fills a struct hostio_request and writes its
 * physical address to HOSTIO_PORT (low 32 bits) and HOSTIO_PORT + 4 (high
 * 32 bits, which starts the request); when the OUT retires the host has
 * done it and stored the result. A 32-bit read of HOSTIO_PORT returns
 * HOSTIO_SIGNATURE when the channel exists.
 * Does not own: files or processes (fs/, proc/ decide what to send).
 *
 * Streams are byte-exact and separate: stdout and stderr reach the host's
 * own, never the serial console. The exit status is a Linux wait status
 * (exit code << 8, or the number of the signal that ended the program).
 */
#ifndef HOSTIO_H
#define HOSTIO_H

#include "lib/types.h"

#define HOSTIO_PORT 0xf8
#define HOSTIO_SIGNATURE 0x54534f48u /* "HOST" */
#define HOSTIO_CHUNK 4096            /* bytes per request at most */

enum hostio_op {
    HOSTIO_WRITE = 1,
    HOSTIO_READ = 2,
    HOSTIO_EXIT = 3,
};

enum hostio_stream {
    HOSTIO_STDIN = 0,
    HOSTIO_STDOUT = 1,
    HOSTIO_STDERR = 2,
};

/*
 * The request (little-endian, 32 bytes; the device reads it at the
 * physical address given):
 *   off  field   meaning
 *     0  op      enum hostio_op
 *     4  stream  enum hostio_stream
 *     8  buffer  physical address of the bytes (contiguous)
 *    16  length  bytes to write or at most to read; EXIT: the wait status
 *    24  result  set by the host: bytes done, 0 at the end of input, or a
 *                negative Linux errno (-EPIPE: the reader went away)
 */
struct hostio_request {
    uint32_t op;
    uint32_t stream;
    paddr_t buffer;
    uint64_t length;
    int64_t result;
};
static_assert(sizeof(struct hostio_request) == 32, "hostio_request layout");

/* True if the emulator's channel answers (probed once). */
bool hostio_present(void);

/* The page requests carry their bytes in (HOSTIO_CHUNK bytes). Callers
 * fill it (a write) or read it (after a read) themselves: one copy. */
void *hostio_buffer(void);

/* Writes the first n bytes (n <= HOSTIO_CHUNK) of the buffer to a stream;
 * returns the count written or a negative errno (-ENXIO without the
 * channel, -EPIPE when the host's reader is gone). */
int64_t hostio_write(enum hostio_stream stream, size_t n);

/* Reads at most n bytes (n <= HOSTIO_CHUNK) into the buffer; returns the
 * count, 0 at the end of input, or a negative errno. */
int64_t hostio_read(enum hostio_stream stream, size_t n);

/* Reports the run's exit status (a Linux wait status) to the host. */
void hostio_exit(uint32_t wait_status);

#endif
