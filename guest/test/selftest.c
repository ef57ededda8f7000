/*
 * selftest.c - self-tests of the physical memory manager, the page tables
 * and the heap's page cache.
 *
 * Owns: the tests listed in selftest.h, their options, and the probe
 * routines with their #PF handler (installed only while a test runs).
 * Does not own: anything it tests; it uses only the public APIs of pmm.h,
 * paging.h and heap.h, plus the descriptors a checker would read.
 */
#include "test/selftest.h"

#include "arch/x86_64/idt.h"
#include "arch/x86_64/io.h"
#include "boot/cmdline.h"
#include "boot/limine.h"
#include "dev/serial.h"
#include "heap/heap.h"
#include "lib/panic.h"
#include "lib/string.h"
#include "mm/paging.h"
#include "mm/pmm.h"
#include "test/checkpoint.h"
#include "test/planted.h"

static const char *current = "?";

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond))                                                                 \
            panic("selftest %s: check failed: %s (line %d)", current, #cond, __LINE__); \
    } while (0)

/* ---- The memory map, as the tests see it --------------------------------- */

static bool is_ram_type(uint64_t type)
{
    return type == LIMINE_MEMMAP_USABLE || type == LIMINE_MEMMAP_BOOTLOADER_RECLAIMABLE;
}

/* Is pfn inside a USABLE or BOOTLOADER_RECLAIMABLE entry (binary search)? */
static bool is_ram_frame(pfn_t pfn)
{
    paddr_t pa = pfn_to_paddr(pfn);
    size_t lo = 0, hi = pmm_region_count();

    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;

        if (pmm_region(mid)->base <= pa)
            lo = mid;
        else
            hi = mid;
    }
    if (hi == 0)
        return false;
    const struct pmm_region *r = pmm_region(lo);
    return pa >= r->base && pa - r->base < r->length && is_ram_type(r->type);
}

/* Whole frames of entries of one type, frame 0 left out. */
static uint64_t frames_of_type(uint64_t type)
{
    uint64_t total = 0;

    for (size_t i = 0; i < pmm_region_count(); i++) {
        const struct pmm_region *r = pmm_region(i);
        pfn_t start = paddr_to_pfn(r->base + PAGE_SIZE - 1);
        pfn_t end = paddr_to_pfn(r->base + r->length);

        if (start == 0)
            start = 1;
        if (r->type == type && end > start)
            total += end - start;
    }
    return total;
}

/* One past the highest RAM frame. */
static pfn_t ram_end_pfn(void)
{
    pfn_t end = 0;

    for (size_t i = 0; i < pmm_region_count(); i++) {
        const struct pmm_region *r = pmm_region(i);

        if (is_ram_type(r->type) && paddr_to_pfn(r->base + r->length) > end)
            end = paddr_to_pfn(r->base + r->length);
    }
    return end;
}

/* ---- selftest=pmm --------------------------------------------------------- */

/* A bit per frame below limit, in frames taken from the PMM itself. */
struct tracker {
    uint64_t *bits;
    paddr_t pa;
    size_t frames;
    pfn_t limit;
};

static struct tracker tracker_create(void)
{
    struct tracker t;
    uint64_t bytes;

    t.limit = ram_end_pfn();
    bytes = (t.limit + 63) / 64 * 8;
    t.frames = (bytes + PAGE_SIZE - 1) / PAGE_SIZE;
    t.pa = pmm_alloc_contiguous(t.frames, 1);
    CHECK(t.pa != 0);
    t.bits = phys_to_virt(t.pa);
    memset(t.bits, 0, t.frames * PAGE_SIZE);
    return t;
}

/* Records pfn; false if it was recorded already. */
static bool tracker_add(struct tracker *t, pfn_t pfn)
{
    uint64_t bit = (uint64_t)1 << (pfn % 64);

    CHECK(pfn < t->limit);
    if (t->bits[pfn / 64] & bit)
        return false;
    t->bits[pfn / 64] |= bit;
    return true;
}

/* Frees every recorded frame; returns how many. */
static size_t tracker_free_all(struct tracker *t)
{
    size_t freed = 0;

    for (pfn_t w = 0; w < (t->limit + 63) / 64; w++) {
        while (t->bits[w] != 0) {
            unsigned bit = (unsigned)__builtin_ctzll(t->bits[w]);

            t->bits[w] &= t->bits[w] - 1;
            pmm_free(pfn_to_paddr(w * 64 + bit));
            freed++;
        }
    }
    return freed;
}

/* total = USABLE + reclaimed; used = metadata + page tables (nothing else
 * has allocated yet); reclaimed + kept = BOOTLOADER_RECLAIMABLE. */
