"""Moving a machine forwards and backwards in instruction time, stopping at breakpoints and
watchpoints, with snapshots and deterministic re-execution.

Owns: the breakpoints (virtual addresses of instructions) and watchpoints (the physical bytes
a virtual range maps to, translated again at every CR3 load and `invlpg`, so a write through
another mapping of the same frame triggers it too); `step`, `cont`, `reverse_step` and
`reverse_cont`; the snapshots taken on the way.
Does not own: the protocol (stub.py) or the machine.

How it moves. A run is deterministic, so a stretch of it can be run once to *find* where
something happens and again to *stop* there. Going forwards, the machine runs CHUNK
instructions at a time from a snapshot with hooks that only note hits (instruction count of
each); at the first hit it goes back to the snapshot and runs exactly to it. Going
backwards, each stretch between snapshots (newest first) is rerun to find the last hit
before the current instruction. A breakpoint stops before its instruction runs; a
watchpoint going forwards stops after the accessing instruction (as hardware does), going
backwards at the accessing instruction itself, so `reverse-continue` lands on the writer.
Accesses made by the monitor itself (an exception frame pushed during delivery) are not
guest instructions and do not trigger watchpoints.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Callable

from unicorn import UC_HOOK_MEM_READ, UC_HOOK_MEM_WRITE, UC_MEM_WRITE
from unicorn import x86_const as X

from emu.events import Cr3Written, Observer, TlbFlush

CHUNK = 200_000                 # instructions run per forward stretch (one snapshot each)
MAX_SNAPSHOTS = 48              # beyond this, every other older snapshot is dropped


class WatchKind(enum.Enum):
    WRITE = "watch"             # the stop-reply names GDB gives them
    READ = "rwatch"
    ACCESS = "awatch"


class StopKind(enum.Enum):
    STEP = "step"               # a step or a reverse step ended normally
    BREAKPOINT = "breakpoint"
    WATCHPOINT = "watchpoint"
    BEGIN = "begin"             # going backwards reached the start of the recording
    INTERRUPTED = "interrupted"  # Ctrl-C
    ENDED = "ended"             # the run ended (exit, crash, halt, budget)


@dataclass(frozen=True, slots=True)
class Stop:
    kind: StopKind
    address: int = 0            # the breakpoint's or the watched address (virtual)
    watch: WatchKind | None = None


@dataclass(frozen=True, slots=True)
class _Hit:
    index: int                  # instructions retired before the hitting instruction
    stop: Stop

    def forward_at(self) -> int:
        """Where a forward run stops: before a breakpoint, after an access."""
        return self.index + (1 if self.stop.kind is StopKind.WATCHPOINT else 0)


class _Translations(Observer):
    """Tells TimeTravel that translations may have changed. Holds only a callback, so a
    snapshot (which captures observers) holds nothing of the debugger's."""

    def __init__(self, changed: Callable[[], None]) -> None:
        self.changed = changed

    def on_cr3_write(self, event: Cr3Written) -> None:
        self.changed()

    def on_tlb_flush(self, event: TlbFlush) -> None:
        self.changed()


