"""How a run ends, and the exit status of the `emu` process for each ending: the one table.

Owns: `RunEnd` (every way a run can end; later features add members here and a row to
EXIT_STATUS and to the README's table, which tests/test_structure.py compares), the exit
statuses, and `RunResult`.
Does not own: deciding how a run ended (the machine) or printing it (the commands).
"""
from __future__ import annotations

import signal
from dataclasses import dataclass, field
from enum import Enum


class RunEnd(str, Enum):
    """Why a run stopped. The value is the name used in traces and JSON."""
    EXIT = "exit"                  # the guest wrote the debug-exit port
    HALT = "halt"                  # hlt with nothing to wake the CPU
    BUDGET = "budget"              # --max-instructions reached
    CRASH = "crash"                # a fault the guest could not handle, a wild access
    TRIPLE_FAULT = "triple-fault"  # delivering a #DF faulted
    VIOLATION = "violation"        # --strict: a checker finding ended the run
    INTERRUPTED = "interrupted"    # SIGINT or SIGTERM (emu/signals.py)
    POWER_OFF = "power-off"        # ACPI S5 (soft off) through PM1a_CNT
    RESET = "reset"                # 0xCF9, the keyboard controller's pulse, the FADT register
    ERROR = "error"                # the harness failed (its trace still ends with this)
    DIVERGED = "diverged"          # `emu replay`: the rerun differed from the recording
    UNTIL = "until"                # --until reached (or a replay ran out of recording)
    KILLED = "killed"              # --gdb: the debugger killed the run


EXIT_GUEST_MAX = 63                # the guest's own debug-exit values: 0-63
EXIT_HARNESS_ERROR = 2             # bad input or a harness failure: one line on stderr
EXIT_SIGNAL_BASE = 128             # interrupted by signal N: 128 + N, as shells report it
EXIT_OUTPUT_CLOSED = 141           # 128 + SIGPIPE: standard output's reader went away



def shell_status(wait_status: int) -> int:
    """A Linux wait status as a shell reports it: the exit code, or 128 + the signal."""
    signal_number = wait_status & 0x7F
    return EXIT_SIGNAL_BASE + signal_number if signal_number else (wait_status >> 8) & 0xFF


# The process exit status of `emu run` per ending (EXIT: the guest's value, capped).
EXIT_STATUS: dict[RunEnd, int] = {
    RunEnd.CRASH: 70,
    RunEnd.TRIPLE_FAULT: 70,
    RunEnd.BUDGET: 71,
    RunEnd.HALT: 72,
    RunEnd.VIOLATION: 73,
    RunEnd.RESET: 74,
    RunEnd.DIVERGED: 75,
    RunEnd.UNTIL: 76,
    RunEnd.KILLED: 77,
    RunEnd.POWER_OFF: 0,
    RunEnd.ERROR: EXIT_HARNESS_ERROR,
}

# What each status means, for --help and the README (tests keep them in step).
EXIT_STATUS_MEANINGS: tuple[tuple[str, str], ...] = (
    (f"0-{EXIT_GUEST_MAX}", "the guest exited through the debug-exit port with this value; "
                            "0 also when it powered the machine off (ACPI S5)"),
    ("70", "guest crash: triple fault, an access with nothing behind it, a fault the monitor "
           "cannot deliver"),
    ("71", "--max-instructions exhausted (a runaway loop?)"),
    ("72", "the guest halted with nothing to wake it, without using the debug exit"),
    ("73", "--strict: a checker found a violation"),
    ("74", "the guest reset the machine (port 0xCF9, the keyboard controller, the FADT "
           "reset register)"),
    ("75", "`emu replay`: the rerun differed from the trace (the report shows the first "
           "difference)"),
    ("76", "`--until` reached: the run stopped at the instruction count or symbol asked for"),
    ("77", "--gdb: the debugger killed the run (gdb's `kill`)"),
    ("130", "interrupted by SIGINT (Ctrl-C); the trace ends with GuestExit `interrupted`"),
    ("143", "interrupted by SIGTERM; likewise"),
    ("141", "standard output was closed by its reader (`emu run | head`): a quiet end"),
    (str(EXIT_HARNESS_ERROR), "bad input or a harness error: one line on stderr"),
)


# `emu exec` exits as `env` and `timeout` do: the program's own status, or its own codes.
EXEC_HARNESS_FAILURE = 125         # the harness failed, or the kernel crashed, halted, ran out
EXEC_CANNOT_RUN = 126              # the program is not a static x86-64 Linux executable
EXEC_NOT_FOUND = 127               # the program does not exist

EXEC_EXIT_STATUS_MEANINGS: tuple[tuple[str, str], ...] = (
    ("0-255", "the program's own exit status, verbatim"),
    (f"{EXIT_SIGNAL_BASE + 1}-{EXIT_SIGNAL_BASE + 64}",
     "the program was ended by signal N: 128 + N (SIGSEGV 139, SIGABRT 134, SIGKILL 137), "
     "after the kernel's report line for a fault"),
    (str(EXEC_HARNESS_FAILURE), "emu failed (bad input, a harness error) or the kernel "
                                "crashed, panicked, halted or ran out of its instruction "
                                "budget: the report is on stderr"),
    (str(EXEC_CANNOT_RUN), "the program cannot run: not a static x86-64 Linux executable "
                           "(also when the program itself exits with 126)"),
    (str(EXEC_NOT_FOUND), "the program does not exist (also when the program itself exits "
                          "with 127)"),
)


def exit_status(end: RunEnd, guest_value: int | None = None) -> int:
    """The process exit status for a run that ended with `end`."""
    if end is RunEnd.EXIT:
        value = guest_value if guest_value is not None else 0
        return min(value, EXIT_GUEST_MAX) if value >= 0 else EXIT_GUEST_MAX
    if end is RunEnd.INTERRUPTED:
        return EXIT_SIGNAL_BASE + (guest_value or int(signal.SIGINT))
    return EXIT_STATUS[end]


@dataclass(frozen=True, slots=True)
class RunResult:
    """A finished run. `report` is the crash report (empty for a clean exit)."""
    end: RunEnd
    exit_status: int               # what `emu run` exits with
    guest_value: int | None        # the value written to the debug-exit port (EXIT), or
                                   # the signal number (INTERRUPTED)
    instructions: int
    seconds: float
    exceptions: dict = field(default_factory=dict)     # vector -> deliveries
    report: str = ""
    message: str = ""
    counted: bool = True           # False with --no-count: `instructions` is meaningless

    @property
    def reason(self) -> str:
        """The ending's name, as traces and JSON spell it."""
        return self.end.value

    @property
    def mips(self) -> float:
        return self.instructions / self.seconds / 1e6 if self.seconds else 0.0
