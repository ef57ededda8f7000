"""The outside heap checker: watches the guest's kmalloc family from outside and flags what
a heap must never do, whatever its algorithm.

Owns: hooking the entries and returns of `kmalloc`, `kcalloc`, `kmalloc_aligned`,
`krealloc` and `kfree` (found by ELF symbol), the monitor's own set of live blocks
(address -> size, caller), and the rules below. Each broken rule becomes a HeapFinding event
naming the caller (the symbolized return address of the outermost call).
Does not own: the allocators (guest/heap/), what a run does with findings (the CLI,
heapreplay.py). Where the heap lives comes from a `bounds` callable; `attach` reads it from
the kernel's `heap_descriptor` (guest/heap/heap.h).

Rules:
  overlap        a returned block overlaps a block that is still live
  outside-heap   a returned block is not inside the heap's virtual range, or its first
                 or last page is not mapped
  misaligned     a returned block is not 16-byte aligned (kmalloc_aligned: not `align`)
  double-free    kfree/krealloc of a block that was freed and not handed out again
  invalid-free   kfree/krealloc of a pointer no allocation returned (an interior
                 pointer, a wild one)

How calls are seen: a single-address UC_HOOK_CODE at each function's entry reads the
arguments (RDI, RSI) and the return address at [RSP]; the return address gets its own
single-address hook the first time it is seen (and its translated block is dropped, so
code translated before the hook exists runs through it). The return hook matches a pending
call only if RSP is the entry RSP + 8, so a jump to the instruction after a call (a join
point) is not mistaken for a return. Hooking the return address, not the `ret`s inside
the function, survives tail calls (kmalloc ending in `jmp slab_alloc`: the `ret` is in a
function nobody scanned). Only the outermost call counts: krealloc calling kmalloc and
kfree, or kmalloc tail-calling kmalloc_aligned (same RSP: the same call), is one call.
A free is judged at the call's entry (the guest may panic inside it: the finding is out
first), a new block at the return.

Instruction counts come from the CPU's exact time stamp in the hooks: `calls` (when
recorded) hold the instructions spent inside each outermost call, the figure callgrind
gives for native allocators.
"""
from __future__ import annotations

import bisect
import struct
from dataclasses import dataclass
from typing import Callable, Iterable

from unicorn import x86_const as X

from emu.errors import ConfigError
from emu.monitor.symbols import read_object
from emu.events import Cr3Written, EventBus, HeapFinding, Observer, TlbFlush
from emu.x86 import MASK64

ALIGNMENT = 16
U64 = struct.Struct("<Q")
FREED_REMEMBERED = 1 << 18          # bounds the checker's memory on long traces

RULES = ("overlap", "outside-heap", "misaligned", "double-free", "invalid-free")
DESCRIPTOR_SYMBOL = "heap_descriptor"         # guest/heap/heap.h
DESCRIPTOR_MAGIC = 0x50414548                  # "HEAP"
DESCRIPTOR_VERSION = 2
# magic, version, kind, debug, base, end, pages, peak_pages, cached_pages, cache_watermark
DESCRIPTOR_LAYOUT = struct.Struct("<IIIIQQQQQQ")


@dataclass(frozen=True, slots=True)
class Signature:
    """What a kmalloc-family function takes (argument registers, in order) and does."""
    kind: str                 # "alloc", "realloc", "free"
    arguments: tuple[str, ...]


SIGNATURES: dict[str, Signature] = {
    "kmalloc": Signature("alloc", ("size",)),
    "kcalloc": Signature("alloc", ("count", "size")),
    "kmalloc_aligned": Signature("alloc", ("size", "align")),
    "krealloc": Signature("realloc", ("pointer", "size")),
    "kfree": Signature("free", ("pointer",)),
}
_ARGUMENT_REGISTERS = (X.UC_X86_REG_RDI, X.UC_X86_REG_RSI, X.UC_X86_REG_RDX)


@dataclass(frozen=True, slots=True)
class Block:
    address: int
    size: int
    caller: str
    icount: int


@dataclass(frozen=True, slots=True)
class HeapCall:
    """One outermost call, as recorded with `record_calls`."""
    function: str
    arguments: tuple[int, ...]
    result: int | None            # RAX at return; None for kfree
    caller: str
    entry_icount: int             # instructions retired before its first instruction
    return_icount: int            # ... before the instruction it returned to

    @property
    def instructions(self) -> int:
        return self.return_icount - self.entry_icount

    @property
    def requested(self) -> int:
        """Bytes asked for (kcalloc: count * size), 0 for kfree."""
        args = dict(zip(SIGNATURES[self.function].arguments, self.arguments))
        if self.function == "kcalloc":
            return (args["count"] * args["size"]) & MASK64
        return args.get("size", 0)


