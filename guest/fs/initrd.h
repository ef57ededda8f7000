/*
 * initrd.h - the initial RAM disk: a USTAR archive handed over as a Limine
 * module, read-only.
 *
 * Owns: finding the archive among the modules, its index (one entry per
 * regular file or directory, by absolute path), and the bytes of each
 * file, which stay where the loader put them.
 * Does not own: open files and offsets (fs/file.c) or path syntax
 * (fs/path.h normalizes before asking).
 *
 * The archive is the first module whose header carries the USTAR magic
 * ("ustar" at offset 257). Regular files (type '0' or NUL) and
 * directories ('5') are indexed; links and other types are skipped. A
 * directory that only appears as a prefix of a file's path exists too.
 */
#ifndef INITRD_H
#define INITRD_H

#include "lib/types.h"

#define INITRD_PATH_MAX 264 /* prefix + "/" + name + "/", with room */

enum initrd_type {
    INITRD_FILE = 1,
    INITRD_DIR = 2,
};

struct initrd_entry {
    char path[INITRD_PATH_MAX]; /* absolute, normalized: "/bin/prog" */
    const uint8_t *data;        /* HHDM pointer into the module */
    uint64_t size;
    uint32_t mode;              /* permission bits from the header */
    enum initrd_type type;
};

/* Remembers where the archive is; call before mm_init reclaims the
 * loader's responses. Nothing happens if no module is an archive. */
void initrd_save_module(void);

/* Indexes the archive (after heap_init). Returns the number of entries,
 * 0 without an archive. Panics "initrd: <rule>" on a malformed archive. */
size_t initrd_init(void);

/* The entry at path (normalized, absolute), a directory implied by a file
 * under it (type INITRD_DIR, size 0), or NULL. */
const struct initrd_entry *initrd_lookup(const char *path);

#endif
