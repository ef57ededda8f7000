"""The I/O permission check of user-mode IN/OUT/INS/OUTS (Intel SDM vol. 1, 19.5), which
Unicorn skips: at CPL > IOPL, every bit of the accessed ports must be clear in the TSS I/O
permission bitmap, else #GP(0) before the instruction has any effect.

Owns: deciding permission (the bus asks through its IoGate protocol), undoing a refused
access and delivering the #GP at the instruction, and the block guards that make that
possible.
Does not own: the ports themselves (emu/hw/bus.py) or delivery (delivery.py).

How: an I/O hook cannot raise #GP: the rest of its translated block would run first. So
each new block that runs at CPL 3 is scanned (the counter shows it once); an I/O
instruction with more of the block after it gets a code hook on the next instruction, whose
exit check ends the block there, and the block is translated again. A denied access then
stops the run right after the instruction, which is undone and turned into #GP(0). Without
the counter (--no-count) nothing shows the blocks and the check is off: asking for the CPL
on every port access would cost the kernel's serial output more than the speed --no-count
is for. One order differs from hardware: INS and OUTS touch their memory operand before the
port (QEMU's restartable string I/O), so a #PF there comes before the #GP.
"""
from __future__ import annotations

import struct

from capstone import CS_ARCH_X86, CS_MODE_64, Cs
from unicorn import UC_HOOK_CODE
from unicorn import x86_const as X

from emu.cpu.counting import ExactCount
from emu.cpu.delivery import Delivery
from emu.cpu.state import CpuState
from emu.errors import CpuFault, GuestMemoryError
from emu.x86 import (DESC_P, DESC_TYPE_SHIFT, GENERAL_PROTECTION, RFLAGS_IOPL_SHIFT,
                     TSS_IO_MAP_BASE, TSS_MIN_LIMIT, TSS_TYPES)

U64 = struct.Struct("<Q")
IO_INSTRUCTIONS = frozenset({"in", "out", "insb", "insw", "insd", "outsb", "outsw", "outsd"})
STRING_IO = ("ins", "outs")
SCAN_CACHE_LIMIT = 1 << 14


def _nothing(*_args) -> None:
    """A code hook that only makes Unicorn check for a stop request at its address."""


def _is_io(mnemonic: str) -> bool:
    return mnemonic.rsplit(" ", 1)[-1] in IO_INSTRUCTIONS      # `rep insb` included


