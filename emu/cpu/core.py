"""The CPU: Unicorn plus everything a real x86-64 CPU does that Unicorn does not, and the
run loop that lands every stop on an exact instruction.

Owns: putting the parts together (state.py, counting.py, system.py, delivery.py,
syscall.py, iogate.py, interrupts.py, scan.py, tsc.py) and running: `run(budget)` emulates
until the guest asks to stop, halts for good, or `budget` instructions retire, and returns
how it ended (a RunEnd); guest crashes are raised as GuestError.
Does not own: devices (emu/hw), booting (emu/boot), turning an ending into a result and a
report (emu/machine.py).

Exact stops: the counting hook stops Unicorn before the block that would reach the next
stop point (budget or scheduled interrupt) runs; the rest is single-stepped with Unicorn's
exact instruction count, so both land on the exact instruction.
"""
from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Callable, Iterable

from unicorn import UC_HOOK_INSN, UC_HOOK_INSN_INVALID, UC_HOOK_INTR, UcError
from unicorn import x86_const as X

from emu.cpu.counting import ExactCount
from emu.cpu.cpuid import CpuidModel
from emu.cpu.delivery import Delivery
from emu.cpu.interrupts import InterruptController, InterruptSchedule
from emu.cpu.msr import MsrHooks
from emu.cpu.iogate import IoPermission
from emu.cpu.scan import PrivilegedWatch
from emu.cpu.state import CpuState, Registers
from emu.cpu.syscall import SyscallEmulation
from emu.cpu.system import SystemMemory
from emu.cpu.tsc import TimeStampCounter
from emu.engine.context import ContextBuffer, layout
from emu.engine.guard import HookGuard
from emu.engine.icount import NEVER
from emu.errors import EmuError, EngineError, GuestError
from emu.events import EventBus, ExceptionDelivered
from emu.hw.clock import DEFAULT_IPS, VirtualClock
from emu.hw.memory import PhysicalMemory
from emu.result import RunEnd
from emu.x86 import PAGE_FAULT

if TYPE_CHECKING:
    from emu.hw.platform import PcPlatform as Platform

I32 = struct.Struct("<i")
U64 = struct.Struct("<Q")
_RIP = X.UC_X86_REG_RIP       # read at every event stamp: a global, not two lookups
NOWHERE = (1 << 64) - 1        # emu_start's "until": a non-canonical address is never reached
_CR2_OFFSET = 16

__all__ = ["Cpu", "NOWHERE", "Registers"]


