/*
 * main.c - the kernel entry point and boot report.
 *
 * Owns: the boot order (revision check, console, GDT/TSS, IDT, memory,
 * heap, initrd, then init=PATH if the command line names a program), the
 * report of what the loader handed over ("quiet" leaves it out), and the
 * built-in self-tests chosen with test=NAME on the command line.
 * Does not own: any of the layers it starts; each lives in its own file.
 *
 * Self-tests: test=int3 executes int3 and shows the handler returns;
 * test=ud executes ud2 and test=pf reads unmapped memory; nobody handles
 * those, so the kernel reports the exception and panics.
 * The others misbehave on purpose, for the emulator's crash reports:
 * test=triple faults with an empty IDT (a triple fault), test=deep does the
 * same from three calls down (for backtraces), test=wild reads physical
 * memory with nothing behind it, test=loop spins forever, test=halt
 * halts forever with interrupts off and test=overflow recurses until the
 * boot stack runs into the guard page below it. test=timer spends one
 * virtual second in hlt on the local APIC timer's 100 Hz tick.
 */
#include "arch/x86_64/gdt.h"
#include "arch/x86_64/idt.h"
#include "boot/boot.h"
#include "boot/cmdline.h"
#include "dev/clock.h"
#include "dev/platform.h"
#include "dev/serial.h"
#include "dev/timer.h"
#include "fs/initrd.h"
#include "heap/heap.h"
#include "lib/format.h"
#include "lib/panic.h"
#include "lib/string.h"
#include "mm/paging.h"
#include "proc/clock.h"
#include "proc/init.h"
#include "test/checkpoint.h"
#include "test/replay.h"
#include "test/selftest.h"

NORETURN void kmain(void);

/* Low memory that Limine (base revision 1 and later) leaves unmapped. */
#define TEST_UNMAPPED_ADDRESS 0x1000

/* The VGA window: every memory map leaves 0xa0000-0xeffff without RAM. */
#define TEST_UNBACKED_PHYSICAL 0xa0000

/* Writes length as an exact count of the largest unit dividing it. */
static void format_size(char *buf, size_t len, uint64_t bytes)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    unsigned u = 0;

    while (u + 1 < ARRAY_SIZE(units) && bytes != 0 && bytes % 1024 == 0) {
        bytes /= 1024;
        u++;
    }
    ksnprintf(buf, len, "%lu %s", bytes, units[u]);
}

static void print_banner(void)
{
    const struct limine_bootloader_info_response *info = boot_bootloader_info();

    kprintf("emu guest kernel\n");
    if (info != NULL)
        kprintf("bootloader: %s %s\n", info->name, info->version);
    else
        kprintf("bootloader: (no answer to the bootloader info request)\n");
    kprintf("cmdline: \"%s\"\n", boot_cmdline());
}

static void print_memmap_entries(const struct limine_memmap_response *mm)
{
    char size[32];

    kprintf("memory map: %lu entries\n", mm->entry_count);
    for (uint64_t i = 0; i < mm->entry_count; i++) {
        const struct limine_memmap_entry *e = mm->entries[i];

        format_size(size, sizeof(size), e->length);
        kprintf("  [0x%016lx-0x%016lx] %12s %s\n", e->base, e->base + e->length - 1,
                size, boot_memmap_type_name(e->type));
    }
}

/* Per-type totals; types above the known ones are counted as one more. */
static void print_memmap_totals(const struct limine_memmap_response *mm)
{
    uint64_t bytes[LIMINE_MEMMAP_TYPE_COUNT + 1] = {0};
    uint64_t count[LIMINE_MEMMAP_TYPE_COUNT + 1] = {0};
    uint64_t usable;

    for (uint64_t i = 0; i < mm->entry_count; i++) {
        uint64_t t = mm->entries[i]->type;

        if (t > LIMINE_MEMMAP_TYPE_COUNT)
            t = LIMINE_MEMMAP_TYPE_COUNT;
        bytes[t] += mm->entries[i]->length;
        count[t]++;
    }
    kprintf("memory by type:\n");
    for (uint64_t t = 0; t <= LIMINE_MEMMAP_TYPE_COUNT; t++) {
        if (count[t] != 0)
            kprintf("  %-24s %4lu entries %12lu KiB\n", boot_memmap_type_name(t),
                    count[t], bytes[t] / 1024);
    }
    usable = bytes[LIMINE_MEMMAP_USABLE];
    kprintf("usable memory: %lu KiB (%lu MiB)\n", usable / 1024, usable / (1024 * 1024));
}

static void print_memory(void)
{
    const struct limine_memmap_response *mm = boot_memmap();
    const struct limine_hhdm_response *hhdm = boot_hhdm();

    if (mm == NULL || hhdm == NULL) {
        kprintf("kmain: the loader did not answer the %s request\n",
                mm == NULL ? "memory map" : "HHDM");
        kernel_exit(EXIT_NO_BOOT_INFO);
    }
    print_memmap_entries(mm);
    print_memmap_totals(mm);
    kprintf("hhdm offset: 0x%016lx\n", hhdm->offset);
}