class IoPermission:
    """Implements the bus's IoGate protocol: `io_checks`, `permits_io`, `deny_io`."""

    def __init__(self, uc, state: CpuState, count: ExactCount, delivery: Delivery) -> None:
        self.uc = uc
        self.state = state
        self.count = count
        self.delivery = delivery
        self.system = delivery.system
        self.io_checks = False            # on once a block runs at CPL 3 (counted runs only)
        self._disasm = Cs(CS_ARCH_X86, CS_MODE_64)
        self._guards: dict[int, int] = {}            # address after an I/O instruction -> hook
        self._stale_blocks: list[tuple[int, int]] = []    # to translate again, with guards
        self._denied: tuple[int, int, int, int] | None = None    # rip, rsi, rdi, rcx
        self._scans: dict[bytes, tuple[int, ...]] = {}   # code -> _io_ends (a value cache)
        if count.counting:
            count.counter.watch_user_blocks(self.on_user_block)

    def on_user_block(self, address: int, size: int) -> bool:
        """A new block at CPL 3. True: stop before it runs (it gained guards)."""
        self.io_checks = True
        try:
            code = self.state.read_virtual(address, size)
        except GuestMemoryError:
            return False
        added = False
        for offset in self._io_ends(code):
            after = address + offset
            if after not in self._guards:
                self._guards[after] = self.uc.hook_add(UC_HOOK_CODE, _nothing, None, after,
                                                       after)
                added = True
        if added:
            self._stale_blocks.append((address, address + size))
        return added

    def _io_ends(self, code: bytes) -> tuple[int, ...]:
        """Offsets in `code` just after each I/O instruction with more code after it.
        Decoded once per distinct block: a block is shown again after every switch of
        address space (the counter forgets), mostly the same bytes."""
        found = self._scans.get(code)
        if found is None:
            found = tuple(at + length for at, length, mnemonic, _
                          in self._disasm.disasm_lite(code, 0)
                          if _is_io(mnemonic) and at + length < len(code))
            if len(self._scans) >= SCAN_CACHE_LIMIT:
                self._scans.clear()
            self._scans[code] = found
        return found

    def permits_io(self, port: int, size: int) -> bool:
        """The I/O permission check of the current instruction: CPL <= IOPL, or every bit
        of the accessed ports clear in the TSS I/O permission bitmap."""
        fast_reg = self.state.fast_reg
        cpl = fast_reg(X.UC_X86_REG_CS) & 3
        if cpl == 0 or cpl <= (fast_reg(X.UC_X86_REG_EFLAGS) >> RFLAGS_IOPL_SHIFT) & 3:
            return True
        env = self.state.context.save()
        lay = self.state.layout
        base = U64.unpack_from(env, lay.tr + 8)[0]
        limit, flags = struct.unpack_from("<II", env, lay.tr + 16)
        if not flags & DESC_P or (flags >> DESC_TYPE_SHIFT) & 0xF not in TSS_TYPES or \
                limit < TSS_MIN_LIMIT:
            return False
        try:
            io_map = int.from_bytes(self.system.read(env, base + TSS_IO_MAP_BASE, 2), "little")
            offset = io_map + port // 8
            if offset + 1 > limit:          # both bytes must lie inside the TSS
                return False
            bits = int.from_bytes(self.system.read(env, base + offset, 2), "little")
        except CpuFault:
            return False
        return not bits & (((1 << size) - 1) << (port & 7))

    def deny_io(self, size: int, is_in: bool) -> int:
        """Called from the I/O hook for an access permits_io refused: remember the
        instruction, stop after it, and return what an IN hands Unicorn (the destination's
        current contents, so that the undone instruction changed nothing)."""
        fast_reg = self.state.fast_reg
        rip = fast_reg(X.UC_X86_REG_RIP)
        rsi, rdi, rcx = (fast_reg(r) for r in (X.UC_X86_REG_RSI, X.UC_X86_REG_RDI,
                                               X.UC_X86_REG_RCX))
        self._denied = (rip, rsi, rdi, rcx)
        self.uc.emu_stop()
        if not is_in:
            return 0
        mask = (1 << (8 * size)) - 1
        mnemonic = self.state.mnemonic_at(rip) or ""
        if mnemonic.rsplit(" ", 1)[-1].startswith(STRING_IO):   # INS stores at [RDI]
            try:
                return int.from_bytes(self.state.read_virtual(rdi, size), "little")
            except GuestMemoryError:
                return 0
        return fast_reg(X.UC_X86_REG_RAX) & mask

    def finish_stop(self) -> bool:
        """After emu_start returned: translate guarded blocks again, deliver a pending #GP.
        True if the run stopped for one of these."""
        handled = bool(self._stale_blocks)
        for start, end in self._stale_blocks:
            self.uc.ctl_remove_cache(start, end)
        self._stale_blocks.clear()
        if self._denied is not None:
            self._deliver_denied()
            handled = True
        return handled

    def _deliver_denied(self) -> None:
        rip, rsi, rdi, rcx = self._denied
        self._denied = None
        self.count.settle(rip)                 # the denied instruction did not retire
        env = self.state.context.save()
        lay = self.state.layout
        for name, value in (("rsi", rsi), ("rdi", rdi), ("rcx", rcx)):   # string I/O moved them
            U64.pack_into(env, lay.reg(name), value)
        U64.pack_into(env, lay.eip, rip)
        self.delivery.fault(env, GENERAL_PROTECTION, 0, rip)
