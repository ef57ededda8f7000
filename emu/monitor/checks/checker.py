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

The process rules (PROCESS_RULES: all live user address spaces together, read through the
kernel's `proc_descriptor`) are checked only where the kernel is between operations, never
half-way through a fork or an unmap: at each process start, exec and exit (the events of
emu/monitor/processes.py, from the kernel's tracepoints), at every guest checkpoint, at the
entry from ring 3 of every system call that changes an address space (mmap, munmap,
mprotect, mremap, brk, madvise, fork, vfork, clone, execve, exit, exit_group), and with
`--check-every N` when the period ends in ring 3 (the kernel is not preemptible, so ring 3
means no kernel operation is under way).

Cost: the work is per page-table page and per leaf entry, and the range rules look at
leaves merged into runs (a 64 GiB HHDM of 2 MiB pages is 32,768 leaves but a handful of
runs). No loop walks the 4 KiB pages of a large mapping, except STALE_TLB probing the pages
of a leaf that lost its mapping without an invlpg (at most its MAX_PROBES per check).
"""
from __future__ import annotations

import struct
from typing import Callable, Iterable

from unicorn import x86_const as X

from emu.arch import paging
from emu.arch.paging import AddressSpace
from emu.errors import ConfigError, GuestMemoryError, UnbackedAccess
from emu.events import (SYSCALL_VECTOR, Checkpoint, Cr3Written, EventBus, ExceptionDelivered,
                        InvariantViolation, Observer, ProcessExec, ProcessExit, ProcessStart,
                        TlbFlush)
from emu.hw.memory import PhysicalMemory
from emu.monitor import proctable
from emu.monitor.checks.context import Check, Layout, Platform
from emu.monitor.checks.pmm import DESCRIPTOR_SYMBOL, PmmState, read_pmm
from emu.monitor.checks.rules import PROCESS_RULES, RULE_IDS, RULES, ProcessRule, Rule
from emu.monitor.checks.userspace import UserSpace, UserView, kernel_frames, user_half_reader
from emu.monitor.syscalls import SYSCALL_NUMBERS
from emu.result import RunEnd
from emu.x86 import ENTRIES_PER_TABLE, PAGE_FAULT, PAGE_SIZE, PTE_ADDRESS_MASK

_TABLE = struct.Struct(f"<{ENTRIES_PER_TABLE}Q")
# System calls whose entry from ring 3 is a moment for the process rules.
ADDRESS_SPACE_CALLS = frozenset(SYSCALL_NUMBERS[name] for name in (
    "mmap", "munmap", "mprotect", "mremap", "brk", "madvise", "fork", "vfork", "clone",
    "execve", "exit", "exit_group"))


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
    processes = machine.symbols.data(proctable.DESCRIPTOR_SYMBOL)
    return Platform(boot.memmap.regions, boot.hhdm_offset,
                    boot.kernel_virtual_base - boot.kernel_physical_base,
                    descriptor[0] if descriptor else None,
                    boot.cr3 & PTE_ADDRESS_MASK, framebuffer, machine.bus.mmio_owner,
                    processes[0] if processes else None)


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
        self.process_rules: tuple[ProcessRule, ...] = tuple(
            rule() for rule in PROCESS_RULES if rule.id not in frozenset(allow))
        self.process_checks = 0
        self._user_scans = paging.ScanCache()
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
        elif event.vector == SYSCALL_VECTOR and event.cpl == 3 and \
                self.cpu.reg(X.UC_X86_REG_RAX) in ADDRESS_SPACE_CALLS:
            self.check_processes()

    def on_checkpoint(self, event: Checkpoint) -> None:
        self.check(reason=f"checkpoint {event.number}")
        self.check_processes()

    def on_process_start(self, event: ProcessStart) -> None:
        self.check_processes()

    def on_process_exec(self, event: ProcessExec) -> None:
        self.check_processes()

    def on_process_exit(self, event: ProcessExit) -> None:
        self.check_processes(exited=event.pid)

    def periodic(self) -> None:
        """`--check-every`: the live address space, and the processes when in ring 3."""
        self.check(reason="periodic", stale=False)
        if self.cpu.cpl() == 3:
            self.check_processes()

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

    def check_processes(self, exited: int | None = None) -> None:
        """Check PROCESS_RULES on every live process (`exited`: the pid whose exit this is).
        Nothing to do for a kernel without a process descriptor, or before it is filled."""
        if not self.process_rules or self.platform.proc_descriptor is None or \
                not self.cpu.paging_enabled():
            return
        try:
            view = self._user_view(exited)
        except (GuestMemoryError, ValueError):
            return                      # a table or tree the kernel has not finished: later
        if view is None:
            return
        self.process_checks += 1
        for rule in self.process_rules:
            rule.check_processes(view)

    def _user_view(self, exited: int | None) -> UserView | None:
        read = self.cpu.read_virtual
        descriptor = proctable.read_descriptor(read, self.platform.proc_descriptor)
        if descriptor is None:
            return None
        entries = proctable.read_entries(read, descriptor)
        nxe = self.cpu.nxe()
        spaces: list[UserSpace] = []
        seen: set[int] = set()
        for entry in entries:
            if not entry.alive or entry.address_space in seen:
                continue
            seen.add(entry.address_space)
            info = proctable.read_address_space(read, entry.address_space)
            root = self.cpu.translate(info.root)
            if root is None:
                continue
            scan = paging.scan(user_half_reader(self._read_raw, root), root, nxe,
                               self._user_scans)
            spaces.append(UserSpace(entry, root, scan, proctable.read_regions(read,
                                                                              info.regions)))
        live = self._live_root()
        full = paging.scan(self._read_raw, live, nxe, self._scans)
        kernel = kernel_frames(full, self.platform.hhdm_offset, self.platform.kernel_offset,
                               [space.scan for space in spaces])
        return UserView(descriptor, entries, spaces, proctable.read_frame_refs(read, descriptor),
                        kernel, self.pmm_state(live), self._process_reporter(live), exited)

    def _process_reporter(self, live: int):
        def report(rule: str, address: int, detail: str, root: int | None = None) -> None:
            self._reporter(live if root is None else root)(rule, address, detail,
                                                           walk=root is not None)
        return report

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
        machine.every(every, checker.periodic)
    return checker