static void check_accounting(void)
{
    uint64_t usable = frames_of_type(LIMINE_MEMMAP_USABLE);
    uint64_t reclaimable = frames_of_type(LIMINE_MEMMAP_BOOTLOADER_RECLAIMABLE);

    kprintf("selftest pmm: %lu USABLE + %lu reclaimed = %lu managed frames; "
            "%lu metadata, %lu page tables, %lu free\n",
            usable, pmm_reclaimed_frames(), pmm_total_count(), pmm_metadata_frames(),
            vmm_table_frames(), pmm_free_count());
    CHECK(pmm_total_count() == usable + pmm_reclaimed_frames());
    CHECK(pmm_reclaimed_frames() + mm_kept_frames() == reclaimable);
    CHECK(pmm_used_count() == pmm_metadata_frames() + vmm_table_frames());
    CHECK(pmm_free_count() + pmm_used_count() == pmm_total_count());
    CHECK(pmm_descriptor.magic == PMM_DESCRIPTOR_MAGIC);
    CHECK(pmm_descriptor.free_frames == pmm_free_count());
}

/* Allocates up to limit frames, each managed RAM and new; returns the count. */
static size_t allocate_all(struct tracker *t, size_t limit)
{
    pfn_t meta = paddr_to_pfn(pmm_descriptor.meta_base);
    size_t count = 0;

    while (count < limit) {
        paddr_t pa = pmm_alloc();
        pfn_t pfn = paddr_to_pfn(pa);

        if (pa == 0)
            break;
        CHECK((pa & (PAGE_SIZE - 1)) == 0);
        CHECK(is_ram_frame(pfn));
        CHECK(pfn < meta || pfn >= meta + pmm_descriptor.meta_frames);
        if (!tracker_add(t, pfn))
            panic("selftest pmm: 0x%lx handed out twice", pa);
        count++;
    }
    return count;
}

static void test_pmm(void)
{
    size_t free0 = pmm_free_count(), limit, count, start;
    struct tracker t;

    check_accounting();
    limit = cmdline_u64("selftest-frames", (uint64_t)-1);
    t = tracker_create();
    start = pmm_free_count();
    CHECK(start == free0 - t.frames);
    count = allocate_all(&t, limit);
    if (count < limit) { /* exhausted */
        CHECK(count == start);
        CHECK(pmm_free_count() == 0 && pmm_alloc() == 0);
        CHECK(pmm_alloc_contiguous(1, 1) == 0);
    }
    CHECK(pmm_free_count() == start - count);
    CHECK(tracker_free_all(&t) == count);
    CHECK(pmm_free_count() == start);
    pmm_free_contiguous(t.pa, t.frames);
    CHECK(pmm_free_count() == free0);
    kprintf("selftest pmm: ok %lu frames (%s)\n", count,
            count < limit ? "all free frames" : "selftest-frames limit");
}

/* ---- selftest=pmm-random -------------------------------------------------- */

#define RANDOM_SLOTS 64
#define RANDOM_MAX_RUN 48
#define RANDOM_MAX_ALIGN_SHIFT 10 /* alignments 1 to 512 frames */

struct block {
    paddr_t pa;
    size_t frames; /* 0: slot empty */
};

struct random_stats {
    size_t singles, runs, failures, frees;
};

static uint64_t xorshift64(uint64_t *state)
{
    uint64_t x = *state;

    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    return x;
}

/* What each frame of a live block holds: its own address, scrambled. */
static uint64_t tag_of(paddr_t pa)
{
    return pa ^ 0x5a17c0de5a17c0deULL;
}

static void check_new_block(const struct block *slots, paddr_t pa, size_t frames)
{
    for (size_t i = 0; i < frames; i++)
        CHECK(is_ram_frame(paddr_to_pfn(pa) + i));
    for (size_t s = 0; s < RANDOM_SLOTS; s++) {
        const struct block *b = &slots[s];

        if (b->frames != 0)
            CHECK(pa + frames * PAGE_SIZE <= b->pa || b->pa + b->frames * PAGE_SIZE <= pa);
    }
    for (size_t i = 0; i < frames; i++)
        *(uint64_t *)phys_to_virt(pa + i * PAGE_SIZE) = tag_of(pa + i * PAGE_SIZE);
}

static void acquire(struct block *slots, struct block *b, uint64_t r, struct random_stats *st)
{
    size_t frames = 1, align = 1, before = pmm_free_count();
    paddr_t pa;

    if (r & 1) {
        frames = 1 + (r >> 1) % RANDOM_MAX_RUN;
        align = (size_t)1 << ((r >> 8) % RANDOM_MAX_ALIGN_SHIFT);
        pa = pmm_alloc_contiguous(frames, align);
    } else {
        pa = pmm_alloc();
    }
    if (pa == 0) {
        CHECK(pmm_free_count() == before);
        st->failures++;
        return;
    }
    CHECK(pmm_free_count() == before - frames);
    CHECK((paddr_to_pfn(pa) & (align - 1)) == 0);
    check_new_block(slots, pa, frames);
    b->pa = pa;
    b->frames = frames;
    if (r & 1)
        st->runs++;
    else
        st->singles++;
}

