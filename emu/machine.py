"""The machine: RAM laid out by a memory map, the bus and PC devices, the Limine boot, and
the CPU, put together for one run.

Owns: the order things are built in, turning the way a run ended into a RunResult (with a
crash report when the guest crashed), and the public surface observers and tools use.
Does not own: any of the parts; each gets only what it needs as arguments.

Public surface (everything else is private; observers attach through these only):
  config         the MachineConfig
  events         EventBus: subscribe(observer), wants(EventType), emit(event)
  memory         guest RAM by physical address (read, write, read_u64, locate)
  cpu            the CPU's read side (registers, reg, cr3, cpl, nxe, paging_enabled, walk,
                 translate, read_virtual, time_stamp, icount, tlb_translation), and
                 schedule_interrupt / raise_interrupt
  hooks          guarded code hooks at single addresses: hooks.on_execute(address, fn)
  symbols        the kernel's ELF symbols (functions, data objects, lines, slide)
  boot           BootInfo: the memory map the kernel got, HHDM, kernel bases, framebuffer
  devices        the PC devices (devices.com1 ...; devices.hostio.host: where a program's
                 streams and status go); bus.mmio_owner(paddr) for MMIO regions
  swap           the swap disk (emu/hw/blockdev.py: transport, blk, disk), or None
  every(n, fn)   call fn between instructions every n instructions
  stop(...)      end the run now with a RunEnd and a report (a checker under --strict)
  stop_at(...)   end the run (UNTIL) at an exact instruction count or a symbol (--until)
  advance(n)     run until exactly n instructions retired, without ending the run
  snapshot()     a Snapshot (emu/snapshot/) of this instant; restore(snapshot) goes back
  run()          run to the end; returns a RunResult
"""
from __future__ import annotations

import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from unicorn import UC_ARCH_X86, UC_MODE_64, Uc
from unicorn import x86_const as X

from emu import signals
from emu.boot import limine, loader
from emu.cpu import Cpu
from emu.engine import capi
from emu.engine.guard import HookGuard
from emu.engine.icount import NEVER
from emu.errors import ConfigError, GuestError, TripleFault
from emu.events import Booted, EventBus, GuestExit, KeyInput, Observer
from emu.hw import blockdev
from emu.hw import memmap as memmaps
from emu.hw.bus import Bus
from emu.hw.clock import DEFAULT_IPS
from emu.hw.devices.scancodes import keystrokes
from emu.hw.devices.pc import PcDevices, install_pc_devices, qemu_status
from emu.hw.memory import PhysicalMemory
from emu.hw.platform import PcPlatform
from emu.inputs import check_input
from emu.monitor import report
from emu.monitor.symbols import Symbols
from emu.result import RunEnd, RunResult, exit_status
from emu.x86 import PAGE_SIZE, RFLAGS_IF

LOADER_MARGIN = 1 << 20        # memory the loader needs beyond the kernel and modules
HOOKED_PERIOD = 64             # every(n) below this uses a hook per instruction (see below)
KERNEL_HINT = "build one with `emu build` or give the path of a Limine ELF kernel"


@dataclass(frozen=True, slots=True)
class MachineConfig:
    kernel: Path
    memory: int | None = None              # bytes of RAM; None: the preset's default
    memmap: str | None = None              # preset name or TOML file; None: "pc"
    cmdline: str = ""
    modules: tuple[Path, ...] = ()
    max_instructions: int | None = None
    boot_time: int = 1_700_000_000
    framebuffer: tuple[int, int] | None = (640, 480)
    count_instructions: bool = True        # False: no counting hook (fast, no budget/trace)
    platform: bool = True                  # the PC platform (ACPI, APIC, PIC, PIT, HPET...)
    ips: int = DEFAULT_IPS                 # virtual ticks (instructions) per second
    acpi_rsdp_revision: int = 2            # 0: an RSDT only, for kernels that want ACPI 1.0
    keys: str = ""                         # typed on the PS/2 keyboard at the guest's prompt
    injections: tuple[str, ...] = ()       # --inject specs (emu/inject attaches them)
    swap: int | None = None                # bytes of a temporary swap disk (--swap)
    swap_file: Path | None = None          # a swap disk the user keeps (--swap-file)
    swap_latency: int = blockdev.DEFAULT_LATENCY   # ticks from a disk notify to completion

    def describe(self) -> dict:
        """JSON-ready form for trace headers."""
        return {"kernel": self.kernel.name, "memory": self.memory, "memmap": self.memmap,
                "cmdline": self.cmdline, "modules": [m.name for m in self.modules],
                "max_instructions": self.max_instructions, "boot_time": self.boot_time,
                "framebuffer": list(self.framebuffer) if self.framebuffer else None,
                "count_instructions": self.count_instructions, "platform": self.platform,
                "ips": self.ips, "acpi_rsdp_revision": self.acpi_rsdp_revision,
                "keys": self.keys, "injections": list(self.injections),
                **blockdev.describe_swap(self.swap, self.swap_file, self.swap_latency)}


