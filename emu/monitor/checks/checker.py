"""The invariant checker: runs the rules (rules/) on the guest's page tables and PMM while
the guest runs (`emu run --check pt`), and reports what breaks them.

Owns: when checks happen, scanning the address space once per check, finding the guest
PMM through its descriptor, reporting each (rule, address) once per run as an
InvariantViolation event, and turning rules off by name.
Does not own: the rules, translating one address (emu/arch/paging.py), ending the run
(the machine, for `--strict`), printing (the commands).

When: at every CR3 load (Cr3Written fires before the `mov` runs, so the new root is
checked), after every page fault is delivered, at every guest checkpoint
(guest/test/checkpoint.h) and, with `--check-every N`, every N instructions. The loader's
page tables (the CR3 the kernel starts with) are the loader's business and are not checked.

Cost: the work is per page-table page and per leaf entry, and the range rules look at
leaves merged into runs (a 64 GiB HHDM of 2 MiB pages is 32,768 leaves but a handful of
runs). No loop walks the 4 KiB pages of a large mapping, except STALE_TLB probing the pages
of a leaf that lost its mapping without an invlpg (at most its MAX_PROBES per check).
"""
from __future__ import annotations

import struct
from typing import Callable, Iterable

from emu.arch import paging
from emu.arch.paging import AddressSpace
from emu.errors import ConfigError, UnbackedAccess
from emu.events import (Checkpoint, Cr3Written, EventBus, ExceptionDelivered,
                        InvariantViolation, Observer, TlbFlush)
from emu.hw.memory import PhysicalMemory
from emu.monitor.checks.context import Check, Layout, Platform
from emu.monitor.checks.pmm import DESCRIPTOR_SYMBOL, PmmState, read_pmm
from emu.monitor.checks.rules import RULE_IDS, RULES, Rule
from emu.result import RunEnd
from emu.x86 import ENTRIES_PER_TABLE, PAGE_FAULT, PAGE_SIZE, PTE_ADDRESS_MASK

_TABLE = struct.Struct(f"<{ENTRIES_PER_TABLE}Q")


def table_reader(memory: PhysicalMemory) -> Callable[[int], tuple[int, ...]]:
    def read_table(paddr: int) -> tuple[int, ...]:
        view, offset = memory.locate(paddr, PAGE_SIZE)
        return _TABLE.unpack_from(view, offset)
    return read_table


def raw_table_reader(memory: PhysicalMemory) -> Callable[[int], bytes]:
    def read_raw(paddr: int) -> bytes:
        view, offset = memory.locate(paddr, PAGE_SIZE)
        return bytes(view[offset:offset + PAGE_SIZE])
    return read_raw


def platform_of(machine) -> Platform:
    """What the checker needs to know about a Machine (its public surface only)."""
    boot = machine.boot
    framebuffer = () if boot.framebuffer is None else \
        ((boot.framebuffer.address, boot.framebuffer.address + boot.framebuffer.size),)
    descriptor = machine.symbols.data(DESCRIPTOR_SYMBOL)
    return Platform(boot.memmap.regions, boot.hhdm_offset,
                    boot.kernel_virtual_base - boot.kernel_physical_base,
                    descriptor[0] if descriptor else None,
                    boot.cr3 & PTE_ADDRESS_MASK, framebuffer, machine.bus.mmio_owner)


def allowed_rules(names: Iterable[str]) -> frozenset[str]:
    """Rule ids to leave out (`--allow WRITE_EXEC,...`); ConfigError for an unknown one."""
    allowed = frozenset(name.strip().upper() for name in names if name.strip())
    unknown = sorted(allowed - set(RULE_IDS))
    if unknown:
        raise ConfigError(f"--allow {','.join(unknown)}: no such rule; the rules are "
                          f"{', '.join(RULE_IDS)}")
    return allowed