static void print_executable(void)
{
    const struct limine_executable_address_response *addr = boot_executable_address();
    const struct limine_executable_file_response *file = boot_executable_file();

    if (addr != NULL)
        kprintf("executable: physical base 0x%016lx virtual base 0x%016lx\n",
                addr->physical_base, addr->virtual_base);
    else
        kprintf("executable: (no answer to the executable address request)\n");
    if (file != NULL && file->executable_file != NULL)
        kprintf("executable file: %s, %lu bytes\n", file->executable_file->path,
                file->executable_file->size);
}

static void print_modules(void)
{
    const struct limine_module_response *mods = boot_modules();

    if (mods == NULL) {
        kprintf("modules: 0 (no answer to the module request)\n");
        return;
    }
    kprintf("modules: %lu\n", mods->module_count);
    for (uint64_t i = 0; i < mods->module_count; i++) {
        const struct limine_file *m = mods->modules[i];

        kprintf("  module %lu: %s \"%s\" %lu bytes at %p\n", i, m->path,
                m->string != NULL ? m->string : "", m->size, m->address);
    }
}

static void print_platform(void)
{
    const struct limine_firmware_type_response *fw = boot_firmware_type();
    const struct limine_paging_mode_response *pm = boot_paging_mode();
    const struct limine_date_at_boot_response *date = boot_date();

    if (fw != NULL)
        kprintf("firmware type: %lu\n", fw->firmware_type);
    if (pm != NULL)
        kprintf("paging mode: %lu-level\n", pm->mode + 4);
    if (date != NULL)
        kprintf("boot time: %ld (UNIX seconds)\n", date->timestamp);
}

/* An IDT no vector fits in: every exception's delivery then faults. */
static void load_empty_idt(void)
{
    struct PACKED {
        uint16_t limit;
        uint64_t base;
    } empty = {.limit = 0, .base = 0};

    __asm__ volatile("lidt %0" : : "m"(empty) : "memory");
}

/* #PF, whose delivery raises #GP (no gate), then a #DF that has no gate either. */
static void test_triple(void)
{
    kprintf("test triple: empty IDT, then reading 0x%x\n", TEST_UNMAPPED_ADDRESS);
    load_empty_idt();
    (void)*(volatile uint64_t *)TEST_UNMAPPED_ADDRESS;
    kernel_exit(EXIT_PANIC); /* unreachable: panic() itself might fault now */
}

/* Three real frames for a backtrace; the empty asm after each call keeps the
 * compiler from turning it into a tail jump that would leave no frame. */
static __attribute__((noinline)) void deep_third(void)
{
    __asm__ volatile("ud2" : : : "memory");
}

static __attribute__((noinline)) void deep_second(void)
{
    deep_third();
    __asm__ volatile("" : : : "memory");
}

static __attribute__((noinline)) void deep_first(void)
{
    deep_second();
    __asm__ volatile("" : : : "memory");
}

/* #UD three calls down with an empty IDT: a triple fault whose report must
 * walk back through deep_third, deep_second and deep_first. */
static void test_deep(void)
{
    kprintf("test deep: empty IDT, then ud2 in deep_first > deep_second > deep_third\n");
    load_empty_idt();
    deep_first();
    kernel_exit(EXIT_PANIC); /* unreachable: panic() itself might fault now */
}

/* The HHDM covers only memory the map lists, so map the VGA window's first
 * page there ourselves, then read it: hardware would return bus noise. */
static void test_wild(void)
{
    vaddr_t va = boot_hhdm()->offset + TEST_UNBACKED_PHYSICAL;
    int status = vmm_map(vmm_kernel_root(), va, TEST_UNBACKED_PHYSICAL, 1, VM_READ);

    if (status != VMM_OK)
        panic("test wild: cannot map physical 0x%x at 0x%lx (%d)", TEST_UNBACKED_PHYSICAL,
              va, status);
    kprintf("test wild: reading physical 0x%x at 0x%lx\n", TEST_UNBACKED_PHYSICAL, va);
    (void)*(volatile uint64_t *)va;
    panic("test wild: the read of physical memory with nothing behind it returned");
}

/* Recursion on the boot stack that a volatile limit makes endless; the value
 * used after the call keeps it from becoming a loop. */
static volatile uint64_t overflow_limit = ~(uint64_t)0;

static __attribute__((noinline)) uint64_t overflow_frame(uint64_t depth)
{
    volatile uint8_t frame[200];

    if (depth == overflow_limit)
        return 0;
    frame[depth % sizeof(frame)] = (uint8_t)depth;
    return overflow_frame(depth + 1) + frame[0];
}

static bool platform_ready;

