/*
 * format.c - a small printf-style formatter for the kernel.
 *
 * Owns: parsing conversion specifications and rendering integers, strings
 * and characters with width, precision, padding and justification.
 * Does not own: output devices; every character goes through a sink.
 *
 * No floating point: the kernel is built without SSE or x87.
 */
#include "lib/format.h"

enum length { LEN_INT, LEN_CHAR, LEN_SHORT, LEN_LONG, LEN_LONG_LONG, LEN_SIZE };

struct spec {
    bool left;       /* '-': pad on the right */
    bool zero;       /* '0': pad numbers with zeros */
    int width;       /* minimum field width, 0 if none */
    int precision;   /* -1 if none */
    enum length length;
    char conversion;
};

struct out {
    format_sink_t sink;
    void *ctx;
    int count;
};

static void emit(struct out *o, char c)
{
    o->sink(c, o->ctx);
    o->count++;
}

static void emit_repeat(struct out *o, char c, int n)
{
    for (; n > 0; n--)
        emit(o, c);
}

static int parse_number(const char **p)
{
    int n = 0;

    while (**p >= '0' && **p <= '9') {
        n = n * 10 + (**p - '0');
        (*p)++;
    }
    return n;
}

static void parse_flags(const char **p, struct spec *s)
{
    for (;; (*p)++) {
        if (**p == '-')
            s->left = true;
        else if (**p == '0')
            s->zero = true;
        else
            return;
    }
}

static enum length parse_length(const char **p)
{
    const char *s = *p;

    if (s[0] == 'h' && s[1] == 'h') { *p += 2; return LEN_CHAR; }
    if (s[0] == 'h') { *p += 1; return LEN_SHORT; }
    if (s[0] == 'l' && s[1] == 'l') { *p += 2; return LEN_LONG_LONG; }
    if (s[0] == 'l') { *p += 1; return LEN_LONG; }
    if (s[0] == 'z') { *p += 1; return LEN_SIZE; }
    return LEN_INT;
}

/* Parses the specification after '%'; *p is left after the conversion. */
static void parse_spec(const char **p, struct spec *s, va_list *ap)
{
    *s = (struct spec){.precision = -1};
    parse_flags(p, s);
    if (**p == '*') {
        s->width = va_arg(*ap, int);
        if (s->width < 0) {
            s->left = true;
            s->width = -s->width;
        }
        (*p)++;
    } else {
        s->width = parse_number(p);
    }
    if (**p == '.') {
        (*p)++;
        if (**p == '*') {
            s->precision = va_arg(*ap, int);
            (*p)++;
        } else {
            s->precision = parse_number(p);
        }
    }
    s->length = parse_length(p);
    s->conversion = **p;
    if (**p != '\0')
        (*p)++;
}

static uint64_t fetch_unsigned(enum length len, va_list *ap)
{
    switch (len) {
    case LEN_CHAR: return (unsigned char)va_arg(*ap, unsigned int);
    case LEN_SHORT: return (unsigned short)va_arg(*ap, unsigned int);
    case LEN_LONG: return va_arg(*ap, unsigned long);
    case LEN_LONG_LONG: return va_arg(*ap, unsigned long long);
    case LEN_SIZE: return va_arg(*ap, size_t);
    default: return va_arg(*ap, unsigned int);
    }
}

static int64_t fetch_signed(enum length len, va_list *ap)
{
    switch (len) {
    case LEN_CHAR: return (signed char)va_arg(*ap, int);
    case LEN_SHORT: return (short)va_arg(*ap, int);
    case LEN_LONG: return va_arg(*ap, long);
    case LEN_LONG_LONG: return va_arg(*ap, long long);
    case LEN_SIZE: return va_arg(*ap, long); /* %zd: signed size_t */
    default: return va_arg(*ap, int);
    }
}

/* Writes the digits of v in base (10 or 16) backwards; returns the count. */
static int render_digits(char *end, uint64_t v, unsigned base, bool upper)
{
    const char *digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";
    int n = 0;

    do {
        *--end = digits[v % base];
        v /= base;
        n++;
    } while (v != 0);
    return n;
}

