"""The machine: RAM laid out by a memory map, the bus and PC devices, the Limine boot, and
the CPU, put together for one run.

Owns: the order things are built in, the boot register state of the Limine protocol, and
turning the way a run ended into a RunResult (with a crash report when the guest crashed).
Does not own: any of the parts; each gets only what it needs as arguments.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from unicorn import UC_ARCH_X86, UC_MODE_64, Uc
from unicorn import x86_const as X

from emu.boot import loader

from emu.hw import memmap as memmaps
from emu.hw.bus import Bus
from emu.cpu import Cpu
from emu.hw.devices.pc import PcDevices, install_pc_devices, qemu_status
from emu.errors import ConfigError, EmuError, GuestError, TripleFault
from emu.events import EventBus, GuestExit, Observer
from emu.engine.guard import HookGuard
from emu.engine.icount import NEVER
from emu.hw.memory import PhysicalMemory
from emu.monitor.symbols import Symbols
from emu.monitor import report

# Limine's machine state at entry (LIMINE.md)
BOOT_CR0 = 0x80010011          # PE | ET | WP | PG
BOOT_CR4 = 0x20                # PAE
BOOT_EFER = 0xD00              # LME | LMA | NXE
BOOT_PAT = 0x0000010500070406
MSR_EFER, MSR_PAT = 0xC0000080, 0x277
BOOT_CODE_SELECTOR, BOOT_DATA_SELECTOR = 0x28, 0x30

# Process exit statuses of `emu run`; the guest's own codes are 0-63.
EXIT_GUEST_MAX = 63
EXIT_HARNESS_ERROR = 2         # bad input or an emu failure: a one-line message
EXIT_GUEST_CRASH = 70          # fault the guest could not handle, triple fault, wild access
EXIT_BUDGET = 71               # --max-instructions reached (a runaway loop?)
EXIT_HALTED = 72               # hlt with nothing to wake the CPU, without the debug exit
EXIT_VIOLATION = 73            # --strict: the invariant checker found a violation


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

    def describe(self) -> dict:
        """JSON-ready form for trace headers."""
        return {"kernel": self.kernel.name, "memory": self.memory, "memmap": self.memmap,
                "cmdline": self.cmdline, "modules": [m.name for m in self.modules],
                "max_instructions": self.max_instructions, "boot_time": self.boot_time,
                "framebuffer": list(self.framebuffer) if self.framebuffer else None,
                "count_instructions": self.count_instructions}


@dataclass(frozen=True, slots=True)
class RunResult:
    reason: str                   # "exit", "halt", "budget", "crash", "triple-fault",
                                  # "violation"
    exit_status: int              # what `emu run` exits with
    guest_value: int | None       # the value written to the debug-exit port
    instructions: int
    seconds: float
    exceptions: dict = field(default_factory=dict)
    report: str = ""
    message: str = ""
    counted: bool = True          # False with --no-count: `instructions` is meaningless

    @property
    def mips(self) -> float:
        return self.instructions / self.seconds / 1e6 if self.seconds else 0.0


class Machine:
    def __init__(self, config: MachineConfig, observers: Iterable[Observer] = (),
                 on_serial_text: Callable[[str], None] | None = None) -> None:
        self.config = config
        if not config.kernel.is_file():
            raise ConfigError(f"kernel {config.kernel} not found; build one with `emu build` "
                              "or give the path of a Limine ELF kernel")
        memmap = memmaps.resolve_memmap(config.memmap, config.memory)
        needed = config.kernel.stat().st_size + sum(_size_of(m) for m in config.modules)
        memmaps.validate(memmap, needed=needed + (1 << 20))
        self.uc = Uc(UC_ARCH_X86, UC_MODE_64)
        self.memory = PhysicalMemory(self.uc)
        for base, length in memmap.backed_ranges():
            self.memory.add(base, length)
        self.guard = HookGuard(self.uc)
        self.events = EventBus(observers)
        if not config.count_instructions and config.max_instructions:
            raise ConfigError("--max-instructions needs instruction counting; drop --no-count")
        self.cpu = Cpu(self.uc, self.memory, self.events, self.guard,
                       count=config.count_instructions)
        self.bus = Bus(self.uc, self.events, self.guard, read_code=self.cpu.read_virtual,
                       io_gate=self.cpu)
        self.bus.limit_unbacked_checks(self.memory.ranges())
        self.devices: PcDevices = install_pc_devices(
            self.bus, on_serial_text, on_exit=lambda value: self.cpu.request_exit(value),
            clock=lambda: self.cpu.time_stamp(self.uc.reg_read(X.UC_X86_REG_RIP)))
        boot_config = loader.BootConfig(
            cmdline=config.cmdline, modules=tuple((m, m.name) for m in config.modules),
            boot_time=config.boot_time, framebuffer=config.framebuffer)
        self.boot = loader.boot(config.kernel, self.memory, memmap, boot_config)
        self._enter_kernel()
        self.cpu.watch_privileged(self.boot.executable_segments)
        self.symbols = Symbols.from_elf(config.kernel, slide=self.boot.kernel_slide)
        self._violation: tuple[str, str] | None = None      # (message, details): stop()
        self._periodic: tuple[int, Callable[[], None]] | None = None

    def _enter_kernel(self) -> None:
        """The register state the Limine protocol promises at the kernel's entry."""
        uc, boot = self.uc, self.boot
        uc.reg_write(X.UC_X86_REG_CR4, BOOT_CR4)
        uc.reg_write(X.UC_X86_REG_CR3, boot.cr3)
        uc.reg_write(X.UC_X86_REG_CR0, BOOT_CR0)
        uc.reg_write(X.UC_X86_REG_MSR, (MSR_EFER, BOOT_EFER))
        uc.reg_write(X.UC_X86_REG_MSR, (MSR_PAT, BOOT_PAT))
        uc.reg_write(X.UC_X86_REG_GDTR, (0, boot.gdt_base, boot.gdt_limit, 0))
        uc.reg_write(X.UC_X86_REG_CS, BOOT_CODE_SELECTOR)
        for register in (X.UC_X86_REG_DS, X.UC_X86_REG_ES, X.UC_X86_REG_SS, X.UC_X86_REG_FS,
                         X.UC_X86_REG_GS):
            uc.reg_write(register, BOOT_DATA_SELECTOR)
        uc.reg_write(X.UC_X86_REG_RFLAGS, 0x2)
        uc.reg_write(X.UC_X86_REG_RSP, boot.stack_pointer)
        uc.reg_write(X.UC_X86_REG_RIP, boot.entry)

    def run(self) -> RunResult:
        """Run to the end. Guest misbehaviour becomes a RunResult with a report; errors of
        the harness itself propagate as EmuError."""
        budget = self.config.max_instructions or NEVER
        started = time.perf_counter()
        value = None
        try:
            outcome = self._run_cpu(budget)
            if self._violation is not None:
                message, details = self._violation
                reason, status = "violation", EXIT_VIOLATION
                text = self._report(message).replace("=== guest crash: ", "=== stopped: ", 1)
                text = text.replace("\n", "\n" + details + "\n", 1) if details else text
            elif outcome == "exit":
                value = self.cpu.exit_status
                reason, status = "exit", min(value, EXIT_GUEST_MAX) if value >= 0 else EXIT_GUEST_MAX
                message = f"guest exited with {value} (QEMU isa-debug-exit status {qemu_status(value)})"
                text = ""
            elif outcome == "budget":
                reason, status = "budget", EXIT_BUDGET
                message = f"instruction budget of {budget} exhausted (runaway loop?)"
                text = self._report(message)
            elif outcome == "halt":
                reason, status = "halt", EXIT_HALTED
                message = "guest halted with nothing to wake it (hlt without the debug exit)"
                # RIP is past the hlt: show the hlt itself
                text = self._report(message, rip=self.uc.reg_read(X.UC_X86_REG_RIP) - 1)
            else:
                raise EmuError(f"the CPU stopped for no known reason ({outcome})")
        except TripleFault as exc:
            reason, status, message = "triple-fault", EXIT_GUEST_CRASH, str(exc)
            text = self._report(message, rip=exc.rip)
        except GuestError as exc:
            reason, status, message = "crash", EXIT_GUEST_CRASH, str(exc)
            text = self._report(message)
        seconds = time.perf_counter() - started
        self.events.emit(GuestExit(self.cpu.icount(), value if reason == "exit" else None, reason))
        return RunResult(reason, status, value, self.cpu.icount(), seconds,
                         dict(sorted(self.cpu.exceptions_by_vector.items())), text, message,
                         self.config.count_instructions)

    # ---- for observers that need to act on the run (the invariant checker) -------------

    def stop_for_violation(self, message: str, details: str = "") -> None:
        """End the run after the current instruction: reason "violation", exit status 73,
        a report titled `message` with `details` under the title (`--strict`)."""
        if self._violation is None:
            self._violation = (message, details)
            self.cpu.request_exit(-1, "violation")

    def every(self, instructions: int, callback: Callable[[], None]) -> None:
        """Call `callback` between instructions every `instructions` retired (exactly, at
        the budget stop's cost of single-stepping to the mark; `--check-every`)."""
        if instructions <= 0:
            raise ConfigError("the period must be a positive number of instructions")
        self._periodic = (instructions, callback)

    def _run_cpu(self, budget: int) -> str:
        if self._periodic is None:
            return self.cpu.run(budget)
        period, callback = self._periodic
        while True:
            outcome = self.cpu.run(min(budget, self.cpu.icount() + period))
            if outcome != "budget" or self.cpu.icount() >= budget:
                return outcome
            callback()
            if self._violation is not None:
                return "exit"

    def _report(self, title: str, rip: int | None = None) -> str:
        return report.render(self.cpu, title, self.symbols, self.devices.com1.tail(10), rip)

    def serial_output(self) -> str:
        com1 = self.devices.com1
        return "\n".join(com1.lines) + ("\n" + com1.partial if com1.partial else "")


def _size_of(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        raise ConfigError(f"module {path} not found; check the --module path") from None
