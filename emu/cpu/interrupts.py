"""External interrupts: at exact instruction counts (scheduled through the API) and from the
machine's interrupt controller (the PC platform's timers and devices), held while
RFLAGS.IF is clear.

Owns: the schedule of external interrupts and of calls at exact counts (injections); asking the controller when it next needs a stop
and what to deliver (the INTA cycle); holding an interrupt that is due with IF clear until
the first instruction that can set IF retires (sti, with its one-instruction shadow; popf,
iretq, sysret); a stop requested because a device made an interrupt pending; waking a halted
CPU (fast-forwarding virtual time to the controller's next interrupt).
Does not own: delivery (delivery.py), running (core.py: it asks `next_due()` where to stop
and calls `deliver_due()` there), finding the IF-setting instructions (scan.py), the
devices (emu/hw).

Timing: an interrupt from a timer is taken exactly at its deadline (or as soon after as IF
allows). One a device access made pending (an EOI, an unmask, a self-IPI) is taken when
the run next stops: right after a port access, at the end of the translated block after an
MMIO access (Unicorn cannot stop between instructions of a block it is running).
"""
from __future__ import annotations

import heapq
from typing import Callable, Protocol

from unicorn import x86_const as X

from emu.cpu.delivery import Delivery
from emu.engine.icount import NEVER
from emu.x86 import RFLAGS_IF

# How many instructions after an IF-setting instruction starts an interrupt may be taken:
# sti holds interrupts off for one more instruction (its shadow, SDM vol. 2, STI).
IF_OPENERS = {"sti": 2, "popfq": 1, "popf": 1, "iretq": 1, "iret": 1, "sysretq": 1, "sysret": 1}
HELD_INTERRUPT_RETRY = 1000      # retry period when no IF-setting instruction is known


class InterruptController(Protocol):
    """The machine's source of external interrupts (emu/hw/platform.py), in the CPU's
    terms: instruction counts, not virtual ticks."""

    def next_due(self) -> int | None:
        """The instruction count at which a timer next needs attention, or None."""

    def catch_up(self) -> bool:
        """Bring the timers to now; True if an interrupt is pending (IF permitting)."""

    def acknowledge(self) -> int:
        """The INTA cycle: the vector to deliver."""

    def idle(self) -> bool:
        """A halted CPU with IF set: skip virtual time to the next interrupt; True if one
        is pending now, False if none will come (a dead halt)."""


class InterruptSchedule:
    """Scheduled, held and controller interrupts of one CPU."""

    def __init__(self, uc, delivery: Delivery,
                 trust_counts: Callable[[bool], None] = lambda trust: None) -> None:
        """`trust_counts(False)` while exit addresses are set (the instruction counter then
        decodes new blocks itself), `trust_counts(True)` after."""
        self.uc = uc
        self.delivery = delivery
        self.trust_counts = trust_counts
        self.controller: InterruptController | None = None
        self.attention = False                    # a device made an interrupt pending
        self._scheduled: list[tuple[int, int, int]] = []   # (icount, sequence, vector)
        self._calls: list[tuple[int, int, Callable[[], None]]] = []   # (icount, seq, fn)
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

    def call_at(self, at_icount: int, callback: Callable[[], None]) -> None:
        """Call `callback` between instructions when exactly `at_icount` have retired."""
        self._sequence += 1
        heapq.heappush(self._calls, (at_icount, self._sequence, callback))

    def next_due(self) -> int:
        """The instruction count at which the next interrupt or call is due, or NEVER."""
        due = self._scheduled[0][0] if self._scheduled else NEVER
        if self._calls:
            due = min(due, self._calls[0][0])
        if self.controller is not None:
            timer = self.controller.next_due()
            if timer is not None:
                due = min(due, timer)
        return due

    def deliver_due(self, icount: int) -> None:
        """Deliver every scheduled interrupt due at `icount` and what the controller has;
        hold what IF keeps out. Calls due come first."""
        self.attention = False
        while self._calls and self._calls[0][0] <= icount:
            heapq.heappop(self._calls)[2]()
        while self._scheduled and self._scheduled[0][0] <= icount:
            _, sequence, vector = self._scheduled[0]
            if self.delivery.external(vector):
                heapq.heappop(self._scheduled)
                continue
            if not self._hold():       # no known IF-setting instruction: retry later
                heapq.heapreplace(self._scheduled,
                                  (icount + HELD_INTERRUPT_RETRY, sequence, vector))
                break
            heapq.heappop(self._scheduled)
            self._held.append((sequence, vector))
        if self.controller is not None and self.controller.catch_up():
            if self._interrupts_enabled():
                self.delivery.external(self.controller.acknowledge())
            else:
                self._hold()          # taken when an IF-setting instruction retires

    def wake_from_halt(self) -> bool:
        """A halted CPU with IF set takes the next interrupt now (virtual time skips to
        the controller's next one). True if it did; False: a dead halt."""
        if not self._interrupts_enabled():
            return False
        if self._scheduled:
            _, _, vector = heapq.heappop(self._scheduled)
            self.delivery.external(vector)
            return True
        if self.controller is not None and self.controller.idle():
            self.delivery.external(self.controller.acknowledge())
            return True
        return False

    def wake_after_stop(self, icount: int, rip: Callable[[], int]) -> bool:
        """A run that starts right after a `hlt` (a stop landed there): take what is due
        now, else skip to the next interrupt. False: a dead halt."""
        before = rip()
        if self.attention or icount >= self.next_due():
            self.deliver_due(icount)
        return rip() != before or self.wake_from_halt()

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

    # A snapshot holds the schedule, and whether the IF-setting instructions are watched.
    # The watch itself is Unicorn's (its exit list), which no snapshot of registers or RAM
    # holds: a restore must switch it to what the snapshot says, or Unicorn stops at an
    # `iretq` for an interrupt held in another timeline (or fails to stop for one here).
    def snapshot_state(self) -> tuple:
        return (self.attention, list(self._scheduled), list(self._calls), list(self._held),
                dict(self._openers), self._exits_on, self._sequence)

    def restore_state(self, state: tuple) -> None:
        (self.attention, scheduled, calls, held, openers, exits_on, self._sequence) = state
        self._scheduled, self._calls = list(scheduled), list(calls)
        self._held, self._openers = list(held), dict(openers)
        if exits_on:
            self._watch_openers()        # no-op when Unicorn's exits are on already
        else:
            self._unwatch_openers()

    def waiting_for_if(self) -> bool:
        """IF is clear and the IF-setting instructions are watched: whatever the controller
        has pending is taken when one of them retires, so no stop is needed now."""
        return self._exits_on and not self._interrupts_enabled()

    def _interrupts_enabled(self) -> bool:
        return bool(self.uc.reg_read(X.UC_X86_REG_EFLAGS) & RFLAGS_IF)

    def _hold(self) -> bool:
        """Watch the IF-setting instructions; False if none are known."""
        self._watch_openers()
        return self._exits_on

    def _watch_openers(self) -> None:
        """Make the instructions that can set IF emulation exits, so the run stops right
        before each; they exist only while an interrupt is held."""
        if self._exits_on or not self._openers:
            return
        self.uc.ctl_exits_enabled(True)
        self.uc.ctl_set_exits(list(self._openers))
        self.uc.ctl_flush_tb()         # blocks translated earlier do not know the exits
        self._exits_on = True
        self.trust_counts(False)       # a block cut short by an exit reports one too many

    def _unwatch_openers(self) -> None:
        if self._exits_on:
            self.uc.ctl_exits_enabled(False)
            self.uc.ctl_flush_tb()
            self._exits_on = False
            self.trust_counts(True)
