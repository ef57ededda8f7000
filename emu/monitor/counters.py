"""Periodic samples of the guest's memory counters, for a trace (`--trace-counters N`) and
the counter tracks of its Perfetto export.

Owns: when a sample is taken (at the first event at least N instructions after the last
one, so sampling never stops the CPU: a stop costs Unicorn its translated code) and reading
the counters through what the kernel exports for the monitor: the PMM's free frames
(`pmm_descriptor`), the heap's pages (`heap_descriptor`), swap slots in use
(`swap_descriptor`'s slot counts) and each live process's resident pages (`proc_descriptor`
and its address spaces). A counter the kernel does not export is -1.
Does not own: the layouts (emu/monitor/checks/pmm.py, heapcheck.py, swapcheck.py,
proctable.py), writing the samples (the trace recorder).

Cost: a sample reads a few hundred bytes and, with swap, two bytes per slot; it also makes
every event type be built (the sampler looks at all of them), so it is asked for, not on.
"""
from __future__ import annotations

from emu.errors import ConfigError, GuestMemoryError
from emu.events import Event, GuestCounters, Observer
from emu.monitor import proctable
from emu.monitor.checks import pmm
from emu.monitor.heapcheck import read_heap_descriptor
from emu.monitor.swapcheck import slots_in_use

UNKNOWN = -1


class CounterSampler(Observer):
    """Emits GuestCounters on the machine's bus every `period` instructions (or more, when
    no event comes sooner). Attach with `attach(machine, period)`."""

    def __init__(self, machine, period: int) -> None:
        if period <= 0:
            raise ConfigError("--trace-counters: the period must be a positive number of "
                              "instructions")
        self.machine = machine
        self.period = period
        self._due = 0
        self._read = machine.cpu.read_virtual
        self._pmm = machine.symbols.data(pmm.DESCRIPTOR_SYMBOL)
        self._procs = machine.symbols.data(proctable.DESCRIPTOR_SYMBOL)

    def on_event(self, event: Event) -> None:
        if event.icount < self._due:
            return
        self._due = event.icount + self.period
        self.machine.events.emit(self.sample(event.icount))

    def sample(self, icount: int) -> GuestCounters:
        """The counters as they are now, stamped `icount`."""
        return GuestCounters(icount, self._guarded(self._free_frames),
                             self._guarded(self._heap_pages),
                             self._guarded(lambda: slots_in_use(self.machine)),
                             self._rss())

    @staticmethod
    def _guarded(read) -> int:
        try:
            value = read()
        except GuestMemoryError:
            return UNKNOWN
        return UNKNOWN if value is None else value

    def _free_frames(self) -> int | None:
        if self._pmm is None:
            return None
        raw = self._read(self._pmm[0], pmm.DESCRIPTOR.size)
        descriptor = pmm.PmmDescriptor.parse(raw)
        return descriptor.free_frames if descriptor.magic == pmm.DESCRIPTOR_MAGIC else None

    def _heap_pages(self) -> int | None:
        descriptor = read_heap_descriptor(self.machine)
        return None if descriptor is None else descriptor.pages

    def _rss(self) -> tuple[tuple[int, int], ...]:
        if self._procs is None:
            return ()
        try:
            descriptor = proctable.read_descriptor(self._read, self._procs[0])
            if descriptor is None:
                return ()
            return tuple((entry.pid, proctable.read_address_space(
                self._read, entry.address_space).rss_pages)
                for entry in proctable.read_entries(self._read, descriptor) if entry.alive)
        except GuestMemoryError:
            return ()


def attach(machine, period: int | None) -> CounterSampler | None:
    """A sampler on `machine` every `period` instructions; None for no period."""
    if period is None:
        return None
    sampler = CounterSampler(machine, period)
    machine.events.subscribe(sampler)
    return sampler
