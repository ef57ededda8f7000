/*
 * cmdline.c - key=value lookup in the kernel command line.
 *
 * Owns: splitting the line into words and matching keys.
 * Does not own: validating values; every caller checks its own.
 */
#include "boot/cmdline.h"

#include "boot/boot.h"
#include "lib/panic.h"

static bool is_space(char c)
{
    return c == ' ' || c == '\t';
}

/* If the word at w starts with key followed by '=' or the word's end,
 * returns the start of its value (possibly ""), else NULL. */
static const char *match_key(const char *w, const char *key)
{
    while (*key != '\0' && *w == *key) {
        w++;
        key++;
    }
    if (*key != '\0')
        return NULL;
    if (*w == '=')
        return w + 1;
    if (*w == '\0' || is_space(*w))
        return w;
    return NULL;
}

static int copy_value(const char *value, char *buf, size_t len)
{
    size_t n = 0;

    for (; value[n] != '\0' && !is_space(value[n]); n++) {
        if (n + 1 < len)
            buf[n] = value[n];
    }
    if (len > 0)
        buf[n < len ? n : len - 1] = '\0';
    return (int)n;
}

int cmdline_find(const char *cmdline, const char *key, char *buf, size_t len)
{
    const char *p = cmdline;

    while (*p != '\0') {
        const char *value;

        while (is_space(*p))
            p++;
        if (*p == '\0')
            break;
        value = match_key(p, key);
        if (value != NULL)
            return copy_value(value, buf, len);
        while (*p != '\0' && !is_space(*p))
            p++;
    }
    if (len > 0)
        buf[0] = '\0';
    return -1;
}

int cmdline_get(const char *key, char *buf, size_t len)
{
    return cmdline_find(boot_cmdline(), key, buf, len);
}

bool cmdline_has(const char *key)
{
    char unused[1];

    return cmdline_get(key, unused, sizeof(unused)) >= 0;
}

uint64_t cmdline_u64(const char *key, uint64_t dflt)
{
    char buf[24];
    uint64_t value = 0;
    int length = cmdline_get(key, buf, sizeof(buf));

    if (length < 0)
        return dflt;
    if (buf[0] == '\0')
        panic("cmdline: %s= needs a decimal number", key);
    if (length >= (int)sizeof(buf))
        panic("cmdline: %s= is %d characters long: no 64-bit number is", key, length);
    for (const char *p = buf; *p != '\0'; p++) {
        uint64_t digit = (uint64_t)(*p - '0');

        if (*p < '0' || *p > '9')
            panic("cmdline: %s=%s is not a decimal number", key, buf);
        if (value > (UINT64_MAX - digit) / 10)
            panic("cmdline: %s=%s is more than %lu", key, buf, UINT64_MAX);
        value = value * 10 + digit;
    }
    return value;
}
