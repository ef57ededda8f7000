"""Injections at an instruction count: `ram` (bit flips), `irq` (an external interrupt) and
`spurious-pf` (a page fault on a present page).

Owns: choosing what to flip (seeded), finding the memory access of the next instruction
that makes one, and the Injection event of each.
Does not own: running code at a count (Cpu.call_at), delivery (the CPU).
"""
from __future__ import annotations

import random

from capstone import CS_AC_WRITE, CS_ARCH_X86, CS_MODE_64, Cs
from capstone import x86_const as C
from unicorn import x86_const as X

from emu.arch import paging
from emu.errors import ConfigError, GuestMemoryError
from emu.events import Injection
from emu.hw.memmap import MemoryType
from emu.inject.spec import InjectionSpec
from emu.monitor.checks.checker import raw_table_reader
from emu.monitor.heapcheck import heap_bounds
from emu.x86 import PAGE_SIZE, PF_PRESENT, PF_USER, PF_WRITE

MAX_INSTRUCTION = 15
# Instructions whose memory access is the stack: (written, offset from RSP).
_STACK = {"push": (True, -8), "call": (True, -8), "pop": (False, 0), "ret": (False, 0)}
_REGISTERS = {C.X86_REG_RIP: X.UC_X86_REG_RIP}


def _emit(machine, kind: str, target: str, detail: str) -> None:
    if machine.events.wants(Injection):
        machine.events.emit(Injection(machine.cpu.icount(), kind, target, detail))