MIN_IPS, MAX_IPS = 1_000_000, 100_000_000_000


def _check_platform_options(config: MachineConfig) -> None:
    if not MIN_IPS <= config.ips <= MAX_IPS:
        raise ConfigError(f"--ips {config.ips}: virtual instructions per second must be "
                          f"{MIN_IPS:,} to {MAX_IPS:,} (default {DEFAULT_IPS:,})")
    if not config.platform and config.keys:
        raise ConfigError("--keys types on the platform's PS/2 keyboard; drop --no-platform")
    blockdev.check_swap_options(config.swap, config.swap_file, config.swap_latency,
                                config.platform, (("kernel", config.kernel),
                                                  *(("module", m) for m in config.modules)))
    untypable = sorted({char for char in config.keys if keystrokes(char) is None})
    if untypable:
        raise ConfigError(f"--keys: {''.join(untypable)!r} has no key on the US keyboard emu "
                          f"models; use printable ASCII, newline, tab and backspace")


@dataclass(frozen=True, slots=True)
class _Stop:
    """Why an observer ended the run, and what its report says under the title."""
    end: RunEnd
    message: str
    details: str


class Machine:
    def __init__(self, config: MachineConfig, observers: Iterable[Observer] = (),
                 on_serial_text: Callable[[str], None] | None = None) -> None:
        capi.check()
        self.config = config
        if not config.count_instructions and config.max_instructions:
            raise ConfigError("--max-instructions needs instruction counting; drop --no-count")
        _check_platform_options(config)
        memmap = memmaps.resolve_memmap(config.memmap, config.memory)
        ram = memmap.total(memmaps.MemoryType.USABLE)
        needed = check_input(config.kernel, "kernel", ram, hint=KERNEL_HINT) + \
            sum(check_input(module, "module", ram) for module in config.modules)
        memmaps.validate(memmap, needed=needed + LOADER_MARGIN, spec=config.memmap)
        self._build_hardware(memmap, observers, on_serial_text)
        boot_config = loader.BootConfig(
            cmdline=blockdev.kernel_cmdline(config.cmdline, self.swap),
            modules=tuple((m, m.name) for m in config.modules),
            boot_time=config.boot_time, framebuffer=config.framebuffer,
            acpi=self.platform.acpi_tables if self.platform else None,
            acpi_rsdp_revision=config.acpi_rsdp_revision)
        self.boot = loader.boot(config.kernel, self.memory, memmap, boot_config)
        self._guard_boot_stack(self.boot.stack_guard)
        self.events.emit(Booted(0, self.boot.base_revision, self.boot.requests,
                                self.boot.ignored_requests))
        if config.keys and self.events.wants(KeyInput):
            self.events.emit(KeyInput(0, config.keys))
        limine.enter_kernel(self.uc, self.boot)
        self.cpu.watch_privileged(self.boot.executable_segments)
        self.symbols = Symbols.from_elf(config.kernel, slide=self.boot.kernel_slide)
        self._stop: _Stop | None = None
        self._periodic: tuple[int, Callable[[], None]] | None = None
        self._platform_end = ""
        self._until: int | None = None
        self._until_symbol = ""
        self._early: RunEnd | GuestError | None = None     # how an advance() ended the run

    def _build_hardware(self, memmap: memmaps.MemoryMap, observers: Iterable[Observer],
                        on_serial_text: Callable[[str], None] | None) -> None:
        """RAM (not where devices answer), the CPU, the bus, the monitor's own ports, and
        the PC platform unless turned off."""
        config = self.config
        self.uc = Uc(UC_ARCH_X86, UC_MODE_64)
        self.memory = PhysicalMemory(self.uc)
        windows = [(base, size) for base, size, _ in PcPlatform.mmio_windows()] \
            if config.platform else []
        for base, length in memmap.backed_ranges(exclude=windows):
            self.memory.add(base, length)
        self.hooks = HookGuard(self.uc)
        self.events = EventBus(observers)
        self.cpu = Cpu(self.uc, self.memory, self.events, self.hooks,
                       count=config.count_instructions, ips=config.ips)
        self.bus = Bus(self.uc, self.events, self.hooks, read_code=self.cpu.read_virtual,
                       io_gate=self.cpu.io)
        self.bus.limit_unbacked_checks(self.memory.ranges())
        self.bus.port_clock = self.cpu.count.port_time_stamp     # now(), for port hooks
        self.devices: PcDevices = install_pc_devices(
            self.bus, on_serial_text,
            on_exit=lambda value: self.cpu.request_stop(RunEnd.EXIT, value,
                                                        in_instruction=True),
            clock=self.cpu.now, platform=config.platform, memory=self.memory)
        self.platform: PcPlatform | None = self._build_platform() if config.platform else None
        self.swap = None if self.platform is None else blockdev.swap_from_options(
            self.platform, self.bus, self.memory, self.events, memmap,
            size=config.swap, path=config.swap_file, latency=config.swap_latency)

    def _guard_boot_stack(self, page: int) -> None:
        """Nothing behind the RESERVED page below the boot stack: a push into it stops the
        run at that instruction, named."""
        self.memory.punch(page, PAGE_SIZE)
        self.bus.name_hole(page, PAGE_SIZE, "boot stack overflow (the guard page below the "
                                            "boot stack)")
        self.bus.limit_unbacked_checks(self.memory.ranges())
        hhdm = self.boot.hhdm_offset + page
        self.cpu.delivery.stack_guard = (hhdm, hhdm + PAGE_SIZE)

    def _build_platform(self) -> PcPlatform:
        """The PC platform on the CPU's virtual clock, with the keys to type."""
        platform = PcPlatform(
            self.cpu.clock, boot_time=self.config.boot_time,
            on_reset=lambda reason: self._end_by_platform(RunEnd.RESET, reason.value),
            on_power_off=lambda: self._end_by_platform(RunEnd.POWER_OFF, "ACPI S5 (soft off)"))
        self.cpu.attach_platform(platform, self.bus)
        platform.type_text(self.config.keys)
        return platform

    def _end_by_platform(self, end: RunEnd, why: str) -> None:
        """The guest powered off or reset the machine: the run ends after this access."""
        self._platform_end = why
        self.cpu.request_stop(end, in_instruction=self.bus.in_access)

    # ---- for observers that act on the run ------------------------------------------------

    def vtime_of(self, icount: int) -> int:
        """The virtual time of an event stamped `icount` now: the instructions skipped while
        halted change only between instructions, never during one."""
        return icount + self.cpu.clock.skipped

    def stop(self, end: RunEnd, message: str, details: str = "") -> None:
        """End the run after the current instruction with `end` (VIOLATION: a checker under
        --strict); the report is titled `message`, with `details` under the title."""
        if self._stop is None:
            self._stop = _Stop(end, message, details)
            self.cpu.request_stop(end, in_instruction=self.bus.in_access)

    def every(self, instructions: int, callback: Callable[[], None]) -> None:
        """Call `callback` between instructions every `instructions` retired (exactly, at
        the budget stop's cost of single-stepping to the mark; `--check-every`)."""
        if instructions <= 0:
            raise ConfigError("the period must be a positive number of instructions")
        self._periodic = (instructions, callback)

    # ---- stopping early, snapshots (emu/snapshot/) ---------------------------------------

    def stop_at(self, icount: int | None = None, symbol: str | None = None) -> None:
        """End the run (RunEnd.UNTIL) when exactly `icount` instructions have retired, or
        before the first instruction of `symbol` runs, whichever comes first."""
        if symbol is not None:
            address = self.symbols.address_of(symbol)
            if address is None:
                raise ConfigError(f"--until {symbol}: the kernel has no symbol {symbol!r}; "
                                  f"give a function name or an instruction count")
            self.hooks.on_execute(address, lambda *_: self.cpu.request_stop(RunEnd.UNTIL),
                                  retranslate=True)
            self._until_symbol = symbol
        if icount is not None:
            self._until = icount

    def advance(self, icount: int) -> bool:
        """Run until exactly `icount` instructions have retired without ending the run:
        True if the machine stands there (to snapshot it, or go on), False if the run ended
        first (`run()` then finishes it and says how)."""
        if self.finished():
            return False
        budget = self.config.max_instructions or NEVER
        try:
            with signals.stoppable(self._interrupt):
                end = self._run_cpu(min(budget, icount))
        except GuestError as exc:
            self._early = exc
            return False
        if end is RunEnd.BUDGET and self.cpu.icount() >= icount and icount < budget:
            return True
        self._early = end
        return False

    def finished(self) -> bool:
        """True once the run has ended: an advance() stopped short of its mark, or something
        asked the run to stop; `run()` then says how."""
        return self._early is not None or self.cpu.stop_reason is not None

    def snapshot(self):
        """This instant (between instructions) as an in-memory Snapshot: its RAM held by a
        fork of this process, the CPU, devices and observers captured."""
        from emu.snapshot import take
        return take(self)

    def restore(self, snapshot) -> None:
        """Go back to `snapshot` (taken of this machine)."""
        snapshot.restore(self)

    def reopen(self) -> None:
        """Forget how the run ended, so that it goes on: a snapshot saved when an --until
        run stopped is resumed from there."""
        self.cpu.stop_reason = self.cpu.exit_value = None
        self._stop = self._early = self._until = None
        self._until_symbol = ""

    # ---- running ---------------------------------------------------------------------------

    def run(self) -> RunResult:
        """Run to the end. Guest misbehaviour becomes a RunResult with a report, and so
        does SIGINT/SIGTERM when the command line installed emu/signals.py; errors of the
        harness itself propagate as EmuError, after the trace got its GuestExit."""
        budget = min(self.config.max_instructions or NEVER, self._until or NEVER)
        started = time.perf_counter()
        try:
            with signals.stoppable(self._interrupt):
                end = self._run_rest(budget)
            end, message, text = self._ending(end, budget)
        except TripleFault as exc:
            end, message = RunEnd.TRIPLE_FAULT, str(exc)
            text = self._report(message, rip=exc.rip)
        except GuestError as exc:
            end, message = RunEnd.CRASH, str(exc)
            text = self._report(message)
        except BaseException:
            self._emit_exit(RunEnd.ERROR, None)
            raise
        seconds = time.perf_counter() - started
        value = self.cpu.exit_value if end in (RunEnd.EXIT, RunEnd.INTERRUPTED) else None
        self.events.emit(GuestExit(self.cpu.icount(),
                                   value if end is RunEnd.EXIT else None, end.value))
        return RunResult(end, exit_status(end, value), value, self.cpu.icount(), seconds,
                         dict(sorted(self.cpu.exceptions_by_vector.items())), text, message,
                         self.config.count_instructions)

    def _run_rest(self, budget: int) -> RunEnd:
        early, self._early = self._early, None
        if isinstance(early, GuestError):
            raise early
        return early if early is not None else self._run_cpu(budget)

    def _interrupt(self, signum: int) -> None:
        """SIGINT/SIGTERM during the run (from the signal handler or its watcher thread).
        Unicorn ignores emu_stop between two emu_starts, so the counter is also told to
        stop before its next block: a signal that lands just before the run loop starts
        Unicorn again still stops it at once (a loop once ran 17 s to its next deadline)."""
        self.cpu.request_stop(RunEnd.INTERRUPTED, signum)
        self.cpu.count.counter.lower_stop_at(0)

    def _emit_exit(self, end: RunEnd, value: int | None) -> None:
        """The last event of a run that ends with an error of the harness: best effort (the
        error may be the trace's own)."""
        try:
            self.events.emit(GuestExit(self.cpu.icount(), value, end.value))
        except Exception:  # noqa: BLE001 - the original error is what the user must see
            pass

    def _ending(self, end: RunEnd, budget: int) -> tuple[RunEnd, str, str]:
        """(end, message, report) for a run that stopped without a crash."""
        if self._stop is not None:
            stop = self._stop
            return stop.end, stop.message, self._report(stop.message, heading="stopped",
                                                        details=stop.details)
        if end is RunEnd.EXIT:
            value = self.cpu.exit_value
            return end, f"guest exited with {value} (QEMU isa-debug-exit status " \
                        f"{qemu_status(value)})", ""
        if end is RunEnd.UNTIL or end is RunEnd.BUDGET and self._until is not None and \
                self.cpu.icount() >= self._until:
            what = f"the first execution of {self._until_symbol}" \
                if end is RunEnd.UNTIL else f"instruction {self._until:,}"
            message = f"stopped at {what} (--until)"
            return RunEnd.UNTIL, message, self._report(message, heading="until")
        if end is RunEnd.BUDGET:
            message = f"instruction budget of {budget} exhausted (runaway loop?)"
            return end, message, self._report(message)
        if end is RunEnd.POWER_OFF:
            return end, f"guest powered the machine off: {self._platform_end}", ""
        if end is RunEnd.RESET:
            message = f"guest reset the machine: {self._platform_end}"
            return end, message, self._report(message, heading="reset")
        if end is RunEnd.INTERRUPTED:
            message = f"interrupted by {signal.Signals(self.cpu.exit_value).name}" + \
                (f" after {self.cpu.icount():,} instructions" if self.cpu.count.counting else "")
            return end, message, self._report(message, heading="interrupted", source_lines=False)
        if not self.cpu.reg(X.UC_X86_REG_EFLAGS) & RFLAGS_IF:
            message = "guest halted with interrupts disabled (cli; hlt): nothing can wake it"
        else:
            message = "guest halted with nothing to wake it (no timer armed, no interrupt due)"
        # RIP is past the hlt: show the hlt itself
        return end, message, self._report(message, rip=self.cpu.state.rip() - 1)

    def _run_cpu(self, budget: int) -> RunEnd:
        if self._periodic is None:
            return self.cpu.run(budget)
        period, callback = self._periodic
        if period < HOOKED_PERIOD:
            return self._run_hooked(budget, period, callback)
        while True:
            # marks at multiples of the period, wherever this run started (an advance())
            end = self.cpu.run(min(budget, self.cpu.icount() // period * period + period))
            if end is not RunEnd.BUDGET or self.cpu.icount() >= budget:
                return end
            callback()
            if self._stop is not None:
                return self._stop.end

    def _run_hooked(self, budget: int, period: int, callback: Callable[[], None]) -> RunEnd:
        """A short period: a hook before every instruction calls back at each multiple of
        the period (about 2 us an instruction, against about 90 us for each stop of the
        budget mechanism). The hook runs between instructions, so the callback sees the
        same state, and may stop the run the same way."""
        next_mark = [self.cpu.icount() // period * period + period]

        def before(uc, address: int, size: int, _data) -> None:
            now = self.cpu.time_stamp(address)
            if now >= next_mark[0]:
                next_mark[0] = now - now % period + period
                callback()
        handle = self.hooks.on_execute_range(1, 0, before)      # 1 > 0: every address
        self.uc.ctl_flush_tb()          # blocks translated before the hook would skip it
        try:
            return self.cpu.run(budget)
        finally:
            self.hooks.remove(handle)

    def _report(self, title: str, rip: int | None = None, heading: str = "guest crash",
                details: str = "", source_lines: bool = True) -> str:
        ignored = self.boot.ignored_requests
        if ignored:     # a kernel that trusts one of these read a NULL response
            note = "Limine requests emu left unanswered (NULL response): " + \
                ", ".join(limine.unanswered(name) for name in ignored)
            details = f"{details}\n{note}" if details else note
        return report.render(self.cpu, title, self.symbols, self.devices.com1.tail(10), rip,
                             heading=heading, details=details, source_lines=source_lines)

    def serial_output(self) -> str:
        com1 = self.devices.com1
        return "\n".join(com1.lines) + ("\n" + com1.partial if com1.partial else "")
