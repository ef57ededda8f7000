"""SIGINT and SIGTERM stop a run within a second, whatever it is doing, and end it cleanly.

Owns: the handlers, and how a signal reaches a run that is deep inside Unicorn. Python runs
a signal handler only between bytecodes of the main thread; while Unicorn emulates a guest
spinning in `jmp $` with no hook installed (--no-count), no bytecode runs until it returns.
So the handler is backed by a wakeup descriptor (the C-level handler writes the signal
number to it at once) and a watcher thread that calls the running machine's stop (Unicorn's
uc_emu_stop may be called from another thread: its own timeout does that). The Python
handler itself never raises inside a run: an exception raised in a Unicorn callback would
be swallowed or would leave a hook half done (a checker with half a call recorded). It
records the signal and stops the run; the run ends with RunEnd.INTERRUPTED, its trace and
summary say so, and the process exits 128 + the signal number. Outside a run (parsing,
building, printing) the handler raises `Interrupted`, which the command line turns into
the same status; but not inside a finalizer (`__del__`, `weakref.finalize`: the garbage
collector runs them anywhere), where Python would print the exception and drop it. There
the handler sends the signal to the main thread again a moment later, when the finalizer
is done.

Does not own: what stopping means to a machine (the `stop` callable it registers).
"""
from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager
from typing import Callable, Iterator

from emu.errors import Interrupted

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
RETRY_AFTER = 0.01      # seconds: a finalizer interrupted by a signal is done by then


def _in_finalizer(frame) -> bool:
    """Is the main thread inside a finalizer, where an exception raised is only printed?"""
    while frame is not None:
        code = frame.f_code
        if code.co_name == "__del__" or \
                (code.co_name == "__call__" and code.co_filename.endswith("weakref.py")):
            return True
        frame = frame.f_back
    return False


class SignalStop:
    """Installed once by the command line; machines register their stop while they run."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._stop: Callable[[int], None] | None = None
        self._lock = threading.Lock()
        self._previous: dict[int, object] = {}
        self._read_fd = self._write_fd = -1
        self._old_wakeup = -1

    def install(self) -> None:
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._write_fd, False)
        self._old_wakeup = signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
        for number in STOP_SIGNALS:
            self._previous[number] = signal.signal(number, self._on_signal)
        threading.Thread(target=self._watch, name="emu-signal-watcher", daemon=True).start()

    def uninstall(self) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        signal.set_wakeup_fd(self._old_wakeup)
        os.close(self._write_fd)               # the watcher's read ends: it exits

    @contextmanager
    def running(self, stop: Callable[[int], None]) -> Iterator[None]:
        """While the block runs, a signal calls stop(signum) instead of raising."""
        with self._lock:
            self._stop = stop
        try:
            if self.received is not None:      # a signal came before the run started
                stop(self.received)
            yield
        finally:
            with self._lock:
                self._stop = None

    def _on_signal(self, signum: int, frame) -> None:
        self.received = signum
        with self._lock:
            stop = self._stop
        if stop is not None:
            stop(signum)
        elif _in_finalizer(frame):
            threading.Timer(RETRY_AFTER, signal.pthread_kill,
                            (threading.main_thread().ident, signum)).start()
        else:
            raise Interrupted(signum)

    def _watch(self) -> None:
        while True:
            try:
                data = os.read(self._read_fd, 64)
            except OSError:
                return
            if not data:
                os.close(self._read_fd)
                return
            with self._lock:
                stop = self._stop
            if stop is not None:
                for signum in data:
                    if signum in STOP_SIGNALS:
                        self.received = signum
                        stop(signum)


_active: SignalStop | None = None


def install() -> SignalStop:
    """Install the handlers (the command line does, once per process)."""
    global _active
    if _active is None:
        _active = SignalStop()
        _active.install()
    return _active


def uninstall() -> None:
    global _active
    if _active is not None:
        _active.uninstall()
        _active = None


@contextmanager
def stoppable(stop: Callable[[int], None]) -> Iterator[None]:
    """Make a run stoppable by SIGINT/SIGTERM when the handlers are installed; else a
    no-op (a library user keeps Python's default behaviour)."""
    if _active is None:
        yield
        return
    with _active.running(stop):
        yield