class RamFlip:
    """ram: flip bits of physical memory when `at` instructions have retired."""

    def __init__(self, machine, spec: InjectionSpec) -> None:
        self.machine, self.spec = machine, spec
        self.random = random.Random(spec.knobs.seed)
        self.flips = spec.number("flips", 1)
        if "symbol" in spec.params and machine.symbols.address_of(spec.params["symbol"]) is \
                None and machine.symbols.data(spec.params["symbol"]) is None:
            raise ConfigError(f"--inject {spec.text}: the kernel has no symbol "
                              f"{spec.params['symbol']}")
        if "type" in spec.params and not self._frames_of_type():
            raise ConfigError(f"--inject {spec.text}: the memory map has no "
                              f"{spec.params['type'].upper()} memory")
        self.heap_bounds = heap_bounds(machine) if "region" in spec.params else None
        if "region" in spec.params and self.heap_bounds is None:
            raise ConfigError(f"--inject {spec.text}: the kernel has no heap_descriptor, so "
                              f"its heap cannot be found")
        machine.cpu.call_at(spec.params["at"], self._flip)

    def describe(self) -> str:
        return f"ram flips at instruction {self.spec.params['at']}"

    def _frames_of_type(self) -> list[tuple[int, int]]:
        kind = MemoryType[self.spec.params["type"].upper()]
        return [(r.base, r.end) for r in self.machine.boot.memmap.regions
                if r.type == kind and r.length >= PAGE_SIZE]

    def _target(self) -> tuple[int, int]:
        """(physical address of the first byte, bytes the flips may touch)."""
        params, machine = self.spec.params, self.machine
        if "paddr" in params:
            return params["paddr"], 8 if self.flips > 1 else 1
        if "symbol" in params:
            name = params["symbol"]
            data = machine.symbols.data(name)
            virtual, size = data if data else (machine.symbols.address_of(name), 8)
            physical = machine.cpu.translate(virtual)
            if physical is None:
                raise ConfigError(f"--inject {self.spec.text}: {name} is not mapped at "
                                  f"instruction {params['at']}")
            return physical, max(1, min(size, 8)) if self.flips > 1 else 1
        if "region" in params:
            return self._heap_page()
        base, end = self.random.choice(self._frames_of_type())
        frame = base + PAGE_SIZE * self.random.randrange((end - base) // PAGE_SIZE)
        return frame, PAGE_SIZE

    def _heap_page(self) -> tuple[int, int]:
        """A random page of those the heap has mapped now, each page equally likely."""
        machine = self.machine
        ranges = self.heap_bounds()
        space = paging.scan(raw_table_reader(machine.memory), machine.cpu.cr3(),
                            machine.cpu.nxe())
        runs = [(max(leaf.start, base), min(leaf.end, end), leaf)
                for leaf in space.leaves for base, end in ranges
                if leaf.start < end and base < leaf.end]
        pages = sum((stop - start) // PAGE_SIZE for start, stop, _ in runs)
        if pages == 0:
            raise ConfigError(f"--inject {self.spec.text}: the heap has no page mapped at "
                              f"instruction {self.spec.params['at']}")
        pick = self.random.randrange(pages)
        for start, stop, leaf in runs:
            count = (stop - start) // PAGE_SIZE
            if pick < count:
                return leaf.paddr + (start - leaf.start) + pick * PAGE_SIZE, PAGE_SIZE
            pick -= count
        raise AssertionError("unreachable: pick < pages")

    def _flip(self) -> None:
        first, span = self._target()
        chosen: set[tuple[int, int]] = set()
        while len(chosen) < min(self.flips, 8 * span):
            bit = self.spec.params.get("bit", self.random.randrange(8))
            chosen.add((first + self.random.randrange(span), bit))
            if "bit" in self.spec.params and span == 1:
                break
        memory = self.machine.memory
        for address, bit in sorted(chosen):
            try:
                old = memory.read(address, 1)[0]
            except GuestMemoryError:
                raise ConfigError(f"--inject {self.spec.text}: physical {address:#x} is not "
                                  f"RAM") from None
            memory.write(address, bytes([old ^ 1 << bit]))
            _emit(self.machine, "ram", f"{address:#x}",
                  f"bit {bit}: {old:#04x} -> {old ^ 1 << bit:#04x}")
        self.machine.cpu.forget_code()          # a flip in code must change what runs


class Irq:
    """irq: an external interrupt when `at` instructions have retired."""

    def __init__(self, machine, spec: InjectionSpec) -> None:
        self.machine, self.spec = machine, spec
        at, vector = spec.params["at"], spec.params["vector"]
        machine.cpu.call_at(at, lambda: _emit(machine, "irq", str(vector),
                                              f"at instruction {at}"))
        machine.cpu.schedule_interrupt(at, vector)

    def describe(self) -> str:
        return f"irq {self.spec.params['vector']} at instruction {self.spec.params['at']}"


class SpuriousPageFault:
    """spurious-pf: from `at` on, the next instruction that accesses memory gets a #PF for
    that address, present or not."""

    def __init__(self, machine, spec: InjectionSpec) -> None:
        self.machine, self.spec = machine, spec
        self.disassembler = Cs(CS_ARCH_X86, CS_MODE_64)
        self.disassembler.detail = True
        machine.cpu.call_at(spec.params["at"], self._try)

    def describe(self) -> str:
        return f"spurious page fault from instruction {self.spec.params['at']}"

    def _try(self) -> None:
        cpu = self.machine.cpu
        access = self._access(cpu.reg(X.UC_X86_REG_RIP))
        if access is None:          # no memory access here: the next instruction, then
            cpu.call_at(cpu.icount() + 1, self._try)
            return
        address, write = access
        error = PF_PRESENT | (PF_WRITE if write else 0) | (PF_USER if cpu.cpl() == 3 else 0)
        _emit(self.machine, "spurious-pf", f"{address:#x}",
              f"{'write' if write else 'read'} at rip {cpu.reg(X.UC_X86_REG_RIP):#x}")
        cpu.raise_page_fault(address, error)

    def _access(self, rip: int) -> tuple[int, bool] | None:
        """(address, written) of the instruction's memory access, or None."""
        cpu = self.machine.cpu
        try:
            code = cpu.read_virtual(rip, MAX_INSTRUCTION)
        except GuestMemoryError:
            return None
        for insn in self.disassembler.disasm(code, rip, 1):
            if insn.mnemonic in _STACK:
                written, offset = _STACK[insn.mnemonic]
                return (cpu.reg(X.UC_X86_REG_RSP) + offset) % (1 << 64), written
            for operand in insn.operands:
                if operand.type == C.X86_OP_MEM and insn.mnemonic != "lea":
                    return self._effective(insn, operand.mem), \
                        bool(operand.access & CS_AC_WRITE)
        return None

    def _effective(self, insn, mem) -> int:
        cpu = self.machine.cpu

        def value(register: int) -> int:
            if register == C.X86_REG_INVALID:
                return 0
            if register == C.X86_REG_RIP:
                return insn.address + insn.size
            return cpu.reg(getattr(X, "UC_X86_REG_" + insn.reg_name(register).upper()))
        address = value(mem.base) + value(mem.index) * mem.scale + mem.disp
        if mem.segment in (C.X86_REG_FS, C.X86_REG_GS):
            address += cpu.reg(X.UC_X86_REG_FS_BASE if mem.segment == C.X86_REG_FS
                               else X.UC_X86_REG_GS_BASE)
        return address % (1 << 64)
