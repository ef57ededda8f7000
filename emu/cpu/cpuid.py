"""CPUID as the machine's devices need it to read: Unicorn's (QEMU's) CPU model, with the
bits the platform implies set or cleared (a local APIC, the TSC-deadline timer, an invariant
TSC, the TSC and crystal frequencies of virtual time: emu/hw/platform.py's facts).

Owns: the CPUID hook and the base values, measured once per leaf on a probe CPU (the model
is the same for every machine of this Unicorn build), then patched.
Does not own: which facts hold (the machine passes them).
"""
from __future__ import annotations

import functools
from typing import Iterable, Protocol

from unicorn import UC_ARCH_X86, UC_MODE_64, Uc
from unicorn import x86_const as X

from emu.engine.guard import NO_OPERANDS, HookGuard

REGISTERS = {"eax": X.UC_X86_REG_RAX, "ebx": X.UC_X86_REG_RBX, "ecx": X.UC_X86_REG_RCX,
             "edx": X.UC_X86_REG_RDX}
_CPUID = b"\x0f\xa2\xf4"            # cpuid; hlt
_PROBE_CODE = 0x1000
_SKIP_UNICORNS_OWN = 1


class Fact(Protocol):
    """A CPUID output field: (register & mask) == value for (leaf, subleaf)."""
    leaf: int
    subleaf: int
    register: str
    mask: int
    value: int


@functools.lru_cache(maxsize=256)
def base_values(leaf: int, subleaf: int) -> tuple[int, int, int, int]:
    """(eax, ebx, ecx, edx) of Unicorn's own CPUID for this leaf, measured on a probe."""
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    uc.mem_map(0, 0x2000)
    uc.mem_write(_PROBE_CODE, _CPUID)
    uc.reg_write(X.UC_X86_REG_RAX, leaf)
    uc.reg_write(X.UC_X86_REG_RCX, subleaf)
    uc.emu_start(_PROBE_CODE, _PROBE_CODE + 2)
    return tuple(uc.reg_read(REGISTERS[name]) & 0xFFFFFFFF
                 for name in ("eax", "ebx", "ecx", "edx"))


class CpuidModel:
    """Answers every CPUID with the base values patched by `facts`."""

    def __init__(self, uc, guard: HookGuard, facts: Iterable[Fact]) -> None:
        self.uc = uc
        self._facts: dict[tuple[int, int], list[Fact]] = {}
        for fact in facts:
            self._facts.setdefault((fact.leaf, fact.subleaf), []).append(fact)
        self._answers: dict[tuple[int, int], tuple[int, ...]] = {}
        guard.hook_instruction(X.UC_X86_INS_CPUID, NO_OPERANDS, self._on_cpuid, on_error=0)

    def answer(self, leaf: int, subleaf: int) -> tuple[int, int, int, int]:
        key = (leaf, subleaf)
        answer = self._answers.get(key)
        if answer is None:
            values = dict(zip(("eax", "ebx", "ecx", "edx"), base_values(leaf, subleaf)))
            for fact in self._facts.get(key, ()):
                values[fact.register] = (values[fact.register] & ~fact.mask) | \
                    (fact.value & fact.mask)
            answer = self._answers[key] = tuple(values[r] for r in ("eax", "ebx", "ecx",
                                                                    "edx"))
        return answer

    def _on_cpuid(self, _handle, _data) -> int:
        leaf = self.uc.reg_read(X.UC_X86_REG_RAX) & 0xFFFFFFFF
        subleaf = self.uc.reg_read(X.UC_X86_REG_RCX) & 0xFFFFFFFF
        for name, value in zip(("eax", "ebx", "ecx", "edx"), self.answer(leaf, subleaf)):
            self.uc.reg_write(REGISTERS[name], value)
        return _SKIP_UNICORNS_OWN