class TimeTravel:
    def __init__(self, machine, chunk: int = CHUNK) -> None:
        self.machine = machine
        self.chunk = chunk
        self.breakpoints: set[int] = set()
        self.watchpoints: dict[tuple[int, int, WatchKind], None] = {}
        self._physical: dict[int, list[tuple[int, int, WatchKind]]] = {}   # paddr -> watches
        self._hits: list[_Hit] | None = None          # while scouting
        self._snapshots: list = [machine.snapshot()]
        machine.events.subscribe(_Translations(self._retranslate))

    def icount(self) -> int:
        return self.machine.cpu.icount()

    def ended(self) -> bool:
        return not self._live()

    def snapshot_counts(self) -> list[int]:
        return [snapshot.icount for snapshot in self._snapshots]

    def close(self) -> None:
        for snapshot in self._snapshots:
            snapshot.close()
        self._snapshots = []

    # ---- watchpoints on physical bytes --------------------------------------------------

    def watch(self, address: int, length: int, kind: WatchKind) -> None:
        self.watchpoints[(address, length, kind)] = None
        self._retranslate()

    def unwatch(self, address: int, length: int, kind: WatchKind) -> None:
        self.watchpoints.pop((address, length, kind), None)
        self._retranslate()

    def _retranslate(self) -> None:
        """The physical bytes of every watchpoint through the current CR3 (unmapped bytes
        are watched again once a CR3 load or `invlpg` maps them)."""
        state = self.machine.cpu.state
        physical: dict[int, list[tuple[int, int, WatchKind]]] = {}
        for watch in self.watchpoints:
            address, length, _ = watch
            for offset in range(length):
                paddr = state.translate(address + offset)
                if paddr is not None:
                    physical.setdefault(paddr, []).append(watch)
        self._physical = physical

    def _on_access(self, uc, access: int, paddr: int, size: int, value: int, _data) -> None:
        if self._hits is None or not self._physical:
            return
        for byte in range(paddr, paddr + size):
            for address, _, kind in self._physical.get(byte, ()):
                write = access == UC_MEM_WRITE
                if kind is WatchKind.ACCESS or (kind is WatchKind.WRITE) == write:
                    cpu = self.machine.cpu
                    index = cpu.time_stamp(cpu.state.fast_reg(X.UC_X86_REG_RIP))
                    self._hits.append(_Hit(index, Stop(StopKind.WATCHPOINT, address, kind)))
                    return

    def _on_breakpoint(self, uc, address: int, size: int, _data) -> None:
        if self._hits is not None:
            index = self.machine.cpu.time_stamp(address)
            self._hits.append(_Hit(index, Stop(StopKind.BREAKPOINT, address)))

    # ---- running with hooks that note hits ----------------------------------------------

    def _live(self) -> bool:
        return not self.machine.finished()

    def _scout(self, target: int) -> tuple[bool, list[_Hit]]:
        """Run to exactly `target` noting every hit; (the machine stands at target, hits)."""
        machine = self.machine
        hooks = [machine.hooks.on_execute(address, self._on_breakpoint, retranslate=True)
                 for address in self.breakpoints]
        access = None
        if self.watchpoints:
            kinds = {kind for _, _, kind in self.watchpoints}
            mask = (UC_HOOK_MEM_WRITE if kinds - {WatchKind.READ} else 0) | \
                (UC_HOOK_MEM_READ if kinds - {WatchKind.WRITE} else 0)
            access = machine.uc.hook_add(mask, machine.hooks.wrap(self._on_access), None, 0,
                                         (1 << 64) - 1)
            self._retranslate()
        machine.uc.ctl_flush_tb()       # blocks translated before the hooks would skip them
        self._hits = []
        try:
            arrived = machine.advance(target)
        finally:
            hits, self._hits = self._hits, None
            for handle in hooks:
                machine.hooks.remove(handle)
            if access is not None:
                machine.uc.hook_del(access)
        return arrived, hits

    def _go(self, snapshot, icount: int) -> None:
        """Back to `snapshot`, then forwards (without hooks) to exactly `icount`."""
        self.machine.restore(snapshot)
        self._retranslate()
        if icount > snapshot.icount:
            self.machine.advance(icount)

    def _latest_at_or_before(self, icount: int):
        return max((s for s in self._snapshots if s.icount <= icount), key=lambda s: s.icount)

    def _keep(self) -> None:
        """A snapshot here, unless one exists; the list thinned past MAX_SNAPSHOTS."""
        now = self.icount()
        if any(s.icount == now for s in self._snapshots):
            return
        self._snapshots.append(self.machine.snapshot())
        self._snapshots.sort(key=lambda s: s.icount)
        if len(self._snapshots) > MAX_SNAPSHOTS:
            old = self._snapshots[1:len(self._snapshots) // 2]
            for snapshot in old[::2]:
                snapshot.close()
                self._snapshots.remove(snapshot)

    # ---- forwards -----------------------------------------------------------------------

    def step(self) -> Stop:
        if not self._live():
            return Stop(StopKind.ENDED)
        start = self.icount()
        self._keep()
        arrived, hits = self._scout(start + 1)
        watch = [hit for hit in hits if hit.stop.kind is StopKind.WATCHPOINT]
        if watch:
            return watch[0].stop
        return Stop(StopKind.STEP if arrived else StopKind.ENDED)

    def cont(self, interrupted: Callable[[], bool] = lambda: False) -> Stop:
        """Forwards to the first breakpoint or watchpoint hit, the end of the run, or a
        Ctrl-C (checked between stretches)."""
        while self._live():
            start = self.icount()
            self._keep()
            snapshot = self._latest_at_or_before(start)
            arrived, hits = self._scout(start + self.chunk)
            hits = [hit for hit in hits if hit.forward_at() > start]
            if hits:
                first = min(hits, key=_Hit.forward_at)
                if not (arrived and first.forward_at() == self.icount()):
                    self._go(snapshot, first.forward_at())
                return first.stop
            if not arrived:
                break
            if interrupted():
                return Stop(StopKind.INTERRUPTED)
        return Stop(StopKind.ENDED)

    # ---- backwards ----------------------------------------------------------------------

    def reverse_step(self) -> Stop:
        now = self.icount()
        if now == self._snapshots[0].icount:
            return Stop(StopKind.BEGIN)
        self._go(self._latest_at_or_before(now - 1), now - 1)
        return Stop(StopKind.STEP)

    def reverse_cont(self) -> Stop:
        """Backwards to the last breakpoint or watchpoint hit before the current
        instruction, or to the start of the recording."""
        upper = self.icount()
        for snapshot in sorted((s for s in self._snapshots if s.icount < upper),
                               key=lambda s: -s.icount):
            self.machine.restore(snapshot)
            _, hits = self._scout(upper)
            hits = [hit for hit in hits if snapshot.icount <= hit.index < upper]
            if hits:
                last = max(hits, key=lambda hit: hit.index)
                self._go(snapshot, last.index)
                return last.stop
            upper = snapshot.icount
        self._go(self._snapshots[0], self._snapshots[0].icount)
        return Stop(StopKind.BEGIN)
