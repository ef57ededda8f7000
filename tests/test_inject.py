"""Fault injection (emu/inject/): the knobs decide as Linux's framework does, the grammar
refuses what is wrong in one line, and each injector does what it says on real code, at
exact instruction counts, with an Injection event for each act."""
from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from unicorn import x86_const as X

from emu.arch import paging
from emu.bare import DEMAND, BareMachine
from emu.errors import ConfigError
from emu.events import Injection, Observer
from emu.inject import Decider, Knobs, attach, parse_spec
from emu.machine import Machine, MachineConfig
from emu.monitor.checks.checker import raw_table_reader
from emu.monitor.heapcheck import heap_bounds
from emu.result import RunEnd

TRACES = __import__("pathlib").Path(__file__).resolve().parent.parent / "traces" / "malloclab"


class Injections(Observer):
    def __init__(self) -> None:
        self.seen: list[Injection] = []

    def on_injection(self, event: Injection) -> None:
        self.seen.append(event)


# --- the knobs ------------------------------------------------------------------------------

def failures(knobs: Knobs, calls: int, size: int = 0) -> list[int]:
    decider = Decider(knobs)
    return [n for n in range(1, calls + 1) if decider.should_fail(size)]


@given(st.integers(1, 50), st.integers(0, 5))
def test_fail_nth_fails_that_call_only(nth, times):
    assert failures(Knobs(fail_nth=nth, times=times or -1), 60) == [nth]


@given(st.integers(1, 7), st.integers(-1, 6))
def test_interval_and_times(interval, times):
    got = failures(Knobs(interval=interval, times=times), 50)
    every = list(range(interval, 51, interval))
    assert got == (every if times == -1 else every[:times])


@given(st.integers(0, 400), st.integers(1, 64))
def test_space_is_consumed_before_anything_fails(space, size):
    got = failures(Knobs(space=space), 30, size)
    spared = 0
    while space > size:         # Linux: a call fails once the budget no longer exceeds it
        space -= size
        spared += 1
    assert got == list(range(spared + 1, 31))


@settings(max_examples=20)
@given(st.integers(0, 100), st.integers(0, 2**32))
def test_probability_is_a_seeded_percentage(percent, seed):
    got = failures(Knobs(probability=percent, seed=seed), 4000)
    assert got == failures(Knobs(probability=percent, seed=seed), 4000)   # deterministic
    assert abs(len(got) / 4000 - percent / 100) < 0.05
    if percent in (0, 100):
        assert len(got) == 40 * percent


# --- the grammar ----------------------------------------------------------------------------

def test_a_spec_parses_into_kind_params_and_knobs():
    spec = parse_spec("fail-function:function=kmalloc,retval=-12,caller=replay_run,"
                      "fail-nth=0x3,probability=50,interval=2,times=4,space=1_000,seed=9")
    assert (spec.kind, spec.params) == ("fail-function", {"function": "kmalloc",
                                                          "retval": -12,
                                                          "caller": "replay_run"})
    assert spec.knobs == Knobs(probability=50, interval=2, times=4, space=1000, fail_nth=3,
                               seed=9)
    assert parse_spec("ram:at=100,type=usable,flips=3,seed=2").knobs.seed == 2
    disk = parse_spec("disk:fault=torn,sectors=8..15,nth=2,land=3,space=4096")
    assert (disk.kind, disk.params) == ("disk", {"fault": "torn", "sectors": "8..15",
                                                 "land": 3})
    assert disk.knobs == Knobs(fail_nth=2, space=4096)


@pytest.mark.parametrize("spec, says", [
    ("kmalloc", "unknown kind 'kmalloc'"),
    ("fail-function:retval=0", "fail-function needs function"),
    ("fail-function:function=f,bogus=1", "fail-function takes no bogus"),
    ("fail-function:function=f,fail-nth=x", "fail-nth=x is not a number"),
    ("fail-function:function=f,probability=101", "probability is a percentage"),
    ("fail-function:function=f,interval=0", "interval >= 1"),
    ("fail-function:function=f,function=g", "function is given twice"),
    ("fail-function:function", "'function' is not KEY=VALUE"),
    ("ram:at=5", "exactly one of paddr=, symbol=, type=, region="),
    ("ram:at=5,region=stack", "region=stack is not a region; use one of heap"),
    ("ram:at=5,region=heap,type=usable", "exactly one of"),
    ("ram:at=5,paddr=0x1000,symbol=x", "exactly one of"),
    ("ram:at=5,type=ram", "type=ram is not a memory-map type"),
    ("ram:at=5,paddr=0,bit=8", "bit is 0 to 7"),
    ("ram:at=-1,paddr=0", "at= is an instruction count"),
    ("irq:at=5,vector=3", "vector is an external interrupt"),
    ("spurious-pf:at=5,vector=3", "spurious-pf takes no vector"),
    ("disk:op=read", "disk needs fault"),
    ("disk:fault=bitrot", "fault=bitrot is not a disk fault; use one of ioerr, torn, delay"),
    ("disk:fault=ioerr,op=flush", "op=flush is not a request kind"),
    ("disk:fault=torn,op=read", "a torn request is a write"),
    ("disk:fault=ioerr,sectors=9..3", "sectors=9..3 is not A..B"),
    ("disk:fault=ioerr,sectors=x", "sectors=x is not A..B"),
    ("disk:fault=ioerr,land=2", "land=K"),
    ("disk:fault=torn,land=-1", "land=K"),
    ("disk:fault=torn,ticks=5", "ticks=T (1 or more) is for fault=delay"),
    ("disk:fault=delay,ticks=0", "ticks=T"),
    ("disk:fault=ioerr,nth=1,fail-nth=2", "nth= and fail-nth= are the same knob"),
    ("ram:at=5,paddr=0,fail-nth=2", "ram takes no fail-nth"),
])
def test_a_bad_spec_is_one_line_that_says_what_is_wrong(spec, says):
    with pytest.raises(ConfigError) as info:
        parse_spec(spec)
    assert says in str(info.value) and "\n" not in str(info.value)
    assert str(info.value).startswith(f"--inject {spec}: ")


