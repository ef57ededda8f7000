/*
 * replay.c - allocation traces replayed against the kernel heap (see
 * replay.h for the formats, the checks and the figures).
 *
 * Owns: the saved module descriptor, the parsed operations and the
 * per-id blocks (both in frames taken straight from the PMM, so the
 * replayer's own memory never counts in the heap's footprint), the treap
 * of live blocks, the fill pattern, the replay loop and its figures.
 * Does not own: the heap (heap.h) or its checks (heap_check).
 */
#include "test/replay.h"
#include "test/planted.h"

#include "arch/x86_64/io.h"
#include "boot/boot.h"
#include "boot/cmdline.h"
#include "dev/serial.h"
#include "heap/heap.h"
#include "lib/panic.h"
#include "lib/string.h"
#include "mm/pmm.h"

#define NIL 0xffffffffu
#define PATTERN_STEP 0x9e3779b97f4a7c15ULL
#define NO_MISMATCH ((uint64_t)-1)

struct replay_result replay_result;

/* ---- The module ------------------------------------------------------------------- */

static struct {
    const char *text;
    uint64_t size;
    char path[64];
} module;

void replay_save_module(void)
{
    const struct limine_module_response *mods = boot_modules();
    const struct limine_file *m;

    if (mods == NULL || mods->module_count == 0)
        return;
    m = mods->modules[0];
    module.text = m->address;
    module.size = m->size;
    if (m->path != NULL) {
        size_t n = strlen(m->path);

        if (n >= sizeof(module.path))
            n = sizeof(module.path) - 1;
        memcpy(module.path, m->path, n);
        module.path[n] = '\0';
    }
}

/* ---- Operations ------------------------------------------------------------------------ */

enum op_kind {
    OP_ALLOC = 'a',
    OP_CALLOC = 'c',
    OP_REALLOC = 'r',
    OP_FREE = 'f',
    OP_DOUBLE_FREE = 'd', /* the misuses, heaptest=ops only */
    OP_INVALID_FREE = 'i',
    OP_OVERFLOW = 'o',
    OP_USE_AFTER_FREE = 'u',
};

struct op {
    uint32_t id;
    uint32_t kind;  /* enum op_kind */
    uint64_t size;
    uint64_t arg;   /* a: the alignment (0: none); c: the count; i, o: the offset */
};

/* A block id: its block, and its node in the treap of live blocks. */
struct slot {
    uint8_t *p;     /* NULL if not live or the allocation returned NULL */
    uint8_t *last;  /* what p was before the last free (for d and u) */
    uint64_t size;
    uint64_t seed;
    uint32_t left, right, prio;
    uint32_t tracked; /* in the treap */
};

struct trace {
    struct op *ops;
    uint64_t count;
    struct slot *slots;
    uint64_t ids;
};

static uint64_t frames_for(uint64_t bytes)
{
    return bytes == 0 ? 1 : (bytes + PAGE_SIZE - 1) / PAGE_SIZE;
}

/* Frames for bytes, zeroed, through the HHDM; panics when none are left.
 * give_frames returns them. */
static void *take_frames(uint64_t bytes, const char *what)
{
    paddr_t pa = pmm_alloc_contiguous(frames_for(bytes), 1);

    if (pa == 0)
        panic("replay: no memory for %s (%lu frames)", what, frames_for(bytes));
    memset(phys_to_virt(pa), 0, frames_for(bytes) * PAGE_SIZE);
    return phys_to_virt(pa);
}

static void give_frames(void *p, uint64_t bytes)
{
    pmm_free_contiguous(virt_to_phys(p), frames_for(bytes));
}

/* ---- Parsing -------------------------------------------------------------------------- */

struct cursor {
    const char *p, *end;
    uint64_t line;
};

enum parse_form {
    FORM_TRACE,   /* replay=: malloc-lab only */
    FORM_OPLIST,  /* heaptest=ops: optional header, a ID SIZE ALIGN, c */
};