/* Frees b whole, one frame at a time or in two pieces, as r says. */
static void release(struct block *b, uint64_t r, struct random_stats *st)
{
    size_t before = pmm_free_count(), half = b->frames / 2;

    for (size_t i = 0; i < b->frames; i++)
        CHECK(*(uint64_t *)phys_to_virt(b->pa + i * PAGE_SIZE) == tag_of(b->pa + i * PAGE_SIZE));
    if (b->frames == 1 && (r & 2))
        pmm_free(b->pa);
    else if (half > 0 && (r & 4)) {
        pmm_free_contiguous(b->pa + half * PAGE_SIZE, b->frames - half);
        pmm_free_contiguous(b->pa, half);
    } else
        pmm_free_contiguous(b->pa, b->frames);
    CHECK(pmm_free_count() == before + b->frames);
    if (MM_DEBUG)
        CHECK(*(uint64_t *)phys_to_virt(b->pa) == PMM_POISON);
    b->frames = 0;
    st->frees++;
}

static void test_pmm_random(void)
{
    static struct block slots[RANDOM_SLOTS];
    struct random_stats st = {0};
    uint64_t seed = cmdline_u64("selftest-seed", 0x2545f4914f6cdd1dULL) | 1;
    uint64_t steps = cmdline_u64("selftest-steps", 20000);
    size_t free0 = pmm_free_count();

    for (uint64_t i = 0; i < steps; i++) {
        uint64_t r = xorshift64(&seed);
        struct block *b = &slots[r % RANDOM_SLOTS];

        if (b->frames != 0)
            release(b, r >> 6, &st);
        else
            acquire(slots, b, r >> 6, &st);
    }
    for (size_t s = 0; s < RANDOM_SLOTS; s++) {
        if (slots[s].frames != 0)
            release(&slots[s], s, &st);
    }
    CHECK(pmm_free_count() == free0);
    CHECK(st.singles > 0 && st.runs > 0);
    kprintf("selftest pmm-random: ok %lu steps: %lu single, %lu contiguous, %lu failed, "
            "%lu freed\n", steps, st.singles, st.runs, st.failures, st.frees);
}

/* ---- selftest=pmm-bench ---------------------------------------------------- */

#define BENCH_MAX_HELD 1024

/*
 * selftest-pairs=N allocate+free pairs of blocks of 2^selftest-order frames
 * (order 0: pmm_alloc/pmm_free; else pmm_alloc_contiguous aligned to the
 * block size and pmm_free_contiguous), with selftest-held=H blocks held in
 * a ring: each pair allocates a block and frees the oldest. bench/pmm.py
 * runs it with two values of N; the difference of the instruction counts
 * over the difference of N is the cost of one pair, boot excluded.
 */
static void test_pmm_bench(void)
{
    static paddr_t ring[BENCH_MAX_HELD];
    uint64_t pairs = cmdline_u64("selftest-pairs", 10000);
    uint64_t order = cmdline_u64("selftest-order", 0);
    uint64_t held = cmdline_u64("selftest-held", 100);
    size_t frames = (size_t)1 << order, free0 = pmm_free_count(), slot = 0;

    CHECK(held >= 1 && held <= BENCH_MAX_HELD && order <= PMM_BUDDY_MAX_ORDER);
    for (size_t i = 0; i < held; i++) {
        ring[i] = order == 0 ? pmm_alloc() : pmm_alloc_contiguous(frames, frames);
        CHECK(ring[i] != 0);
    }
    for (uint64_t i = 0; i < pairs; i++) {
        paddr_t pa = order == 0 ? pmm_alloc() : pmm_alloc_contiguous(frames, frames);

        CHECK(pa != 0);
        if (order == 0)
            pmm_free(ring[slot]);
        else
            pmm_free_contiguous(ring[slot], frames);
        ring[slot] = pa;
        if (++slot == held)
            slot = 0;
    }
    for (size_t i = 0; i < held; i++)
        pmm_free_contiguous(ring[i], frames);
    CHECK(pmm_free_count() == free0);
    kprintf("selftest pmm-bench: ok %lu pairs of %lu-frame blocks, %lu held\n", pairs, frames,
            held);
}

/* ---- Probes: touch memory, report a #PF instead of dying ------------------- */

/* int probe_read(va), probe_write(va), probe_exec(va): 0, or 1 after a #PF. */
int probe_read(vaddr_t va);
int probe_write(vaddr_t va);
int probe_exec(vaddr_t va);
extern char probe_read_access[], probe_write_access[], probe_fault[];

__asm__(".text\n"
        ".globl probe_read, probe_write, probe_exec\n"
        "probe_read:\n"
        "    xorl %eax, %eax\n"
        "probe_read_access:\n"
        "    movb (%rdi), %cl\n"
        "    ret\n"
        "probe_write:\n"
        "    xorl %eax, %eax\n"
        "probe_write_access:\n"
        "    movb $0xc3, (%rdi)\n"
        "    ret\n"
        "probe_fault:\n"
        "    movl $1, %eax\n"
        "    ret\n"
        "probe_exec:\n"
        "    movl $1, %eax\n"
        "    call *%rdi\n"
        "    ret\n");

static vaddr_t exec_target;
static vaddr_t fault_address;
static uint64_t fault_error;

