"""Timer interrupts through the CPU (issue 15, "Done means"): small kernels assembled here
run on a bare machine with the PC platform, program one timer each (the local APIC timer,
the PIT through the 8259 pair, the HPET through the IOAPIC), halt between ticks, and count
ten ticks in their handler, which records the TSC (virtual time) at each. The tick times
must be exact: the period the device's clock arithmetic gives, the same in every run."""
from __future__ import annotations

import struct

import pytest
from unicorn import x86_const as X

from emu.bare import BareMachine
from emu.hw.clock import DEFAULT_IPS
from emu.result import RunEnd

TICKS = 10
COUNT, STAMPS = 0x5000, 0x5100       # the handler's tick count and its TSC readings
LAPIC, IOAPIC, HPET = 0xFEE00000, 0xFEC00000, 0xFED00000
VECTOR = 0x40

HANDLER = """
    push rax
    push rdx
    push rbx
    mov rbx, {count}
    mov rbx, [rbx]
    rdtsc
    shl rdx, 32
    or rax, rdx
    mov rdx, {stamps}
    mov [rdx + rbx*8], rax
    mov rdx, {count}
    inc qword ptr [rdx]
    {eoi}
    pop rbx
    pop rdx
    pop rax
    iretq
"""

# Halt until TICKS ticks were counted, then end with interrupts off (a HALT ending).
WAIT = f"""
    sti
wait:
    hlt
    mov rax, {COUNT}
    cmp qword ptr [rax], {TICKS}
    jb wait
    cli
    hlt
"""


def run_ticks(setup: str, eoi: str, ips: int = DEFAULT_IPS, **mmio: int):
    """Boot a kernel that runs `setup` (with {name} for each mapped MMIO page) and WAIT;
    returns (the TSC at each tick, the instructions retired, how the run ended)."""
    machine = BareMachine(platform=True, ips=ips)
    pages = {name: machine.map_mmio(paddr) for name, paddr in mmio.items()}
    routines = machine.load(setup.format(**pages) + WAIT,
                            handler=HANDLER.format(count=COUNT, stamps=STAMPS,
                                                   eoi=eoi.format(**pages)))
    machine.gate(VECTOR, routines["handler"])
    machine.boot()
    end = machine.run(budget=50_000_000)
    count = struct.unpack("<Q", machine.memory.read(COUNT, 8))[0]
    stamps = struct.unpack(f"<{TICKS}Q", machine.memory.read(STAMPS, 8 * TICKS))
    assert count == TICKS, (end, count)
    return list(stamps), machine.cpu.icount(), end, machine


LAPIC_EOI = "mov rax, {lapic}\n mov dword ptr [rax + 0xB0], 0"


def lapic_timer(initial: int, divide_code: int) -> str:
    return f"""
    mov rax, {{lapic}}
    mov dword ptr [rax + 0xF0], 0x1FF          /* SVR: enabled, spurious vector 0xFF */
    mov dword ptr [rax + 0x3E0], {divide_code}
    mov dword ptr [rax + 0x320], {VECTOR | 1 << 17}   /* LVT timer: periodic */
    mov dword ptr [rax + 0x380], {initial}
    """


@pytest.mark.parametrize("initial, divide_code, divisor", [(50_000, 0xB, 1), (7_000, 0x3, 16)])
def test_lapic_periodic_timer_ticks_at_exact_intervals(initial, divide_code, divisor):
    stamps, _, end, _ = run_ticks(lapic_timer(initial, divide_code), LAPIC_EOI, lapic=LAPIC)
    assert end is RunEnd.HALT
    assert {b - a for a, b in zip(stamps, stamps[1:])} == {initial * divisor}


def test_lapic_ticks_are_the_same_in_every_run():
    first = run_ticks(lapic_timer(12_345, 0xB), LAPIC_EOI, lapic=LAPIC)[:2]
    assert run_ticks(lapic_timer(12_345, 0xB), LAPIC_EOI, lapic=LAPIC)[:2] == first


def test_halted_time_is_skipped_not_run():
    """A 1 ms tick with the CPU halted between: virtual time advances by the period while
    the instructions retired stay a few dozen per tick."""
    stamps, retired, _, _ = run_ticks(lapic_timer(100_000, 0xB), LAPIC_EOI, lapic=LAPIC)
    assert stamps[-1] - stamps[0] == 9 * 100_000
    assert retired < 50 * TICKS + 200


PIC_SETUP = f"""
    mov al, 0x11
    out 0x20, al
    out 0xA0, al
    mov al, {VECTOR}
    out 0x21, al
    mov al, {VECTOR + 8}
    out 0xA1, al
    mov al, 4
    out 0x21, al
    mov al, 2
    out 0xA1, al
    mov al, 1
    out 0x21, al
    out 0xA1, al
    mov al, 0xFE                /* only IRQ0 */
    out 0x21, al
    mov al, 0xFF
    out 0xA1, al
    mov al, 0x34                /* channel 0, lobyte/hibyte, mode 2 (rate generator) */
    out 0x43, al
    mov al, {1193 & 0xFF}
    out 0x40, al
    mov al, {1193 >> 8}
    out 0x40, al
"""
PIC_EOI = "mov al, 0x20\n out 0x20, al"


