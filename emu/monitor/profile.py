"""Where a guest's instructions go: a flat profile by function, from block counts.

Owns: counting the translated blocks the guest runs while a condition holds (inside an
allocator call, between two markers), and turning (block, times run) into instructions per
function, the `self` figure of a flat profile (gprof, perf report --no-children).
Does not own: the condition (the caller's: the heap checker says when a call is pending),
symbols (symbols.py) or decoding (the CPU's read side).

A Python block hook costs about 0.5 us per block, so a profile is for benchmarks, not for
every run. A block is counted whole when it starts; a block cut short by an exception or a
stop is counted whole too (rare inside an allocator, and a profile gives shares).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True, slots=True)
class ProfileRow:
    function: str
    instructions: int
    share: float                 # of the profile's total


class BlockProfile:
    """Counts blocks run while `active()` is true; `rows()` gives instructions per function,
    most first."""

    def __init__(self, active: Callable[[], bool]) -> None:
        self.active = active
        self.blocks: Counter[tuple[int, int]] = Counter()
        self._cpu = self._symbols = None

    def attach(self, machine) -> "BlockProfile":
        """Hook every block of a booted-but-not-run Machine."""
        self._cpu, self._symbols = machine.cpu, machine.symbols
        machine.hooks.on_block(self._on_block)
        return self

    def _on_block(self, uc, address: int, size: int, _data) -> None:
        if self.active():
            self.blocks[address, size] += 1

    def by_function(self) -> dict[str, int]:
        """Instructions per function name (`0x...` where no symbol covers the block)."""
        totals: Counter[str] = Counter()
        for (address, size), times in self.blocks.items():
            symbol = self._symbols.symbol_at(address)
            name = symbol.name if symbol is not None else f"{address:#x}"
            totals[name] += times * self._cpu.state.count_instructions(address, size)
        return dict(totals)

    def rows(self, top: int | None = None) -> list[ProfileRow]:
        totals = self.by_function()
        whole = sum(totals.values()) or 1
        ranked = sorted(totals.items(), key=lambda item: (-item[1], item[0]))[:top]
        return [ProfileRow(name, count, count / whole) for name, count in ranked]
