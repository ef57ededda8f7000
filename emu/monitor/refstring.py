"""Reference strings and Belady's optimal page replacement: the yardstick for the kernel's
replacement policies.

Owns: `ReferenceRecorder`, a recording mode that notes every user page touched, in order,
and `opt_misses` / `opt_major_faults`, the fewest page faults any replacement could have
on that string with a given number of frames (Belady 1966: evict the page whose next use
is farthest away).
Does not own: the kernel's own counts (emu/monitor/swapcheck.py reads them), running
programs (emu/workloads/process.py).

How a reference is seen, exactly, at instruction granularity:
  * an instruction fetch: a code hook on every instruction of the user half notes the
    page of the instruction (both pages if it straddles two) before it runs; the kernel
    never runs code there, so every note is a ring-3 fetch;
  * a data access: a memory hook on every read and write notes the page of the access
    when RIP is in the user half (a ring-3 instruction). Unicorn reports the PHYSICAL
    address there, so the recorder maps the frame back to its (address space, virtual
    page): the page of every #PF is walked again once it is resolved (at the next data
    access), and a frame still unknown makes the recorder walk the whole user half of
    the current address space.
A page is (CR3, virtual page number); consecutive references to the same page are one
(OPT's count does not change: the second always hits). Kernel accesses to user memory on a
process's behalf (read(), write()) are not references: the string is the program's own.

Limits (why "for small workloads"): every user instruction costs a Python call (about 50x
slower), so record short runs. The frame-to-page map is exact when every change of a user
mapping is a page fault, which holds on a machine with no memory pressure (no swap-out, no
read-ahead): record there, then replay the string against any number of frames. A frame
reused for another page by munmap and a new fault is seen (the fault updates the map).
"""
from __future__ import annotations

import heapq
import struct
from typing import Iterable, Sequence

from unicorn import UC_HOOK_MEM_READ, UC_HOOK_MEM_WRITE
from unicorn import x86_const as X

from emu.events import Cr3Written, ExceptionDelivered, Observer
from emu.x86 import KERNEL_HALF, PAGE_FAULT, PAGE_SIZE, PTE_ADDRESS_MASK

PAGE_SHIFT = 12
_TABLE = struct.Struct("<512Q")
_USER_SLOTS = 256                   # PML4 entries of the user half
_LARGE = 1 << 7                     # PS: a large page at PDPT or PD level
Page = tuple[int, int]              # (CR3 physical root, virtual page number)


