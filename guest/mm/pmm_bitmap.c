/*
 * pmm_bitmap.c - the bitmap backend of the physical memory manager.
 *
 * Owns: one bit per frame of the span pmm.c gives it (1 = used or not
 * managed, 0 = free) and the next-fit hint.
 * Does not own: argument checks, counts or poisoning (pmm.c), or where
 * the bitmap lives (pmm.c places it and hands over an HHDM pointer).
 *
 * Single frames are found next-fit: the search starts at the 64-bit word
 * where the last one was found and skips full words, so a run of
 * allocations costs O(1) amortized. pmm.c never calls take() when no frame
 * is free, so the search always ends. Contiguous runs are found first-fit
 * from the start of the span, skipping full words: O(frames / 64).
 */
#include "mm/pmm.h"

#include "lib/string.h"

#define WORD_BITS 64
#define FULL (~(uint64_t)0)

static uint64_t *words;
static uint64_t nwords;
static uint64_t nbits;
static pfn_t base;
static uint64_t hint; /* word index where the next single-frame search starts */

static uint64_t bitmap_metadata_bytes(uint64_t frames)
{
    return (frames + WORD_BITS - 1) / WORD_BITS * sizeof(uint64_t);
}

/* Every bit set: the bits past the last frame stay set forever. */
static void bitmap_init(void *meta, pfn_t base_pfn, uint64_t frames)
{
    words = meta;
    nbits = frames;
    nwords = (frames + WORD_BITS - 1) / WORD_BITS;
    base = base_pfn;
    hint = 0;
    memset(words, 0xff, nwords * sizeof(uint64_t));
}

/* The mask of bits [from, to) within one word; 0 <= from < to <= 64. */
static uint64_t bit_mask(unsigned from, unsigned to)
{
    uint64_t high = to == WORD_BITS ? FULL : (((uint64_t)1 << to) - 1);

    return high & ~(((uint64_t)1 << from) - 1);
}

/* Sets (used) or clears (free) the bits [i, i + count). */
static void write_run(uint64_t i, uint64_t count, enum frame_state state)
{
    uint64_t end = i + count;

    while (i < end) {
        uint64_t w = i / WORD_BITS;
        unsigned from = i % WORD_BITS;
        unsigned to = end - w * WORD_BITS >= WORD_BITS ? WORD_BITS
                                                       : (unsigned)(end - w * WORD_BITS);
        uint64_t mask = bit_mask(from, to);

        if (state == FRAME_FREE)
            words[w] &= ~mask;
        else
            words[w] |= mask;
        i = (w + 1) * WORD_BITS;
    }
}

static void bitmap_release(pfn_t pfn, uint64_t count)
{
    uint64_t i = pfn - base;

    if (count == 1) /* the common case, without write_run's masks */
        words[i / WORD_BITS] &= ~((uint64_t)1 << (i % WORD_BITS));
    else
        write_run(i, count, FRAME_FREE);
}

/* The first bit at or after i that is set (want_set) or clear; nbits if none. */
static uint64_t find_bit(uint64_t i, enum frame_state want)
{
    while (i < nbits) {
        uint64_t w = i / WORD_BITS;
        uint64_t bits = want == FRAME_USED ? words[w] : ~words[w];

        bits &= ~(((uint64_t)1 << (i % WORD_BITS)) - 1);
        if (bits != 0) {
            uint64_t found = w * WORD_BITS + (uint64_t)__builtin_ctzll(bits);

            return found < nbits ? found : nbits;
        }
        i = (w + 1) * WORD_BITS;
    }
    return nbits;
}

/* The first word after w that is not full, wrapping once; nwords if none. */
static uint64_t next_free_word(uint64_t w)
{
    for (uint64_t n = 1; n < nwords; n++) {
        if (++w == nwords)
            w = 0;
        if (words[w] != FULL)
            return w;
    }
    return nwords;
}

/* Next-fit: the first clear bit from the hint word on, wrapping once. */
static pfn_t take_one(void)
{
    uint64_t w = hint;
    unsigned bit;

    if (words[w] == FULL) {
        w = next_free_word(w);
        if (w == nwords)
            return PMM_NO_FRAME;
        hint = w;
    }
    bit = (unsigned)__builtin_ctzll(~words[w]);
    words[w] |= (uint64_t)1 << bit;
    return base + w * WORD_BITS + bit;
}

/* First fit: the lowest free run of count bits whose frame is align-aligned.
 * Not inlined, so that take_one's path stays short. */
static __attribute__((noinline)) pfn_t take_run(uint64_t count, uint64_t align)
{
    uint64_t i = find_bit(0, FRAME_FREE);

    while (i < nbits) {
        uint64_t start = ((base + i + align - 1) & ~(align - 1)) - base;
        uint64_t used;

        if (start + count > nbits)
            return PMM_NO_FRAME;
        used = find_bit(start, FRAME_USED);
        if (used >= start + count) {
            write_run(start, count, FRAME_USED);
            return base + start;
        }
        i = find_bit(used, FRAME_FREE);
    }
    return PMM_NO_FRAME;
}

static pfn_t bitmap_take(uint64_t count, uint64_t align)
{
    if ((count | align) == 1) /* count >= 1, align a power of two */
        return take_one();
    return take_run(count, align);
}

static enum frame_state bitmap_state(pfn_t pfn)
{
    uint64_t i = pfn - base;

    return (words[i / WORD_BITS] >> (i % WORD_BITS)) & 1 ? FRAME_USED : FRAME_FREE;
}

static void bitmap_describe(struct pmm_descriptor *d)
{
    d->max_order = 0;
    d->map = virt_to_phys(words);
    d->links = 0;
}

const struct pmm_backend pmm_bitmap_backend = {
    .kind = PMM_BITMAP,
    .name = "bitmap",
    .metadata_bytes = bitmap_metadata_bytes,
    .init = bitmap_init,
    .release = bitmap_release,
    .take = bitmap_take,
    .state = bitmap_state,
    .describe = bitmap_describe,
};
