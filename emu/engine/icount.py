"""The instruction counter: a C block hook (icount.c) built with zig cc and loaded by ctypes.

Owns: building and loading the hook, the per-block table, the exact count after a
mid-block stop, and the stop request used for budgets and exact-count interrupts.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import sys
from pathlib import Path
from typing import Callable

from unicorn.x86_const import UC_X86_REG_CS

from emu.build import cache
from emu.build.zig import zig_cc, zig_version
from emu.engine import capi


SOURCE = Path(__file__).with_name("icount.c")
NEVER = (1 << 64) - 1

_MISS = ctypes.CFUNCTYPE(ctypes.c_uint32, ctypes.c_uint64, ctypes.c_uint32)
_USER_BLOCK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_uint64, ctypes.c_uint32)


class _Header(ctypes.Structure):
    _fields_ = [("icount", ctypes.c_uint64), ("stop_at", ctypes.c_uint64),
                ("last_block", ctypes.c_uint64), ("last_size", ctypes.c_uint32),
                ("last_count", ctypes.c_uint32), ("stop_requested", ctypes.c_uint32),
                ("generation", ctypes.c_uint32), ("misses", ctypes.c_uint64),
                ("stop", ctypes.c_void_p), ("miss", ctypes.c_void_p),
                ("ctl", ctypes.c_void_p), ("asked_python", ctypes.c_uint64),
                ("reg_read", ctypes.c_void_p), ("user_block", ctypes.c_void_p),
                ("cs_register", ctypes.c_int32)]


def library_path() -> Path:
    """Build (once per source version, into the build cache) and return the shared
    library; a damaged cached copy is rebuilt, never loaded."""
    source = SOURCE.read_bytes()
    digest = hashlib.sha256(source + sys.platform.encode() + zig_version().encode())
    directory = cache.cache_root() / "icount"
    target = directory / f"icount-{digest.hexdigest()[:16]}.so"
    if cache.is_fresh(target):
        return target
    built = cache.temporary(directory, ".so")
    try:
        zig_cc(["-shared", "-fPIC", "-O2", "-fomit-frame-pointer", "-o", str(built),
                str(SOURCE)], cache_dir=directory / "zig", what="the instruction counter")
        cache.publish(built, target)
    finally:
        built.unlink(missing_ok=True)
    return target


@functools.lru_cache(maxsize=1)
def load_library() -> ctypes.CDLL:
    """The counter library (built on first use), its argument and result types declared."""
    library = ctypes.CDLL(str(library_path()))
    library.icount_struct_size.restype = ctypes.c_uint64
    library.icount_forget.argtypes = [ctypes.c_void_p]
    return library


def new_counter_memory() -> ctypes.Array:
    """Zeroed memory for one `struct counter` of icount.c."""
    return ctypes.create_string_buffer(load_library().icount_struct_size())


def hook_blocks(uc, function: str, memory: ctypes.Array) -> None:
    """Install the library's `function` as a UC_HOOK_BLOCK on all code, with `memory` (a
    struct counter, which must outlive the hook) as its user data."""
    capi.hook_block_function(uc, getattr(load_library(), function), memory)


class InstructionCounter:
    """Counts retired instructions. `count_block(address, size)` decodes a block (Python),
    the fallback when Unicorn cannot say. A REP string instruction counts once per
    iteration plus once for the pass that finds RCX = 0: QEMU runs each iteration as a
    block of its own (tests/test_icount.py pins this)."""
    counting = True

    def __init__(self, uc, count_block: Callable[[int, int], int]) -> None:
        self._memory = new_counter_memory()
        self.state = _Header.from_buffer(self._memory)
        self._count_block = count_block
        self._miss = _MISS(self._on_miss)
        self._stop = capi.EMU_STOP(capi.emu_stop)
        self.state.stop = ctypes.cast(self._stop, ctypes.c_void_p)
        self.state.miss = ctypes.cast(self._miss, ctypes.c_void_p)
        self.state.ctl = capi.function_pointer("uc_ctl")
        self.state.stop_at = NEVER
        self.state.generation = 1      # slots start at generation 0: all empty
        self.error: BaseException | None = None
        hook_blocks(uc, "icount_block", self._memory)

    def watch_user_blocks(self, callback: Callable[[int, int], bool]) -> None:
        """Call `callback(address, size)` once for each new block that runs at CPL 3 (again
        after forget_blocks); if it returns True, Unicorn stops before that block runs."""
        def on_user_block(address: int, size: int) -> int:
            try:
                return int(bool(callback(address, size)))
            except BaseException as exc:  # noqa: BLE001 - kept and re-raised by the CPU loop
                self.error = exc
                return 1
        self._user_block = _USER_BLOCK(on_user_block)
        self.state.reg_read = capi.function_pointer("uc_reg_read")
        self.state.cs_register = UC_X86_REG_CS
        self.state.user_block = ctypes.cast(self._user_block, ctypes.c_void_p)

    def _on_miss(self, address: int, size: int) -> int:
        try:
            return self._count_block(address, size)
        except BaseException as exc:  # noqa: BLE001 - kept and re-raised by the CPU loop
            self.error = exc
            return max(1, size // 4)

    @property
    def raw(self) -> int:
        """Instructions counted so far, including the whole of the current block."""
        return self.state.icount

    def forget_blocks(self) -> None:
        load_library().icount_forget(ctypes.c_void_p(ctypes.addressof(self._memory)))

    def trust_unicorn(self, trust: bool) -> None:
        """Whether a new block's count may come from Unicorn's block cache. Not while
        exit addresses are set: a block cut short by an exit reports one instruction
        more than it holds (the exit's), so it is decoded instead."""
        self.state.ctl = capi.function_pointer("uc_ctl") if trust else None

    def request_stop_at(self, icount: int) -> None:
        self.state.stop_at = icount
        self.state.stop_requested = 0

    def lower_stop_at(self, icount: int) -> None:
        """Stop earlier than planned (read by the hook before every block)."""
        if icount < self.state.stop_at:
            self.state.stop_at = icount

    @property
    def stop_requested(self) -> bool:
        return bool(self.state.stop_requested)

    def adjust(self, delta: int) -> None:
        self.state.icount += delta


class _NoCount:
    """The counter's state when nothing is counted: always zero, nothing cached."""
    icount = 0
    last_block = 0
    last_size = 0
    last_count = 0
    stop_requested = 0
    stop_at = NEVER
    misses = 0


class NoInstructionCounter:
    """Stands in for InstructionCounter when the user turned counting off (`--no-count`):
    no block hook at all, so the monitor runs at close to bare Unicorn speed. Budgets,
    exact-count interrupts and icount stamps need the real counter."""
    counting = False

    def __init__(self) -> None:
        self.state = _NoCount()
        self.error: BaseException | None = None

    raw = 0
    stop_requested = False

    def forget_blocks(self) -> None:
        pass

    def trust_unicorn(self, trust: bool) -> None:
        pass

    def request_stop_at(self, icount: int) -> None:
        pass

    def lower_stop_at(self, icount: int) -> None:
        pass

    def adjust(self, delta: int) -> None:
        pass
