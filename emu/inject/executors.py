"""Where a campaign's variants run: local worker processes (the default, one per core) or a
Dask cluster (`pip install 'emu[dask]'`), with the same results in the same order.

Owns: starting the workers, handing out (job, index, n, specs) and collecting Outcomes as
they finish, and the progress line (done, failures, ETA) on stderr.
Does not own: what a variant does (variant.run_variant).
"""
from __future__ import annotations

import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Callable, Iterable

from emu.errors import ConfigError
from emu.inject.campaign import Outcome
from emu.inject.variant import run_variant

Task = tuple  # index, n, specs[, start]: run_variant's arguments after the job
CONNECT_SECONDS = 5


class Progress:
    """`[12/40] 3 failing, ETA 0:21` on stderr, redrawn in place when it is a terminal."""

    def __init__(self, total: int, stream=None) -> None:
        self.total, self.done, self.failing = total, 0, 0
        self.started = time.monotonic()
        self.stream = stream if stream is not None else sys.stderr
        self.live = getattr(self.stream, "isatty", lambda: False)()

    def update(self, outcome: Outcome) -> None:
        self.done += 1
        self.failing += outcome.kind != "passed"
        elapsed = time.monotonic() - self.started
        left = elapsed / self.done * (self.total - self.done)
        line = (f"[{self.done}/{self.total}] {self.failing} failing, "
                f"ETA {int(left) // 60}:{int(left) % 60:02d}")
        if self.live:
            self.stream.write("\r" + line + ("\n" if self.done == self.total else ""))
        elif self.done == self.total or self.done % max(1, self.total // 10) == 0:
            self.stream.write(line + "\n")
        self.stream.flush()


def run_local(job: dict, tasks: Iterable[Task], workers: int | None,
              on_outcome: Callable[[Outcome], None]) -> list[Outcome]:
    """Worker processes (fork: they inherit the built kernel and counter library)."""
    workers = workers or os.cpu_count() or 1
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = [pool.submit(run_variant, job, *task) for task in tasks]
        outcomes = []
        for future in as_completed(futures):
            outcome = future.result()
            on_outcome(outcome)
            outcomes.append(outcome)
    return sorted(outcomes, key=lambda outcome: outcome.index)


def run_dask(job: dict, tasks: Iterable[Task], scheduler: str, workers: int | None,
             on_outcome: Callable[[Outcome], None]) -> list[Outcome]:
    """A Dask cluster: `scheduler` is its address, or "local" for a LocalCluster of
    `workers` processes on this machine."""
    try:
        from distributed import Client, LocalCluster, as_completed as dask_completed
    except ImportError:
        raise ConfigError("the Dask executor needs dask.distributed: pip install "
                          "'emu[dask]'") from None
    cluster = None
    if scheduler == "local":
        cluster = LocalCluster(n_workers=workers or os.cpu_count() or 1,
                               threads_per_worker=1, processes=True, dashboard_address=None)
    elif not scheduler.startswith(("tcp://", "tls://", "inproc://", "ucx://")) or \
            ":" not in scheduler.partition("://")[2]:
        raise ConfigError(f"--scheduler {scheduler}: give the scheduler's address, e.g. "
                          f"tcp://10.0.0.5:8786, or local")
    try:
        client = Client(cluster if cluster is not None else scheduler, timeout=CONNECT_SECONDS)
    except (OSError, TimeoutError) as exc:
        if cluster is not None:
            cluster.close()
        raise ConfigError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
    try:
        with client:
            futures = [client.submit(run_variant, job, *task, pure=False) for task in tasks]
            outcomes = []
            for future in dask_completed(futures):
                outcome = future.result()
                on_outcome(outcome)
                outcomes.append(outcome)
    finally:
        if cluster is not None:
            cluster.close()
    return sorted(outcomes, key=lambda outcome: outcome.index)