def test_a_disk_injection_without_a_disk_is_refused(kernel):
    with pytest.raises(ConfigError, match="the machine has no disk; add --swap SIZE"):
        attach(Machine(MachineConfig(kernel)), [parse_spec("disk:fault=ioerr")])


# --- fail-function on our kernel --------------------------------------------------------------

def replay_machine(kernel, *specs: str, observers=()) -> Machine:
    config = MachineConfig(kernel, modules=(TRACES / "short1-bal.rep",),
                           cmdline="replay=1 heap=list", injections=specs)
    machine = Machine(config, observers)
    attach(machine, [parse_spec(spec) for spec in specs])
    return machine


def test_fail_function_returns_null_from_the_nth_kmalloc(kernel):
    seen = Injections()
    machine = replay_machine(kernel, "fail-function:function=kmalloc,fail-nth=3",
                             observers=[seen])
    result = machine.run()
    assert "replay: error: op 3 (a 2 48): allocation returned 0x0" in machine.serial_output()
    (event,) = seen.seen
    assert (event.kind, event.target) == ("fail-function", "kmalloc")
    assert event.detail.startswith("call 3 from run_checked+0x") and event.detail.endswith(
        "returned 0")
    assert result.end is RunEnd.EXIT
    # Hooked but never failing: the run is the clean run, instruction for instruction.
    idle = replay_machine(kernel, "fail-function:function=kmalloc,probability=0").run()
    assert idle.instructions == replay_machine(kernel).run().instructions


def test_return_from_call_skips_the_body_and_its_count():
    def run(inject: bool) -> tuple[int, int]:
        machine = BareMachine()
        routines = machine.load("call {f}\n mov rbx, rax\n hlt",
                                f="push rbp\n mov rbp, rsp\n mov rax, 5\n pop rbp\n ret")
        if inject:
            machine.hooks.on_execute(routines["f"],
                                     lambda *_: machine.cpu.return_from_call(-12))
        machine.boot()
        machine.run()
        return machine.reg(X.UC_X86_REG_RBX), machine.cpu.icount()
    (plain, plain_count), (failed, failed_count) = run(False), run(True)
    assert (plain, failed) == (5, 2**64 - 12)
    assert plain_count - failed_count == 5          # f's five instructions never retired


def test_fail_function_filters_by_caller_and_refuses_unknown_names(kernel):
    machine = replay_machine(kernel, "fail-function:function=kmalloc,caller=heap_init")
    machine.run()
    assert "allocation returned 0x0" not in machine.serial_output()   # no call from there
    with pytest.raises(ConfigError, match="the kernel has no function no_such_function"):
        replay_machine(kernel, "fail-function:function=no_such_function")
    with pytest.raises(ConfigError, match="is a compiler clone"):
        replay_machine(kernel, "fail-function:function=kmalloc.isra.0")


# --- injections at instruction counts on a bare machine -----------------------------------------

def test_ram_flip_at_an_exact_count(kernel):
    seen = Injections()
    machine = Machine(MachineConfig(kernel), [seen])
    attach(machine, [parse_spec("ram:at=300000,paddr=0x8000000,bit=5")])
    assert machine.run().end is RunEnd.EXIT
    assert machine.memory.read(0x8000000, 1) == b"\x20"
    (event,) = seen.seen
    assert (event.icount, event.target, event.detail) == (300000, "0x8000000",
                                                          "bit 5: 0x00 -> 0x20")


def test_random_flips_in_a_memory_type_are_seeded(kernel):
    def flipped(seed: int) -> list[str]:
        seen = Injections()
        machine = Machine(MachineConfig(kernel), [seen])
        attach(machine, [parse_spec(f"ram:at=1000,type=acpi_nvs,flips=4,seed={seed}")])
        machine.run()
        return [event.target for event in seen.seen]
    assert flipped(1) == flipped(1) != flipped(2)
    assert all(0xFFF0000 <= int(target, 16) < 0x10000000 for target in flipped(1))


