"""Exceptions raised inside Unicorn callbacks must not be lost.

Unicorn calls Python hooks from C; an exception escaping a hook would be printed and
swallowed. `HookGuard.wrap` catches it, stops the emulation and keeps it, and the run loop
calls `reraise()` after `emu_start` returns (as unicorn's own binding does for its errors).

Once the run has ended (`ended`, set by the CPU's request_stop), Unicorn may still run the
rest of the translated block before it can leave: guarded hooks then do nothing, so an
instruction after the end has no effect on devices, checkers or the report (a power-off
followed by a write to a port with nothing behind it once ended as a crash).

`hook_instruction` installs a guarded hook on one x86 instruction (IN, OUT, RDTSC, ...)
through Unicorn's C API (emu/engine/capi.py): the binding's own wrapper costs a kernel that
polls its UART before every character twice as much per access.
"""
from __future__ import annotations

from typing import Any, Callable

from unicorn import UC_HOOK_BLOCK, UC_HOOK_CODE

from emu.engine import capi
from emu.engine.capi import NO_OPERANDS, PORT_IN, PORT_OUT  # noqa: F401 - the signatures

__all__ = ["HookGuard", "PORT_IN", "PORT_OUT", "NO_OPERANDS"]


class HookGuard:
    def __init__(self, uc) -> None:
        self.uc = uc
        self.error: BaseException | None = None
        self.ended = False                   # the run has ended: hooks do nothing more
        self._callbacks: list[Any] = []      # ctypes callbacks must outlive their hooks
        self.handles: list[int] = []         # the code and block hooks, in order added

    # A snapshot keeps whether the run had ended: a restore to an earlier instruction after
    # the run ended must bring the hooks back to life (the callbacks are wiring, not state).
    def snapshot_state(self) -> bool:
        return self.ended

    def restore_state(self, ended: bool) -> None:
        self.ended = ended
        self.error = None

    def wrap(self, fn: Callable[..., Any], on_error: Any = None) -> Callable[..., Any]:
        """Return fn guarded; `on_error` is what the hook returns to Unicorn after a failure."""
        def guarded(*args):
            if self.ended:
                return on_error
            try:
                return fn(*args)
            except BaseException as exc:  # noqa: BLE001 - re-raised by reraise()
                self.fail(exc)
                return on_error
        return guarded

    def hook_instruction(self, instruction: int, signature: Any, fn: Callable[..., Any],
                         on_error: Any = None) -> int:
        """Call fn (guarded) for every `instruction` (a UC_X86_INS_* constant); `signature`
        is PORT_IN, PORT_OUT or NO_OPERANDS. Returns the hook handle."""
        callback = signature(self.wrap(fn, on_error))
        self._callbacks.append(callback)
        return capi.hook_instruction(self.uc, instruction, callback)

    def on_execute(self, address: int, fn: Callable[..., Any], data: Any = None,
                   retranslate: bool = False, lasting: bool = False) -> int:
        """Call fn(uc, address, size, data) (guarded) before the instruction at virtual
        `address` runs. `retranslate`: drop the translated block holding it, so code that
        Unicorn translated before the hook existed runs through it too (Unicorn issue
        #2200). `lasting`: `remove_since` leaves it (an observer's hook added as the run
        goes, which the observer records outside what snapshots restore). Returns the hook
        handle."""
        handle = self.uc.hook_add(UC_HOOK_CODE, self.wrap(fn), data, address, address)
        if not lasting:
            self._added(handle)
        if retranslate:
            self.uc.ctl_remove_cache(address, address + 1)
        return handle

    def on_execute_range(self, first: int, last: int, fn: Callable[..., Any],
                         data: Any = None) -> int:
        """Call fn(uc, address, size, data) (guarded) before every instruction in virtual
        [first, last]: a Python call per instruction (about 50x slower there), for
        measurements. Returns the hook handle."""
        return self._added(self.uc.hook_add(UC_HOOK_CODE, self.wrap(fn), data, first, last))

    def on_block(self, fn: Callable[..., Any], data: Any = None) -> int:
        """Call fn(uc, address, size, data) (guarded) as every translated block starts:
        about 0.5 us a block, for measurements (profiles). Returns the hook handle."""
        handle = self._added(self.uc.hook_add(UC_HOOK_BLOCK, self.wrap(fn), data, 1, 0))
        self.uc.ctl_flush_tb()          # blocks translated before the hook would skip it
        return handle

    def _added(self, handle: int) -> int:
        self.handles.append(handle)
        return handle

    def remove(self, handle: int) -> None:
        """Delete a hook that on_execute, on_execute_range or on_block added."""
        self.uc.hook_del(handle)
        self.handles.remove(handle)

    def remove_since(self, count: int) -> None:
        """Delete the code and block hooks added after the first `count` (a campaign
        variant's injectors, before the machine is restored for the next variant)."""
        while len(self.handles) > count:
            self.uc.hook_del(self.handles.pop())

    def fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        self.uc.emu_stop()

    def reraise(self) -> None:
        if self.error is not None:
            error, self.error = self.error, None
            raise error