/* The words of the next nonblank line (at most max); 0 at the end. */
static size_t next_line(struct cursor *c, const char **word, size_t *len, size_t max)
{
    size_t n = 0;

    while (c->p < c->end && n == 0) {
        c->line++;
        while (c->p < c->end && *c->p != '\n') {
            while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\r'))
                c->p++;
            if (c->p >= c->end || *c->p == '\n')
                break;
            if (n == max)
                panic("replay: line %lu: more than %lu words", c->line, max);
            word[n] = c->p;
            while (c->p < c->end && *c->p != ' ' && *c->p != '\t' && *c->p != '\r' &&
                   *c->p != '\n')
                c->p++;
            len[n] = (size_t)(c->p - word[n]);
            n++;
        }
        if (c->p < c->end)
            c->p++; /* the newline */
    }
    return n;
}

static bool is_number(const char *w, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (w[i] < '0' || w[i] > '9')
            return false;
    }
    return len > 0 && len <= 19;
}

static uint64_t number(const char *w, size_t len, uint64_t line)
{
    uint64_t v = 0;

    if (!is_number(w, len))
        panic("replay: line %lu: '%.*s' is not a number", line, (int)len, w);
    for (size_t i = 0; i < len; i++)
        v = v * 10 + (uint64_t)(w[i] - '0');
    return v;
}

/* Reads the header: its integers into h, their count returned; c is left
 * at the first operation. */
static size_t read_header(struct cursor *c, uint64_t *h)
{
    size_t n = 0;

    for (;;) {
        struct cursor before = *c;
        const char *word[4];
        size_t len[4];
        size_t words = next_line(c, word, len, 4);

        if (words != 1 || !is_number(word[0], len[0]) || n == 4) {
            *c = before;
            return n;
        }
        h[n++] = number(word[0], len[0], c->line);
    }
}

/* The operations' forms: the letter, how many numbers follow (the id
 * first), and whether only the op-list form has it. */
static const struct {
    char kind;
    uint8_t numbers;
    enum parse_form form;
} op_forms[] = {
    {'a', 2, FORM_TRACE},  {'r', 2, FORM_TRACE},  {'f', 1, FORM_TRACE},
    {'a', 3, FORM_OPLIST}, {'c', 3, FORM_OPLIST}, {'d', 1, FORM_OPLIST},
    {'i', 2, FORM_OPLIST}, {'o', 2, FORM_OPLIST}, {'u', 1, FORM_OPLIST},
};

/* One operation from a line's words; panics naming the line. */
static struct op parse_op(const char **word, const size_t *len, size_t words, uint64_t line,
                          enum parse_form form)
{
    struct op op = {0};
    char kind = len[0] == 1 ? word[0][0] : '?';
    uint64_t n[3] = {0};
    bool known = false, matched = false;

    for (size_t f = 0; f < ARRAY_SIZE(op_forms); f++) {
        if (op_forms[f].kind != kind || (op_forms[f].form == FORM_OPLIST && form != FORM_OPLIST))
            continue;
        known = true;
        matched |= op_forms[f].numbers + 1u == words;
    }
    if (!known)
        panic("replay: line %lu: unknown operation '%.*s'", line, (int)len[0], word[0]);
    if (!matched)
        panic("replay: line %lu: '%c' with the wrong count of numbers", line, kind);
    for (size_t i = 1; i < words; i++)
        n[i - 1] = number(word[i], len[i], line);
    if (n[0] >= REPLAY_MAX_IDS)
        panic("replay: line %lu: id above %u", line, REPLAY_MAX_IDS - 1);
    op.kind = (uint32_t)kind;
    op.id = (uint32_t)n[0];
    if (kind == 'a' || kind == 'r') {
        op.size = n[1];
        op.arg = n[2];
    } else if (kind == 'c') {
        op.arg = n[1];
        op.size = n[2];
    } else if (kind == 'i' || kind == 'o') {
        op.arg = n[1];
    }
    return op;
}

/* Operation lines left after the header (a first pass). */
static uint64_t count_ops(struct cursor c)
{
    const char *word[5];
    size_t len[5];
    uint64_t n = 0;

    while (next_line(&c, word, len, 5) > 0)
        n++;
    return n;
}

enum id_state {
    ID_UNUSED = 0,
    ID_LIVE = 1,
    ID_FREED = 2,
};

