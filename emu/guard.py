"""Exceptions raised inside Unicorn callbacks must not be lost.

Unicorn calls Python hooks from C; an exception escaping a hook would be printed and
swallowed. `HookGuard.wrap` catches it, stops the emulation and keeps it, and the run loop
calls `reraise()` after `emu_start` returns (as unicorn's own binding does for its errors).
"""
from __future__ import annotations

from typing import Any, Callable


class HookGuard:
    def __init__(self, uc) -> None:
        self.uc = uc
        self.error: BaseException | None = None

    def wrap(self, fn: Callable[..., Any], on_error: Any = None) -> Callable[..., Any]:
        """Return fn guarded; `on_error` is what the hook returns to Unicorn after a failure."""
        def guarded(*args):
            try:
                return fn(*args)
            except BaseException as exc:  # noqa: BLE001 - re-raised by reraise()
                self.fail(exc)
                return on_error
        return guarded

    def fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        self.uc.emu_stop()

    def reraise(self) -> None:
        if self.error is not None:
            error, self.error = self.error, None
            raise error
