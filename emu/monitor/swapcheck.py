"""The swap checker: proves from outside the guest that every page that went to swap came
back identical, from the disk requests it sees and the page tables it reads.

Owns: the hash of every page-sized slot the disk was asked to write (taken from guest RAM
when the write completes), the page-table entries each SwapOut made name a slot, the
SwapIn entries still to be checked, the SwapOut / SwapIn events (from the kernel's
`swap_note_out` / `swap_note_in`, hooked at their entry), the rules below, and the swap
summary (read from the kernel's `swap_descriptor`, guest/mm/swap.h).
Does not own: the disk (emu/hw/devices/virtio_blk.py), the page-table rules
(emu/monitor/checks/), printing (the commands).

Rules (each an InvariantViolation event):
  SWAP_CONTENT        a page swapped in differs from what was written to its slot: checked
                      when the kernel notes the swap-in (before any user instruction can
                      change the page), or, if the entry is not present yet then, at the
                      next swap event, CR3 load, checkpoint or the end of the run
  DIRTY_DROPPED       a page left memory holding data its slot never received: its frame
                      differs from the slot's last write (a dirty page dropped unwritten)
  SLOT_REUSED         a slot is written while a page-table entry still names it
  SWAP_ENTRY_INVALID  a swap entry names a slot outside the area, or one never written
The slot a swapped-in entry named is the one the monitor saw at its SwapOut, not the one
the kernel says it read.
"""
from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import Callable

from unicorn import x86_const as X

from emu.events import (BlockRequest, Checkpoint, Cr3Written, InvariantViolation, Observer,
                        SwapIn, SwapOut)
from emu.monitor.symbols import read_object
from emu.x86 import PAGE_SIZE, PTE_ADDRESS_MASK

SECTOR = 512
SECTORS_PER_SLOT = PAGE_SIZE // SECTOR
DESCRIPTOR_SYMBOL = "swap_descriptor"
DESCRIPTOR_MAGIC = 0x50415753                      # "SWAP"
_DESCRIPTOR = struct.Struct("<IIQIIQQII13Q")       # guest/mm/swap.h, version 2, 152 bytes
_ARGUMENT_REGISTERS = (X.UC_X86_REG_RDI, X.UC_X86_REG_RSI, X.UC_X86_REG_RDX, X.UC_X86_REG_RCX,
                       X.UC_X86_REG_R8, X.UC_X86_REG_R9)   # the System V calling convention
SWAP_RULES = ("SWAP_CONTENT", "DIRTY_DROPPED", "SLOT_REUSED", "SWAP_ENTRY_INVALID")


@dataclass(frozen=True, slots=True)
class SwapLayout:
    """How swap entries are encoded (from the descriptor)."""
    pte_mark: int
    slot_shift: int
    slot_bits: int
    slots: int

    def is_entry(self, entry: int) -> bool:
        return entry & 1 == 0 and entry & self.pte_mark != 0

    def slot_of(self, entry: int) -> int:
        return (entry >> self.slot_shift) & ((1 << self.slot_bits) - 1)


@dataclass(frozen=True, slots=True)
class SwapStats:
    """The kernel's swap counters at the end of a run."""
    slots: int
    policy: str
    user_limit: int
    pages_out: int
    pages_in: int
    clean_drops: int
    cache_hits: int
    scans: int
    oom_kills: int
    bytes_written: int
    bytes_read: int
    io_errors: int
    readahead: int              # pages read with a faulting one (counted in pages_in)
    write_requests: int
    read_requests: int

    def summary(self) -> str:
        return (f"swap ({self.policy}): {self.pages_out} pages out, {self.pages_in} in "
                f"({self.readahead} read ahead), {self.write_requests} writes, "
                f"{self.read_requests} reads, "
                f"{self.clean_drops} dropped clean, {self.cache_hits} swap-cache hits, "
                f"{self.bytes_written} bytes written, {self.bytes_read} read, "
                f"{self.scans} reclaim scans, {self.oom_kills} OOM kills")


POLICIES = ("clock", "fifo", "random")