/* Resumes a faulting probe: at probe_fault, or as if the called code returned 1. */
static void probe_fault_handler(struct interrupt_frame *f)
{
    fault_address = read_cr2();
    fault_error = f->error_code;
    if (f->rip == (vaddr_t)probe_read_access || f->rip == (vaddr_t)probe_write_access) {
        f->rip = (vaddr_t)probe_fault;
        return;
    }
    if (f->rip == exec_target && (f->error_code & PF_INSTR)) {
        f->rip = *(uint64_t *)f->rsp;
        f->rsp += 8;
        f->rax = 1;
        return;
    }
    interrupt_frame_dump(f);
    panic("selftest %s: unexpected page fault at rip 0x%lx", current, f->rip);
}

/* Calls va, which must hold "xor %eax, %eax; ret" when executable. */
static int exec_probe(vaddr_t va)
{
    exec_target = va;
    return probe_exec(va);
}

static void expect_fault(int faulted, vaddr_t va, uint64_t error_bits)
{
    CHECK(faulted == 1);
    CHECK(fault_address == va);
    CHECK((fault_error & error_bits) == error_bits);
}

/* ---- selftest=paging ------------------------------------------------------- */

#define SCRATCH 0xffffc00000000000ULL /* PML4 slot 384: nothing lives there */
#define SCRATCH_2M (SCRATCH + (1ULL << 30))
#define SCRATCH_1G (SCRATCH + (2ULL << 30))
#define MIB2_PAGES 512
#define GIB_PAGES (512 * 512)
#define SMALL_PAGES 16

static const uint8_t return_zero[3] = {0x31, 0xc0, 0xc3}; /* xor %eax,%eax; ret */
static const uint64_t rodata_word = 0x0123456789abcdefULL;
static uint8_t data_code[16] = {0x31, 0xc0, 0xc3};

static vm_flags_t flags_at(vaddr_t va)
{
    struct vm_mapping m;

    CHECK(vmm_lookup(vmm_kernel_root(), va, &m) == VMM_OK);
    return m.flags;
}

static enum vm_page_size size_at(vaddr_t va)
{
    struct vm_mapping m;

    CHECK(vmm_lookup(vmm_kernel_root(), va, &m) == VMM_OK);
    return m.size;
}

extern char __text_start[], __rodata_start[];

/* The kernel's own tables: sections, HHDM, CR0.WP, EFER.NXE. */
static void check_kernel_space(pml4_t *k)
{
    vaddr_t text = (vaddr_t)__text_start;
    paddr_t text_pa = vmm_translate(k, text);

    CHECK(read_cr3() == virt_to_phys(k));
    CHECK(read_cr0() & (1u << 16));
    CHECK(rdmsr(0xc0000080u) & (1u << 11));
    CHECK(flags_at(text) == (VM_EXEC | VM_GLOBAL));
    CHECK(flags_at((vaddr_t)__rodata_start) == VM_GLOBAL);
    CHECK(flags_at((vaddr_t)&rodata_word) == VM_GLOBAL);
    CHECK(flags_at((vaddr_t)data_code) == (VM_WRITE | VM_GLOBAL));
    CHECK(text_pa != VMM_NO_TRANSLATION);
    CHECK(*(uint64_t *)phys_to_virt(text_pa) == *(uint64_t *)text);
    CHECK(vmm_translate(k, hhdm_base + pmm_descriptor.meta_base) == pmm_descriptor.meta_base);
    CHECK(flags_at(hhdm_base + pmm_descriptor.meta_base) == (VM_WRITE | VM_GLOBAL));
    CHECK(vmm_translate(k, 0x1000) == VMM_NO_TRANSLATION);
    CHECK(vmm_translate(k, SCRATCH) == VMM_NO_TRANSLATION);
    expect_fault(probe_write((vaddr_t)&rodata_word), (vaddr_t)&rodata_word, PF_PRESENT | PF_WRITE);
    expect_fault(probe_write(text), text, PF_PRESENT | PF_WRITE);
    expect_fault(exec_probe((vaddr_t)data_code), (vaddr_t)data_code, PF_PRESENT | PF_INSTR);
    CHECK(rodata_word == 0x0123456789abcdefULL);
}

static void check_bad_arguments(pml4_t *k)
{
    CHECK(vmm_map(k, SCRATCH + 1, 0x200000, 1, VM_WRITE) == VMM_BAD_ADDRESS);
    CHECK(vmm_map(k, SCRATCH, 0x200001, 1, VM_WRITE) == VMM_BAD_ADDRESS);
    CHECK(vmm_map(k, SCRATCH, 0x200000, 0, VM_WRITE) == VMM_BAD_ADDRESS);
    CHECK(vmm_map(k, 0x0000800000000000ULL, 0x200000, 1, VM_WRITE) == VMM_BAD_ADDRESS);
    CHECK(vmm_map(k, 0x00007ffffffff000ULL, 0x200000, 2, VM_WRITE) == VMM_BAD_ADDRESS);
    CHECK(vmm_unmap(k, SCRATCH, 1) == VMM_NOT_MAPPED);
    CHECK(vmm_protect(k, SCRATCH, 1, VM_WRITE) == VMM_NOT_MAPPED);
    CHECK(vmm_translate(k, 0x0000800000000000ULL) == VMM_NO_TRANSLATION);
}

