"""Running `emu` commands as a user would, one process each, and judging how they end.

`run_emu(argv)` forks: the child runs emu.cli.main(argv) with its own standard streams and
working directory and exits with its status; the parent waits at most `timeout` seconds
(then kills it: a hang is a failure) and returns an Ending with the status, the death
signal if any, both outputs, the time taken and the child's memory growth (peak resident
memory minus what it had at the fork, minus the guest RAM the runs touched: guest RAM is
the guest's, the bound is on the harness).

Forking is cheap (the child inherits this process's imports), so a fuzz suite can afford
hundreds of cases.
"""
from __future__ import annotations

import json
import os
import resource
import select
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# Statuses a run may end with (emu/result.py, README): the guest's own 0-63, and the
# harness's.
GUEST_STATUSES = frozenset(range(64))
RUN_ENDINGS = frozenset({70, 71, 72, 73, 75, 76})
HARNESS_ERROR = 2
DOCUMENTED = GUEST_STATUSES | RUN_ENDINGS | {HARNESS_ERROR, 130, 141, 143}
# `emu exec` passes the program's status on verbatim (0-255), so every status is
# documented; its own failures are 125 (EXEC_EXIT_STATUS_MEANINGS), bad input with one line.
EXEC_DOCUMENTED = frozenset(range(256))
EXEC_HARNESS_FAILURE = 125
TIMEOUT = 10.0
MEMORY_BOUND = 500 << 20


@dataclass(frozen=True)
class Ending:
    status: int | None          # the exit status, or None if killed by a signal
    signal: int | None
    stdout: bytes
    stderr: bytes
    seconds: float
    growth: int                 # bytes of host memory beyond the fork's, guest RAM excluded
    timed_out: bool
    command: str = ""           # argv[0]: `exec` has statuses of its own
    cpu_after_signal: float | None = None   # CPU seconds it used after `signal_after`

    @property
    def err(self) -> str:
        return self.stderr.decode("utf-8", "replace")

    def problems(self) -> list[str]:
        """What makes this ending wrong for any input: a traceback, a death by signal, a
        status the README does not document, more than one line for status 2, a hang,
        too much memory."""
        found = []
        if self.timed_out:
            found.append(f"did not end within {TIMEOUT:g} s")
        if self.signal is not None:
            found.append(f"killed by signal {self.signal}")
        execs = self.command == "exec"
        if self.status is not None and \
                self.status not in (EXEC_DOCUMENTED if execs else DOCUMENTED):
            found.append(f"undocumented exit status {self.status}")
        if "Traceback" in self.err:
            found.append("a Python traceback")
        lines = [line for line in self.err.splitlines() if line.strip()]
        if self.status == HARNESS_ERROR and not execs:
            if len(lines) != 1 or not lines[0].startswith("emu: error: "):
                found.append(f"status 2 with {len(lines)} stderr lines")
        if execs and self.status == EXEC_HARNESS_FAILURE and \
                any(line.startswith("emu: error: ") for line in lines) and len(lines) != 1:
            found.append(f"a bad input to exec with {len(lines)} stderr lines")
        if self.growth > MEMORY_BOUND:
            found.append(f"used {self.growth >> 20} MB of host memory")
        return found


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def _child(argv: list, cwd: Path | None, env: dict | None, fds: tuple[int, int, int],
           report_fd: int) -> None:
    """In the fork: become the command, report the memory growth, exit with its status."""
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
    if cwd is not None:
        os.chdir(cwd)
    if env is not None:
        os.environ.clear()
        os.environ.update(env)
    sys.stdout = open(1, "w", encoding="utf-8", closefd=False)
    sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", closefd=False,
                      buffering=1)
    status = 1
    start = _rss()
    guest: list[int] = []
    try:
        from emu import launch
        launch.guard_signals()              # first, as the console script does
        from emu import machine as machine_module
        run = machine_module.Machine.run

        def counted_run(self):
            try:
                return run(self)
            finally:
                guest.append(self.memory.resident_bytes())
        machine_module.Machine.run = counted_run
        from emu.cli import main
        status = main([os.fsdecode(a) if isinstance(a, bytes) else a for a in argv])
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 - the parent sees the traceback on stderr
        import traceback
        traceback.print_exc()
        status = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001 - a closed or full stream: nothing to add
                pass
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        os.write(report_fd, json.dumps({"growth": peak - start - sum(guest)}).encode())
        os._exit(status)


def run_emu(argv: list, *, cwd: Path | None = None, env: dict | None = None,
            stdin: bytes = b"", timeout: float = TIMEOUT, close_stdout_after: int | None = None,
            signal_after: tuple[float, int] | None = None, stdout_path: str | None = None
            ) -> Ending:
    """Run `emu argv` in a fork. `close_stdout_after`: the reader closes standard output
    after that many bytes (`| head -c N`). `signal_after`: (seconds, signum) to send.
    `stdout_path`: standard output goes to that file (say /dev/full) instead of a pipe."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    in_r, in_w = os.pipe()
    rep_r, rep_w = os.pipe()
    if stdout_path is not None:
        os.close(out_w)
        out_w = os.open(stdout_path, os.O_WRONLY)
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:
        for fd in (out_r, err_r, in_w, rep_r):
            os.close(fd)
        _child(argv, cwd, env, (in_r, out_w, err_w), rep_w)
    for fd in (out_w, err_w, in_r, rep_w):
        os.close(fd)
    os.write(in_w, stdin)
    os.close(in_w)
    collected = {"out": bytearray(), "err": bytearray()}
    names = {out_r: "out", err_r: "err"}
    status, timed_out, sent = None, False, False
    cpu_at_signal = cpu_after_signal = None
    while True:
        if signal_after and not sent and time.monotonic() - started >= signal_after[0]:
            cpu_at_signal = _cpu_seconds(pid)
            os.kill(pid, signal_after[1])
            sent = True
        _drain(names, collected, close_stdout_after, wait=0.02)
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            if cpu_at_signal is not None:
                cpu_after_signal = usage.ru_utime + usage.ru_stime - cpu_at_signal
            break
        if time.monotonic() - started > timeout:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            timed_out, status = True, None
            break
    seconds = time.monotonic() - started
    while names:
        _drain(names, collected, None, wait=0)
    report = os.read(rep_r, 4096)
    os.close(rep_r)
    growth = json.loads(report).get("growth", 0) if report else 0
    code = signum = None
    if status is not None:
        if os.WIFSIGNALED(status):
            signum = os.WTERMSIG(status)
        else:
            code = os.WEXITSTATUS(status)
    return Ending(code, signum, bytes(collected["out"]), bytes(collected["err"]), seconds,
                  growth, timed_out, str(argv[0]) if argv else "", cpu_after_signal)


def _cpu_seconds(pid: int) -> float:
    """CPU time of a running process and of the children it has waited for (/proc: user,
    system, and the same of its reaped children), as wait4's usage counts it at the end."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return sum(int(value) for value in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def _drain(names: dict[int, str], collected: dict[str, bytearray],
           close_stdout_after: int | None, wait: float) -> None:
    """Read what is ready; close a stream at its end (or stdout past the reader's limit)."""
    if not names:
        return
    ready, _, _ = select.select(list(names), [], [], wait)
    for fd in ready:
        data = os.read(fd, 65536)
        name = names[fd]
        collected[name] += data
        over = name == "out" and close_stdout_after is not None and \
            len(collected[name]) >= close_stdout_after
        if not data or over:
            os.close(fd)
            del names[fd]