/* What state op needs its id in (a and c: anything but live). */
static bool state_allows(const struct op *op, enum id_state state)
{
    switch (op->kind) {
    case OP_ALLOC:
    case OP_CALLOC:
        return state != ID_LIVE;
    case OP_DOUBLE_FREE:
    case OP_USE_AFTER_FREE:
        return state == ID_FREED;
    default:
        return state == ID_LIVE;
    }
}

static enum id_state state_after(const struct op *op, enum id_state state)
{
    if (op->kind == OP_ALLOC || op->kind == OP_CALLOC)
        return ID_LIVE;
    if (op->kind == OP_FREE || (op->kind == OP_REALLOC && op->size == 0))
        return ID_FREED;
    return state;
}

/* Ids are allocated only when not live, reallocated, freed or misused
 * only when live, freed again or written after free only when freed. */
static void check_liveness(struct trace *t, const uint64_t *lines)
{
    uint8_t *state = take_frames(t->ids, "the liveness check");

    for (uint64_t i = 0; i < t->count; i++) {
        const struct op *op = &t->ops[i];

        if (op->id >= t->ids)
            panic("replay: line %lu: id %u, but the header says %lu ids", lines[i], op->id,
                  t->ids);
        if (!state_allows(op, (enum id_state)state[op->id]))
            panic("replay: line %lu: '%c' on id %u, which is %s", lines[i], (char)op->kind,
                  op->id, state[op->id] == ID_LIVE ? "live" : state[op->id] == ID_FREED ?
                  "freed" : "not allocated yet");
        state[op->id] = (uint8_t)state_after(op, (enum id_state)state[op->id]);
    }
    give_frames(state, t->ids);
}

static void parse_ops(struct trace *t, struct cursor c, enum parse_form form, uint64_t *lines)
{
    const char *word[5];
    size_t len[5], words;
    uint64_t max_id = 0;

    for (uint64_t i = 0; (words = next_line(&c, word, len, 5)) > 0; i++) {
        t->ops[i] = parse_op(word, len, words, c.line, form);
        lines[i] = c.line;
        if (t->ops[i].id > max_id)
            max_id = t->ops[i].id;
    }
    if (t->ids == 0)
        t->ids = t->count == 0 ? 1 : max_id + 1;
}

static struct trace parse(enum parse_form form)
{
    struct cursor c = {.p = module.text, .end = module.text + module.size, .line = 0};
    uint64_t h[4] = {0};
    size_t header = read_header(&c, h);
    struct trace t = {0};
    uint64_t *lines;

    if (header == 2 || header == 4)
        t.ids = header == 2 ? h[0] : h[1];
    else if (form == FORM_TRACE || header != 0)
        panic("replay: %s: a header of 2 or 4 integers, one per line, must come first",
              module.path);
    if (t.ids > REPLAY_MAX_IDS)
        panic("replay: the header says %lu ids, at most %u", t.ids, REPLAY_MAX_IDS);
    t.count = count_ops(c);
    if (header != 0 && t.count != (header == 2 ? h[1] : h[2]))
        panic("replay: the header says %lu operations, the module has %lu",
              header == 2 ? h[1] : h[2], t.count);
    t.ops = take_frames(t.count * sizeof(struct op), "the operations");
    lines = take_frames(t.count * sizeof(uint64_t), "the line numbers");
    parse_ops(&t, c, form, lines);
    check_liveness(&t, lines);
    give_frames(lines, t.count * sizeof(uint64_t));
    t.slots = take_frames(t.ids * sizeof(struct slot), "the blocks");
    return t;
}

/* ---- The treap of live blocks, by address ---------------------------------------------- */

static struct slot *slots;
static uint32_t root = NIL;

static uint32_t priority(uint32_t id)
{
    uint64_t x = (uint64_t)id * 0x9e3779b97f4a7c15ULL;

    return (uint32_t)((x >> 32) ^ x) | 1;
}

static uint8_t *key(uint32_t n)
{
    return slots[n].p;
}

