"""The machine end to end: the project's kernel boots on every kind of memory map, broken
maps are refused with their own message, and each way a guest can go wrong (test=... on the
kernel command line) ends the run with the right reason, exit status and crash report."""
from __future__ import annotations

import re

import pytest
from capstone import CS_ARCH_X86, CS_MODE_64, Cs

from emu.errors import ConfigError
from emu.machine import Machine, MachineConfig
from emu.result import EXIT_STATUS, RunEnd

EXIT_BUDGET, EXIT_GUEST_CRASH, EXIT_HALTED = (EXIT_STATUS[RunEnd.BUDGET], EXIT_STATUS[RunEnd.CRASH],
                                            EXIT_STATUS[RunEnd.HALT])
from emu.hw.memmap import GIB, MIB, MemoryType

# "  [0x0000000000000000-0x000000000009efff]      636 KiB USABLE", as main.c prints it
ENTRY = re.compile(r"^  \[0x(?P<base>[0-9a-f]{16})-0x(?P<last>[0-9a-f]{16})\]\s+"
                   r"(?P<size>\d+ [KMGT]?i?B) (?P<type>[A-Z_]+)$", re.MULTILINE)
EXIT_PANIC = 1                   # guest/lib/panic.h
RFLAGS_IF = 1 << 9

CUSTOM_MAP = """\
# Listed out of order on purpose: the loader sorts.
[[region]]
base = "0x1100000"
length = "15M"
type = "usable"

[[region]]
base = 0
length = "636K"
type = "usable"

[[region]]
base = "0xf0000"
length = "64K"
type = "reserved"

[[region]]
base = "1M"
length = "15M"
type = "usable"

[[region]]
base = "16M"
length = "1M"
type = "acpi_nvs"

[[region]]
base = "0x2000000"
length = "8K"
type = "bad_memory"
"""


def faults(result) -> dict[int, int]:
    """The exceptions of a run, without external interrupts (our kernel takes the PIT's
    once at boot, calibrating its timer)."""
    return {vector: n for vector, n in result.exceptions.items() if vector < 32}


def printed_map(serial: str) -> list[tuple[int, int, str]]:
    """(base, end, type name) of every memory map entry the kernel printed."""
    return [(int(m["base"], 16), int(m["last"], 16) + 1, m["type"])
            for m in ENTRY.finditer(serial)]


def expected_map(machine: Machine) -> list[tuple[int, int, str]]:
    return [(r.base, r.end, r.type.name) for r in machine.boot.memmap.regions]


def section(report: str, title: str) -> list[str]:
    """The indented lines under `title:` in a crash report."""
    lines = report.splitlines()
    start = lines.index(f"{title}:") + 1
    out = []
    for line in lines[start:]:
        if not line.startswith("  "):
            break
        out.append(line)
    return out


def frame_functions(report: str) -> list[str]:
    """Function names (or bare addresses) of the backtrace frames, innermost first."""
    return [re.match(r"\s+#\d+\s+0x[0-9a-f]+ (\S+)", line)[1].split("+0x")[0]
            for line in section(report, "backtrace")]


# --- booting on memory maps --------------------------------------------------------------

@pytest.mark.parametrize("memmap", ["pc", "tiny", "fragmented"])
def test_kernel_boots_on_preset_and_prints_the_map_it_was_given(boot, memmap):
    machine, result = boot(memmap=memmap)
    serial = machine.serial_output()

    assert (result.reason, result.exit_status, result.guest_value) == ("exit", 0, 0), serial
    assert "kmain: done" in serial
    assert faults(result) == {}
    regions = machine.boot.memmap.regions
    assert f"memory map: {len(regions)} entries" in serial
    assert printed_map(serial) == expected_map(machine)
    usable = sum(1 for r in regions if r.type == MemoryType.USABLE)
    assert usable >= 2
    assert re.search(rf"^  USABLE\s+{usable} entries\s+"
                     rf"{machine.boot.memmap.total(MemoryType.USABLE) // 1024} KiB$",
                     serial, re.MULTILINE)


def test_fragmented_map_reaches_the_kernel_with_its_holes(boot):
    machine, result = boot(memmap="fragmented")
    entries = printed_map(machine.serial_output())
    kinds = {kind for _, _, kind in entries}
    assert {"USABLE", "RESERVED", "ACPI_RECLAIMABLE", "ACPI_NVS", "BAD_MEMORY"} <= kinds
    assert sum(1 for *_, kind in entries if kind == "USABLE") > 20