@dataclass(slots=True)
class _Frame:
    function: str
    arguments: tuple[int, ...]
    entry_rsp: int
    return_address: int
    entry_icount: int


@dataclass(slots=True)
class _Stats:
    calls: int = 0
    instructions: int = 0


class HeapChecker(Observer):
    """Attach to a machine (or any hooks/cpu/symbols triple) and it checks every outermost
    kmalloc-family call. `bounds()` returns the heap's virtual ranges [start, end) now (it is
    asked again when a block falls outside the ranges it gave last, since heaps grow);
    None skips the outside-heap rule. `record_calls` keeps every outermost call in `calls`."""

    # The return addresses hooked so far: the hooks stay installed across a snapshot's
    # restore, so the record of them must stay too (emu/snapshot/state.py).
    wiring_attributes = ("_return_hooks",)

    def __init__(self, bounds: Callable[[], Iterable[tuple[int, int]]] | None = None,
                 record_calls: bool = False) -> None:
        self.bounds = bounds
        self.record_calls = record_calls
        self.on_finding: Callable[[HeapFinding], None] | None = None
        self.live: dict[int, Block] = {}
        # Freed and not handed out again, the most recent FREED_REMEMBERED (oldest first): a
        # double free of a block forgotten since is still found, as an invalid free.
        self.freed: dict[int, Block] = {}
        self.findings: list[HeapFinding] = []
        self.calls: list[HeapCall] = []
        self.stats: dict[str, _Stats] = {}
        self.total_calls = 0                       # outermost calls, and the instructions
        self.total_instructions = 0                # inside them (kept with or without calls)
        self.functions: dict[int, str] = {}        # entry address -> name
        self._starts: list[int] = []               # sorted: live blocks that overlap none
        self._tangled: dict[int, Block] = {}       # live blocks that overlapped at birth
        self._frames: list[_Frame] = []
        self._return_hooks: set[int] = set()
        self._ranges: list[tuple[int, int]] | None = None
        self._events: EventBus | None = None
        self._pages: dict[int, int] = {}           # virtual page -> frame, this CR3

    # ---- wiring ---------------------------------------------------------------------------

    def attach(self, machine) -> "HeapChecker":
        """Hook the functions of a booted-but-not-run Machine."""
        return self.install(machine.hooks, machine.cpu, machine.symbols, machine.events)

    def on_cr3_write(self, event: Cr3Written) -> None:
        self._pages.clear()

    def on_tlb_flush(self, event: TlbFlush) -> None:
        self._pages.pop(event.address >> 12, None)

    def install(self, hooks, cpu, symbols, events: EventBus) -> "HeapChecker":
        """Hook every kmalloc-family function `symbols` knows, through `hooks` (a
        HookGuard: on_execute) on `cpu` (the CPU's read side). Raises ConfigError when the
        kernel has none (nothing to check)."""
        self._hooks, self._cpu, self._symbols = hooks, cpu, symbols
        self._events = events
        self._reg = cpu.state.fast_reg
        events.subscribe(self)         # CR3 writes and invlpg: forget cached translations
        for name in SIGNATURES:
            address = symbols.address_of(name)
            if address is None:
                continue
            self.functions[address] = name
            hooks.on_execute(address, self._on_entry, name)
        if not {"kfree"} <= set(self.functions.values()) or len(self.functions) < 2:
            raise ConfigError("the heap check needs the kernel's kmalloc and kfree symbols; "
                              "this kernel has " + (", ".join(sorted(self.functions.values()))
                                                    or "none of the kmalloc family"))
        return self

    # ---- hooks ----------------------------------------------------------------------------

    def _frame(self, vaddr: int) -> int | None:
        """The frame behind a virtual page, or None if it is not mapped; translations are
        cached until the guest writes CR3 or flushes the page with invlpg (as a TLB)."""
        page = vaddr >> 12
        frame = self._pages.get(page)
        if frame is None:
            frame = self._cpu.translate(page << 12)
            if frame is not None:
                self._pages[page] = frame
        return frame

    def _stack_u64(self, vaddr: int) -> int:
        """The u64 at a stack address (the return address at RSP)."""
        frame = self._frame(vaddr)
        if frame is None or vaddr & 7:
            return U64.unpack(self._cpu.read_virtual(vaddr, 8))[0]
        return self._cpu.memory.read_u64(frame | (vaddr & 0xFFF))

    def _on_entry(self, uc, address: int, size: int, name: str) -> None:
        rsp = self._reg(X.UC_X86_REG_RSP)
        return_address = self._stack_u64(rsp)
        frames = self._frames
        if frames and frames[-1].entry_rsp == rsp and \
                frames[-1].return_address == return_address:
            return                     # a tail call: still the same call, same return
        count = len(SIGNATURES[name].arguments)
        arguments = tuple(self._reg(r) for r in _ARGUMENT_REGISTERS[:count])
        frame = _Frame(name, arguments, rsp, return_address, self._cpu.time_stamp(address))
        frames.append(frame)
        if len(frames) == 1 and SIGNATURES[name].kind != "alloc":
            # A bad free is judged at entry: the guest may well panic inside the call.
            pointer = arguments[0]
            if pointer and pointer not in self.live:
                self._bad_free(pointer, self._symbols.lookup(return_address),
                               frame.entry_icount, name)
        if return_address not in self._return_hooks:
            self._return_hooks.add(return_address)
            # Code at the return address translated before now must run through the hook.
            self._hooks.on_execute(return_address, self._on_return, retranslate=True,
                                   lasting=True)

    def _on_return(self, uc, address: int, size: int, _data) -> None:
        rsp = self._reg(X.UC_X86_REG_RSP)
        frames = self._frames
        for index in range(len(frames) - 1, -1, -1):
            frame = frames[index]
            if frame.return_address == address and frame.entry_rsp + 8 == rsp:
                break
        else:
            return                     # reached without a call: a join point
        del frames[index:]
        if index == 0:
            self._completed(frame, self._reg(X.UC_X86_REG_RAX),
                            self._cpu.time_stamp(address))

    # ---- the rules ------------------------------------------------------------------------

    def _completed(self, frame: _Frame, rax: int, icount: int) -> None:
        name = frame.function
        signature = SIGNATURES[name]
        caller = self._symbols.lookup(frame.return_address)
        args = dict(zip(signature.arguments, frame.arguments))
        stats = self.stats.setdefault(name, _Stats())
        stats.calls += 1
        stats.instructions += icount - frame.entry_icount
        self.total_calls += 1
        self.total_instructions += icount - frame.entry_icount
        if self.record_calls:
            self.calls.append(HeapCall(name, frame.arguments,
                                       None if signature.kind == "free" else rax, caller,
                                       frame.entry_icount, icount))
        if signature.kind == "free":
            self._release(args["pointer"])
        elif signature.kind == "alloc":
            size = args["size"] * args["count"] if "count" in args else args["size"]
            if rax:
                self._acquire(rax, size & MASK64, caller, icount, args.get("align"))
        else:
            pointer, size = args["pointer"], args["size"]
            if rax == 0:
                # Failure keeps the old block; krealloc(p, 0) returning NULL frees it.
                if size == 0:
                    self._release(pointer)
                return
            if pointer == rax and pointer in self.live:
                self._remove(pointer)      # resized in place
            else:
                self._release(pointer)
            self._acquire(rax, size, caller, icount, None)

    def _release(self, pointer: int) -> None:
        """The block at pointer is free now (a bad pointer was reported at entry)."""
        block = self.live.get(pointer)
        if block is not None:
            self._remove(pointer)
            self.freed[pointer] = block
            if len(self.freed) > FREED_REMEMBERED:
                del self.freed[next(iter(self.freed))]

    def _bad_free(self, pointer: int, caller: str, icount: int, function: str) -> None:
        old = self.freed.get(pointer)
        if old is not None:
            self._report(icount, "double-free", pointer, old.size, caller,
                         f"{function} of a block of {old.size} bytes already freed "
                         f"(allocated by {old.caller})")
            return
        inside = self._containing(pointer)
        where = (f"inside the live block {inside.address:#x} ({inside.size} bytes, "
                 f"allocated by {inside.caller})" if inside else "no allocation returned it")
        self._report(icount, "invalid-free", pointer, 0, caller, f"{function}: {where}")

    def _acquire(self, address: int, size: int, caller: str, icount: int,
                 align: int | None) -> None:
        need = max(ALIGNMENT, align or 0)
        if address % need:
            self._report(icount, "misaligned", address, size, caller,
                         f"not {need}-byte aligned" + (f" (align {align} asked)" if align
                                                        else ""))
        if self.bounds is not None and not self._in_heap(address, size):
            ranges = ", ".join(f"[{lo:#x}, {hi:#x})" for lo, hi in self._ranges or ()) \
                or "unknown (no heap descriptor yet)"
            self._report(icount, "outside-heap", address, size, caller,
                         f"the heap is {ranges}")
        else:
            for page in {address >> 12, (address + max(size, 1) - 1) >> 12}:
                if self._frame(page << 12) is None:
                    self._report(icount, "outside-heap", address, size, caller,
                                 f"its page {page << 12:#x} is not mapped")
                    break
        others = self._overlapping(address, size)
        for other in others:
            self._report(icount, "overlap", address, size, caller,
                         f"overlaps the live block {other.address:#x} ({other.size} bytes, "
                         f"allocated by {other.caller})")
            if other.address == address:
                self._remove(address)      # one block per address: the new one wins
        self.freed.pop(address, None)
        block = Block(address, size, caller, icount)
        self.live[address] = block
        if others:
            self._tangled[address] = block
        else:
            bisect.insort(self._starts, address)

    def _remove(self, address: int) -> None:
        del self.live[address]
        if self._tangled.pop(address, None) is None:
            del self._starts[bisect.bisect_left(self._starts, address)]

    def _overlapping(self, address: int, size: int) -> list[Block]:
        """Live blocks sharing a byte with [address, address + size); a block of 0 bytes
        counts as 1. The sorted blocks are disjoint, so the search stops at the first one
        that starts at or below `address`; the few that overlapped when they were handed out
        are looked at one by one."""
        end = address + max(size, 1)
        found = []
        index = bisect.bisect_left(self._starts, end) - 1
        while index >= 0:
            block = self.live[self._starts[index]]
            if block.address + max(block.size, 1) > address:
                found.append(block)
            if block.address <= address:
                break
            index -= 1
        found += [block for block in self._tangled.values()
                  if block.address < end and block.address + max(block.size, 1) > address]
        return found

    def _containing(self, pointer: int) -> Block | None:
        blocks = self._overlapping(pointer, 1)
        return blocks[0] if blocks else None

    def _in_heap(self, address: int, size: int) -> bool:
        end = address + max(size, 1)
        fresh = self._ranges is None
        if fresh:
            self._ranges = sorted(self.bounds())
        while True:
            if any(lo <= address and end <= hi for lo, hi in self._ranges):
                return True
            if fresh:
                return False
            self._ranges = sorted(self.bounds())     # the heap may have grown since
            fresh = True

    def _report(self, icount: int, rule: str, address: int, size: int, caller: str,
                detail: str) -> None:
        finding = HeapFinding(icount, rule, address, size, caller, detail)
        self.findings.append(finding)
        if self.on_finding is not None:
            self.on_finding(finding)
        if self._events is not None and self._events.wants(HeapFinding):
            self._events.emit(finding)

    # ---- views ----------------------------------------------------------------------------

    def live_sizes(self) -> dict[int, int]:
        """address -> size of every live block."""
        return {address: block.size for address, block in self.live.items()}

    def pending_calls(self) -> int:
        """Calls entered and not returned (nonzero after a crash inside the allocator)."""
        return len(self._frames)