/* Splits tree t into keys below k (*l) and the rest (*r). */
static void split(uint32_t t, const uint8_t *k, uint32_t *l, uint32_t *r)
{
    if (t == NIL) {
        *l = *r = NIL;
    } else if (key(t) < k) {
        split(slots[t].right, k, &slots[t].right, r);
        *l = t;
    } else {
        split(slots[t].left, k, l, &slots[t].left);
        *r = t;
    }
}

/* Joins l and r, every key of l below every key of r. */
static uint32_t join(uint32_t l, uint32_t r)
{
    if (l == NIL)
        return r;
    if (r == NIL)
        return l;
    if (slots[l].prio > slots[r].prio) {
        slots[l].right = join(slots[l].right, r);
        return l;
    }
    slots[r].left = join(l, slots[r].left);
    return r;
}

static void tree_insert(uint32_t n)
{
    uint32_t l, r;

    slots[n].left = slots[n].right = NIL;
    slots[n].prio = priority(n);
    split(root, key(n), &l, &r);
    root = join(join(l, n), r);
    slots[n].tracked = 1;
}

static void tree_remove(uint32_t n)
{
    uint32_t l, mid, r;

    if (!slots[n].tracked)
        return;
    split(root, key(n), &l, &mid);
    split(mid, key(n) + 1, &mid, &r);
    if (mid != n)
        panic("replay: the treap lost block %u", n);
    root = join(l, r);
    slots[n].tracked = 0;
}

/* The live block (other than none) nearest below or at p, and the nearest above. */
static void neighbours(const uint8_t *p, uint32_t *below, uint32_t *above)
{
    *below = *above = NIL;
    for (uint32_t t = root; t != NIL;) {
        if (key(t) <= p) {
            *below = t;
            t = slots[t].right;
        } else {
            *above = t;
            t = slots[t].left;
        }
    }
}

/* ---- The pattern ---------------------------------------------------------------------- */

static uint64_t seed_of(uint32_t id, uint64_t size)
{
    return ((uint64_t)id + 1) * 0xff51afd7ed558ccdULL ^ size * 0xc4ceb9fe1a85ec53ULL;
}

static uint8_t pattern_byte(uint64_t seed, uint64_t j)
{
    return (uint8_t)((seed + (j >> 3) * PATTERN_STEP) >> (8 * (j & 7)));
}

/* Writes the pattern over bytes [from, to) of p (p 8-aligned). */
static void fill(uint8_t *p, uint64_t seed, uint64_t from, uint64_t to)
{
    uint64_t j = from;
    uint64_t *w;

    for (; j < to && (j & 7) != 0; j++)
        p[j] = pattern_byte(seed, j);
    w = (uint64_t *)(p + j);
    for (uint64_t v = seed + (j >> 3) * PATTERN_STEP; j + 8 <= to; j += 8, v += PATTERN_STEP)
        *w++ = v;
    for (; j < to; j++)
        p[j] = pattern_byte(seed, j);
}

/* The first byte of [0, len) of p (8-aligned) that differs from the
 * pattern, or NO_MISMATCH. Four words at a time while they match. */
static uint64_t mismatch(const uint8_t *p, uint64_t seed, uint64_t len)
{
    const uint64_t *w = (const uint64_t *)p;
    const uint64_t s1 = PATTERN_STEP, s2 = 2 * PATTERN_STEP, s3 = 3 * PATTERN_STEP;
    uint64_t words = len / 8, i = 0, v = seed, j;

    for (; i + 4 <= words; i += 4, v += 4 * PATTERN_STEP) {
        if (((w[i] ^ v) | (w[i + 1] ^ (v + s1)) | (w[i + 2] ^ (v + s2)) |
             (w[i + 3] ^ (v + s3))) != 0)
            break;
    }
    for (j = i * 8; j < len; j++) {
        if (p[j] != pattern_byte(seed, j))
            return j;
    }
    return NO_MISMATCH;
}

/* ---- Replaying ---------------------------------------------------------------------------- */

struct run {
    struct trace *t;
    enum replay_mode mode;
    uint64_t errors;
    uint64_t payload, peak; /* bytes live now, and the most */
    uint64_t live;          /* blocks live (non-NULL) */
    uint64_t base_blocks;   /* heap_check's count before the first operation */
    uint64_t period;        /* heap_check every period operations (debug), 0: never */
};

