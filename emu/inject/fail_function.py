"""fail-function: make a kernel function fail from outside, like Linux's fail_function.

Owns: hooking the function's first instruction, counting its calls (those from `caller`
only, if given; those after checkpoint `after` only, if given), and, when the knobs say so, returning `retval` to the caller without
running the body (SysV: the value in RAX, the return address popped).
Does not own: the knobs' decision (knobs.py), the CPU's redirection (Cpu.return_from_call).

A compiler clone (`kmalloc.isra.0`, `.part`, `.constprop`, `.cold`) is code of its own that
callers reach without the original's entry: hooking the original would miss those calls,
so a function that has clones, or a clone itself, is refused by name.
"""
from __future__ import annotations

import struct

from unicorn import x86_const as X

from emu.errors import ConfigError
from emu.events import Checkpoint, Injection, Observer
from emu.inject.knobs import Decider
from emu.inject.spec import InjectionSpec
from emu.monitor.symbols import CLONE_SUFFIXES

_U64 = struct.Struct("<Q")


class FailFunction(Observer):
    def __init__(self, machine, spec: InjectionSpec) -> None:
        self.machine = machine
        self.after = spec.number("after")           # a checkpoint number, or None
        # Armed already on a machine restored from a snapshot taken after the checkpoint.
        self.armed = self.after is None or self.after in machine.devices.checkpoint.passed
        # A campaign's clean run sets a list: the instruction count of every counted call,
        # where variants that fail a later call can start from a snapshot.
        self.call_times: list[int] | None = None
        self.spec = spec
        self.function = spec.params["function"]
        self.retval = spec.number("retval", 0)
        self.caller = spec.params.get("caller")
        self.decider = Decider(spec.knobs)
        symbols = machine.symbols
        if any(part in CLONE_SUFFIXES for part in self.function.split(".")[1:]):
            raise ConfigError(f"--inject {spec.text}: {self.function} is a compiler clone; "
                              f"inject into the function it was cloned from")
        self.address = symbols.address_of(self.function)
        if self.address is None:
            raise ConfigError(f"--inject {spec.text}: the kernel has no function "
                              f"{self.function}; check the name (`nm KERNEL`)")
        clones = symbols.clones_of(self.function)
        if clones:
            raise ConfigError(f"--inject {spec.text}: {self.function} has compiler clones "
                              f"({', '.join(clones)}) that some calls reach instead; build "
                              f"the kernel with it noinline (__attribute__((noinline)))")
        machine.hooks.on_execute(self.address, self._entry)
        if not self.armed:
            machine.events.subscribe(self)

    def on_checkpoint(self, event: Checkpoint) -> None:
        if event.number == self.after:
            self.armed = True

    def describe(self) -> str:
        return f"fail-function {self.function} at {self.address:#x}"

    def _entry(self, uc, address: int, size: int, _data) -> None:
        if not self.armed:
            return
        cpu = self.machine.cpu
        return_address = _U64.unpack(cpu.read_virtual(cpu.reg(X.UC_X86_REG_RSP), 8))[0]
        caller = self.machine.symbols.lookup(return_address)
        if self.caller is not None and caller.partition("+")[0] != self.caller:
            return
        if self.call_times is not None:
            self.call_times.append(cpu.time_stamp(address))
        if not self.decider.should_fail():
            return
        events = self.machine.events
        if events.wants(Injection):
            events.emit(Injection(cpu.time_stamp(address), "fail-function", self.function,
                                  f"call {self.decider.calls} from {caller} returned "
                                  f"{self.retval}"))
        cpu.return_from_call(self.retval)