@dataclass(frozen=True, slots=True)
class HeapDescriptor:
    """The kernel's `heap_descriptor` (guest/heap/heap.h, version 2). The baseline of a leak
    check is the PMM's free frames + `cached_pages`: frames a heap cache holds are the heap's
    until the PMM's shrinker takes them back, not lost."""
    kind: int
    debug: int
    base: int
    end: int
    pages: int                 # held now, cached ones included
    peak_pages: int
    cached_pages: int          # released, still mapped in the heap's page cache
    cache_watermark: int


def read_heap_descriptor(machine) -> HeapDescriptor | None:
    """The descriptor as it is now; None when the kernel has none, before heap_init, or for
    a layout this monitor does not know."""
    raw = read_object(machine, DESCRIPTOR_SYMBOL, DESCRIPTOR_LAYOUT.size)
    if raw is None:
        return None
    magic, version, *fields = DESCRIPTOR_LAYOUT.unpack(raw)
    if magic != DESCRIPTOR_MAGIC or version != DESCRIPTOR_VERSION:
        return None
    return HeapDescriptor(*fields)


def heap_bounds(machine):
    """A `bounds` callable for the checker: the heap's virtual range [base, end), read from
    the kernel's `heap_descriptor` (guest/heap/heap.h) each time it is called; no range
    while the descriptor is not initialized. None when the kernel has no descriptor (the
    outside-heap rule is then skipped)."""
    if machine.symbols.data(DESCRIPTOR_SYMBOL) is None:
        return None

    def bounds() -> list[tuple[int, int]]:
        descriptor = read_heap_descriptor(machine)
        if descriptor is None or not descriptor.base < descriptor.end:
            return []                  # unreadable or not ready: no range known yet
        return [(descriptor.base, descriptor.end)]
    return bounds


def attach(machine, on_finding: Callable[[HeapFinding], None] | None = None,
           record_calls: bool = False) -> HeapChecker:
    """A HeapChecker on `machine` (built, not run yet), the heap's range read from the
    kernel's heap_descriptor. `on_finding` sees each finding as it is made."""
    checker = HeapChecker(bounds=heap_bounds(machine), record_calls=record_calls)
    checker.on_finding = on_finding
    return checker.attach(machine)


def describe(finding: HeapFinding) -> str:
    """One line for humans: `double-free 0xffff8000... (32 bytes) by caller+0x1c: ...`."""
    size = f" ({finding.size} bytes)" if finding.size else ""
    detail = f": {finding.detail}" if finding.detail else ""
    return f"{finding.rule} {finding.address:#x}{size} by {finding.caller}{detail}"
