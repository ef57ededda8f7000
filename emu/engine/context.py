"""Where QEMU's CPUX86State fields sit inside a Unicorn context, found and checked at start-up.

Unicorn never delivers exceptions through the guest IDT, cannot change the CPL through
reg_write, and leaves `old_exception` set after a hooked fault (issue #1883: the next fault
becomes #DF). The monitor therefore edits the saved context bytes and restores them: one
save and one restore (a few microseconds) instead of dozens of register calls.

The offsets are measured on a probe machine by writing known values and finding them in the
saved bytes, and by provoking a page fault; a Unicorn build whose layout differs is refused
with a clear error instead of corrupting guest state.
"""
from __future__ import annotations

import ctypes
import functools
import struct
from dataclasses import dataclass

from unicorn import UC_ARCH_X86, UC_HOOK_INTR, UC_MODE_64, Uc
from unicorn import x86_const as X
from emu.engine import capi
from emu.errors import EngineError
from emu.x86 import MSR_EFER, MSR_FMASK, MSR_LSTAR, MSR_STAR

# QEMU's register order in env->regs[]
REG_INDEX = {"rax": 0, "rcx": 1, "rdx": 2, "rbx": 3, "rsp": 4, "rbp": 5, "rsi": 6, "rdi": 7,
             **{f"r{n}": n for n in range(8, 16)}}
SEGMENTS = ("es", "cs", "ss", "ds", "fs", "gs")

# QEMU internals: the CPL lives in the low bits of env->hflags; CC_OP_EFLAGS means "the
# arithmetic flags are in cc_src" (segment-cache flags are the descriptor bits of emu.x86).
HF_CPL_MASK = 3
CC_OP_EFLAGS = 1


@dataclass(frozen=True, slots=True)
class Layout:
    header: int          # bytes before env in a uc_context
    size: int            # bytes of env in a context
    eip: int = 128
    eflags: int = 136
    cc_src: int = 152
    cc_op: int = 168
    df: int = 172
    hflags: int = 176
    segs: int = 184      # 6 x SegmentCache {u32 selector; u64 base; u32 limit; u32 flags}
    seg_size: int = 24
    tr: int = 352
    gdt: int = 376
    idt: int = 400
    cr: int = 424
    efer: int = 0
    star: int = 0
    lstar: int = 0
    fmask: int = 0
    error_code: int = 0
    exception_is_int: int = 0
    exception_next_eip: int = 0
    old_exception: int = 0

    def reg(self, name: str) -> int:
        return 8 * REG_INDEX[name]

    def seg(self, name: str) -> int:
        return self.segs + self.seg_size * SEGMENTS.index(name)


def _find(data: bytes, value: int, fmt: str = "<Q") -> list[int]:
    needle = struct.pack(fmt, value)
    step = struct.calcsize(fmt)
    return [off for off in range(0, len(data) - step + 1, 4) if data[off:off + step] == needle]


class ContextBuffer:
    """One preallocated Unicorn context whose env bytes Python can read and patch in place."""

    def __init__(self, uc: Uc, layout: Layout) -> None:
        self.uc = uc
        self.layout = layout
        self._context = uc.context_save()
        address = capi.context_address(self._context) + layout.header
        self.view = memoryview((ctypes.c_char * layout.size).from_address(address)).cast("B")
        self._saver = capi.ContextSaver(uc, self._context)
        self.restore = self._saver.restore

    def save(self) -> memoryview:
        self._saver.save()
        return self.view

    def snapshot(self) -> bytes:
        return bytes(self.view)


def _probe_machine() -> Uc:
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    uc.mem_map(0, 0x10000)
    return uc


def _saved(uc: Uc, header: int, size: int) -> bytes:
    context = uc.context_save()
    return ctypes.string_at(capi.context_address(context) + header, size)