static void error(struct run *run, uint64_t i, const char *what, uint64_t value)
{
    const struct op *op = &run->t->ops[i];

    if (run->errors++ >= REPLAY_MAX_REPORTED)
        return;
    kprintf("replay: error: op %lu (%c %u %lu): %s 0x%lx\n", i, (char)op->kind, op->id,
            op->size, what, value);
}

static void account(struct run *run, uint64_t old_size, uint64_t new_size, bool was_live,
                    bool is_live)
{
    run->payload += new_size - old_size;
    run->live += (uint64_t)is_live - (uint64_t)was_live;
    if (run->payload > run->peak)
        run->peak = run->payload;
}

/* Alignment, range and overlap of a new block; tracks it if it can. */
static void check_new(struct run *run, uint64_t i, uint32_t id, uint64_t align)
{
    struct slot *s = &slots[id];
    vaddr_t va = (vaddr_t)s->p;
    uint32_t below, above;

    if ((va & (align - 1)) != 0)
        error(run, i, "block not aligned:", va);
    if (va < HEAP_BASE || va >= HEAP_END || s->size > HEAP_END - va)
        error(run, i, "block outside the heap's range:", va);
    neighbours(s->p, &below, &above);
    if (below != NIL && (key(below) == s->p || key(below) + slots[below].size > s->p)) {
        error(run, i, "block overlaps a live block at", (vaddr_t)key(below));
        return;
    }
    if (above != NIL && s->p + s->size > key(above)) {
        error(run, i, "block overlaps a live block at", (vaddr_t)key(above));
        return;
    }
    tree_insert(id);
}

static void print_address(struct run *run, uint64_t i, uint32_t id, const void *p)
{
    if (run->mode == REPLAY_HEAPTEST)
        kprintf("heap op %lu %u 0x%016lx\n", i, id, (vaddr_t)p);
}

static void do_alloc(struct run *run, uint64_t i, const struct op *op)
{
    struct slot *s = &slots[op->id];
    uint64_t bytes = op->size;

    if (op->kind == OP_CALLOC) {
        bytes = op->size != 0 && op->arg > (uint64_t)-1 / op->size ? 0 : op->arg * op->size;
        s->p = kcalloc(op->arg, op->size);
    } else {
        s->p = op->arg != 0 ? kmalloc_aligned(op->size, op->arg) : kmalloc(op->size);
    }
    print_address(run, i, op->id, s->p);
    s->size = s->p != NULL ? bytes : 0;
    s->seed = seed_of(op->id, bytes);
#if PLANT_BUG == 201 /* planted bug 201: a large block is stamped before the NULL check */
    if (bytes > 1024)
        s->p[0] = 0xa5;
#endif
    if (s->p == NULL) {
        if (run->mode != REPLAY_HEAPTEST && bytes > 0)
            error(run, i, "allocation returned", 0);
        return;
    }
    account(run, 0, bytes, false, true);
    if (op->kind == OP_CALLOC) {
        for (uint64_t j = 0; j < bytes; j++) {
            if (s->p[j] != 0) {
                error(run, i, "kcalloc's block not zeroed at offset", j);
                break;
            }
        }
    }
    check_new(run, i, op->id, op->arg > HEAP_MIN_ALIGN ? op->arg : HEAP_MIN_ALIGN);
    fill(s->p, s->seed, 0, bytes);
}

static void do_realloc(struct run *run, uint64_t i, const struct op *op)
{
    struct slot *s = &slots[op->id];
    uint8_t *old = s->p;
    uint64_t old_size = s->size, keep = old_size < op->size ? old_size : op->size;
    uint64_t at;

    if (old != NULL && (at = mismatch(old, s->seed, keep)) != NO_MISMATCH)
        error(run, i, "contents changed before krealloc, at offset", at);
    if (old != NULL)
        tree_remove(op->id);
    s->p = krealloc(old, op->size);
    print_address(run, i, op->id, s->p);
    if (s->p == NULL && op->size != 0) {
        if (run->mode != REPLAY_HEAPTEST)
            error(run, i, "krealloc returned", 0);
        s->p = old; /* the old block is still allocated */
        if (old != NULL)
            check_new(run, i, op->id, HEAP_MIN_ALIGN);
        return;
    }
    s->size = s->p != NULL ? op->size : 0;
    account(run, old_size, s->size, old != NULL, s->p != NULL);
    if (s->p == NULL) {
        s->last = old; /* krealloc(p, 0) freed it */
        return;
    }
    check_new(run, i, op->id, HEAP_MIN_ALIGN);
    if (old != NULL && s->p != old && (at = mismatch(s->p, s->seed, keep)) != NO_MISMATCH)
        error(run, i, "krealloc did not keep the contents, at offset", at);
    fill(s->p, s->seed, old != NULL ? keep : 0, s->size);
}

