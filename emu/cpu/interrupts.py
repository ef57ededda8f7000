"""External interrupts at exact instruction counts, held while RFLAGS.IF is clear.

Owns: the schedule of external interrupts (raised when exactly N instructions have
retired), holding one that comes due with IF clear until the first instruction that can set
IF retires (sti, with its one-instruction shadow; popf, iretq, sysret), and waking a halted
CPU with the next scheduled interrupt.
Does not own: delivery (delivery.py), running (core.py: it asks `next_due()` where to stop
and calls `deliver_due()` there), finding the IF-setting instructions (scan.py).
"""
from __future__ import annotations

import heapq
from typing import Callable

from unicorn import x86_const as X

from emu.cpu.delivery import Delivery
from emu.engine.icount import NEVER
from emu.x86 import RFLAGS_IF

# How many instructions after an IF-setting instruction starts an interrupt may be taken:
# sti holds interrupts off for one more instruction (its shadow, SDM vol. 2, STI).
IF_OPENERS = {"sti": 2, "popfq": 1, "popf": 1, "iretq": 1, "iret": 1, "sysretq": 1, "sysret": 1}
HELD_INTERRUPT_RETRY = 1000      # retry period when no IF-setting instruction is known


class InterruptSchedule:
    """Scheduled and held external interrupts of one CPU."""

    def __init__(self, uc, delivery: Delivery) -> None:
        self.uc = uc
        self.delivery = delivery
        self._scheduled: list[tuple[int, int, int]] = []   # (icount, sequence, vector)
        self._held: list[tuple[int, int]] = []    # (sequence, vector) waiting for IF
        self._openers: dict[int, int] = {}        # address of sti etc. -> shadow length
        self._exits_on = False
        self._sequence = 0

    def add_openers(self, openers: dict[int, int]) -> None:
        """Addresses of IF-setting instructions (found by the privileged scan)."""
        self._openers.update(openers)

    def schedule(self, at_icount: int, vector: int) -> None:
        self._sequence += 1
        heapq.heappush(self._scheduled, (at_icount, self._sequence, vector))

    def next_due(self) -> int:
        """The instruction count at which the next interrupt is due, or NEVER."""
        return self._scheduled[0][0] if self._scheduled else NEVER

    def deliver_due(self, icount: int) -> None:
        """Deliver every interrupt due at `icount`; hold the ones IF keeps out."""
        while self._scheduled and self._scheduled[0][0] <= icount:
            _, sequence, vector = self._scheduled[0]
            if self.delivery.external(vector):
                heapq.heappop(self._scheduled)
                continue
            # IF is clear: held until an instruction that can set IF retires. Without
            # known ones (code not scanned), try again later, deterministically.
            self._watch_openers()
            if self._exits_on:
                heapq.heappop(self._scheduled)
                self._held.append((sequence, vector))
            else:
                heapq.heapreplace(self._scheduled,
                                  (icount + HELD_INTERRUPT_RETRY, sequence, vector))

    def wake_from_halt(self) -> bool:
        """A halted CPU with IF set takes the next scheduled interrupt now. True if it did."""
        if not self._scheduled or not self.uc.reg_read(X.UC_X86_REG_EFLAGS) & RFLAGS_IF:
            return False
        _, _, vector = heapq.heappop(self._scheduled)
        self.delivery.external(vector)
        return True

    def step_over_opener(self, rip: int, now: Callable[[], int],
                         run_exactly: Callable[[int], None]) -> bool:
        """If the run stopped at an IF-setting instruction with an interrupt held, retire it
        (and the shadow) exactly with `run_exactly(target)`, and make the held interrupts
        due again at once. True if it did."""
        delay = self._openers.get(rip) if self._exits_on else None
        if delay is None:
            return False
        self._unwatch_openers()
        run_exactly(now() + delay)
        due = now()
        for sequence, vector in self._held:
            heapq.heappush(self._scheduled, (due, sequence, vector))
        self._held = []
        return True

    def _watch_openers(self) -> None:
        """Make the instructions that can set IF emulation exits, so the run stops right
        before each; they exist only while an interrupt is held."""
        if self._exits_on or not self._openers:
            return
        self.uc.ctl_exits_enabled(True)
        self.uc.ctl_set_exits(list(self._openers))
        self.uc.ctl_flush_tb()         # blocks translated earlier do not know the exits
        self._exits_on = True

    def _unwatch_openers(self) -> None:
        if self._exits_on:
            self.uc.ctl_exits_enabled(False)
            self.uc.ctl_flush_tb()
            self._exits_on = False
