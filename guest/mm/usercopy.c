/*
 * usercopy.c - checked copies to and from user memory (see usercopy.h).
 *
 * Owns: the order "check the regions, then copy" and turning a failed
 * copy into -EFAULT.
 * Does not own: the live address space (as_current, mm/vmm.c).
 */
#include "mm/usercopy.h"

#include "lib/errno.h"
#include "mm/vmm.h"

extern const char usercopy_start[], usercopy_end[], usercopy_fault[];
int64_t usercopy_raw(void *dst, const void *src, size_t n);
int64_t usercopy_string_raw(char *dst, const char *src, size_t max);

int copy_from_user(void *dst, vaddr_t src, size_t n)
{
    struct address_space *as = as_current();

    if (n == 0)
        return 0;
    if (as == NULL || !as_allows(as, src, n, AS_ACCESS_READ))
        return -EFAULT;
    return usercopy_raw(dst, (const void *)src, n) == 0 ? 0 : -EFAULT;
}

int copy_to_user(vaddr_t dst, const void *src, size_t n)
{
    struct address_space *as = as_current();

    if (n == 0)
        return 0;
    if (as == NULL || !as_allows(as, dst, n, AS_ACCESS_WRITE))
        return -EFAULT;
    return usercopy_raw((void *)dst, src, n) == 0 ? 0 : -EFAULT;
}

int64_t copy_string_from_user(char *dst, vaddr_t src, size_t max)
{
    struct address_space *as = as_current();
    size_t done = 0;

    if (as == NULL)
        return -EFAULT;
    /* Check page by page: the string may end long before max. */
    while (done < max) {
        vaddr_t at = src + done;
        size_t chunk = PAGE_SIZE - (at & (PAGE_SIZE - 1));
        int64_t n;

        if (chunk > max - done)
            chunk = max - done;
        if (!as_allows(as, at, chunk, AS_ACCESS_READ))
            return -EFAULT;
        n = usercopy_string_raw(dst + done, (const char *)at, chunk);
        if (n == -1)
            return -EFAULT;
        if (n >= 0)
            return (int64_t)done + n;
        done += chunk;
    }
    return -ENAMETOOLONG;
}

bool usercopy_fixup(struct interrupt_frame *frame)
{
    if (frame->rip < (vaddr_t)usercopy_start || frame->rip >= (vaddr_t)usercopy_end)
        return false;
    frame->rip = (vaddr_t)usercopy_fault;
    return true;
}