def test_kernel_boots_on_a_custom_toml_map(boot, tmp_path):
    path = tmp_path / "custom.toml"
    path.write_text(CUSTOM_MAP)
    machine, result = boot(memmap=str(path))
    serial = machine.serial_output()

    assert (result.reason, result.exit_status) == ("exit", 0), serial
    entries = printed_map(serial)
    assert entries == expected_map(machine)
    assert (16 * MIB, 17 * MIB, "ACPI_NVS") in entries
    assert (0x2000000, 0x2002000, "BAD_MEMORY") in entries
    assert (0xf0000, 0x100000, "RESERVED") in entries
    usable = [e for e in entries if e[2] == "USABLE"]
    assert len(usable) == sum(1 for r in machine.boot.memmap.regions
                              if r.type == MemoryType.USABLE)
    # nothing beyond what the file gave, apart from the framebuffer the loader places
    assert max(end for base, end, kind in entries if kind != "FRAMEBUFFER") == 0x2002000


def test_64_gib_map_boots_without_touching_the_host_memory(boot):
    machine, result = boot(memmap="pc", memory=64 * GIB)
    serial = machine.serial_output()

    assert (result.reason, result.exit_status) == ("exit", 0), serial
    usable = machine.boot.memmap.total(MemoryType.USABLE)
    assert usable > 63 * GIB
    assert f"usable memory: {usable // 1024} KiB" in serial
    assert (4 * GIB, 65 * GIB, "USABLE") in printed_map(serial)
    assert machine.memory.resident_bytes() < 256 * MIB


def test_runs_are_deterministic(boot):
    first_machine, first = boot(cmdline="test=int3")
    second_machine, second = boot(cmdline="test=int3")
    assert first.instructions == second.instructions
    assert first.instructions > 10_000
    assert first_machine.serial_output() == second_machine.serial_output()
    assert first.exceptions == second.exceptions


@pytest.mark.parametrize("period", [1, 7, 63, 64, 997, 50_000, 0, -1, -3])
def test_the_count_is_exact_whatever_the_check_period(boot, period):
    """A periodic stop single-steps to its mark; the debug exit stops mid-block. Both must
    land on the same count: the instructions up to and including the exit's `out`. Periods
    0, -1 and -3 mean the run's own count (the exit's `out` is single-stepped) and just
    below it."""
    from emu.events import Observer

    class Exit(Observer):
        icount = None

        def on_guest_exit(self, event) -> None:
            self.icount = event.icount

    plain_machine, plain = boot()
    if period <= 0:
        period += plain.instructions
    seen = Exit()
    machine = Machine(MachineConfig(kernel=plain_machine.config.kernel), [seen])
    ticks = []
    machine.every(period, lambda: ticks.append(machine.cpu.now()))
    periodic = machine.run()
    assert plain.reason == periodic.reason == "exit"
    assert periodic.instructions == plain.instructions == seen.icount
    assert ticks == list(range(period, plain.instructions, period))


# --- broken configurations ---------------------------------------------------------------

BROKEN_MAPS = {
    "overlap": ("""
        [[region]]
        base = "1M"
        length = "16M"
        type = "usable"
        [[region]]
        base = "16M"
        length = "16M"
        type = "usable"
        """, r"entry #2 .* overlaps entry #1 .*USABLE memory must not overlap"),
    "misaligned": ("""
        [[region]]
        base = "0x100800"
        length = "16M"
        type = "usable"
        """, r"USABLE entries must start and end on 4 KiB boundaries \(base 0x100800"),
    "nothing-usable": ("""
        [[region]]
        base = "1M"
        length = "16M"
        type = "reserved"
        """, r"memory map has no USABLE memory"),
    "too-small": ("""
        [[region]]
        base = 0
        length = "636K"
        type = "usable"
        [[region]]
        base = "1M"
        length = "512K"
        type = "usable"
        """, r"RAM too small: the kernel and modules need .* but the map has 512 KiB"),
    "unknown-type": ("""
        [[region]]
        base = "1M"
        length = "16M"
        type = "ram"
        """, r"\[\[region\]\] #1: type: unknown memory type 'ram'"),
}