class Cpu:
    """One x86-64 CPU over `memory`. Construct, set the boot state, then `run()`."""

    def __init__(self, uc, memory: PhysicalMemory, events: EventBus, guard: HookGuard,
                 count: bool = True, ips: int = DEFAULT_IPS) -> None:
        self.uc = uc
        self.memory = memory
        self.events = events
        self.guard = guard
        self.context = ContextBuffer(uc, layout())
        self.state = CpuState(uc, memory, self.context)
        self.count = ExactCount(uc, self.state, count)
        self.system = SystemMemory(memory, self.context.layout)
        self.delivery = Delivery(self.state, self.count, self.system, events)
        self.interrupts = InterruptSchedule(uc, self.delivery, self.count.counter.trust_unicorn)
        self.io = IoPermission(uc, self.state, self.count, self.delivery)
        self._privileged = PrivilegedWatch(uc, guard, self.state, self.count, self.system,
                                           events, on_new_root=self.count.forget_code,
                                           syscall_frame=lambda: self.delivery.syscall_frame(
                                               self.context.save()))
        self._syscall = SyscallEmulation(self.delivery, self.count)
        self.clock = VirtualClock(self.now, ips)
        self.tsc = TimeStampCounter(uc, guard, self.state, self.count, self.clock)
        self.msrs = MsrHooks(uc, guard, self.count)
        events.clock = self.now
        self.stop_reason: RunEnd | None = None
        self.exit_value: int | None = None
        self._stopped_at: int | None = None    # the exact count of a stop made mid-block
        self._port_stop = False                # stopped right after a port access
        self._halt_pending = False             # a run stopped right after a `hlt`
        # The read side, for monitors and reports (see state.py).
        state = self.state
        self.reg, self.registers, self.cpl, self.cr3 = state.reg, state.registers, \
            state.cpl, state.cr3
        self.paging_enabled, self.nxe, self.walk = state.paging_enabled, state.nxe, state.walk
        self.translate, self.read_virtual = state.translate, state.read_virtual
        self.tlb_translation = state.tlb_translation
        self.time_stamp = self.count.time_stamp
        uc.hook_add(UC_HOOK_INTR, guard.wrap(self.delivery.on_interrupt))
        uc.hook_add(UC_HOOK_INSN_INVALID, guard.wrap(self.delivery.on_invalid_opcode,
                                                     on_error=True))
        uc.hook_add(UC_HOOK_INSN, guard.wrap(self._syscall.on_syscall), None, 1, 0,
                    X.UC_X86_INS_SYSCALL)

    # ---- what others see ----------------------------------------------------------------

    @property
    def counter(self):
        """The block counter (emu/engine/icount.py) behind the exact count."""
        return self.count.counter

    @property
    def exceptions_by_vector(self) -> dict[int, int]:
        return self.delivery.exceptions_by_vector

    @property
    def last_exception(self) -> ExceptionDelivered | None:
        return self.delivery.last_exception

    def icount(self) -> int:
        """Instructions retired, exact between runs and in exception delivery."""
        return self.count.counter.raw

    def now(self) -> int:
        """Instructions retired before the current instruction, exact inside any hook whose
        RIP is exact (port and MMIO accesses, code hooks, delivery): the events' clock."""
        return self.count.time_stamp(self.state.fast_reg(_RIP))

    def watch_privileged(self, ranges: Iterable[tuple[int, int]]) -> int:
        """Hook exactly the CR3 writes and `invlpg`s found in `ranges` (virtual start, end)
        of executable guest code, and note its IF-setting instructions. Returns how many
        CR3 writes and invlpgs were found."""
        found = self._privileged.scan(ranges)
        self.interrupts.add_openers(found.if_openers)
        self.msrs.watch(found.rdmsrs, found.wrmsrs)
        return len(found.cr3_writes) + len(found.invlpgs)

    def attach_controller(self, controller: InterruptController) -> None:
        """The machine's interrupt controller (the PC platform): the run loop stops at its
        deadlines and delivers what it acknowledges."""
        self.interrupts.controller = controller

    def attach_platform(self, platform: "Platform", bus) -> None:
        """Run a platform (emu/hw/platform.py) on this CPU: its devices go on `bus` (an access
        that leaves an interrupt pending stops the CPU: see `request_attention`), a device
        arming an earlier deadline moves the run loop's next stop, its MSRs and CPUID facts
        are answered. The platform must run on this CPU's `clock`."""
        def after_access(mmio: bool) -> None:
            if platform.interrupts.pending() and not self.interrupts.waiting_for_if():
                self.request_attention(mmio)
        platform.install(bus, after_access)
        self.clock.on_wake = lambda tick: self.deadline_moved(tick - self.clock.skipped)
        self.attach_controller(platform)
        self.msrs.owner = platform
        self._cpuid = CpuidModel(self.uc, self.guard, platform.cpuid())

    def schedule_interrupt(self, at_icount: int, vector: int) -> None:
        """Raise external interrupt `vector` when exactly `at_icount` instructions have
        retired (or as soon after as RFLAGS.IF allows)."""
        if not self.count.counting:
            raise EmuError("interrupts at instruction counts need instruction counting "
                           "(do not turn it off)")
        self.interrupts.schedule(at_icount, vector)

    def call_at(self, at_icount: int, callback: Callable[[], None]) -> None:
        """Call `callback` between instructions when exactly `at_icount` have retired (a
        fault injection at an instruction count). Never, if the guest halts for good
        first."""
        if not self.count.counting:
            raise EmuError("calls at instruction counts need instruction counting "
                           "(do not turn it off)")
        self.interrupts.call_at(at_icount, callback)

    def return_from_call(self, value: int) -> None:
        """From a code hook at a function's first instruction: return `value` in RAX to
        the caller without running the function (the SysV convention; fail-function
        injection). The hooked instruction does not retire."""
        rip = self.state.fast_reg(X.UC_X86_REG_RIP)
        rsp = self.state.fast_reg(X.UC_X86_REG_RSP)
        return_address = U64.unpack(self.read_virtual(rsp, 8))[0]
        self.count.settle(rip)
        self.uc.reg_write(X.UC_X86_REG_RAX, value & ((1 << 64) - 1))
        self.uc.reg_write(X.UC_X86_REG_RSP, rsp + 8)
        self.uc.reg_write(X.UC_X86_REG_RIP, return_address)

    def forget_code(self) -> None:
        """Guest memory changed behind the CPU's back (an injected bit flip): drop the
        translated code and the cached block counts, so code runs as it is now."""
        self.uc.ctl_flush_tb()
        self.count.forget_code()

    def raise_page_fault(self, address: int, error_code: int) -> None:
        """Between instructions: deliver #PF for `address` at the next instruction, which
        does not retire (a spurious page fault; the guest's handler resumes it)."""
        env = self.context.save()
        U64.pack_into(env, self.context.layout.cr + _CR2_OFFSET, address)
        self.delivery.fault(env, PAGE_FAULT, error_code, self.state.fast_reg(X.UC_X86_REG_RIP))

    def raise_interrupt(self, vector: int) -> bool:
        """Deliver an external interrupt now, between instructions. False if IF is clear."""
        return self.delivery.external(vector)

    def request_stop(self, end: RunEnd, value: int | None = None,
                     in_instruction: bool = False) -> None:
        """Stop; `run()` returns `end` (a device's debug exit with its `value`, a
        checker's violation, an interrupt). `in_instruction`: called from a port or MMIO
        access, whose instruction retires. The run then ends right after it, whatever
        Unicorn runs of the rest of its translated block before it can stop (the
        instruction count says so: the same with or without --check-every). Otherwise the
        run ends before the next instruction."""
        if self.stop_reason is not None:
            return                          # the first reason stands
        self.stop_reason = end
        self.exit_value = value
        self.guard.ended = True             # what Unicorn runs after this has no effect
        if in_instruction:
            self._stopped_at = self.count.time_stamp(self.state.fast_reg(X.UC_X86_REG_RIP)) + 1
        self.uc.emu_stop()

    # ---- running ------------------------------------------------------------------------

    def run(self, budget: int = NEVER) -> RunEnd:
        """Run until the guest asks to stop, halts for good (HALT), or `budget` instructions
        retire (BUDGET). Raises GuestError subclasses for crashes."""
        if budget != NEVER and not self.count.counting:
            raise EmuError("an instruction budget needs instruction counting (do not turn "
                           "it off)")
        self._budget = budget
        if self._halt_pending:
            self._halt_pending = False
            if not self.interrupts.wake_after_stop(self.icount(), self.state.rip):
                return RunEnd.HALT
        while self.stop_reason is None:
            self.count.counter.request_stop_at(min(budget, self.interrupts.next_due()))
            if self.stop_reason is not None:    # a signal's stop came in between
                break
            self._emulate(self.uc.reg_read(X.UC_X86_REG_RIP))
            ended = self._stop_cause(budget)
            if ended is not None:
                return ended
        return self.stop_reason

    def _stop_cause(self, budget: int) -> RunEnd | None:
        """Why emu_start returned; None when the run goes on (an interrupt was delivered,
        guards were added, an IF-setting instruction was stepped over)."""
        port_stop, self._port_stop = self._port_stop, False
        if self.stop_reason is not None:
            return self.stop_reason
        if self.io.finish_stop():
            return None
        if self.interrupts.step_over_opener(self.state.rip(), self.icount, self._run_exactly):
            if self.stop_reason is None:
                self.interrupts.deliver_due(self.icount())
            return self.stop_reason
        counter = self.count.counter
        stop_at = counter.state.stop_at           # moved earlier if a timer was armed since
        planned = counter.stop_requested          # the counter reached the stop we asked for
        if planned and self.icount() < stop_at:
            self._run_exactly(stop_at)
            if self.stop_reason is not None:
                return self.stop_reason
        icount = self.icount()
        if icount >= budget:
            # A `hlt` retired just now is the next run's to act on, as if no stop came.
            self._halt_pending = self._halted()
            return RunEnd.BUDGET
        if self.interrupts.attention or icount >= self.interrupts.next_due():
            # An MMIO access asks for a stop at the next block, but a `hlt` can end its
            # block first: if nothing is taken now, the CPU stays halted.
            halted = not planned and not port_stop and self._halted()
            rip = self.state.rip()
            self.interrupts.deliver_due(icount)
            if halted and self.state.rip() == rip:
                return None if self.interrupts.wake_from_halt() else RunEnd.HALT
            return None
        if planned:     # a deadline since cancelled (a timer stopped): nothing is due
            return None
        if self._halted():
            return None if self.interrupts.wake_from_halt() else RunEnd.HALT
        raise EngineError(f"unicorn stopped at RIP {self.state.rip():#x} for no known reason")

    def request_attention(self, mmio: bool = False) -> None:
        """A device access made an interrupt pending: stop so that it can be taken (the run
        loop delivers it, or holds it while IF is clear). After a port access Unicorn stops
        right after the instruction. An MMIO access must not stop Unicorn from inside it:
        Unicorn 2.1 then leaves with RIP at the start of the translated block and runs the
        block again, the access included (a self-IPI or an EOI made twice, or forever); the
        counter stops before the next block instead (with --no-count: at the next stop)."""
        if mmio:
            self.interrupts.attention = True
            self.count.counter.lower_stop_at(self.count.counter.raw)
        elif not self.interrupts.attention:
            self.interrupts.attention = True
            self._port_stop = True
            self.uc.emu_stop()

    def deadline_moved(self, icount: int) -> None:
        """A timer was armed for `icount`, earlier than the run planned to stop: the counter
        stops there instead (it reads its target before every block)."""
        self.count.counter.lower_stop_at(icount)

    def _emulate(self, start: int, count: int = 0) -> None:
        try:
            self.uc.emu_start(start, NOWHERE, 0, count)
            self._repair_after_stop()
        except UcError as exc:
            self._reraise_at_rip()
            if self.count.counter.error is not None:
                raise self.count.counter.error
            if self.stop_reason is None:
                raise EngineError(f"unicorn stopped: {exc}") from None
            # else: an access with nothing behind it after the run had ended (its hook
            # did nothing): the run ends as it was asked to.
        self._reraise_at_rip()
        if self.count.counter.error is not None:
            error, self.count.counter.error = self.count.counter.error, None
            raise error
        self.count.settle(self.uc.reg_read(X.UC_X86_REG_RIP))
        if self._stopped_at is not None and self.count.counting:
            self.count.counter.adjust(self._stopped_at - self.count.counter.raw)
            self._stopped_at = None

    def _reraise_at_rip(self) -> None:
        """Re-raise what a hook raised; a guest crash first makes the count exact at the
        instruction that crashed (hooks that raise one see an exact RIP), so the run's
        count and the trace's GuestExit name that instruction, which did not retire."""
        try:
            self.guard.reraise()
        except GuestError:
            self.count.settle(self.uc.reg_read(X.UC_X86_REG_RIP))
            raise

    def _repair_after_stop(self) -> None:
        """When emu_start returns, Unicorn has probed the `until` address as a page fault:
        CR2 = until - 1 and QEMU's in-flight exception = #PF, which would turn the guest's
        next page fault into a #DF. Put back the guest's CR2 and clear that state."""
        env = self.context.save()
        U64.pack_into(env, self.context.layout.cr + _CR2_OFFSET, self.delivery.guest_cr2)
        I32.pack_into(env, self.context.layout.old_exception, -1)
        self.context.restore()

    def _run_exactly(self, target: int) -> None:
        """Single-step (Unicorn's exact count) up to `target` retired instructions."""
        while self.icount() < target and self.stop_reason is None:
            self.count.counter.request_stop_at(NEVER)
            # Blocks translated before carry no count check and chain to each other (a
            # `jmp $` would spin forever): drop them so the count is honoured.
            self.uc.ctl_flush_tb()
            self._emulate(self.uc.reg_read(X.UC_X86_REG_RIP), count=target - self.icount())
            if self._halted():
                break

    def _halted(self) -> bool:
        """Is the instruction just retired a `hlt`? Decoded from the counter's last block;
        without counting, only the byte before RIP can say (CpuState.block_ends_in_hlt)."""
        header = self.count.counter.state
        return self.state.block_ends_in_hlt(header.last_block, header.last_size) \
            if self.count.counting else self.state.byte_before_rip_is_hlt()