@functools.lru_cache(maxsize=1)
def layout() -> Layout:
    """Measure and verify the context layout of the loaded Unicorn."""
    uc = _probe_machine()
    capi.check()
    total = capi.context_size(uc)
    uc.reg_write(X.UC_X86_REG_RAX, 0x5A5A_1234_8765_A5A5)
    raw = ctypes.string_at(capi.context_address(uc.context_save()), total)
    header = raw.find(struct.pack("<Q", 0x5A5A_1234_8765_A5A5))
    if header < 0 or header > 64:
        raise EngineError("unsupported unicorn build: cannot find registers in a CPU context; "
                       "install unicorn==2.1.4")
    size = total - header
    base = Layout(header=header, size=size)

    def located(reg, value, offset, label):
        uc.reg_write(reg, value)
        data = _saved(uc, header, size)
        if struct.unpack_from("<Q", data, offset)[0] != (value if isinstance(value, int)
                                                         else value[1]):
            raise EngineError(f"unsupported unicorn build: {label} is not where QEMU 5 keeps it; "
                           "install unicorn==2.1.4")

    located(X.UC_X86_REG_RIP, 0x1234, base.eip, "RIP")
    located(X.UC_X86_REG_RSP, 0x7770, base.reg("rsp"), "RSP")
    located(X.UC_X86_REG_CR3, 0x5000, base.cr + 8 * 3, "CR3")
    located(X.UC_X86_REG_GDTR, (0, 0x4440, 0x37, 0), base.gdt + 8, "GDTR")
    located(X.UC_X86_REG_IDTR, (0, 0x5550, 0xFFF, 0), base.idt + 8, "IDTR")
    uc.reg_write(X.UC_X86_REG_IDTR, (0, 0, 0, 0))
    uc.reg_write(X.UC_X86_REG_GDTR, (0, 0, 0, 0))

    offsets = {}
    for name, msr, value in (("star", MSR_STAR, 0x0023_0008_0000_0000),
                             ("lstar", MSR_LSTAR, 0xFFFF_8000_1234_5678),
                             ("fmask", MSR_FMASK, 0x4_7700)):
        uc.reg_write(X.UC_X86_REG_MSR, (msr, value))
        hits = _find(_saved(uc, header, size), value)
        if len(hits) != 1:
            raise EngineError(f"unsupported unicorn build: cannot locate MSR {name}")
        offsets[name] = hits[0]
    before = _saved(uc, header, size)
    uc.reg_write(X.UC_X86_REG_MSR, (MSR_EFER, 0xD01))
    after = _saved(uc, header, size)
    efer = [off for off in _find(after, 0xD01) if off not in _find(before, 0xD01)]
    if len(efer) != 1:
        raise EngineError("unsupported unicorn build: cannot locate EFER")
    offsets["efer"] = efer[0]
    offsets.update(_fault_fields(header, size))
    return Layout(header=header, size=size, **offsets)


def _fault_fields(header: int, size: int) -> dict[str, int]:
    """Provoke a #PF (write, not present) on a paged probe machine and find error_code,
    exception_next_eip and old_exception by their known values."""
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    uc.mem_map(0, 0x20_0000)
    entries = {0x1000: 0x2003, 0x2000: 0x3003, 0x3000: 0x4003}
    for table, value in entries.items():
        uc.mem_write(table, struct.pack("<Q", value))
    for page in range(512):
        if page != 0x100:
            uc.mem_write(0x4000 + 8 * page, struct.pack("<Q", (page << 12) | 3))
    code_at = 0x8000
    # mov qword ptr [0x100008], 7 ; hlt
    uc.mem_write(code_at, bytes.fromhex("48c70425080010000700000000f4"))
    uc.reg_write(X.UC_X86_REG_CR4, 0x20)
    uc.reg_write(X.UC_X86_REG_CR3, 0x1000)
    uc.reg_write(X.UC_X86_REG_CR0, 0x80010011)
    uc.reg_write(X.UC_X86_REG_RSP, 0x7000)
    idle = _saved(uc, header, size)
    seen: list[bytes] = []

    def on_fault(uc, vector, _):
        seen.append(_saved(uc, header, size))
        uc.emu_stop()

    uc.hook_add(UC_HOOK_INTR, on_fault)
    uc.emu_start(code_at, code_at + 14, count=10)
    if not seen:
        raise EngineError("unsupported unicorn build: the probe page fault did not arrive")
    fault = seen[0]

    def changed(value: int, fmt: str, was: int, after: int = 0) -> int:
        hits = [off for off in _find(fault, value, fmt)
                if off > after and struct.unpack_from(fmt, idle, off)[0] == was]
        hits = [off for off in hits if idle[off:off + struct.calcsize(fmt)] != fault[off:off + struct.calcsize(fmt)]]
        if len(hits) != 1:
            raise EngineError("unsupported unicorn build: cannot locate the exception state "
                           f"({value:#x}: {len(hits)} candidates)")
        return hits[0]

    error_code = changed(2, "<i", 0)          # W=1, P=0
    old_exception = changed(14, "<i", -1)     # #PF in flight
    next_eip = changed(code_at, "<Q", 0, after=error_code)
    if next_eip != error_code + 8:
        raise EngineError("unsupported unicorn build: exception fields are not laid out as in QEMU 5")
    return {"error_code": error_code, "exception_is_int": error_code + 4,
            "exception_next_eip": next_eip, "old_exception": old_exception}