/* Emits a number: prefix ("-", "0x" or ""), then digits, padded per spec. */
static void emit_number(struct out *o, const struct spec *s, const char *prefix,
                        uint64_t v, unsigned base, bool upper)
{
    char buf[24];
    int ndigits = render_digits(buf + sizeof(buf), v, base, upper);
    const char *digits = buf + sizeof(buf) - ndigits;
    int plen = 0, zeros = 0, pad;

    if (s->precision == 0 && v == 0)
        ndigits = 0; /* C: "%.0d" of 0 prints nothing */
    while (prefix[plen] != '\0')
        plen++;
    if (s->precision > ndigits)
        zeros = s->precision - ndigits;
    else if (s->zero && !s->left && s->precision < 0 && s->width > plen + ndigits)
        zeros = s->width - plen - ndigits;
    pad = s->width - plen - zeros - ndigits;
    if (!s->left)
        emit_repeat(o, ' ', pad);
    for (int i = 0; i < plen; i++)
        emit(o, prefix[i]);
    emit_repeat(o, '0', zeros);
    for (int i = 0; i < ndigits; i++)
        emit(o, digits[i]);
    if (s->left)
        emit_repeat(o, ' ', pad);
}

static void emit_string(struct out *o, const struct spec *s, const char *str)
{
    int len = 0;

    if (str == NULL)
        str = "(null)";
    while (str[len] != '\0' && (s->precision < 0 || len < s->precision))
        len++;
    if (!s->left)
        emit_repeat(o, ' ', s->width - len);
    for (int i = 0; i < len; i++)
        emit(o, str[i]);
    if (s->left)
        emit_repeat(o, ' ', s->width - len);
}

static void emit_signed(struct out *o, const struct spec *s, int64_t v)
{
    uint64_t magnitude = v < 0 ? -(uint64_t)v : (uint64_t)v;

    emit_number(o, s, v < 0 ? "-" : "", magnitude, 10, false);
}

static void emit_pointer(struct out *o, const struct spec *s, void *p)
{
    struct spec ps = *s;

    if (ps.precision < 16)
        ps.precision = 16;
    emit_number(o, &ps, "0x", (uintptr_t)p, 16, false);
}

static void emit_char(struct out *o, const struct spec *s, char c)
{
    if (!s->left)
        emit_repeat(o, ' ', s->width - 1);
    emit(o, c);
    if (s->left)
        emit_repeat(o, ' ', s->width - 1);
}

static void convert(struct out *o, const struct spec *s, va_list *ap)
{
    switch (s->conversion) {
    case 'd':
    case 'i': emit_signed(o, s, fetch_signed(s->length, ap)); break;
    case 'u': emit_number(o, s, "", fetch_unsigned(s->length, ap), 10, false); break;
    case 'x': emit_number(o, s, "", fetch_unsigned(s->length, ap), 16, false); break;
    case 'X': emit_number(o, s, "", fetch_unsigned(s->length, ap), 16, true); break;
    case 'p': emit_pointer(o, s, va_arg(*ap, void *)); break;
    case 's': emit_string(o, s, va_arg(*ap, const char *)); break;
    case 'c': emit_char(o, s, (char)va_arg(*ap, int)); break;
    case '%':
    case '\0': emit(o, '%'); break; /* "%%", or a lone '%' at the end */
    default:
        emit(o, '%');
        emit(o, s->conversion);
        break;
    }
}

int kvformat(format_sink_t sink, void *ctx, const char *fmt, va_list ap)
{
    struct out o = {.sink = sink, .ctx = ctx, .count = 0};
    struct spec s;
    va_list args;

    va_copy(args, ap);
    while (*fmt != '\0') {
        if (*fmt != '%') {
            emit(&o, *fmt++);
            continue;
        }
        fmt++;
        parse_spec(&fmt, &s, &args);
        convert(&o, &s, &args);
    }
    va_end(args);
    return o.count;
}

struct buffer {
    char *buf;
    size_t size;
    size_t used;
};

static void buffer_sink(char c, void *ctx)
{
    struct buffer *b = ctx;

    if (b->used + 1 < b->size)
        b->buf[b->used] = c;
    b->used++;
}

int kvsnprintf(char *buf, size_t size, const char *fmt, va_list ap)
{
    struct buffer b = {.buf = buf, .size = size, .used = 0};
    int n = kvformat(buffer_sink, &b, fmt, ap);

    if (size > 0)
        buf[b.used < size ? b.used : size - 1] = '\0';
    return n;
}

int ksnprintf(char *buf, size_t size, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = kvsnprintf(buf, size, fmt, ap);
    va_end(ap);
    return n;
}