def read_descriptor(machine) -> tuple[SwapLayout, SwapStats] | None:
    """The kernel's swap descriptor, or None before swap_init filled it (or without one)."""
    raw = read_object(machine, DESCRIPTOR_SYMBOL, _DESCRIPTOR.size)
    if raw is None:
        return None
    (magic, _version, mark, shift, bits, slots, _counts, policy, limit, *stats) = \
        _DESCRIPTOR.unpack(raw)
    if magic != DESCRIPTOR_MAGIC:
        return None
    out, in_, clean, hits, scans, ooms, written, read, errors, _sectors, *requests = stats
    return (SwapLayout(mark, shift, bits, slots),
            SwapStats(slots, POLICIES[policy] if policy < len(POLICIES) else str(policy),
                      limit, out, in_, clean, hits, scans, ooms, written, read, errors,
                      *requests))


_TABLE = struct.Struct("<512Q")
_USER_SLOTS = 256                  # the lower half of the PML4: user space
_PS = 1 << 7                       # a large page at PDPT or PD level: no table below


def swapped_pages(machine, cr3: int) -> list[tuple[int, int]]:
    """(virtual page, slot) of every swap entry in the user half of the tables at `cr3`,
    in address order; empty without a swap descriptor."""
    found = read_descriptor(machine)
    if found is None:
        return []
    layout, memory = found[0], machine.memory
    out: list[tuple[int, int]] = []

    def table(entry: int) -> tuple[int, ...]:
        return _TABLE.unpack(memory.read(entry & PTE_ADDRESS_MASK, PAGE_SIZE))

    def walk(entries, level: int, base: int, limit: int) -> None:
        span = PAGE_SIZE << (9 * level)
        for index, entry in enumerate(entries[:limit]):
            address = base + index * span
            if level == 0:
                if layout.is_entry(entry):
                    out.append((address, layout.slot_of(entry)))
            elif entry & 1 and not (level < 3 and entry & _PS):
                walk(table(entry), level - 1, address, 512)
    walk(table(cr3), 3, 0, _USER_SLOTS)
    return out


def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