class InvariantChecker(Observer):
    """Checks RULES on the live (or given) address space and the guest PMM; see the module
    docstring for when. `cpu` is the CPU's read side (cr3, paging_enabled, nxe,
    tlb_translation). Violations are emitted on `events` as InvariantViolation and passed to
    `on_violation`; `counts` has them per rule, `checks` counts the checks made."""

    def __init__(self, memory: PhysicalMemory, cpu, events: EventBus, platform: Platform,
                 on_violation: Callable[[InvariantViolation], None] | None = None,
                 allow: Iterable[str] = ()) -> None:
        self.memory = memory
        self.cpu = cpu
        self.events = events
        self.platform = platform
        self.on_violation = on_violation
        self.violations: list[InvariantViolation] = []
        self.counts: dict[str, int] = {}
        self.checks = 0
        self.rules: tuple[Rule, ...] = tuple(rule() for rule in RULES
                                             if rule.id not in frozenset(allow))
        self._reported: set[tuple[str, int]] = set()
        self._read_table = table_reader(memory)
        self._read_raw = raw_table_reader(memory)
        self._scans = paging.ScanCache()        # repeated checks re-decode changed tables only
        self._runs: tuple[AddressSpace | None, list] = (None, [])
        self._last_space: AddressSpace | None = None
        self._layout = Layout(platform)

    def rule(self, rule_id: str) -> Rule | None:
        return next((rule for rule in self.rules if rule.id == rule_id), None)

    # ---- events ---------------------------------------------------------------------------

    def on_cr3_write(self, event: Cr3Written) -> None:
        space = self.check(event.new, reason="CR3 load", stale=False, loading=True)
        for rule in self.rules:
            if hasattr(rule, "address_space_loaded"):
                rule.address_space_loaded(space)

    def on_tlb_flush(self, event: TlbFlush) -> None:
        live = self._live_root()
        for rule in self.rules:
            if hasattr(rule, "page_flushed"):
                rule.page_flushed(event.address, live, self._walk)

    def on_exception(self, event: ExceptionDelivered) -> None:
        if event.vector == PAGE_FAULT:
            self.check(reason=f"page fault at {event.cr2:#x}")

    def on_checkpoint(self, event: Checkpoint) -> None:
        self.check(reason=f"checkpoint {event.number}")

    # ---- checking -------------------------------------------------------------------------

    def check(self, root: int | None = None, reason: str = "check",
              stale: bool = True, loading: bool = False) -> AddressSpace | None:
        """Check the address space at `root` (default: the live CR3) and the PMM; with
        `stale`, STALE_TLB may probe too if `root` is live; `loading`: `root` is being
        loaded into CR3. Returns the scanned address
        space, or None if there is nothing to check (paging off, the loader's tables)."""
        if not self.cpu.paging_enabled():
            return None
        live = self._live_root()
        root = live if root is None else root & PTE_ADDRESS_MASK
        if root == self.platform.loader_root:
            return None
        self.checks += 1
        space = paging.scan(self._read_raw, root, self.cpu.nxe(), self._scans)
        if self._runs[0] is not space:
            self._runs = (space, paging.merge(space.leaves))
        context = Check(space, self.pmm_state(root), self._layout, self._reporter(root),
                        self._read_table, self._walk, self.cpu.tlb_translation,
                        live=root == live, stale=stale, _runs=self._runs[1],
                        loading=loading)
        unchanged = space is self._last_space
        for rule in self.rules:
            if not (unchanged and rule.space_only):
                rule.check(context)
        self._last_space = space
        return space

    def pmm_state(self, root: int) -> PmmState | None:
        """The guest PMM as the descriptor (reached through `root`) shows it, or None."""
        if self.platform.pmm_descriptor is None:
            return None
        where = self._walk(root, self.platform.pmm_descriptor).paddr
        if where is None:
            return None
        try:
            return read_pmm(self.memory, where)
        except UnbackedAccess:
            return None

    def _live_root(self) -> int:
        return self.cpu.cr3() & PTE_ADDRESS_MASK

    def _walk(self, root: int, vaddr: int) -> paging.Walk:
        """Our walk of vaddr; a table with no RAM behind it ends it without a translation."""
        try:
            return paging.walk(self.memory.read_u64, root, vaddr, nxe=self.cpu.nxe())
        except UnbackedAccess as exc:
            return paging.Walk(vaddr, (), None, 0, False, False, False,
                               f"a page table has no RAM behind it ({exc})", False)

    def _reporter(self, root: int):
        def report(rule: str, address: int, detail: str, walk_of: int | None = None,
                   walk: bool = True) -> None:
            if (rule, address) in self._reported:
                return
            self._reported.add((rule, address))
            vaddr = address if walk_of is None else walk_of
            if walk and paging.canonical(vaddr):
                detail += "\n" + self._walk(root, vaddr).describe()
            event = InvariantViolation(self.events.now(), rule, address, detail)
            self.violations.append(event)
            self.counts[rule] = self.counts.get(rule, 0) + 1
            self.events.emit(event)
            if self.on_violation is not None:
                self.on_violation(event)
        return report


def attach(machine, *, strict: bool = False, every: int | None = None,
           on_violation: Callable[[InvariantViolation], None] | None = None,
           allow: Iterable[str] = ()) -> InvariantChecker:
    """An InvariantChecker for `machine`, subscribed to its events. `strict` ends the run at
    the first violation (RunEnd.VIOLATION, exit status 73); `every` also checks every that
    many instructions; `allow` names rules to leave out."""
    def violated(event: InvariantViolation) -> None:
        if on_violation is not None:
            on_violation(event)
        if strict:
            machine.stop(RunEnd.VIOLATION,
                         f"invariant violation {event.rule} at {event.address:#x}",
                         "\n".join("  " + line for line in event.detail.splitlines()))

    checker = InvariantChecker(machine.memory, machine.cpu, machine.events,
                               platform_of(machine), violated, allowed_rules(allow))
    machine.events.subscribe(checker)
    if every is not None:
        machine.every(every, lambda: checker.check(reason="periodic", stale=False))
    return checker
