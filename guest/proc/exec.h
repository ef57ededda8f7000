/*
 * exec.h - loading a program: static ELF64 executables from the initrd,
 * and the initial stack of the System V x86-64 ABI.
 *
 * Owns: the arguments of execve copied into the kernel, checking an ELF
 * file, building a new address space for it (PT_LOAD segments as
 * file-backed private regions with their bss as zero-fill, PT_GNU_STACK's
 * executable bit honoured, PT_TLS left to libc), the stack (argc, argv,
 * envp, auxv, the strings, AT_RANDOM's 16 bytes), and switching a process
 * to the new image.
 * Does not own: the address space's rules (mm/vmm.c), files (fs/), the
 * process (proc.c).
 *
 * Static executables only: ET_EXEC, or ET_DYN without PT_INTERP (static
 * PIE, loaded at Linux's ELF_ET_DYN_BASE and relocated by its own start
 * code). A program with an interpreter is refused with -ENOEXEC.
 * Everything is checked before the new address space is built, and the
 * caller's image changes only in exec_commit: a failed execve returns to
 * the old program.
 */
#ifndef EXEC_H
#define EXEC_H

#include "proc/proc.h"

#define EXEC_STRINGS_MAX (128 * 1024) /* argv and envp strings together */
#define EXEC_VECTOR_MAX 4096          /* argv or envp entries */
#define EXEC_PATH_MAX 4096
#define ELF_ET_DYN_BASE 0x555555554000ULL

struct exec_args {
    char *path;     /* normalized, absolute */
    size_t argc;
    size_t envc;
    char **argv;    /* argc + 1 entries, then envp's envc + 1 */
    char **envp;
    char *strings;  /* where the strings live */
};

/* execve's arguments, from user memory. 0, or -EFAULT, -E2BIG,
 * -ENAMETOOLONG, -ENOMEM (nothing to free then). */
int exec_args_from_user(vaddr_t path, vaddr_t argv, vaddr_t envp, struct exec_args *out);

/* The same from kernel strings (the first process). */
int exec_args_from_kernel(const char *path, char *const argv[], char *const envp[],
                          struct exec_args *out);

void exec_args_free(struct exec_args *a);

struct exec_image {
    struct address_space *as;
    vaddr_t entry;
    vaddr_t stack_pointer;
};

/* Builds the image of a->path: 0, or -ENOENT, -EACCES (a directory),
 * -ENOEXEC (not a static x86-64 ELF executable), -ENOMEM. */
int exec_load(const struct exec_args *a, uint64_t stack_limit, struct exec_image *out);

/* Makes p run the image from its entry point (its old address space is
 * destroyed, close-on-exec descriptors closed, handlers reset). */
void exec_commit(struct proc *p, const struct exec_args *a, const struct exec_image *img);

#endif
