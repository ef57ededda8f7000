"""Exact instruction counts on top of the per-block counter (emu/engine/icount.py).

Owns: the count of retired instructions at any stop (the counter adds a block's count when
the block starts, so a stop in the middle of a block, at an exception, an exit or a port
access, subtracts the part that did not run), the virtual time stamp of an instruction, and
forgetting cached block counts when the code behind an address may have changed.
Does not own: the C counter itself, or deciding where to stop (the run loop).
"""
from __future__ import annotations

from unicorn.x86_const import UC_X86_REG_RIP

from emu.cpu.state import CpuState
from emu.engine.icount import InstructionCounter, NoInstructionCounter
from emu.errors import GuestMemoryError

_REST_CACHE_LIMIT = 1 << 16


class ExactCount:
    """`icount()` is exact after `settle(resume_at)`; `time_stamp(rip)` is exact inside any
    hook whose RIP is exact (port I/O, code hooks)."""

    def __init__(self, uc, state: CpuState, count: bool) -> None:
        self.state = state
        self.counter = InstructionCounter(uc, self._count_block) if count \
            else NoInstructionCounter()
        self.counting = self.counter.counting
        self._header = self.counter.state          # the counter's live state (one object)
        self._rest_of_block: dict[tuple[int, int, int], int] = {}
        self._rest_after_port: dict[tuple[int, int], int] = {}    # 0: ask with RIP

    def _count_block(self, address: int, size: int) -> int:
        """The counter's fallback when Unicorn cannot say how many instructions a new block
        holds: decode it."""
        return self.state.count_instructions(address, size) or 1

    def icount(self) -> int:
        return self.counter.raw

    def not_retired(self, resume_at: int) -> int:
        """Instructions of the last counted block from `resume_at` to its end: they were
        counted when the block started but did not run."""
        header = self.counter.state
        block, size = header.last_block, header.last_size
        if not block <= resume_at < block + size:
            return 0
        key = (block, size, resume_at)
        rest = self._rest_of_block.get(key)
        if rest is None:
            try:
                rest = self.state.count_instructions(resume_at, block + size - resume_at)
            except GuestMemoryError:
                return 0
            if len(self._rest_of_block) > _REST_CACHE_LIMIT:
                self._rest_of_block.clear()
            self._rest_of_block[key] = rest
        return rest

    def settle(self, resume_at: int) -> None:
        """Make the count exact when the last block stopped before `resume_at`'s remainder."""
        rest = self.not_retired(resume_at)
        if rest:
            self.counter.adjust(-rest)
            header = self.counter.state
            # The last block is now the part that ran: settled once, and a later block
            # with the same (address, size) gets the right count from the C fast path.
            header.last_size = resume_at - header.last_block
            header.last_count -= rest

    def time_stamp(self, rip: int) -> int:
        """The virtual TSC as seen by the instruction at rip: instructions retired before it.
        Every port access, fault and CR3 write stamps its event with this: the cached case
        is inlined (a cache hit is most of them)."""
        header = self._header
        rest = self._rest_of_block.get((header.last_block, header.last_size, rip))
        if rest is None:
            rest = self.not_retired(rip)
        return header.icount - rest

    def port_time_stamp(self) -> int:
        """time_stamp of the port I/O instruction running now (inside a port hook), without
        reading RIP when its block holds no other port instruction: its place in the block
        is then known from the block alone. Port accesses are the densest events (a UART
        poll per byte written), and the register read was half their cost."""
        header = self._header
        key = (header.last_block, header.last_size)
        rest = self._rest_after_port.get(key)
        if rest is None:
            rest = self._learn_port_block(key)
        if rest:
            return header.icount - rest
        return self.time_stamp(self.state.fast_reg(UC_X86_REG_RIP))

    def _learn_port_block(self, key: tuple[int, int]) -> int:
        """The instructions from the block's only port instruction to its end, or 0 (ask
        RIP) for a block with several (or that cannot be read)."""
        try:
            found = self.state.port_instructions(*key)
        except GuestMemoryError:
            found = []
        rest = found[0] if len(found) == 1 else 0
        if len(self._rest_after_port) > _REST_CACHE_LIMIT:
            self._rest_after_port.clear()
        self._rest_after_port[key] = rest
        return rest

    def forget_code(self) -> None:
        """The code behind some addresses may have changed (a new address space)."""
        self.counter.forget_blocks()
        self._rest_of_block.clear()
        self._rest_after_port.clear()
