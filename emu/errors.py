"""The exceptions `emu` raises. Every error a user can cause or meet is one of these.

EmuError                 base of everything below; the CLI prints it as one line
├── ConfigError          bad user input: memory map, sizes, options, missing files
├── BuildError           the guest did not compile or link
├── LoaderError          the kernel image cannot be booted (bad ELF, bad requests)
├── TraceError           a trace file is corrupt or of an unknown version
└── GuestError           the guest misbehaved; carries a crash report
    ├── GuestCrash       an exception the guest could not handle, a bad access
    ├── TripleFault      delivery of a double fault itself faulted
    └── BudgetExhausted  the instruction budget ran out (a runaway loop)
"""


class EmuError(Exception):
    """Base class of every error raised by emu."""


class ConfigError(EmuError):
    """A configuration value, memory map or file given by the user is wrong."""


class BuildError(EmuError):
    """The guest sources did not build."""


class LoaderError(EmuError):
    """The kernel image cannot be loaded or its boot requests are malformed."""


class TraceError(EmuError):
    """A trace file cannot be read."""


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


class BudgetExhausted(GuestError):
    """The run hit --max-instructions before the guest exited."""