def pit_edge(k: int, ips: int = DEFAULT_IPS) -> int:
    """The tick of the PIT's k-th input clock edge: ceil(k * ips / (105/88 MHz))."""
    return -(-k * 88 * ips // 105_000_000)


def test_pit_through_the_8259_ticks_on_its_clock_edges():
    stamps, _, end, _ = run_ticks(PIC_SETUP, PIC_EOI)
    assert end is RunEnd.HALT
    deltas = [b - a for a, b in zip(stamps, stamps[1:])]
    # 1193 PIT clocks are 99,984.7 ticks: the intervals follow the exact edge times.
    assert set(deltas) <= {99_984, 99_985} and len(set(deltas)) == 2
    # Tick n is the PIT's (E + 1193 * (n + 1))-th clock edge for the edge E at which the
    # count was loaded, plus the handler's few instructions before its rdtsc.
    def offsets(first_edge: int) -> set[int]:
        return {stamp - pit_edge(first_edge + 1193 * (n + 1)) for n, stamp in enumerate(stamps)}
    assert any(len(offsets(e)) == 1 and 0 < min(offsets(e)) < 100 for e in range(2000))


def test_pit_rate_follows_ips():
    stamps, _, _, _ = run_ticks(PIC_SETUP, PIC_EOI, ips=10_000_000)
    assert stamps[-1] - stamps[0] == pit_edge(1193 * 10, 10_000_000) - \
        pit_edge(1193, 10_000_000)


HPET_SETUP = f"""
    mov al, 0xFF                /* both 8259s masked: the IOAPIC carries the interrupt */
    out 0x21, al
    out 0xA1, al
    mov rax, {{lapic}}
    mov dword ptr [rax + 0xF0], 0x1FF
    mov rax, {{ioapic}}
    mov dword ptr [rax], {0x10 + 2 * 20}      /* redirection entry 20, low half */
    mov dword ptr [rax + 0x10], {VECTOR}      /* fixed, edge, active high, unmasked */
    mov dword ptr [rax], {0x10 + 2 * 20 + 1}
    mov dword ptr [rax + 0x10], 0             /* destination: APIC ID 0 */
    mov rbx, {{hpet}}
    mov rax, {1 << 2 | 1 << 3 | 1 << 6 | 20 << 9}   /* enabled, periodic, value set, pin 20 */
    mov qword ptr [rbx + 0x100], rax
    mov qword ptr [rbx + 0x108], 14318            /* first comparator value */
    mov qword ptr [rbx + 0x108], 14318            /* then the period */
    mov qword ptr [rbx + 0x10], 1                 /* the main counter runs */
"""


def hpet_edge(k: int, ips: int = DEFAULT_IPS) -> int:
    """The tick of the HPET's k-th count: ceil(k * period_fs * ips / 10**15)."""
    return -(-k * 69_841_279 * ips // 10**15)


def test_hpet_through_the_ioapic_ticks_on_its_counts():
    stamps, _, end, _ = run_ticks(HPET_SETUP, LAPIC_EOI, lapic=LAPIC, ioapic=IOAPIC,
                                  hpet=HPET)
    assert end is RunEnd.HALT
    offsets = [stamp - hpet_edge(14318 * (n + 1)) for n, stamp in enumerate(stamps)]
    assert len(set(offsets)) == 1 and 0 <= offsets[0] < 100


def test_cli_hlt_is_a_halt_with_interrupts_disabled():
    _, _, end, machine = run_ticks(lapic_timer(10_000, 0xB), LAPIC_EOI, lapic=LAPIC)
    assert end is RunEnd.HALT and machine.endings == []


def test_a_cancelled_deadline_is_passed_quietly():
    """The run loop planned a stop at the timer's expiry; the guest stopped the timer (an
    initial count of 0) and ran on past that tick without another stop. Once this ended
    the run with "unicorn stopped for no known reason" (found 4e9 instructions into a
    64 GiB boot, after our kernel's timer calibration)."""
    machine = BareMachine(platform=True)
    lapic = machine.map_mmio(LAPIC)
    machine.load(f"""
        mov rax, {lapic}
        mov dword ptr [rax + 0xF0], 0x1FF
        mov dword ptr [rax + 0x320], {1 << 16 | VECTOR}   /* masked one-shot */
        mov dword ptr [rax + 0x380], 5000
        mov dword ptr [rax + 0x380], 0                     /* stopped again */
        mov rcx, 20000
    spin:
        dec rcx
        jnz spin
        cli
        hlt
    """)
    machine.boot()
    assert machine.run(budget=1_000_000) is RunEnd.HALT
    assert machine.cpu.icount() > 40_000


# ---- device accesses that make an interrupt pending ---------------------------------------

SELF_IPI = 0x40000 | VECTOR          # ICR: fixed delivery to self (shorthand 01)


def self_ipi_machine(main: str, count: bool = True) -> tuple[BareMachine, list[int]]:
    """A machine whose `main` may send self-IPIs (vector VECTOR, the handler counts them in
    R8 and EOIs); also returns the list of ICR values the local APIC receives."""
    machine = BareMachine(platform=True, count=count)
    lapic = machine.map_mmio(LAPIC)
    routines = machine.load(f"""
        mov rax, {lapic}
        mov dword ptr [rax + 0xF0], 0x1FF
        xor r8, r8
        xor r9, r9
    """ + main, handler="inc r8\n mov dword ptr [rax + 0xB0], 0\n iretq")
    machine.gate(VECTOR, routines["handler"])
    icr_writes: list[int] = []
    write = machine.platform.lapic.write

    def counting_write(offset: int, size: int, value: int) -> None:
        icr_writes.extend([value] if offset == 0x300 else [])
        write(offset, size, value)
    machine.platform.lapic.write = counting_write
    machine.boot()
    return machine, icr_writes


@pytest.mark.parametrize("count", [True, False])
def test_an_mmio_access_that_makes_an_interrupt_pending_is_made_once(count):
    """A self-IPI sent with IF set: one ICR write, one interrupt, and the instructions
    around it in its translated block retire once. Stopping Unicorn from inside the MMIO
    access made it run the block again from its start: the IPI was sent forever. (It is
    taken at the end of the block; with --no-count at the next stop, here the `hlt`.)"""
    machine, icr_writes = self_ipi_machine(f"""
        sti
        inc r9                                   /* the ICR write's block starts here */
        mov dword ptr [rax + 0x300], {SELF_IPI}
        inc r9
        jmp done
    done:
        sti
        hlt
        cli
        hlt
    """, count)
    end = machine.run(budget=100_000) if count else machine.cpu.run()
    assert end is RunEnd.HALT
    assert icr_writes == [SELF_IPI]
    assert (machine.reg(X.UC_X86_REG_R8), machine.reg(X.UC_X86_REG_R9)) == (1, 2)


@pytest.mark.parametrize("interrupts, taken", [("sti", 1), ("cli", 0)])
def test_a_hlt_in_the_block_of_an_mmio_access_still_halts(interrupts, taken):
    """The interrupt an MMIO access made pending is taken at the end of its block; when a
    `hlt` ends that block, the CPU halts there: with IF set the interrupt wakes it, with IF
    clear it is a dead halt (the run once went on past the `hlt`)."""
    machine, _ = self_ipi_machine(f"""
        {interrupts}
        nop
        mov dword ptr [rax + 0x300], {SELF_IPI}
        hlt
        cli
        inc r9
        hlt
    """)
    assert machine.run(budget=100_000) is RunEnd.HALT
    assert (machine.reg(X.UC_X86_REG_R8), machine.reg(X.UC_X86_REG_R9)) == (taken, taken)


def test_mmio_accesses_with_an_interrupt_held_by_cli_run_on():
    """A LAPIC timer expires while IF is clear; the loop that then reads LAPIC registers
    ran the same block forever instead of reaching its `hlt` (found booting a public
    kernel that polls the LAPIC with interrupts off)."""
    machine = BareMachine(platform=True)
    lapic = machine.map_mmio(LAPIC)
    routines = machine.load(f"""
        cli
        mov rax, {lapic}
        mov dword ptr [rax + 0xF0], 0x1FF
        mov dword ptr [rax + 0x3E0], 0xB
        mov dword ptr [rax + 0x320], {VECTOR}    /* one-shot */
        mov dword ptr [rax + 0x380], 100
        mov rcx, 1000
    spin:
        dec rcx
        jnz spin                                  /* expires here, held by IF = 0 */
        mov rcx, 10
    again:
        mov edx, dword ptr [rax + 0x20]           /* LAPIC ID */
        dec rcx
        jnz again
        hlt
    """, handler="iretq")
    machine.gate(VECTOR, routines["handler"])
    machine.boot()
    assert machine.run(budget=100_000) is RunEnd.HALT
    assert machine.reg(X.UC_X86_REG_RCX) == 0
    assert machine.platform.lapic.read(0x200 + VECTOR // 32 * 0x10, 4) >> VECTOR % 32 & 1


def test_nothing_after_a_power_off_in_its_block_has_an_effect():
    """MinimalOS powers off with QEMU's `outw(0x604, 0x2000)` and, in case that did not
    work, writes to other boards' PM ports in the same block: Unicorn runs the rest of the
    block before it leaves, and the write to 0xB004, with nothing behind it, turned the
    clean power-off into a crash."""
    machine = BareMachine(platform=True)
    machine.load("""
        mov dx, 0x604
        mov ax, 0x2000
        out dx, ax                   /* S5: the run ends here */
        mov dx, 0xB004
        out dx, ax                   /* no device: would be a crash */
        ud2
    """)
    machine.boot()
    assert machine.run(budget=1_000) is RunEnd.POWER_OFF
    assert machine.endings == ["power off"]
    assert machine.cpu.exceptions_by_vector == {}