/* 16 single pages: map, use, remap refused, protect, partial unmaps. */
static void check_small_pages(pml4_t *k)
{
    paddr_t frames[SMALL_PAGES];

    for (int i = 0; i < SMALL_PAGES; i++) {
        vaddr_t va = SCRATCH + i * PAGE_SIZE;

        frames[i] = pmm_alloc();
        CHECK(frames[i] != 0);
        CHECK(vmm_map(k, va, frames[i], 1, VM_WRITE) == VMM_OK);
        CHECK(vmm_translate(k, va + 0x123) == frames[i] + 0x123);
        CHECK(size_at(va) == VM_PAGE_4K && flags_at(va) == VM_WRITE);
        *(volatile uint64_t *)va = tag_of(frames[i]);
        CHECK(*(uint64_t *)phys_to_virt(frames[i]) == tag_of(frames[i]));
    }
    CHECK(vmm_map(k, SCRATCH + 15 * PAGE_SIZE, frames[0], 2, VM_WRITE) == VMM_ALREADY_MAPPED);
    CHECK(vmm_translate(k, SCRATCH + 16 * PAGE_SIZE) == VMM_NO_TRANSLATION);
    CHECK(vmm_protect(k, SCRATCH + 4 * PAGE_SIZE, 4, VM_READ) == VMM_OK);
    CHECK(flags_at(SCRATCH + 5 * PAGE_SIZE) == VM_READ);
    CHECK(flags_at(SCRATCH + 8 * PAGE_SIZE) == VM_WRITE);
    expect_fault(probe_write(SCRATCH + 5 * PAGE_SIZE), SCRATCH + 5 * PAGE_SIZE,
                 PF_PRESENT | PF_WRITE);
    CHECK(probe_write(SCRATCH + 3 * PAGE_SIZE) == 0 && probe_read(SCRATCH + 5 * PAGE_SIZE) == 0);
    CHECK(vmm_unmap(k, SCRATCH + 8 * PAGE_SIZE, 4) == VMM_OK);
    CHECK(vmm_translate(k, SCRATCH + 9 * PAGE_SIZE) == VMM_NO_TRANSLATION);
    expect_fault(probe_read(SCRATCH + 9 * PAGE_SIZE), SCRATCH + 9 * PAGE_SIZE, 0);
    CHECK((fault_error & PF_PRESENT) == 0);
    CHECK(vmm_unmap(k, SCRATCH + 6 * PAGE_SIZE, 4) == VMM_NOT_MAPPED);
    CHECK(vmm_translate(k, SCRATCH + 7 * PAGE_SIZE) == frames[7]);
    CHECK(vmm_unmap(k, SCRATCH, 8) == VMM_OK && vmm_unmap(k, SCRATCH + 12 * PAGE_SIZE, 4) == 0);
    for (int i = 0; i < SMALL_PAGES; i++)
        pmm_free(frames[i]);
}

/* A page written as data, not executable; then executable, not writable. */
static void check_exec(pml4_t *k)
{
    paddr_t pa = pmm_alloc();
    vaddr_t va = SCRATCH + 64 * PAGE_SIZE;

    CHECK(pa != 0);
    memcpy(phys_to_virt(pa), return_zero, sizeof(return_zero));
    CHECK(vmm_map(k, va, pa, 1, VM_WRITE) == VMM_OK);
    expect_fault(exec_probe(va), va, PF_PRESENT | PF_INSTR);
    CHECK(vmm_protect(k, va, 1, VM_EXEC) == VMM_OK);
    CHECK(flags_at(va) == VM_EXEC);
    CHECK(exec_probe(va) == 0);
    expect_fault(probe_write(va), va, PF_PRESENT | PF_WRITE);
    CHECK(vmm_unmap(k, va, 1) == VMM_OK);
    pmm_free(pa);
}

/* Every page of [va, va + pages) translates to pa + offset. */
static void check_linear(pml4_t *k, vaddr_t va, paddr_t pa, size_t pages)
{
    for (size_t i = 0; i < pages; i++)
        CHECK(vmm_translate(k, va + i * PAGE_SIZE + 8) == pa + i * PAGE_SIZE + 8);
}

/* A 2 MiB page of real RAM; a protect inside it splits it. */
static void check_2m_page(pml4_t *k, paddr_t pa)
{
    size_t tables;

    CHECK(vmm_map(k, SCRATCH_2M, pa, MIB2_PAGES, VM_WRITE) == VMM_OK);
    tables = vmm_table_frames();
    CHECK(size_at(SCRATCH_2M) == VM_PAGE_2M && size_at(SCRATCH_2M + 0x1fffff) == VM_PAGE_2M);
    check_linear(k, SCRATCH_2M, pa, MIB2_PAGES);
    *(volatile uint64_t *)(SCRATCH_2M + 7 * PAGE_SIZE) = tag_of(pa);
    CHECK(*(uint64_t *)phys_to_virt(pa + 7 * PAGE_SIZE) == tag_of(pa));
    CHECK(vmm_protect(k, SCRATCH_2M + 7 * PAGE_SIZE, 1, VM_READ) == VMM_OK);
    CHECK(vmm_table_frames() == tables + 1);
    CHECK(size_at(SCRATCH_2M) == VM_PAGE_4K && flags_at(SCRATCH_2M + 7 * PAGE_SIZE) == VM_READ);
    CHECK(flags_at(SCRATCH_2M + 8 * PAGE_SIZE) == VM_WRITE);
    check_linear(k, SCRATCH_2M, pa, MIB2_PAGES);
    expect_fault(probe_write(SCRATCH_2M + 7 * PAGE_SIZE), SCRATCH_2M + 7 * PAGE_SIZE,
                 PF_PRESENT | PF_WRITE);
    CHECK(probe_write(SCRATCH_2M + 8 * PAGE_SIZE) == 0);
    CHECK(vmm_unmap(k, SCRATCH_2M, MIB2_PAGES) == VMM_OK);
    CHECK(vmm_translate(k, SCRATCH_2M) == VMM_NO_TRANSLATION);
}

