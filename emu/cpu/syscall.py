"""SYSCALL, as the CPU executes it (Intel SDM vol. 2, SYSCALL): Unicorn runs it as a no-op.

Owns: the SYSCALL instruction's effect (RCX and R11 saved, RFLAGS masked by FMASK, CS and SS
from STAR, CPL 0, RIP from LSTAR; #UD without EFER.SCE).
Does not own: SYSRET (Unicorn runs it natively), the count (counting.py), the #UD delivery
itself (delivery.py).
"""
from __future__ import annotations

import struct

from unicorn import x86_const as X

from emu.cpu.counting import ExactCount
from emu.cpu.delivery import Delivery
from emu.engine.context import CC_OP_EFLAGS, HF_CPL_MASK
from emu.events import SYSCALL_VECTOR
from emu.x86 import (DESC_ACCESSED, DESC_B, DESC_CODE, DESC_G, DESC_L, DESC_P, DESC_RW,
                     DESC_S, EFER_SCE, INVALID_OPCODE, RFLAGS_ARITH, RFLAGS_DF, RFLAGS_FIXED,
                     RFLAGS_RF, SYSCALL_LENGTH)

U32 = struct.Struct("<I")
I32 = struct.Struct("<i")
U64 = struct.Struct("<Q")
SEGMENT_CACHE = struct.Struct("<IxxxxQII")
_FLAT_LIMIT = 0xFFFFFFFF
_CODE64 = DESC_G | DESC_P | DESC_S | DESC_CODE | DESC_RW | DESC_ACCESSED | DESC_L
_DATA = DESC_G | DESC_B | DESC_P | DESC_S | DESC_RW | DESC_ACCESSED


class SyscallEmulation:
    """The UC_HOOK_INSN callback for SYSCALL."""

    def __init__(self, delivery: Delivery, count: ExactCount) -> None:
        self.delivery = delivery
        self.count = count
        self.context = delivery.context
        self.layout = delivery.layout
        self.fast_reg = delivery.state.fast_reg

    def on_syscall(self, uc, _data) -> None:
        """Unicorn adds the instruction's length to RIP after this hook: the new RIP is
        written that much short."""
        env = self.context.save()
        lay = self.layout
        rip = U64.unpack_from(env, lay.eip)[0]
        self.count.settle(rip + SYSCALL_LENGTH)
        if not U64.unpack_from(env, lay.efer)[0] & EFER_SCE:
            self.delivery.fault(env, INVALID_OPCODE, None, rip, eip_bias=SYSCALL_LENGTH)
            return
        rflags = self.fast_reg(X.UC_X86_REG_EFLAGS)
        star = U64.unpack_from(env, lay.star)[0]
        lstar = U64.unpack_from(env, lay.lstar)[0]
        fmask = U64.unpack_from(env, lay.fmask)[0]
        hflags = U32.unpack_from(env, lay.hflags)[0]
        U64.pack_into(env, lay.reg("rcx"), rip + SYSCALL_LENGTH)
        U64.pack_into(env, lay.reg("r11"), rflags & ~RFLAGS_RF)
        new_flags = rflags & ~fmask & ~RFLAGS_RF
        U64.pack_into(env, lay.eflags, (new_flags & ~(RFLAGS_ARITH | RFLAGS_DF)) | RFLAGS_FIXED)
        U64.pack_into(env, lay.cc_src, new_flags & RFLAGS_ARITH)
        U32.pack_into(env, lay.cc_op, CC_OP_EFLAGS)
        I32.pack_into(env, lay.df, -1 if new_flags & RFLAGS_DF else 1)
        selector = (star >> 32) & 0xFFFC
        SEGMENT_CACHE.pack_into(env, lay.seg("cs"), selector, 0, _FLAT_LIMIT, _CODE64)
        SEGMENT_CACHE.pack_into(env, lay.seg("ss"), selector + 8, 0, _FLAT_LIMIT, _DATA)
        U32.pack_into(env, lay.hflags, hflags & ~HF_CPL_MASK)
        U64.pack_into(env, lay.eip, lstar - SYSCALL_LENGTH)
        frame = self.delivery.syscall_frame(env)
        self.context.restore()
        self.delivery.record_syscall(SYSCALL_VECTOR, rip, hflags & HF_CPL_MASK, lstar, frame)
