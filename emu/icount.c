/* Instruction counting at translated-block granularity, called from Unicorn in C.
 *
 * A Python block or code hook costs 12x to 58x (see UNICORN.md); this hook costs about
 * nothing. Each block's instruction count is looked up in an open-addressing table keyed by
 * (address, size); a miss asks Python once (it decodes the block with capstone). The count
 * is added when the block starts, so the monitor subtracts the part of the last block that
 * did not run when it stops mid-block (exception, exit, exact stop).
 *
 * `stop_at`: when the block about to run would bring the count to it, ask Unicorn to
 * stop; Unicorn 2.1.4 then leaves before that block runs, and the monitor single-steps the
 * rest with emu_start(count=N) to land on the exact instruction.
 */
#include <stdint.h>

#define SLOTS (1u << 16)

typedef int (*stop_fn)(void *uc);
typedef uint32_t (*miss_fn)(uint64_t address, uint32_t size);

struct counter {
    uint64_t icount;
    uint64_t stop_at;
    uint64_t last_block;
    uint32_t last_size;
    uint32_t last_count;
    uint32_t stop_requested;
    uint32_t generation;
    uint64_t misses;
    stop_fn stop;
    miss_fn miss;
    uint64_t addresses[SLOTS];
    uint32_t sizes[SLOTS];
    uint32_t counts[SLOTS];
    uint32_t generations[SLOTS];
    uint32_t used;
};

uint64_t icount_struct_size(void) { return sizeof(struct counter); }

/* Forget every cached block count (the code behind an address may have changed). */
void icount_forget(struct counter *c) {
    c->generation++;
    c->used = 0;
}

static uint32_t lookup(struct counter *c, uint64_t address, uint32_t size) {
    uint32_t slot = (uint32_t)((address * 0x9E3779B97F4A7C15ull) >> 48) & (SLOTS - 1);
    for (;;) {
        if (c->generations[slot] != c->generation) break;
        if (c->addresses[slot] == address && c->sizes[slot] == size) return c->counts[slot];
        slot = (slot + 1) & (SLOTS - 1);
    }
    if (c->used >= SLOTS / 2) {           /* keep probes short: start over */
        icount_forget(c);
        return lookup(c, address, size);
    }
    uint32_t count = c->miss(address, size);
    c->misses++;
    c->used++;
    c->generations[slot] = c->generation;
    c->addresses[slot] = address;
    c->sizes[slot] = size;
    c->counts[slot] = count;
    return count;
}

void icount_block(void *uc, uint64_t address, uint32_t size, void *user_data) {
    struct counter *c = (struct counter *)user_data;
    uint32_t count;
    if (address == c->last_block && size == c->last_size) {
        count = c->last_count;            /* a loop re-entering its own block: no lookup */
    } else {
        count = lookup(c, address, size);
        c->last_block = address;
        c->last_size = size;
        c->last_count = count;
    }
    c->icount += count;
    if (c->icount >= c->stop_at && !c->stop_requested) {
        c->stop_requested = 1;
        c->stop(uc);
    }
}
