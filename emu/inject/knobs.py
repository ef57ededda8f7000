"""When an injector fires: the knobs of Linux's fault-injection framework
(Documentation/fault-injection/fault-injection.rst), decided deterministically.

Owns: `Knobs` and `Decider.should_fail(size)`, in Linux's order: `fail-nth` first (fail
exactly the Nth call, once), then `times` (no more failures once used up), `space` (the
first calls consume a budget of bytes and never fail), `interval` (only every Nth call
that got this far may fail), `probability` (percent, from a seeded generator).
Does not own: where calls are counted (the injectors) or what failing means.
"""
from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Knobs:
    probability: int = 100       # percent of the calls that pass the other knobs
    interval: int = 1            # only every interval-th of those calls may fail
    times: int = -1              # failures allowed at most; -1: no limit
    space: int = 0               # bytes the first calls may consume without failing
    fail_nth: int = 0            # fail exactly the Nth call (1-based), once; 0: off
    seed: int = 0                # the generator behind `probability`

    def describe(self) -> str:
        """The knobs that differ from the defaults, as the spec grammar writes them."""
        fields = [("probability", self.probability, 100), ("interval", self.interval, 1),
                  ("times", self.times, -1), ("space", self.space, 0),
                  ("fail-nth", self.fail_nth, 0), ("seed", self.seed, 0)]
        return ",".join(f"{name}={value}" for name, value, default in fields
                        if value != default)


class Decider:
    """One injector's state: calls seen, failures made, budget left."""

    def __init__(self, knobs: Knobs) -> None:
        self.knobs = knobs
        self.calls = 0
        self.failures = 0
        self._times = knobs.times
        self._space = knobs.space
        self._count = 0
        self._random = random.Random(knobs.seed)

    def should_fail(self, size: int = 0) -> bool:
        """Count one call (of `size` bytes, for `space`) and say whether it fails."""
        self.calls += 1
        knobs = self.knobs
        if knobs.fail_nth:
            if self.calls == knobs.fail_nth:
                return self._fail()
            return False
        if self._times == 0:
            return False
        if self._space > size:
            self._space -= size
            return False
        if knobs.interval > 1:
            self._count += 1
            if self._count % knobs.interval:
                return False
        if knobs.probability <= self._random.randrange(100):
            return False
        return self._fail()

    def resume(self, calls: int) -> None:
        """The first `calls` calls were made, none failing, before a snapshot this
        injector was attached after (a campaign variant that starts at a later call)."""
        self.calls += calls
        self._count += calls

    def _fail(self) -> bool:
        self.failures += 1
        if self._times > 0:
            self._times -= 1
        return True