/* 4 KiB pages up to a 2 MiB boundary, a 2 MiB page, one more 4 KiB page;
 * then an unmap across the boundary splits the large page. No access. */
static void check_mixed_sizes(pml4_t *k, paddr_t pa)
{
    vaddr_t va = SCRATCH_2M + PAGE_SIZE;
    size_t pages = 2 * MIB2_PAGES;

    CHECK(vmm_map(k, va, pa + PAGE_SIZE, pages, VM_WRITE) == VMM_OK);
    CHECK(size_at(va) == VM_PAGE_4K && size_at(SCRATCH_2M + 0x200000) == VM_PAGE_2M);
    CHECK(size_at(SCRATCH_2M + 0x400000) == VM_PAGE_4K);
    check_linear(k, va, pa + PAGE_SIZE, pages);
    CHECK(vmm_unmap(k, SCRATCH_2M + 0x1ff000, 3) == VMM_OK);
    CHECK(vmm_translate(k, SCRATCH_2M + 0x201000) == VMM_NO_TRANSLATION);
    CHECK(vmm_translate(k, SCRATCH_2M + 0x202000) == pa + 0x202000);
    CHECK(size_at(SCRATCH_2M + 0x202000) == VM_PAGE_4K);
    CHECK(vmm_unmap(k, va, 0x1fe000 / PAGE_SIZE) == VMM_OK);
    CHECK(vmm_unmap(k, SCRATCH_2M + 0x202000, (0x401000 - 0x202000) / PAGE_SIZE) == VMM_OK);
    CHECK(vmm_translate(k, SCRATCH_2M + 0x400000) == VMM_NO_TRANSLATION);
}

/* A 1 GiB page (translation only: the physical range need not be RAM). */
static void check_1g_page(pml4_t *k)
{
    const paddr_t pa = 1ULL << 30;
    const vaddr_t hole = SCRATCH_1G + 0x12345000;
    size_t tables;

    CHECK(vmm_map(k, SCRATCH_1G, pa, GIB_PAGES, VM_READ) == VMM_OK);
    tables = vmm_table_frames();
    CHECK(size_at(SCRATCH_1G + 0x3fffffff) == VM_PAGE_1G);
    CHECK(vmm_translate(k, SCRATCH_1G + 0x12345678) == pa + 0x12345678);
    if (is_ram_frame(paddr_to_pfn(pa + 0x12345000)))
        CHECK(*(volatile uint64_t *)(SCRATCH_1G + 0x12345678) ==
              *(uint64_t *)phys_to_virt(pa + 0x12345678));
    CHECK(vmm_unmap(k, hole, 1) == VMM_OK);
    CHECK(vmm_table_frames() == tables + 2);
    CHECK(vmm_translate(k, hole) == VMM_NO_TRANSLATION);
    CHECK(vmm_translate(k, hole + PAGE_SIZE) == pa + 0x12346000);
    CHECK(size_at(hole - PAGE_SIZE) == VM_PAGE_4K && size_at(SCRATCH_1G) == VM_PAGE_2M);
    CHECK(vmm_unmap(k, SCRATCH_1G, 0x12345) == VMM_OK);
    CHECK(vmm_unmap(k, hole + PAGE_SIZE, GIB_PAGES - 0x12346) == VMM_OK);
    CHECK(vmm_translate(k, SCRATCH_1G) == VMM_NO_TRANSLATION);
}

static void test_paging(void)
{
    pml4_t *k = vmm_kernel_root();
    size_t free0 = pmm_free_count(), tables0 = vmm_table_frames();
    paddr_t big;

    idt_set_handler(VEC_PAGE_FAULT, probe_fault_handler);
    check_kernel_space(k);
    check_bad_arguments(k);
    check_small_pages(k);
    check_exec(k);
    big = pmm_alloc_contiguous(MIB2_PAGES, MIB2_PAGES);
    CHECK(big != 0);
    check_2m_page(k, big);
    check_mixed_sizes(k, big);
    pmm_free_contiguous(big, MIB2_PAGES);
    if (vmm_has_1g_pages())
        check_1g_page(k);
    idt_set_handler(VEC_PAGE_FAULT, NULL);
    CHECK(vmm_table_frames() == tables0);
    CHECK(pmm_free_count() == free0);
    kprintf("selftest paging: ok (1 GiB pages %s, %lu table frames)\n",
            vmm_has_1g_pages() ? "tested" : "not supported", tables0);
}

