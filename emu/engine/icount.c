/* Instruction counting at translated-block granularity, called from Unicorn in C.
 *
 * A Python block or code hook costs 12x to 58x (see docs/UNICORN.md); this hook costs about
 * 2 ns a block, of which Unicorn's own helper call is about 1. Each block's instruction
 * count is found in a direct-mapped cache of 16-byte entries (one load, a predictable
 * branch: nothing else is on the chain of dependent loads from one block to the next),
 * behind it a table with short linear probes; a miss in both asks Unicorn's block cache
 * once (Python, which decodes the block with capstone, only if Unicorn cannot say). The
 * count is added when the block starts, so the monitor subtracts the part of the last
 * block that did not run when it stops mid-block (exception, exit, exact stop).
 *
 * `stop_at`: when the block about to run would bring the count to it, ask Unicorn to
 * stop; Unicorn 2.1.4 then leaves before that block runs, and the monitor single-steps the
 * rest with emu_start(count=N) to land on the exact instruction.
 */
#include <stdint.h>
#include <string.h>

#define SLOTS (1u << 16)
#define CACHE_SLOTS (1u << 14)
#define PROBES 8                 /* a block lives in one of the 8 slots after its hash */

typedef int (*stop_fn)(void *uc);
typedef uint32_t (*miss_fn)(uint64_t address, uint32_t size);
typedef int (*ctl_fn)(void *uc, uint32_t control, ...);
typedef int (*reg_read_fn)(void *uc, int regid, void *value);
typedef int (*user_block_fn)(uint64_t address, uint32_t size);

/* uc_ctl(UC_CTL_TB_REQUEST_CACHE): (3 << 30) read-write, (2 << 26) two arguments, 8. */
#define TB_REQUEST_CACHE ((3u << 30) | (2u << 26) | 8u)
struct uc_tb {
    uint64_t pc;
    uint16_t icount;
    uint16_t size;
};

/* One cached block. A translated block holds at most 512 instructions (TCG's limit), so
 * its count fits in 16 bits; `generation` says which icount_forget era filled it. */
struct entry {
    uint64_t address;
    uint32_t size;
    uint16_t count;
    uint16_t generation;
};

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
    ctl_fn ctl;
    uint64_t asked_python;
    reg_read_fn reg_read;
    user_block_fn user_block;     /* NULL: nobody wants to see user-mode blocks */
    int32_t cs_register;          /* UC_X86_REG_CS */
    uint32_t used;
    uint32_t reserved;
    struct entry cache[CACHE_SLOTS];
    struct entry entries[SLOTS + PROBES];   /* probes run past the end, never wrap */
};

uint64_t icount_struct_size(void) { return sizeof(struct counter); }

/* Forget every cached block count (the code behind an address may have changed). */
void icount_forget(struct counter *c) {
    c->generation = (uint16_t)(c->generation + 1);
    if (c->generation == 0) {             /* wrapped: old eras would look current again */
        memset(c->entries, 0, sizeof c->entries);
        memset(c->cache, 0, sizeof c->cache);
        c->generation = 1;
    }
    c->used = 0;
}

static inline uint32_t slot_of(uint64_t address) {
    return (uint32_t)((address * 0x9E3779B97F4A7C15ull) >> 48);
}

/* The block being counted is the translated block Unicorn is running: Unicorn knows its
 * instruction count. Asking Unicorn costs a lookup in its block cache; asking Python (a
 * page walk and capstone) costs about 20 us, which adds up over a kernel's first run
 * through hundreds of blocks. Python remains the fallback if the answer does not match. */
static uint32_t block_instructions(void *uc, struct counter *c, uint64_t address,
                                   uint32_t size) {
    struct uc_tb tb;
    if (c->ctl && c->ctl(uc, TB_REQUEST_CACHE, address, &tb) == 0
        && tb.pc == address && tb.size == size && tb.icount != 0)
        return tb.icount;
    c->asked_python++;
    return c->miss(address, size);
}

/* A new block at CPL 3 goes to Python once (the monitor looks for I/O instructions in it,
 * whose permission it checks); a nonzero answer stops Unicorn before the block runs. */
static void show_user_block(void *uc, struct counter *c, uint64_t address, uint32_t size) {
    uint64_t cs = 0;
    if (c->reg_read(uc, c->cs_register, &cs) != 0 || (cs & 3) != 3)
        return;
    if (c->user_block(address, size))
        c->stop(uc);
}

static uint32_t fill(void *uc, struct counter *c, uint64_t address, uint32_t size) {
    struct entry *first = &c->entries[slot_of(address)];
    if (c->used >= SLOTS / 2)             /* keep the table sparse: start over */
        icount_forget(c);
    uint32_t count = block_instructions(uc, c, address, size);
    if (c->user_block)
        show_user_block(uc, c, address, size);
    c->misses++;
    c->used++;
    struct entry *victim = first;         /* a free probe slot, else the first one */
    for (int i = 0; i < PROBES; i++) {
        if (first[i].generation != c->generation) { victim = &first[i]; break; }
    }
    victim->address = address;
    victim->size = size;
    victim->count = (uint16_t)count;
    victim->generation = (uint16_t)c->generation;
    return count;
}

static uint32_t lookup(void *uc, struct counter *c, uint64_t address, uint32_t size) {
    struct entry *e = &c->entries[slot_of(address)];
    for (int i = 0; i < PROBES; i++, e++) {
        if (e->address == address && e->size == size && e->generation == c->generation)
            return e->count;
        if (e->generation != c->generation) break;
    }
    return fill(uc, c, address, size);
}

/* The rare paths are separate functions the hot path tail-calls, so that the hot path
 * stays a leaf: no register saves on every block. */
static __attribute__((noinline)) void reach_stop(void *uc, struct counter *c) {
    if (!c->stop_requested) {
        c->stop_requested = 1;
        c->stop(uc);
    }
}

static inline void add_block(void *uc, struct counter *c, uint64_t address, uint32_t size,
                             uint32_t count) {
    c->last_block = address;
    c->last_size = size;
    c->last_count = count;
    c->icount += count;
    if (__builtin_expect(c->icount >= c->stop_at, 0))
        reach_stop(uc, c);
}

static __attribute__((noinline)) void uncached_block(void *uc, struct counter *c,
                                                     uint64_t address, uint32_t size,
                                                     struct entry *cached) {
    uint32_t count = lookup(uc, c, address, size);
    cached->address = address;
    cached->size = size;
    cached->count = (uint16_t)count;
    cached->generation = (uint16_t)c->generation;
    add_block(uc, c, address, size, count);
}

void icount_block(void *uc, uint64_t address, uint32_t size, void *user_data) {
    struct counter *c = (struct counter *)user_data;
    struct entry *cached = &c->cache[slot_of(address ^ size) & (CACHE_SLOTS - 1)];
    if (__builtin_expect(cached->address == address && cached->size == size
                         && cached->generation == c->generation, 1))
        add_block(uc, c, address, size, cached->count);
    else
        uncached_block(uc, c, address, size, cached);
}

/* Counts blocks, not instructions: the least any block hook costs. bench/run.py installs
 * it on bare Unicorn to measure Unicorn's own price per hooked block. */
void icount_block_floor(void *uc, uint64_t address, uint32_t size, void *user_data) {
    (void)uc; (void)address; (void)size;
    ((struct counter *)user_data)->icount++;
}