class SwapChecker(Observer):
    """The rules of the module docstring on one machine. `findings` lists them; `outs` and
    `ins` count the swap events; `on_finding` is called with each."""

    def __init__(self, machine,
                 on_finding: Callable[[InvariantViolation], None] | None = None) -> None:
        self.machine = machine
        self.memory = machine.memory
        self.on_finding = on_finding
        self.findings: list[InvariantViolation] = []
        self.outs = self.ins = 0
        self.slot_hash: dict[int, bytes] = {}
        self.naming: dict[int, set[tuple[int, int]]] = {}   # slot -> {(pte paddr, entry)}
        self.went_out: dict[tuple[int, int], int] = {}      # (root, vaddr) -> slot
        self.pending: list[tuple[int, int, int, int]] = []  # (pte, vaddr, slot, root)
        self.layout: SwapLayout | None = None
        for name, hook in (("swap_note_out", self._out), ("swap_note_in", self._in)):
            address = machine.symbols.address_of(name)
            if address is not None:
                machine.hooks.on_execute(address, hook)

    # ---- events ----------------------------------------------------------------------

    def on_block_request(self, event: BlockRequest) -> None:
        if event.kind != "out" or event.status != "ok" or event.sector % SECTORS_PER_SLOT:
            return
        data = b"".join(self.memory.read(address, length) for address, length in event.segments)
        first = event.sector // SECTORS_PER_SLOT
        for k in range(len(data) // PAGE_SIZE):
            slot = first + k
            for pte, entry in self.naming.pop(slot, ()):
                if self.memory.read_u64(pte) == entry:
                    self._report("SLOT_REUSED", slot,
                                 f"slot {slot} written while the entry at {pte:#x} still "
                                 f"names it ({entry:#x})")
            self.slot_hash[slot] = _digest(data[k * PAGE_SIZE:(k + 1) * PAGE_SIZE])

    def on_cr3_write(self, event: Cr3Written) -> None:
        self.settle()

    def on_checkpoint(self, event: Checkpoint) -> None:
        self.settle()

    # ---- the kernel's notes ----------------------------------------------------------

    def _args(self, n: int) -> list[int]:
        read = self.machine.cpu.state.fast_reg   # a note per page swapped: the hot path
        return [read(r) for r in _ARGUMENT_REGISTERS[:n]]

    def _layout(self) -> SwapLayout | None:
        if self.layout is None:
            found = read_descriptor(self.machine)
            self.layout = found[0] if found else None
        return self.layout

    def _out(self, uc, address: int, size: int, _data) -> None:
        root, vaddr, frame, slot, pte, written = self._args(6)
        self.settle()
        self.outs += 1
        layout = self._layout()
        entry = self.memory.read_u64(pte)
        named = layout.slot_of(entry) if layout else slot
        if layout is None or not layout.is_entry(entry) or not 0 < named < layout.slots \
                or named not in self.slot_hash:
            self._report("SWAP_ENTRY_INVALID", vaddr,
                         f"the entry at {pte:#x} for {vaddr:#x} is {entry:#x}: "
                         f"{self._why_invalid(layout, entry, named)}")
        elif _digest(self.memory.read(frame, PAGE_SIZE)) != self.slot_hash[named]:
            self._report("DIRTY_DROPPED", vaddr,
                         f"the page at {vaddr:#x} (frame {frame:#x}) left memory for slot "
                         f"{named}, which holds other data ({'written' if written else 'not written'} "
                         f"this time)")
        self.naming.setdefault(named, set()).add((pte, entry))
        self.went_out[(root, vaddr)] = named
        self._emit(SwapOut(self.machine.events.now(), root, vaddr, frame, named, bool(written)))

    def _why_invalid(self, layout: SwapLayout | None, entry: int, slot: int) -> str:
        if layout is None:
            return "the kernel exported no swap descriptor"
        if not layout.is_entry(entry):
            return "not a swap entry"
        if not 0 < slot < layout.slots:
            return f"slot {slot} is outside the area (1..{layout.slots - 1})"
        return f"slot {slot} was never written"

    def _in(self, uc, address: int, size: int, _data) -> None:
        root, vaddr, frame, slot, pte = self._args(5)
        self.settle()
        self.ins += 1
        named = self.went_out.pop((root, vaddr), slot)
        # The entry no longer names the slot: if this page goes out again to the same slot
        # (freed when the page was dirtied, then handed out again), its PTE will hold the
        # same value and must not read as a stale entry still naming it.
        naming = self.naming.get(named)
        if naming:
            naming.difference_update({pair for pair in naming if pair[0] == pte})
        self.pending.append((pte, vaddr, named, root))
        self.settle()   # no user instruction ran since the kernel mapped it
        self._emit(SwapIn(self.machine.events.now(), root, vaddr, frame, named))

    # ---- checking --------------------------------------------------------------------

    def settle(self) -> None:
        """Check the swapped-in entries that are present now against their slots."""
        waiting = []
        for pte, vaddr, slot, root in self.pending:
            entry = self.memory.read_u64(pte)
            if not entry & 1:
                waiting.append((pte, vaddr, slot, root))
                continue
            frame = entry & PTE_ADDRESS_MASK
            want = self.slot_hash.get(slot)
            if want is not None and _digest(self.memory.read(frame, PAGE_SIZE)) != want:
                self._report("SWAP_CONTENT", vaddr,
                             f"the page at {vaddr:#x} came back from slot {slot} into frame "
                             f"{frame:#x} with other data than the slot was given")
        self.pending = waiting

    def finish(self) -> None:
        self.settle()

    def _emit(self, event) -> None:
        if self.machine.events.wants(type(event)):
            self.machine.events.emit(event)

    def _report(self, rule: str, address: int, detail: str) -> None:
        event = InvariantViolation(self.machine.events.now(), rule, address, detail)
        self.findings.append(event)
        self.machine.events.emit(event)
        if self.on_finding is not None:
            self.on_finding(event)


def attach(machine, on_finding=None) -> SwapChecker | None:
    """A SwapChecker on `machine` if it has a swap disk, subscribed to its events."""
    if machine.swap is None:
        return None
    checker = SwapChecker(machine, on_finding)
    machine.events.subscribe(checker)
    return checker


def slots_in_use(machine) -> int | None:
    """Swap slots holding a page now (a nonzero count in the kernel's slot counts, uint16
    each, guest/mm/swap.h), or None without a swap area."""
    raw = read_object(machine, DESCRIPTOR_SYMBOL, _DESCRIPTOR.size)
    if raw is None:
        return None
    magic, _version, _mark, _shift, _bits, slots, counts, *_ = _DESCRIPTOR.unpack(raw)
    if magic != DESCRIPTOR_MAGIC or not counts or not 0 < slots <= 1 << 32:
        return None
    values = memoryview(machine.cpu.read_virtual(counts, 2 * slots)).cast("H").tolist()
    return len(values) - values.count(0)
