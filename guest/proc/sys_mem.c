/*
 * sys_mem.c - the memory system calls: mmap, munmap, mprotect, mremap,
 * brk, madvise, mincore.
 *
 * Owns: Linux's flags and errors for them (mm/mmap.c, mm/mremap.c,
 * mm/madvise.c, mm/mincore.c: which combinations are EINVAL, what
 * ENOMEM, EEXIST, EACCES, ENODEV and EFAULT mean), translated to and from
 * the VMM's own calls and statuses.
 * Does not own: regions or pages (mm/vmm.c).
 */
#include "fs/fdtable.h"
#include "lib/errno.h"
#include "mm/usercopy.h"
#include "proc/proc.h"
#include "proc/syscall.h"

#define PROT_KNOWN (PROT_READ | PROT_WRITE | PROT_EXEC)
#define MINCORE_CHUNK 4096 /* pages answered per copy */

static struct address_space *space(void)
{
    return proc_current()->as;
}

static int64_t errno_of(int status)
{
    switch (status) {
    case AS_OK:
        return 0;
    case AS_EXISTS:
        return -EEXIST;
    case AS_INVALID:
        return -EINVAL;
    case AS_NOT_MAPPED:
    case AS_NO_MEMORY:
    case AS_NO_SPACE:
    default:
        return -ENOMEM;
    }
}

/* The file behind a file mapping: 0, or -EBADF, -ENODEV, -EACCES. */
static int64_t mapped_file(int64_t fd, uint64_t prot, uint64_t type, struct file **out)
{
    struct file *f = fd_file(proc_current()->fds, (int)fd);

    if (f == NULL)
        return -EBADF;
    if (f->kind != FILE_INITRD)
        return -ENODEV;
    if ((f->status_flags & O_ACCMODE) == O_WRONLY)
        return -EACCES;
    if (type != MAP_PRIVATE && (prot & PROT_WRITE))
        return -EACCES; /* a shared writable mapping of a read-only file */
    *out = f;
    return 0;
}

SYSCALL(mmap)
{
    uint64_t addr = a[0], length = a[1], prot = a[2], flags = a[3], offset = a[5];
    uint64_t type = flags & MAP_TYPE;
    struct as_mapping m = {.prot = (uint32_t)prot, .sharing = VMA_PRIVATE,
                           .growth = VMA_FIXED_SIZE, .role = VMA_ROLE_MAP};
    enum as_placement placement = AS_ANYWHERE;
    struct file *file = NULL;
    vaddr_t at;
    int64_t status;

    if (length == 0 || (offset & (PAGE_SIZE - 1)) != 0 || (prot & ~(uint64_t)PROT_KNOWN))
        return -EINVAL;
    if (type != MAP_PRIVATE && type != MAP_SHARED && type != MAP_SHARED_VALIDATE)
        return -EINVAL;
    if (flags & MAP_FIXED_NOREPLACE)
        placement = AS_FIXED_NOREPLACE;
    else if (flags & MAP_FIXED)
        placement = AS_FIXED;
    if (placement != AS_ANYWHERE && (addr & (PAGE_SIZE - 1)) != 0)
        return -EINVAL;
    if (!(flags & MAP_ANONYMOUS)) {
        status = mapped_file((int64_t)a[4], prot, type, &file);
        if (status != 0)
            return status;
        m.object = &file->object;
        m.offset = offset;
        m.file_bytes = offset < file->entry->size ? file->entry->size - offset : 0;
    } else if (type != MAP_PRIVATE) {
        m.sharing = VMA_SHARED;
    }
    status = errno_of(as_map(space(), addr, length, &m, placement, &at));
    if (status != 0)
        return status;
    if ((flags & MAP_POPULATE) && m.sharing == VMA_PRIVATE)
        as_populate(space(), at, length, AS_ACCESS_READ);
    return (int64_t)at;
}

SYSCALL(munmap)
{
    if ((a[0] & (PAGE_SIZE - 1)) != 0 || a[1] == 0)
        return -EINVAL;
    return errno_of(as_unmap(space(), a[0], a[1]));
}

SYSCALL(mprotect)
{
    if ((a[0] & (PAGE_SIZE - 1)) != 0 || (a[2] & ~(uint64_t)PROT_KNOWN))
        return -EINVAL;
    return errno_of(as_protect(space(), a[0], a[1], (uint32_t)a[2]));
}

SYSCALL(mremap)
{
    uint64_t flags = a[3];
    enum as_remap_move move = AS_REMAP_IN_PLACE;
    vaddr_t at;
    int status;

    if (flags & ~(uint64_t)(MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP))
        return -EINVAL;
    if ((flags & MREMAP_FIXED) && !(flags & MREMAP_MAYMOVE))
        return -EINVAL;
    if (flags & MREMAP_DONTUNMAP)
        return -EINVAL; /* not supported */
    if (flags & MREMAP_FIXED)
        move = AS_REMAP_FIXED;
    else if (flags & MREMAP_MAYMOVE)
        move = AS_REMAP_MAY_MOVE;
    status = as_remap(space(), a[0], a[1], a[2], move, a[4], &at);
    if (status == AS_NOT_MAPPED)
        return -EFAULT;
    return status == AS_OK ? (int64_t)at : errno_of(status);
}

SYSCALL(brk)
{
    return (int64_t)as_brk(space(), a[0]);
}

SYSCALL(madvise)
{
    uint64_t addr = a[0], length = a[1];
    struct address_space *as = space();

    if ((addr & (PAGE_SIZE - 1)) != 0 || length + PAGE_SIZE - 1 < length)
        return -EINVAL;
    switch (a[2]) {
    case MADV_DONTNEED:
        return errno_of(as_discard(as, addr, length));
    case MADV_NORMAL:
    case MADV_RANDOM:
    case MADV_SEQUENTIAL:
    case MADV_WILLNEED:
    case MADV_FREE: /* "may be freed": keeping the pages is allowed */
        return length == 0 || as_covered(as, addr, length) ? 0 : -ENOMEM;
    default:
        return -EINVAL;
    }
}

SYSCALL(mincore)
{
    static uint8_t vec[MINCORE_CHUNK];
    uint64_t addr = a[0], length = a[1], pages, done = 0;
    struct address_space *as = space();

    if ((addr & (PAGE_SIZE - 1)) != 0 || length + PAGE_SIZE - 1 < length)
        return -EINVAL;
    pages = (length + PAGE_SIZE - 1) / PAGE_SIZE;
    if (addr + pages * PAGE_SIZE < addr || addr + pages * PAGE_SIZE > VMM_USER_END)
        return -ENOMEM;
    while (done < pages) {
        uint64_t n = pages - done < MINCORE_CHUNK ? pages - done : MINCORE_CHUNK;
        int status = as_residency(as, addr + done * PAGE_SIZE, n * PAGE_SIZE, vec, n);

        if (status != AS_OK)
            return status == AS_NOT_MAPPED ? -ENOMEM : -EINVAL;
        if (copy_to_user(a[2] + done, vec, n) != 0)
            return -EFAULT;
        done += n;
    }
    return 0;
}
