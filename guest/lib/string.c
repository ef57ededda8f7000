/*
 * string.c - memory and string primitives for a freestanding kernel.
 *
 * Owns: memset, memcpy, memmove, memcmp, strlen, strcmp, strncmp, with the
 * standard C contracts.
 * Does not own: anything else of libc.
 *
 * The compiler turns byte loops into calls to these very functions, so each
 * one is marked no_builtin (no such rewriting inside it), and the bulk
 * operations use the string instructions, which need no SSE.
 */
#include "lib/string.h"

#define NO_BUILTIN __attribute__((no_builtin))

NO_BUILTIN void *memset(void *dst, int c, size_t n)
{
    void *d = dst;

    __asm__ volatile("rep stosb" : "+D"(d), "+c"(n) : "a"(c) : "memory");
    return dst;
}

NO_BUILTIN void *memcpy(void *restrict dst, const void *restrict src, size_t n)
{
    void *d = dst;

    __asm__ volatile("rep movsb" : "+D"(d), "+S"(src), "+c"(n) : : "memory");
    return dst;
}

NO_BUILTIN void page_zero(void *page)
{
    size_t n = PAGE_SIZE / 8;

    __asm__ volatile("rep stosq" : "+D"(page), "+c"(n) : "a"(0) : "memory");
}

NO_BUILTIN void page_copy(void *dst, const void *src)
{
    size_t n = PAGE_SIZE / 8;

    __asm__ volatile("rep movsq" : "+D"(dst), "+S"(src), "+c"(n) : : "memory");
}

/* Copies backwards when dst overlaps the tail of src. DF is clear on entry
 * and on return, as the ABI requires. */
NO_BUILTIN void *memmove(void *dst, const void *src, size_t n)
{
    const unsigned char *s = src;
    unsigned char *d = dst;

    if (d <= s || d >= s + n)
        return memcpy(dst, src, n);
    d += n - 1;
    s += n - 1;
    __asm__ volatile("std; rep movsb; cld" : "+D"(d), "+S"(s), "+c"(n) : : "memory");
    return dst;
}

NO_BUILTIN int memcmp(const void *a, const void *b, size_t n)
{
    const unsigned char *x = a, *y = b;

    for (size_t i = 0; i < n; i++) {
        if (x[i] != y[i])
            return x[i] < y[i] ? -1 : 1;
    }
    return 0;
}

NO_BUILTIN size_t strlen(const char *s)
{
    size_t n = 0;

    while (s[n] != '\0')
        n++;
    return n;
}

NO_BUILTIN int strcmp(const char *a, const char *b)
{
    const unsigned char *x = (const unsigned char *)a;
    const unsigned char *y = (const unsigned char *)b;

    while (*x != '\0' && *x == *y) {
        x++;
        y++;
    }
    return (*x > *y) - (*x < *y);
}

NO_BUILTIN int strncmp(const char *a, const char *b, size_t n)
{
    const unsigned char *x = (const unsigned char *)a;
    const unsigned char *y = (const unsigned char *)b;

    for (; n > 0; n--, x++, y++) {
        if (*x != *y || *x == '\0')
            return (*x > *y) - (*x < *y);
    }
    return 0;
}
