"""Crash reports: what a developer needs to see when the guest goes wrong.

Owns: rendering registers, the faulting instruction (capstone), the page walks of CR2 and
RIP, a backtrace through the frame-pointer chain symbolized from the ELF, and the last
serial lines. Reads the machine's state; changes nothing.
"""
from __future__ import annotations

from capstone import CS_ARCH_X86, CS_MODE_64, Cs

from emu.cpu import Cpu
from emu.errors import GuestMemoryError, UnbackedAccess
from emu.monitor.symbols import Symbols
from emu.x86 import exception_name

MAX_FRAMES = 32                # lines of a backtrace
MAX_WALK = 20_000              # frames followed (a deep recursion collapses to one line)


def _disassemble(cpu: Cpu, rip: int, symbols: Symbols | None,
                 source_lines: bool = True) -> list[str]:
    try:
        code = cpu.read_virtual(rip, 16)
    except GuestMemoryError as exc:
        return [f"  (cannot read the instruction at {rip:#x}: {exc})"]
    where = symbols.lookup(rip) if symbols else hex(rip)
    for insn in Cs(CS_ARCH_X86, CS_MODE_64).disasm(code, rip):
        line = f"  {insn.address:#018x} <{where}>: {insn.bytes.hex(' '):<24} {insn.mnemonic} {insn.op_str}"
        source = symbols.line_of(rip) if symbols and source_lines else None
        return [line + (f"    ({source})" if source else "")]
    return [f"  {rip:#018x}: {code[:8].hex(' ')} (not a valid instruction)"]


def backtrace(cpu: Cpu, rip: int, rbp: int, symbols: Symbols | None) -> list[str]:
    """Frames from RIP, then return addresses along the RBP chain (frame pointers are kept
    in the guest build). A run of frames with the same return address (recursion) is one
    line, so a deep recursion still shows what called it."""
    def name(address: int) -> str:
        return symbols.lookup(address) if symbols else hex(address)

    returns: list[int] = []
    seen = set()
    while len(returns) < MAX_WALK and rbp != 0 and rbp not in seen and not rbp & 7:
        seen.add(rbp)
        try:
            saved_rbp, ret = (int.from_bytes(cpu.read_virtual(rbp + 8 * i, 8), "little")
                              for i in (0, 1))
        except GuestMemoryError:
            break
        if ret == 0:
            break
        returns.append(ret)
        rbp = saved_rbp
    lines = [f"  #0  {rip:#018x} {name(rip)}"]
    depth = 1
    while depth <= len(returns) and len(lines) < MAX_FRAMES:
        ret, last = returns[depth - 1], depth
        while last < len(returns) and returns[last] == ret:
            last += 1
        if last > depth:
            lines.append(f"  #{depth}-#{last} {ret:#018x} {name(ret)} "
                         f"({last - depth + 1} frames: recursion)")
        else:
            lines.append(f"  #{depth:<2} {ret:#018x} {name(ret)}")
        depth = last + 1
    return lines


def render(cpu: Cpu, title: str, symbols: Symbols | None = None,
           serial_tail: list[str] = (), rip: int | None = None, heading: str = "guest crash",
           details: str = "", source_lines: bool = True) -> str:
    """The full report, titled `=== heading: title` with `details` (lines) under the
    title. `rip` overrides the live RIP (the faulting instruction). `source_lines` False
    leaves out `file.c:123` (the DWARF line table's first parse takes about 0.4 s)."""
    regs = cpu.registers()
    rip = regs["rip"] if rip is None else rip
    out = [f"=== {heading}: {title}", *([details] if details else []), "", "registers:"]
    names = ["rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10", "r11",
             "r12", "r13", "r14", "r15"]
    for i in range(0, len(names), 4):
        out.append("  " + "  ".join(f"{n:>3}={regs[n]:016x}" for n in names[i:i + 4]))
    out.append(f"  rip={rip:016x}  rflags={regs['rflags']:08x}  cpl={cpu.cpl()}  "
               f"cs={regs['cs']:04x} ss={regs['ss']:04x}")
    out.append(f"  cr0={regs['cr0']:08x}  cr2={regs['cr2']:016x}  cr3={regs['cr3']:016x}  "
               f"cr4={regs['cr4']:08x}")
    last = cpu.last_exception
    if last is not None:
        error = "" if last.error_code is None else f" error code {last.error_code:#x}"
        out.append(f"  last exception: {exception_name(last.vector)}{error} at "
                   f"{last.rip:#x} (instruction {last.icount})")
    out += ["", "instruction:"] + _disassemble(cpu, rip, symbols, source_lines)
    if cpu.paging_enabled():
        out += ["", *cpu.walk(rip).describe().splitlines()]
        # The address of the last page fault as delivered, not the live CR2: Unicorn
        # overwrites CR2 when emu_start returns, and a run without a #PF has no address.
        if last is not None and last.cr2 is not None:
            out += ["", *cpu.walk(last.cr2).describe().splitlines()]
    out += ["", "backtrace:"] + backtrace(cpu, rip, regs["rbp"], symbols)
    if serial_tail:
        out += ["", "last serial output:"] + [f"  | {line}" for line in serial_tail]
    return "\n".join(out)