/* seconds= virtual seconds (default 1) of hz= ticks (default 100) spent in
 * hlt, measured by the HPET: an emulator that skips halted time runs them in
 * next to no host time. */
static void test_timer(void)
{
    uint64_t hz = cmdline_u64("hz", 100), ticks = cmdline_u64("seconds", 1) * hz;
    uint64_t start;

    if (!platform_ready)
        panic("test timer: no timer on this machine");
    if (hz == 0 || hz > 100000)
        panic("test timer: hz=%lu is not 1..100000", hz);
    kprintf("test timer: %lu ticks at %lu Hz\n", ticks, hz);
    start = clock_ns();
    timer_start((uint32_t)hz, NULL);
    while (timer_ticks() < ticks)
        __asm__ volatile("sti; hlt; cli" : : : "memory");
    timer_stop();
    kprintf("test timer: %lu ticks, HPET %lu us\n", timer_ticks(), (clock_ns() - start) / 1000);
}

/* A runaway loop: only an instruction budget stops it. */
static NORETURN void test_loop(void)
{
    kprintf("test loop: spinning forever\n");
    for (;;) {
    }
}

/* Halts with interrupts off and never writes the debug exit. */
static NORETURN void test_halt(void)
{
    kprintf("test halt: cli; hlt forever\n");
    for (;;)
        __asm__ volatile("cli; hlt" : : : "memory");
}

static void run_test(const char *name)
{
    if (strcmp(name, "int3") == 0) {
        kprintf("test int3: executing int3\n");
        __asm__ volatile("int3" : : : "memory");
        kprintf("test int3: returned from the breakpoint handler\n");
    } else if (strcmp(name, "ud") == 0) {
        kprintf("test ud: executing ud2\n");
        __asm__ volatile("ud2" : : : "memory");
        panic("kmain: execution continued after ud2");
    } else if (strcmp(name, "pf") == 0) {
        kprintf("test pf: reading 0x%x\n", TEST_UNMAPPED_ADDRESS);
        (void)*(volatile uint64_t *)TEST_UNMAPPED_ADDRESS;
        panic("kmain: the read of unmapped memory succeeded");
    } else if (strcmp(name, "triple") == 0) {
        test_triple();
    } else if (strcmp(name, "deep") == 0) {
        test_deep();
    } else if (strcmp(name, "wild") == 0) {
        test_wild();
    } else if (strcmp(name, "loop") == 0) {
        test_loop();
    } else if (strcmp(name, "halt") == 0) {
        test_halt();
    } else if (strcmp(name, "timer") == 0) {
        test_timer();
    } else if (strcmp(name, "overflow") == 0) {
        kprintf("test overflow: recursing on the boot stack\n");
        (void)overflow_frame(0);
        panic("test overflow: endless recursion returned");
    } else if (strcmp(name, "compute") == 0) {
        /* CPU-bound work for bench/run.py: a sieve, about 37 M instructions. */
        static uint8_t composite[2000000];
        uint64_t primes = 0;

        for (uint64_t i = 2; i < ARRAY_SIZE(composite); i++) {
            if (composite[i])
                continue;
            primes++;
            for (uint64_t j = i * i; j < ARRAY_SIZE(composite); j += i)
                composite[j] = 1;
        }
        kprintf("test compute: %lu primes below %lu\n", primes, (uint64_t)ARRAY_SIZE(composite));
    } else {
        panic("kmain: unknown test '%s'", name);
    }
}

NORETURN void kmain(void)
{
    char test[32];
    paddr_t rsdp;

    if (!boot_revision_accepted()) {
        serial_init();
        kprintf("kmain: the loader did not accept base revision %d\n", BOOT_BASE_REVISION);
        kernel_exit(EXIT_BAD_REVISION);
    }
    if (serial_init() != SERIAL_OK)
        kernel_exit(EXIT_SERIAL_FAULTY);
    if (cmdline_has("quiet"))
        console_set_mode(CONSOLE_QUIET);
    print_banner();
    gdt_init();
    idt_init();
    kprintf("gdt, tss and idt loaded\n");

    print_memory();
    print_executable();
    print_modules();
    print_platform();

    replay_save_module(); /* the module response is reclaimed by mm_init */
    rsdp = boot_rsdp();
    initrd_save_module();
    clock_save_boot_date();
    mm_init();
    checkpoint(CHECKPOINT_MM_INIT);
    heap_init();
    platform_ready = platform_init(rsdp);
    replay_main(); /* replay= or heaptest=: runs and exits */
    if (initrd_init() > 0)
        kprintf("initrd: indexed\n");
    if (cmdline_has("init"))
        proc_main(); /* runs the program to its end and exits */
    if (cmdline_get("selftest", test, sizeof(test)) >= 0)
        selftest_run(test);
    if (cmdline_get("test", test, sizeof(test)) >= 0)
        run_test(test);
    kprintf("kmain: done\n");
    kernel_exit(EXIT_OK);
}
