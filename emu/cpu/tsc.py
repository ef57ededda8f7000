"""The time stamp counter, virtualized: RDTSC and RDTSCP read host time in Unicorn, which
would make runs differ; here they read the instruction count.

Owns: the RDTSC/RDTSCP hooks (Unicorn's C API: the binding does not wrap these hooks) and
the value they return: virtual time (emu/hw/clock.py: one tick per retired instruction
before the RDTSC, plus the instructions skipped while halted) or, when nothing is counted
(--no-count), the number of reads so far, so that time still moves and a calibration loop
waiting for the TSC ends.
Does not own: the count itself (counting.py).
"""
from __future__ import annotations

from unicorn import x86_const as X

from emu.cpu.counting import ExactCount
from emu.cpu.state import CpuState
from emu.engine.guard import NO_OPERANDS, HookGuard
from emu.hw.clock import VirtualClock

RDTSCP = b"\x0f\x01\xf9"
_SKIP_UNICORNS_OWN = 1


class TimeStampCounter:
    def __init__(self, uc, guard: HookGuard, state: CpuState, count: ExactCount,
                 clock: VirtualClock) -> None:
        self.uc = uc
        self.state = state
        self.count = count
        self.clock = clock
        self.reads = 0
        for instruction in (X.UC_X86_INS_RDTSC, X.UC_X86_INS_RDTSCP):
            guard.hook_instruction(instruction, NO_OPERANDS, self._on_rdtsc, on_error=1)

    def _on_rdtsc(self, _handle, _data) -> int:
        rip = self.state.fast_reg(X.UC_X86_REG_RIP)
        self.reads += 1
        tsc = self.count.time_stamp(rip) + self.clock.skipped if self.count.counting \
            else self.reads
        self.uc.reg_write(X.UC_X86_REG_RAX, tsc & 0xFFFFFFFF)
        self.uc.reg_write(X.UC_X86_REG_RDX, tsc >> 32)
        if self.state.read_virtual(rip, len(RDTSCP)) == RDTSCP:   # RDTSCP also loads TSC_AUX
            self.uc.reg_write(X.UC_X86_REG_RCX, 0)
        return _SKIP_UNICORNS_OWN
