/*
 * types.h - the basic vocabulary of the freestanding kernel.
 *
 * Owns: fixed-width integers, size_t, bool, varargs, the address kinds
 * (paddr_t, vaddr_t, pfn_t) and small compiler helpers.
 * Does not own: any behaviour. The kernel is built with -nostdinc, so this
 * header replaces <stdint.h>, <stddef.h>, <stdbool.h> and <stdarg.h>.
 */
#ifndef TYPES_H
#define TYPES_H

typedef __UINT8_TYPE__ uint8_t;
typedef __UINT16_TYPE__ uint16_t;
typedef __UINT32_TYPE__ uint32_t;
typedef __UINT64_TYPE__ uint64_t;
#define UINT64_MAX __UINT64_MAX__
typedef __INT8_TYPE__ int8_t;
typedef __INT16_TYPE__ int16_t;
typedef __INT32_TYPE__ int32_t;
typedef __INT64_TYPE__ int64_t;
typedef __UINTPTR_TYPE__ uintptr_t;
typedef __INTPTR_TYPE__ intptr_t;
typedef __SIZE_TYPE__ size_t;
typedef __PTRDIFF_TYPE__ ptrdiff_t;

typedef _Bool bool;
#define true 1
#define false 0
#define NULL ((void *)0)

/*
 * Address kinds. They are all 64-bit integers to the compiler; the names say
 * which space a value lives in. Never pass one where another is meant: convert
 * explicitly (pfn_to_paddr, paddr_to_pfn, or through the HHDM offset).
 */
typedef uint64_t paddr_t; /* a physical address */
typedef uint64_t vaddr_t; /* a virtual address */
typedef uint64_t pfn_t;   /* a physical frame number: paddr >> PAGE_SHIFT */

#define PAGE_SHIFT 12
#define PAGE_SIZE ((uint64_t)1 << PAGE_SHIFT)

static inline pfn_t paddr_to_pfn(paddr_t pa) { return pa >> PAGE_SHIFT; }
static inline paddr_t pfn_to_paddr(pfn_t pfn) { return pfn << PAGE_SHIFT; }

typedef __builtin_va_list va_list;
#define va_start(ap, last) __builtin_va_start(ap, last)
#define va_arg(ap, type) __builtin_va_arg(ap, type)
#define va_end(ap) __builtin_va_end(ap)
#define va_copy(dst, src) __builtin_va_copy(dst, src)

#define offsetof(type, member) __builtin_offsetof(type, member)
#define static_assert _Static_assert
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

#define NORETURN __attribute__((noreturn))
#define PACKED __attribute__((packed))
#define ALIGNED(n) __attribute__((aligned(n)))
#define USED __attribute__((used))
#define PRINTF_LIKE(fmt, args) __attribute__((format(printf, fmt, args)))

static_assert(sizeof(void *) == 8, "the kernel is 64-bit only");
static_assert(sizeof(long) == 8, "LP64 is assumed by the formatter");

#endif
