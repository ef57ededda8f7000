"""The exceptions `emu` raises. Every error a user can cause or meet is one of these; nothing
the package raises on purpose is outside this tree.

EmuError                   base of everything below; the CLI prints it as one line (exit 2)
├── ConfigError            bad user input: memory map, sizes, options, missing files
├── OutputError            an output cannot be written (a full disk, a closed pipe)
│   └── OutputClosed       the reader of standard output went away (`emu run | head`)
├── BuildError             the guest (or the instruction counter) did not compile or link
├── LoaderError            the kernel image cannot be booted (bad ELF, bad requests)
├── TraceError             a trace file is corrupt or of an unknown version
├── EngineError            the Unicorn build is not the one emu is calibrated for, or it
│                          stopped for a reason emu does not know (a harness bug)
├── GuestMemoryError       the monitor could not read or write guest memory
│   ├── UnbackedAccess     a physical address with no RAM behind it
│   └── NotMapped          a virtual address the page tables do not translate
├── CpuFault               an architectural fault met while the monitor acts as the CPU
│                          (delivering an event, the I/O permission check); always caught
│                          inside emu.cpu and turned into what the SDM says happens
├── DeviceFault            the guest gave a device something it cannot use (a virtqueue
│                          descriptor outside RAM); always caught inside the device, which
│                          sets its failure status and reports a DeviceError event
└── GuestError             the guest misbehaved; carries a crash report
    ├── GuestCrash         an exception the guest could not handle, a bad access
    └── TripleFault        delivery of a double fault itself faulted

Interrupted (a KeyboardInterrupt, so no `except Exception` swallows it): SIGINT or SIGTERM
outside a run (emu/signals.py); the CLI exits 128 + the signal number.

A run that ends (the guest exits, halts, runs out of budget, crashes) is not an error: it is
a `RunResult` with a `RunEnd` (emu/result.py). GuestError is raised inside the run and turned
into such a result by the machine.
"""
from __future__ import annotations


class EmuError(Exception):
    """Base class of every error raised by emu."""


class ConfigError(EmuError):
    """A configuration value, memory map or file given by the user is wrong."""


class OutputError(EmuError):
    """Writing an output (standard output, a trace, a screenshot) failed."""


class OutputClosed(OutputError):
    """The reader of standard output closed it: end quietly, as Unix tools do."""


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived outside a run; `signum` says which."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"signal {signum}")
        self.signum = signum


class BuildError(EmuError):
    """The guest sources (or the instruction counter's C source) did not build."""


class LoaderError(EmuError):
    """The kernel image cannot be loaded or its boot requests are malformed."""


class TraceError(EmuError):
    """A trace file cannot be read."""


class EngineError(EmuError):
    """Unicorn is not the calibrated build, or stopped for a reason emu does not know."""


class GuestMemoryError(EmuError):
    """The monitor could not access guest memory at an address."""


class UnbackedAccess(GuestMemoryError):
    """A physical access that no RAM range covers."""

    def __init__(self, paddr: int, size: int) -> None:
        super().__init__(f"physical {paddr:#x} (+{size}) has no RAM behind it")
        self.paddr = paddr
        self.size = size


class NotMapped(GuestMemoryError):
    """A virtual address that the page tables (at `cr3`) do not translate."""

    def __init__(self, vaddr: int, cr3: int | None = None) -> None:
        super().__init__(f"virtual {vaddr:#x} is not mapped")
        self.vaddr = vaddr
        self.cr3 = cr3


class CpuFault(EmuError):
    """A fault (vector, error code, and CR2 for #PF) raised while delivering another event
    or checking I/O permission. Never leaves emu.cpu."""

    def __init__(self, vector: int, error_code: int, cr2: int | None = None) -> None:
        super().__init__(f"vector {vector} error code {error_code:#x}")
        self.vector = vector
        self.error_code = error_code
        self.cr2 = cr2


class DeviceFault(EmuError):
    """What the guest handed a device breaks the device's protocol (a descriptor outside
    RAM, a loop in a descriptor chain). Never leaves emu.hw.devices: the device turns it
    into its failure status and a DeviceError event."""


class GuestError(EmuError):
    """The guest stopped abnormally. `report` is the rendered crash report, if any."""

    def __init__(self, message: str, report: str = "") -> None:
        super().__init__(message)
        self.report = report


class GuestCrash(GuestError):
    """The guest faulted in a way it could not handle, or touched nothing."""


class TripleFault(GuestError):
    """A fault occurred while delivering a double fault: the machine resets on hardware.
    `rip` is the instruction that started the chain; `chain` lists (vector, error code)."""

    def __init__(self, message: str, rip: int | None = None, chain: tuple = ()) -> None:
        super().__init__(message)
        self.rip = rip
        self.chain = chain