/* ---- selftest=planted (builds with -DPLANT_BUG=N only) ----------------------- */

#if PLANT_BUG
/* The first whole frame of a RESERVED entry inside the PMM's span, or 0. */
static paddr_t reserved_frame(void)
{
    for (size_t i = 0; i < pmm_region_count(); i++) {
        const struct pmm_region *r = pmm_region(i);
        pfn_t pfn = paddr_to_pfn(r->base + PAGE_SIZE - 1);

        if (r->type == LIMINE_MEMMAP_RESERVED && pfn != 0 &&
            pfn_to_paddr(pfn + 1) <= r->base + r->length &&
            pfn >= pmm_descriptor.base_pfn &&
            pfn - pmm_descriptor.base_pfn < pmm_descriptor.frames)
            return pfn_to_paddr(pfn);
    }
    return 0;
}

/*
 * Exercises the bug planted.h lists for this build, then checkpoints
 * so the monitor looks. Bugs 1 and 2 are in the tables mm_init built.
 */
static void test_planted(void)
{
    pml4_t *k = vmm_kernel_root();
    paddr_t pa = pmm_alloc(), other = pmm_alloc();

    CHECK(pa != 0 && other != 0);
    kprintf("selftest planted: bug %d\n", PLANT_BUG);
    if (PLANT_BUG == 3) {
        /* A neighbour keeps the page table alive: no prune, no invlpg there. */
        CHECK(vmm_map(k, SCRATCH, pa, 1, VM_WRITE) == VMM_OK);
        CHECK(vmm_map(k, SCRATCH + PAGE_SIZE, other, 1, VM_WRITE) == VMM_OK);
        *(volatile uint64_t *)SCRATCH = tag_of(pa); /* the TLB now holds SCRATCH */
        checkpoint(CHECKPOINT_PLANTED);
        CHECK(vmm_unmap(k, SCRATCH, 1) == VMM_OK);
        kprintf("selftest planted: read 0x%lx from unmapped 0x%lx\n",
                *(volatile uint64_t *)SCRATCH, (vaddr_t)SCRATCH);
    } else if (PLANT_BUG == 4) {
        paddr_t reserved = reserved_frame();

        CHECK(reserved != 0);
        kprintf("selftest planted: freeing RESERVED frame 0x%lx\n", reserved);
        pmm_free(reserved);
    } else if (PLANT_BUG == 5 || PLANT_BUG == 7) {
        CHECK(vmm_map(k, SCRATCH, pa, 1, VM_WRITE) == VMM_OK);
        CHECK(vmm_unmap(k, SCRATCH, 1) == VMM_OK); /* frees the emptied tables */
    } else if (PLANT_BUG == 6) {
        CHECK(vmm_map(k, SCRATCH, pa, 1, VM_WRITE) == VMM_OK);
        *(volatile uint64_t *)SCRATCH = tag_of(pa);
        kprintf("selftest planted: freeing 0x%lx, still mapped at 0x%lx\n", pa,
                (vaddr_t)SCRATCH);
        pmm_free(pa);
    }
    checkpoint(CHECKPOINT_PLANTED);
    kprintf("selftest planted: done\n");
}
#endif

/* ---- Tests that must panic -------------------------------------------------- */

static void test_double_free(void)
{
    paddr_t pa = pmm_alloc();

    CHECK(pa != 0);
    pmm_free(pa);
    kprintf("selftest pmm-double-free: freeing 0x%lx again\n", pa);
    pmm_free(pa);
    panic("selftest pmm-double-free: the second free returned");
}

static void test_unmanaged(void)
{
    for (size_t i = 0; i < pmm_region_count(); i++) {
        const struct pmm_region *r = pmm_region(i);

        if (r->type == LIMINE_MEMMAP_EXECUTABLE_AND_MODULES) {
            kprintf("selftest pmm-unmanaged: freeing 0x%lx (kernel image)\n", r->base);
            pmm_free(r->base);
            panic("selftest pmm-unmanaged: freeing the kernel image returned");
        }
    }
    panic("selftest pmm-unmanaged: no EXECUTABLE_AND_MODULES entry");
}

/* ---- The heap's page cache ------------------------------------------------- */

/* Large blocks (a run of pages each in the chained heap, buddy blocks in
 * the others) whose pages go to the cache when freed. */
#define CACHE_TEST_BLOCK (64 * 1024 - 64)
#define CACHE_TEST_BLOCKS 8

/* Frames the heap, the PMM and the page tables account for together: free
 * + heap pages (claimed or cached) + tables. The heap's leak baseline
 * (heap.h) is its free-and-cached part. */
static uint64_t frames_accounted(void)
{
    return pmm_free_count() + heap_descriptor.pages + vmm_table_frames();
}

/* Allocates CACHE_TEST_BLOCKS large blocks and frees them; after each free
 * the cache holds at most its watermark. */