class ReferenceRecorder(Observer):
    """Records `refs`, the user pages touched in order (see the module docstring). Attach
    with `attach(machine)` after the machine is built; `refs` grows as the run goes."""

    def __init__(self) -> None:
        self.refs: list[Page] = []
        self.unknown = 0                 # data accesses to a frame no user page maps
        self._root = 0
        self._owner: dict[int, Page] = {}  # frame number -> page
        self._pending: list[Page] = []   # pages of faults, mapped since
        self._machine = None

    def attach(self, machine) -> None:
        self._machine = machine
        self._root = machine.cpu.cr3() & PTE_ADDRESS_MASK
        self._reg = machine.cpu.state.fast_reg
        hooks = machine.hooks
        hooks.on_execute_range(0, KERNEL_HALF - 1, self._on_instruction)
        hooks.uc.hook_add(UC_HOOK_MEM_READ | UC_HOOK_MEM_WRITE,
                          hooks.wrap(self._on_data, True))
        machine.events.subscribe(self)

    # ---- events ----------------------------------------------------------------------

    def on_cr3_write(self, event: Cr3Written) -> None:
        self._root = event.new & PTE_ADDRESS_MASK

    def on_exception(self, event: ExceptionDelivered) -> None:
        if event.vector == PAGE_FAULT and event.cr2 is not None and event.cr2 < KERNEL_HALF:
            self._pending.append((self._root, event.cr2 >> PAGE_SHIFT))

    # ---- hooks -----------------------------------------------------------------------

    def _note(self, page: Page) -> None:
        if not self.refs or self.refs[-1] != page:
            self.refs.append(page)

    def _on_instruction(self, uc, address: int, size: int, _data) -> None:
        self._note((self._root, address >> PAGE_SHIFT))
        if (address + size - 1) >> PAGE_SHIFT != address >> PAGE_SHIFT:
            self._note((self._root, (address + size - 1) >> PAGE_SHIFT))

    def _on_data(self, uc, access: int, address: int, size: int, value: int, _data) -> bool:
        if self._reg(X.UC_X86_REG_RIP) >= KERNEL_HALF:
            return True
        if self._pending:
            self._resolve_pending()
        frame = address >> PAGE_SHIFT
        page = self._owner.get(frame)
        if page is None:
            self._walk_user_half(self._root)
            page = self._owner.get(frame)
        if page is None:
            self.unknown += 1
            return True
        self._note(page)
        last = (address + size - 1) >> PAGE_SHIFT
        if last != frame and self._owner.get(last) is not None:
            self._note(self._owner[last])
        return True

    # ---- the frame -> page map -------------------------------------------------------

    def _read_table(self, entry: int) -> tuple[int, ...]:
        return _TABLE.unpack(self._machine.memory.read(entry & PTE_ADDRESS_MASK, PAGE_SIZE))

    def _resolve_pending(self) -> None:
        for root, vpage in self._pending:
            frame = self._translate(root, vpage << PAGE_SHIFT)
            if frame is not None:
                self._owner[frame] = (root, vpage)
        self._pending.clear()

    def _translate(self, root: int, vaddr: int) -> int | None:
        entry = root | 1
        for level in (3, 2, 1, 0):
            entry = self._machine.memory.read_u64((entry & PTE_ADDRESS_MASK) +
                                                  8 * ((vaddr >> (12 + 9 * level)) & 511))
            if not entry & 1:
                return None
            if level in (1, 2) and entry & _LARGE:
                span = PAGE_SIZE << (9 * level)
                return ((entry & PTE_ADDRESS_MASK & ~(span - 1)) + (vaddr & (span - 1))) \
                    >> PAGE_SHIFT
        return (entry & PTE_ADDRESS_MASK) >> PAGE_SHIFT

    def _walk_user_half(self, root: int) -> None:
        def walk(entries: Sequence[int], level: int, base: int, limit: int) -> None:
            span = PAGE_SIZE << (9 * level)
            for index, entry in enumerate(entries[:limit]):
                if not entry & 1:
                    continue
                address = base + index * span
                if level == 0:
                    self._owner[(entry & PTE_ADDRESS_MASK) >> PAGE_SHIFT] = \
                        (root, address >> PAGE_SHIFT)
                elif level < 3 and entry & _LARGE:
                    continue            # the kernel maps no large user pages
                else:
                    walk(self._read_table(entry), level - 1, address, 512)
        walk(self._read_table(root), 3, 0, _USER_SLOTS)


# ---- Belady's OPT ------------------------------------------------------------------------

def opt_misses(refs: Sequence, frames: int) -> int:
    """Page faults of the optimal replacement on `refs` with `frames` frames, the first
    reference of every page included (a compulsory miss). O(n log frames)."""
    if frames < 1:
        raise ValueError("OPT needs at least one frame")
    never = len(refs)
    following = [never] * len(refs)
    seen: dict = {}
    for i in range(len(refs) - 1, -1, -1):
        following[i] = seen.get(refs[i], never)
        seen[refs[i]] = i
    resident: dict = {}               # page -> its next use
    farthest: list = []               # (-next use, tiebreak, page), stale entries skipped
    misses = 0
    for i, page in enumerate(refs):
        if page not in resident:
            misses += 1
            if len(resident) >= frames:
                while True:
                    negative, _, victim = heapq.heappop(farthest)
                    if resident.get(victim) == -negative:
                        del resident[victim]
                        break
        resident[page] = following[i]
        heapq.heappush(farthest, (-following[i], i, page))
    return misses


def opt_major_faults(refs: Sequence, frames: int) -> int:
    """OPT's faults on pages that were in memory before (a swap-in in the kernel's terms):
    its misses less the first touch of every page."""
    return opt_misses(refs, frames) - len(set(refs))


def distinct(refs: Iterable) -> int:
    return len(set(refs))