static void do_free(struct run *run, uint64_t i, const struct op *op)
{
    struct slot *s = &slots[op->id];
    uint64_t at;

    if (s->p != NULL && (at = mismatch(s->p, s->seed, s->size)) != NO_MISMATCH)
        error(run, i, "contents changed before kfree, at offset", at);
    if (s->p != NULL)
        tree_remove(op->id);
    kfree(s->p);
    account(run, s->size, 0, s->p != NULL, false);
    s->last = s->p;
    s->p = NULL;
    s->size = 0;
}

/*
 * The misuses (heaptest=ops): a second kfree, a kfree of an address inside
 * a block, a byte written past a block's end or into a freed block. The
 * heap should stop the kernel (a panic) at the kfree, or for the writes
 * when it next looks (heapdebug=1: the block's kfree, or the next
 * allocation of that memory); if the kfree returns, that is an error.
 */
static void do_misuse(struct run *run, uint64_t i, const struct op *op)
{
    struct slot *s = &slots[op->id];

    switch (op->kind) {
    case OP_DOUBLE_FREE:
        kfree(s->last);
        if (s->last != NULL)
            error(run, i, "a second kfree returned, block", (vaddr_t)s->last);
        break;
    case OP_INVALID_FREE:
        if (s->p != NULL)
            tree_remove(op->id);
        kfree(s->p + op->arg);
        error(run, i, "a kfree inside a block returned, at", (vaddr_t)(s->p + op->arg));
        break;
    case OP_OVERFLOW:
        if (s->p != NULL)
            s->p[op->arg] ^= 0xff;
        break;
    default: /* OP_USE_AFTER_FREE */
        if (s->last != NULL)
            s->last[0] ^= 0xff;
        break;
    }
}

/* With heapdebug=1: the heap's own walk, and its count of blocks. */
static void heap_walk(struct run *run, uint64_t i)
{
    uint64_t blocks = heap_check();

    if (blocks - run->base_blocks != run->live)
        error(run, i, "heap_check counts a different number of blocks:",
              blocks - run->base_blocks);
}

static void run_checked(struct run *run)
{
    const struct trace *t = run->t;

    for (uint64_t i = 0; i < t->count; i++) {
        const struct op *op = &t->ops[i];

        if (op->kind == OP_FREE)
            do_free(run, i, op);
        else if (op->kind == OP_REALLOC)
            do_realloc(run, i, op);
        else if (op->kind == OP_ALLOC || op->kind == OP_CALLOC)
            do_alloc(run, i, op);
        else
            do_misuse(run, i, op);
        if (run->period != 0 && (i + 1) % run->period == 0)
            heap_walk(run, i);
    }
}

/* The allocator alone: calls and the payload figures, nothing checked. */
static void run_bare(struct run *run)
{
    const struct trace *t = run->t;

    for (uint64_t i = 0; i < t->count; i++) {
        const struct op *op = &t->ops[i];
        struct slot *s = &slots[op->id];
        uint64_t old = s->size;

        if (op->kind == OP_FREE) {
            kfree(s->p);
            s->p = NULL;
            s->size = 0;
        } else {
            s->p = op->kind == OP_REALLOC ? krealloc(s->p, op->size) : kmalloc(op->size);
            s->size = s->p != NULL ? op->size : 0;
            if (s->p == NULL && op->size != 0)
                run->errors++;
        }
        account(run, old, s->size, old != 0, s->size != 0);
    }
}

/* ---- Figures and the entry point ----------------------------------------------------------- */