class HeapFrames(Observer):
    """At each injection: the frames the kernel heap maps, as a fresh scan shows them."""

    def __init__(self) -> None:
        self.machine = None
        self.seen: list[tuple[int, set[int]]] = []

    def on_injection(self, event: Injection) -> None:
        machine = self.machine
        ranges = heap_bounds(machine)()
        space = paging.scan(raw_table_reader(machine.memory), machine.cpu.cr3(), True)
        frames = {leaf.paddr + offset for leaf in space.leaves for base, end in ranges
                  for offset in range(0, leaf.end - leaf.start, 4096)
                  if base <= leaf.start + offset < end}
        self.seen.append((int(event.target, 16), frames))


def test_a_flip_in_the_heap_lands_in_a_page_the_heap_maps(kernel):
    clean = replay_machine(kernel)
    clean.run()
    during_replay = clean.cpu.icount() - 5000           # the replay is the run's last part

    def flipped(seed: int) -> list[int]:
        watch = HeapFrames()
        machine = replay_machine(kernel, f"ram:at={during_replay},region=heap,flips=3,"
                                 f"seed={seed}", observers=[watch])
        watch.machine = machine
        machine.run()
        assert len(watch.seen) == 3
        for address, frames in watch.seen:
            assert address & ~0xFFF in frames, hex(address)
        return [address for address, _ in watch.seen]
    assert flipped(1) == flipped(1) != flipped(2)


def test_a_heap_flip_before_the_heap_exists_is_refused(kernel):
    machine = replay_machine(kernel, "ram:at=1000,region=heap")
    with pytest.raises(ConfigError, match="the heap has no page mapped at instruction 1000"):
        machine.run()


def test_irq_arrives_at_its_count():
    machine = BareMachine()
    seen = Injections()
    machine.events.subscribe(seen)
    routines = machine.load("sti\n mov rcx, 1000\nl: dec rcx\n jnz l\n hlt",
                            handler="mov rbx, rcx\n iretq")
    machine.gate(0x40, routines["handler"])
    attach(machine, [parse_spec("irq:at=500,vector=0x40")])
    machine.boot()
    assert machine.run() is RunEnd.HALT
    assert [e.icount for e in seen.seen] == [500]
    # 11 prologue instructions and sti, then two per iteration: rcx at the 500th
    assert machine.reg(X.UC_X86_REG_RBX) == 1000 - (500 - 12 - 1) // 2 - 1


def test_spurious_page_fault_on_a_present_page_is_retried():
    machine = BareMachine()
    seen = Injections()
    machine.events.subscribe(seen)
    routines = machine.load("""
        mov rdi, 0x200000
        mov rcx, 50
    l:  mov qword ptr [rdi + rcx*8], rcx
        dec rcx
        jnz l
        hlt
    """, pf="""
        inc r12
        mov r13, cr2
        pop r14
        iretq
    """)
    machine.gate(14, routines["pf"])
    attach(machine, [parse_spec("spurious-pf:at=20")])
    machine.boot()
    assert machine.run() is RunEnd.HALT
    assert machine.reg(X.UC_X86_REG_R12) == 1                   # one fault, handled
    assert machine.reg(X.UC_X86_REG_R14) == 0b011               # present, write, kernel
    address = machine.reg(X.UC_X86_REG_R13)
    # At 20 retired the next instructions are dec and jnz: the store after them, with
    # 22 retired, takes the fault (rcx 47 by then).
    assert (seen.seen[0].target, seen.seen[0].icount) == (f"{address:#x}", 22)
    assert address == 0x200000 + 8 * 47
    assert all(machine.memory.read_u64(0x200000 + 8 * n) == n for n in range(1, 51))


def test_a_flip_in_code_already_run_changes_what_runs():
    """Unicorn keeps translated code, and the counter keeps block counts: a flip in code
    that already ran must still change what runs next."""
    machine = BareMachine()
    machine.load("""
        mov rcx, 40
    l:  mov rax, 0x11
        add rbx, rax
        dec rcx
        jnz l
        hlt
    """)
    # `mov rax, 0x11` is 48 c7 c0 11 00 00 00: find its immediate in the loaded code.
    code = machine.memory.read(0x100000, 0x80)
    immediate = 0x100000 + code.index(bytes.fromhex("48c7c011000000")) + 3
    attach(machine, [parse_spec(f"ram:at=60,paddr={immediate:#x},bit=5")])   # 0x11 -> 0x31
    machine.boot()
    machine.run()
    before = sum(0x11 for _ in range(40))
    assert before < machine.reg(X.UC_X86_REG_RBX) < 40 * 0x31


def test_fail_function_counts_only_after_a_checkpoint(kernel):
    """Calls before checkpoint 1 (mm_init returned) are not counted with after=1."""
    def calls(spec: str) -> int:
        machine = Machine(MachineConfig(kernel, cmdline="selftest=pmm"))
        (injector,) = attach(machine, [parse_spec(spec)])
        machine.run()
        return injector.decider.calls
    every = calls("fail-function:function=pmm_alloc,probability=0")
    after = calls("fail-function:function=pmm_alloc,probability=0,after=1")
    assert 0 < after < every
