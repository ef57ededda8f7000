/*
 * hostio.c - requests on the emulator's host I/O channel (see hostio.h).
 *
 * Owns: the one request block and the bounce page the bytes travel in
 * (kernel data: physically contiguous, its address found once).
 * Does not own: what the host does with them.
 */
#include "dev/hostio.h"

#include "arch/x86_64/io.h"
#include "lib/errno.h"
#include "lib/panic.h"
#include "mm/paging.h"

enum probe {
    PROBE_NOT_YET,
    PROBE_ABSENT,
    PROBE_PRESENT,
};

static struct hostio_request request ALIGNED(64);
static uint8_t bounce[HOSTIO_CHUNK] ALIGNED(HOSTIO_CHUNK);
static enum probe probed = PROBE_NOT_YET;

bool hostio_present(void)
{
    if (probed == PROBE_NOT_YET)
        probed = inl(HOSTIO_PORT) == HOSTIO_SIGNATURE ? PROBE_PRESENT : PROBE_ABSENT;
    return probed == PROBE_PRESENT;
}

static paddr_t physical(const void *p)
{
    paddr_t pa = vmm_translate(vmm_kernel_root(), (vaddr_t)p);

    if (pa == VMM_NO_TRANSLATION)
        panic("hostio: 0x%lx is not mapped", (vaddr_t)p);
    return pa;
}

static int64_t submit(enum hostio_op op, enum hostio_stream stream, uint64_t length)
{
    paddr_t pa = physical(&request);

    if (!hostio_present())
        return -ENXIO;
    request.op = op;
    request.stream = stream;
    request.buffer = physical(bounce);
    request.length = length;
    request.result = -EIO;
    outl(HOSTIO_PORT, (uint32_t)pa);
    outl(HOSTIO_PORT + 4, (uint32_t)(pa >> 32));
    return request.result;
}

void *hostio_buffer(void)
{
    return bounce;
}

int64_t hostio_write(enum hostio_stream stream, size_t n)
{
    if (n > HOSTIO_CHUNK)
        panic("hostio_write: %lu bytes at once", n);
    return submit(HOSTIO_WRITE, stream, n);
}

int64_t hostio_read(enum hostio_stream stream, size_t n)
{
    if (n > HOSTIO_CHUNK)
        panic("hostio_read: %lu bytes at once", n);
    return submit(HOSTIO_READ, stream, n);
}

void hostio_exit(uint32_t wait_status)
{
    submit(HOSTIO_EXIT, HOSTIO_STDIN, wait_status);
}
