/*
 * initrd.c - the USTAR initial RAM disk (see initrd.h).
 *
 * Owns: parsing the archive's 512-byte headers (POSIX.1-1988 ustar:
 * name[100] at 0, mode[8] at 100, size[12] at 124, chksum[8] at 148,
 * typeflag at 156, magic "ustar" at 257, prefix[155] at 345; data in
 * 512-byte blocks after its header; two zero blocks end the archive),
 * and the index.
 * Does not own: the module's memory (EXECUTABLE_AND_MODULES: never
 * reclaimed, mapped in the HHDM).
 */
#include "fs/initrd.h"

#include "boot/boot.h"
#include "heap/heap.h"
#include "lib/panic.h"
#include "lib/string.h"

#define BLOCK 512
#define MAGIC_OFFSET 257

static const uint8_t *archive;
static uint64_t archive_size;
static struct initrd_entry *entries;
static size_t count;
static struct initrd_entry implied_dir; /* answers for directories only implied */

void initrd_save_module(void)
{
    const struct limine_module_response *mods = boot_modules();

    for (uint64_t i = 0; mods != NULL && i < mods->module_count; i++) {
        const struct limine_file *m = mods->modules[i];
        const uint8_t *p = m->address;

        if (m->size >= BLOCK && memcmp(p + MAGIC_OFFSET, "ustar", 5) == 0) {
            archive = p;
            archive_size = m->size;
            return;
        }
    }
}

/* The value of an octal field of n bytes (NUL or space terminated). */
static uint64_t octal(const uint8_t *field, size_t n)
{
    uint64_t value = 0;

    for (size_t i = 0; i < n && field[i] >= '0' && field[i] <= '7'; i++)
        value = value * 8 + (field[i] - '0');
    return value;
}

static bool zero_block(const uint8_t *h)
{
    for (size_t i = 0; i < BLOCK; i++) {
        if (h[i] != 0)
            return false;
    }
    return true;
}

/* prefix "/" name, made absolute and stripped of "./" and trailing '/'. */
static void entry_path(const uint8_t *h, char *out)
{
    size_t n = 0;

    out[n++] = '/';
    for (size_t i = 0; i < 155 && h[345 + i] != 0; i++)
        out[n++] = (char)h[345 + i];
    if (n > 1)
        out[n++] = '/';
    for (size_t i = 0; i < 100 && h[i] != 0; i++)
        out[n++] = (char)h[i];
    out[n] = '\0';
    while (n > 1 && out[n - 1] == '/')
        out[--n] = '\0';
    if (out[1] == '.' && out[2] == '/')
        memmove(out, out + 2, n - 1);
    else if (out[1] == '.' && out[2] == '\0')
        out[1] = '\0';
}

/* Walks the archive; stores entries when out is not NULL. Returns how many. */
static size_t walk(struct initrd_entry *out)
{
    uint64_t at = 0;
    size_t n = 0;

    while (at + BLOCK <= archive_size && !zero_block(archive + at)) {
        const uint8_t *h = archive + at;
        uint64_t size = octal(h + 124, 12);
        uint8_t type = h[156];

        if (memcmp(h + MAGIC_OFFSET, "ustar", 5) != 0)
            panic("initrd: no ustar header at offset %lu", at);
        if (at + BLOCK + size > archive_size || at + BLOCK + size < at)
            panic("initrd: the file at offset %lu runs past the archive", at);
        if (type == '0' || type == 0 || type == '5') {
            if (out != NULL) {
                struct initrd_entry *e = &out[n];

                entry_path(h, e->path);
                e->data = h + BLOCK;
                e->size = type == '5' ? 0 : size;
                e->mode = (uint32_t)octal(h + 100, 8) & 07777;
                e->type = type == '5' ? INITRD_DIR : INITRD_FILE;
            }
            n++;
        }
        at += BLOCK + (size + BLOCK - 1) / BLOCK * BLOCK;
    }
    return n;
}

size_t initrd_init(void)
{
    if (archive == NULL)
        return 0;
    count = walk(NULL);
    entries = kcalloc(count ? count : 1, sizeof(*entries));
    if (entries == NULL)
        panic("initrd: no memory for %lu entries", count);
    walk(entries);
    implied_dir.type = INITRD_DIR;
    implied_dir.mode = 0755;
    return count;
}

const struct initrd_entry *initrd_lookup(const char *path)
{
    size_t len = strlen(path);

    if (strcmp(path, "/") == 0) {
        implied_dir.path[0] = '/';
        implied_dir.path[1] = '\0';
        return &implied_dir;
    }
    for (size_t i = 0; i < count; i++) {
        if (strcmp(entries[i].path, path) == 0)
            return &entries[i];
    }
    for (size_t i = 0; i < count; i++) {
        if (strncmp(entries[i].path, path, len) == 0 && entries[i].path[len] == '/') {
            if (len >= INITRD_PATH_MAX)
                return NULL;
            memcpy(implied_dir.path, path, len + 1);
            return &implied_dir;
        }
    }
    return NULL;
}