@pytest.mark.parametrize("name", list(BROKEN_MAPS))
def test_broken_map_gives_its_own_config_error(kernel, tmp_path, name):
    text, expected = BROKEN_MAPS[name]
    path = tmp_path / f"{name}.toml"
    path.write_text("\n".join(line.strip() for line in text.splitlines()))
    with pytest.raises(ConfigError) as info:
        Machine(MachineConfig(kernel=kernel, memmap=str(path)))
    message = str(info.value)
    assert re.search(expected, message), message
    assert "\n" not in message
    others = [pattern for other, (_, pattern) in BROKEN_MAPS.items() if other != name]
    assert not any(re.search(pattern, message) for pattern in others), message


def test_preset_too_small_and_missing_kernel_are_config_errors(kernel, tmp_path):
    with pytest.raises(ConfigError, match=r"the pc memory map needs at least 16 MiB"):
        Machine(MachineConfig(kernel=kernel, memmap="pc", memory=8 * MIB))
    with pytest.raises(ConfigError, match=r"kernel .*nothing\.elf not found"):
        Machine(MachineConfig(kernel=tmp_path / "nothing.elf"))
    with pytest.raises(ConfigError, match=r"module .*nothing\.bin not found"):
        Machine(MachineConfig(kernel=kernel, modules=(tmp_path / "nothing.bin",)))


# --- the self-tests: what the guest does wrong and how the run ends ----------------------

def test_int3_is_delivered_to_the_kernel_handler_and_returns(boot):
    machine, result = boot(cmdline="test=int3")
    serial = machine.serial_output()

    assert (result.reason, result.exit_status, result.guest_value) == ("exit", 0, 0), serial
    assert faults(result) == {3: 1}
    assert "test int3: returned from the breakpoint handler" in serial
    # the frame's RIP, as the handler printed it, is just after an int3 (0xcc) in the kernel
    rip = int(re.search(r"breakpoint at rip=0x([0-9a-f]+)", serial)[1], 16)
    assert machine.cpu.read_virtual(rip - 1, 1) == b"\xcc"
    assert machine.symbols.symbol_at(rip - 1) is not None
    last = machine.cpu.last_exception
    assert (last.vector, last.kind, last.rip) == (3, "software", rip)


def test_pf_is_reported_by_the_kernel_with_cr2(boot):
    machine, result = boot(cmdline="test=pf")
    serial = machine.serial_output()

    assert (result.reason, result.guest_value) == ("exit", EXIT_PANIC), serial
    assert faults(result) == {14: 1}
    assert "exception: #PF page fault (vector 14) error code 0x0" in serial
    assert "  cr2 0x0000000000001000  [P=0 W=0 U=0 RSVD=0 I=0]" in serial
    assert "panic: unhandled exception: #PF page fault" in serial
    printed_rip = int(re.search(r"^  rip 0x([0-9a-f]{16})", serial, re.MULTILINE)[1], 16)
    last = machine.cpu.last_exception
    assert (last.rip, last.cr2, last.error_code) == (printed_rip, 0x1000, 0)


def test_triple_fault_ends_the_run_with_a_full_report(boot):
    machine, result = boot(cmdline="test=triple")

    assert result.reason == "triple-fault"
    assert result.exit_status == EXIT_GUEST_CRASH == 70
    assert result.guest_value is None
    assert result.message.startswith("triple fault at RIP 0x")
    assert 14 in result.exceptions and 8 in result.exceptions
    report = result.report
    assert report.startswith(f"=== guest crash: {result.message}")
    rip = int(re.search(r"triple fault at RIP (0x[0-9a-f]+)", result.message)[1], 16)

    registers = section(report, "registers")
    assert any(f"rip={rip:016x}" in line for line in registers)
    assert any(re.search(r"rsp=[0-9a-f]{16}", line) for line in registers)
    # the faulting instruction, disassembled: the read of the unmapped 0x1000
    (instruction,) = section(report, "instruction")
    assert re.match(rf"  {rip:#018x} <\w+\+0x[0-9a-f]+>: .* mov \w+, qword ptr \[0x1000\]",
                    instruction), instruction
    assert f"page walk of {rip:#018x}:" in report
    assert "page walk of 0x0000000000001000:" in report
    assert "-> no translation" in report.split("page walk of 0x0000000000001000:")[1]
    functions = frame_functions(report)
    assert functions[-1] == "kmain"
    assert functions[0] == machine.symbols.symbol_at(rip).name
    tail = section(report, "last serial output")
    assert tail[-1] == "  | test triple: empty IDT, then reading 0x1000"
    assert len(tail) == 10