static inline uint64_t rdtsc(void)
{
    uint32_t lo, hi;

    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return ((uint64_t)hi << 32) | lo;
}

static enum replay_mode mode_choice(void)
{
    char value[8];

    if (cmdline_get("heaptest", value, sizeof(value)) >= 0) {
        if (strcmp(value, "ops") != 0)
            panic("replay: unknown heaptest=%s (use ops)", value);
        return REPLAY_HEAPTEST;
    }
    if (cmdline_get("replay", value, sizeof(value)) < 0 || strcmp(value, "0") == 0)
        return REPLAY_NONE;
    if (strcmp(value, "1") == 0 || value[0] == '\0')
        return REPLAY_CHECKED;
    if (strcmp(value, "bare") == 0)
        return REPLAY_BARE;
    panic("replay: unknown replay=%s (use 1 or bare)", value);
}

static uint64_t period_choice(void)
{
    char value[24];
    struct cursor c;
    const char *word[1];
    size_t len[1];

    if (heap_debug_mode() != HEAP_DEBUG_ON)
        return 0;
    if (cmdline_get("heapcheck", value, sizeof(value)) < 0)
        return REPLAY_CHECK_PERIOD;
    c = (struct cursor){.p = value, .end = value + strlen(value), .line = 0};
    if (next_line(&c, word, len, 1) != 1)
        panic("replay: heapcheck= needs a number");
    return number(word[0], len[0], 0);
}

static void report(struct run *run, uint64_t tsc)
{
    uint64_t footprint = heap_peak_footprint();
    uint64_t e4 = footprint != 0 ? run->peak * 10000 / footprint : 0;
    const char *kind = heap_kind_name(heap_kind());

    if (run->mode == REPLAY_HEAPTEST)
        kprintf("heaptest: heap=%s ops=%lu errors=%lu live=%lu\n", kind, run->t->count,
                run->errors, run->live);
    else
        kprintf("replay: heap=%s ops=%lu errors=%lu peak_payload=%lu peak_footprint=%lu "
                "utilization=%lu.%04lu\n", kind, run->t->count, run->errors, run->peak,
                footprint, e4 / 10000, e4 % 10000);
    replay_result.heap_kind = heap_kind();
    replay_result.ops = run->t->count;
    replay_result.errors = run->errors;
    replay_result.peak_payload = run->peak;
    replay_result.peak_footprint = footprint;
    replay_result.utilization_e4 = e4;
    replay_result.mode = run->mode;
    replay_result.debug = heap_debug_mode();
    replay_result.tsc = tsc;
    __asm__ volatile("" : : : "memory");
    replay_result.magic = REPLAY_RESULT_MAGIC;
}

void replay_main(void)
{
    enum replay_mode mode = mode_choice();
    struct trace t;
    struct run run = {.mode = mode};
    uint64_t tsc;

    if (mode == REPLAY_NONE)
        return;
    if (module.text == NULL)
        panic("replay: no module (give the trace as the first module)");
    t = parse(mode == REPLAY_HEAPTEST ? FORM_OPLIST : FORM_TRACE);
    slots = t.slots;
    run.t = &t;
    run.period = period_choice();
    if (heap_debug_mode() == HEAP_DEBUG_ON)
        run.base_blocks = heap_check();
    kprintf("replay: %s: %lu operations on %lu ids, heap=%s%s\n", module.path, t.count, t.ids,
            heap_kind_name(heap_kind()), heap_debug_mode() == HEAP_DEBUG_ON ? " (debug)" : "");
    outb(REPLAY_MARKER_PORT, REPLAY_MARK_START);
    tsc = rdtsc();
    if (mode == REPLAY_BARE)
        run_bare(&run);
    else
        run_checked(&run);
    tsc = rdtsc() - tsc;
    outb(REPLAY_MARKER_PORT, REPLAY_MARK_END);
    if (heap_debug_mode() == HEAP_DEBUG_ON)
        heap_walk(&run, t.count == 0 ? 0 : t.count - 1);
    report(&run, tsc);
    kernel_exit(run.errors != 0 ? EXIT_PANIC : EXIT_OK);
}