static void fill_cache(void)
{
    void *blocks[CACHE_TEST_BLOCKS];

    if (heap_kind() == HEAP_LIST)
        panic("selftest %s: the list heap never gives pages back (use heap=chained, buddy "
              "or slab)", current);
    for (size_t i = 0; i < CACHE_TEST_BLOCKS; i++) {
        blocks[i] = kmalloc(CACHE_TEST_BLOCK);
        CHECK(blocks[i] != NULL);
        memset(blocks[i], 0x5a, CACHE_TEST_BLOCK);
    }
    for (size_t i = 0; i < CACHE_TEST_BLOCKS; i++) {
        kfree(blocks[i]);
        CHECK(heap_descriptor.cached_pages <= heap_descriptor.cache_watermark);
    }
}

/* Pushes the frame pa on the chain at *head (linked through first words). */
static void chain_frame(paddr_t *head, paddr_t pa)
{
    *(paddr_t *)phys_to_virt(pa) = *head;
    *head = pa;
}

static void give_all_frames(paddr_t head)
{
    while (head != 0) {
        paddr_t next = *(paddr_t *)phys_to_virt(head);

        pmm_free(head);
        head = next;
    }
}

/* Cached pages are never the cause of an out-of-memory: with the PMM
 * exhausted by a caller that is not the heap, its next allocation drains
 * the cache through the shrinker and succeeds. */
static void test_heap_cache(void)
{
    uint64_t accounted = frames_accounted(), cached, free_before, taken = 0;
    paddr_t chain = 0, pa, extra;

    fill_cache();
    cached = heap_descriptor.cached_pages;
    CHECK(cached > 0);
    CHECK(frames_accounted() == accounted);
    free_before = pmm_free_count();
    /* The PMM's own free frames run out first: the cache is not touched. */
    for (; pmm_free_count() > 0; taken++) {
        pa = pmm_alloc();
        CHECK(pa != 0);
        chain_frame(&chain, pa);
    }
    CHECK(taken == free_before && heap_descriptor.cached_pages == cached);
    extra = pmm_alloc(); /* none free: the shrinker's turn */
    CHECK(extra != 0);
    CHECK(heap_descriptor.cached_pages == 0);
    chain_frame(&chain, extra);
    for (taken++; (pa = pmm_alloc()) != 0; taken++) /* the drained pages, and tables */
        chain_frame(&chain, pa);
    CHECK(taken >= free_before + cached && pmm_free_count() == 0);
    kprintf("selftest heap-cache: %lu pages cached, %lu frames free; with none left the "
            "next pmm_alloc drained the cache and got 0x%lx; %lu frames taken in all\n",
            cached, free_before, extra, taken);
    give_all_frames(chain);
    CHECK(frames_accounted() == accounted);
    kprintf("selftest heap-cache: ok\n");
}

/* The cache never holds more than heapcache= pages: what is released
 * beyond it goes back to the PMM, and every frame stays accounted for. */
static void test_heap_cache_watermark(void)
{
    uint64_t accounted = frames_accounted(), limit = heap_descriptor.cache_watermark;
    uint64_t claimed_before = heap_descriptor.pages - heap_descriptor.cached_pages;
    uint64_t free_before = pmm_free_count() + heap_descriptor.cached_pages;

    CHECK((uint64_t)CACHE_TEST_BLOCKS * ((CACHE_TEST_BLOCK + PAGE_SIZE - 1) / PAGE_SIZE) > limit);
    fill_cache();
    CHECK(heap_descriptor.cached_pages == limit);
    CHECK(frames_accounted() == accounted);
    kprintf("selftest heap-cache-watermark: %lu pages released, %lu kept (heapcache=%lu), "
            "%lu frames free + cached before, %lu after, %lu heap pages claimed before, "
            "%lu after\n", (uint64_t)CACHE_TEST_BLOCKS * ((CACHE_TEST_BLOCK + PAGE_SIZE - 1) / PAGE_SIZE),
            heap_descriptor.cached_pages, limit, free_before,
            pmm_free_count() + heap_descriptor.cached_pages, claimed_before,
            heap_descriptor.pages - heap_descriptor.cached_pages);
    kprintf("selftest heap-cache-watermark: ok\n");
}

/* ---- Dispatch --------------------------------------------------------------- */

static const struct {
    const char *name;
    void (*run)(void);
} tests[] = {
    {"pmm", test_pmm},
    {"pmm-random", test_pmm_random},
    {"pmm-bench", test_pmm_bench},
    {"paging", test_paging},
    {"pmm-double-free", test_double_free},
    {"pmm-unmanaged", test_unmanaged},
    {"heap-cache", test_heap_cache},
    {"heap-cache-watermark", test_heap_cache_watermark},
#if PLANT_BUG
    {"planted", test_planted},
#endif
};

void selftest_run(const char *name)
{
    for (size_t i = 0; i < ARRAY_SIZE(tests); i++) {
        if (strcmp(name, tests[i].name) == 0) {
            current = tests[i].name;
            tests[i].run();
            checkpoint(CHECKPOINT_SELFTEST);
            return;
        }
    }
    panic("selftest: unknown test '%s' (pmm, pmm-random, paging, pmm-double-free, "
          "pmm-unmanaged, heap-cache, heap-cache-watermark)", name);
}
