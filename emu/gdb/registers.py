"""The registers GDB sees: a target description (XML) and the register file in its order.

Owns: REGISTERS (name, bits, GDB type, feature, how Unicorn reads it), the XML that
`qXfer:features:read:target.xml` returns, and reading and writing one register or all of
them as GDB's little-endian hex. GDB's `org.gnu.gdb.i386.core` feature must hold every
x87 register for GDB to accept the description; the x87 stack itself (st0-7) reads as
zeros (the kernel under test does not use it).
Does not own: the protocol or the machine.
"""
from __future__ import annotations

from dataclasses import dataclass

from unicorn import x86_const as X

from emu.x86 import MSR_EFER

CORE, SSE, SEGMENTS, SYSTEM = ("org.gnu.gdb.i386.core", "org.gnu.gdb.i386.sse",
                               "org.gnu.gdb.i386.segments", "org.emu.x86.system")


@dataclass(frozen=True, slots=True)
class Register:
    name: str
    bits: int
    type: str
    feature: str
    unicorn: int | None         # None: no Unicorn register (read as zero, not writable)
    msr: int | None = None      # read with msr_read instead
    writable: bool = False


def _build() -> tuple[Register, ...]:
    gprs = ["rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp"] + \
        [f"r{n}" for n in range(8, 16)]
    out = [Register(name, 64, "data_ptr" if name in ("rbp", "rsp") else "int64", CORE,
                    getattr(X, f"UC_X86_REG_{name.upper()}"), writable=True) for name in gprs]
    out.append(Register("rip", 64, "code_ptr", CORE, X.UC_X86_REG_RIP, writable=True))
    out.append(Register("eflags", 32, "int32", CORE, X.UC_X86_REG_EFLAGS, writable=True))
    out += [Register(name, 32, "int32", CORE, getattr(X, f"UC_X86_REG_{name.upper()}"))
            for name in ("cs", "ss", "ds", "es", "fs", "gs")]
    out += [Register(f"st{n}", 80, "i387_ext", CORE, None) for n in range(8)]
    x87 = {"fctrl": X.UC_X86_REG_FPCW, "fstat": X.UC_X86_REG_FPSW, "ftag": X.UC_X86_REG_FPTAG}
    out += [Register(name, 32, "int", CORE, x87.get(name))
            for name in ("fctrl", "fstat", "ftag", "fiseg", "fioff", "foseg", "fooff", "fop")]
    out += [Register(f"xmm{n}", 128, "uint128", SSE, getattr(X, f"UC_X86_REG_XMM{n}"),
                     writable=True) for n in range(16)]
    out.append(Register("mxcsr", 32, "int", SSE, X.UC_X86_REG_MXCSR))
    out += [Register("fs_base", 64, "int", SEGMENTS, X.UC_X86_REG_FS_BASE),
            Register("gs_base", 64, "int", SEGMENTS, X.UC_X86_REG_GS_BASE)]
    out += [Register(name, 64, "int", SYSTEM, getattr(X, f"UC_X86_REG_{name.upper()}"))
            for name in ("cr0", "cr2", "cr3", "cr4", "cr8")]
    out.append(Register("efer", 64, "int", SYSTEM, None, msr=MSR_EFER))
    return tuple(out)


REGISTERS = _build()
BY_NAME = {register.name: number for number, register in enumerate(REGISTERS)}


def target_xml() -> str:
    features: dict[str, list[str]] = {}
    for number, register in enumerate(REGISTERS):
        features.setdefault(register.feature, []).append(
            f'  <reg name="{register.name}" bitsize="{register.bits}" type="{register.type}"'
            f' regnum="{number}"/>')
    body = "\n".join(f'<feature name="{name}">\n' + "\n".join(regs) + "\n</feature>"
                     for name, regs in features.items())
    return ('<?xml version="1.0"?>\n<!DOCTYPE target SYSTEM "gdb-target.dtd">\n'
            f'<target version="1.0">\n<architecture>i386:x86-64</architecture>\n{body}\n'
            '</target>\n')


def read(uc, number: int) -> str:
    """Register `number` as GDB's hex (target byte order)."""
    register = REGISTERS[number]
    if register.msr is not None:
        value = uc.msr_read(register.msr)
    elif register.unicorn is None:
        value = 0
    else:
        value = uc.reg_read(register.unicorn)
    value &= (1 << register.bits) - 1
    return value.to_bytes(register.bits // 8, "little").hex()


def read_all(uc) -> str:
    return "".join(read(uc, number) for number in range(len(REGISTERS)))


def write(uc, number: int, text: str) -> bool:
    """Set register `number` from GDB's hex; False if it may not be written from GDB
    (segment, control and x87 registers: changing them behind the monitor's back would
    break what it knows of the CPU)."""
    register = REGISTERS[number]
    if not register.writable:
        return False
    uc.reg_write(register.unicorn, int.from_bytes(bytes.fromhex(text), "little"))
    return True