@pytest.mark.parametrize("test, chain", [
    ("triple", "#PF(0x0) -> #GP(0x72) -> #DF(0x0) -> #GP(0x42)"),
    ("deep", "#UD -> #GP(0x32) -> #GP(0x6a) -> #DF(0x0) -> #GP(0x42)"),
])
def test_triple_fault_message_lists_every_fault_in_order(boot, test, chain):
    """With an IDT of limit 0 every delivery faults with #GP(vector * 8 + 2)."""
    _, result = boot(cmdline=f"test={test}")
    assert result.message.endswith(": " + chain), result.message


def test_crash_report_shows_the_cr2_of_the_page_fault(boot):
    _, result = boot(cmdline="test=triple")
    assert "cr2=0000000000001000" in result.report, section(result.report, "registers")


def test_deep_backtrace_names_the_call_chain_in_order(boot):
    machine, result = boot(cmdline="test=deep")

    assert (result.reason, result.exit_status) == ("triple-fault", EXIT_GUEST_CRASH)
    assert result.message.startswith("triple fault at RIP") and "#UD" in result.message
    (instruction,) = section(result.report, "instruction")
    assert "<deep_third+" in instruction and "ud2" in instruction
    functions = frame_functions(result.report)
    assert functions[:3] == ["deep_third", "deep_second", "deep_first"], result.report
    assert functions[-1] == "kmain"


def test_wild_physical_access_is_a_crash_naming_the_address(boot):
    machine, result = boot(cmdline="test=wild", memmap="pc")
    serial = machine.serial_output()

    # 0xa0000 is a hole in the map the kernel printed: nothing there
    assert not any(base <= 0xa0000 < end for base, end, _ in printed_map(serial))
    assert "test wild: reading physical 0xa0000" in serial
    assert (result.reason, result.exit_status) == ("crash", EXIT_GUEST_CRASH), serial
    assert result.guest_value is None
    assert "physical 0xa0000" in result.message
    assert "nothing behind it" in result.message
    assert result.report.startswith("=== guest crash: ")
    assert "panic" not in serial


def test_runaway_loop_stops_at_the_instruction_budget(boot):
    # 200,000 instructions of looping after a boot as long as a normal one
    _, plain = boot()
    budget = plain.instructions + 200_000
    machine, result = boot(cmdline="test=loop", max_instructions=budget)

    assert (result.reason, result.exit_status) == ("budget", EXIT_BUDGET), result.message
    assert EXIT_BUDGET == 71
    assert result.instructions == budget
    assert f"{budget}" in result.message
    assert "test loop: spinning forever" in machine.serial_output()
    # the report shows the loop itself: a jump to its own address
    (instruction,) = section(result.report, "instruction")
    address = re.match(r"  (0x[0-9a-f]+) ", instruction)[1]
    assert re.search(rf"\bjmp {int(address, 16):#x}\b", instruction), instruction


def test_halt_without_exit_is_reported_as_halt(boot):
    machine, result = boot(cmdline="test=halt")

    assert (result.reason, result.exit_status) == ("halt", EXIT_HALTED), result.message
    assert EXIT_HALTED == 72
    assert result.guest_value is None
    assert "test halt: cli; hlt forever" in machine.serial_output()
    rip = machine.cpu.registers()["rip"]
    assert machine.cpu.read_virtual(rip - 1, 1) == b"\xf4"
    assert not machine.cpu.registers()["rflags"] & RFLAGS_IF
    assert result.report.startswith("=== guest crash: guest halted")
    (instruction,) = section(result.report, "instruction")
    assert " f4 " in instruction and " hlt " in instruction   # the hlt, not what follows


def test_instruction_line_decodes_like_capstone(boot):
    """The report's instruction bytes are the guest's bytes at RIP."""
    machine, result = boot(cmdline="test=deep")
    (instruction,) = section(result.report, "instruction")
    address = int(re.match(r"  (0x[0-9a-f]+) ", instruction)[1], 16)
    code = machine.cpu.read_virtual(address, 16)
    insn = next(Cs(CS_ARCH_X86, CS_MODE_64).disasm(code, address))
    assert f"{insn.bytes.hex(' ')}" in instruction
    assert insn.mnemonic == "ud2"
