"""The accesses the CPU itself makes: descriptor tables, the TSS and the new stack of an
interrupt frame, read and written at supervisor level through the page tables.

Owns: translating those accesses as the MMU would (raising CpuFault with the #PF error code
it would produce), a TLB of them (flushed on CR3 writes and invlpg, like the CPU's), reading
IDT gates, GDT code descriptors and TSS fields with the checks the SDM lists (vol. 3,
6.12.1.1 gate checks, 6.14.4 stack switching, 7.7 TSS).
Does not own: what a delivery does with them (delivery.py), or the CPU's registers.

`env` arguments are the saved context bytes (emu/engine/context.py) of the delivery in
progress: CR0, CR3, EFER, GDTR, IDTR and TR come from there, current for that instant.
"""
from __future__ import annotations

import struct

from emu.arch import paging
from emu.engine.context import Layout
from emu.errors import CpuFault, UnbackedAccess
from emu.hw.memory import PhysicalMemory
from emu.x86 import (CR0_PG, CR0_WP, DESC_CODE, DESC_DPL_SHIFT, DESC_L, DESC_P, DESC_S, EFER_NXE, GATE_SIZE,
                     GENERAL_PROTECTION, INVALID_TSS, PAGE_FAULT, PAGE_SIZE, PF_PRESENT,
                     PF_RESERVED, SEGMENT_NOT_PRESENT, SELECTOR_RPL, SELECTOR_TI)

U32 = struct.Struct("<I")
U64 = struct.Struct("<Q")
GATES = struct.Struct("<QQ")
_TLB_LIMIT = 4096
_CR3_OFFSET = 24
_NO_PAGING = -1


def decode_gate(raw: bytes) -> tuple[int, int, int, int, int, int]:
    """(handler, selector, ist, type, dpl, present) of a 16-byte 64-bit IDT gate."""
    low, high = GATES.unpack(raw)
    handler = (low & 0xFFFF) | ((low >> 32) & 0xFFFF0000) | ((high & 0xFFFFFFFF) << 32)
    return (handler, (low >> 16) & 0xFFFF, (low >> 32) & 7, (low >> 40) & 0xF,
            (low >> 45) & 3, (low >> 47) & 1)


class SystemMemory:
    """Supervisor accesses of the CPU, with a TLB per virtual page:
    page -> (CR3, writable, RAM view, offset)."""

    def __init__(self, memory: PhysicalMemory, layout: Layout) -> None:
        self.memory = memory
        self.layout = layout
        self._tlb: dict[int, tuple[int, bool, memoryview, int]] = {}
        self._gates: dict[bytes, tuple] = {}          # raw IDT gate -> decoded fields

    def flush(self, page: int | None = None) -> None:
        """Forget cached translations (all, or one virtual page)."""
        if page is None:
            self._tlb.clear()
        else:
            self._tlb.pop(page >> 12, None)

    def locate(self, env: memoryview, vaddr: int, write: bool) -> tuple[memoryview, int]:
        """(RAM view, offset) of `vaddr` for a supervisor access; CpuFault as the MMU."""
        lay = self.layout
        cr0 = U64.unpack_from(env, lay.cr)[0]
        cr3 = U64.unpack_from(env, lay.cr + _CR3_OFFSET)[0] if cr0 & CR0_PG else _NO_PAGING
        cached = self._tlb.get(vaddr >> 12)
        if cached is not None and cached[0] == cr3 and (cached[1] or not write):
            return cached[2], cached[3] + (vaddr & 0xFFF)
        if cr3 == _NO_PAGING:
            frame, writable = vaddr & ~0xFFF, True
        else:
            frame, writable = self._translate(env, cr0, cr3, vaddr, write)
        try:
            view, offset = self.memory.locate(frame, PAGE_SIZE)
        except UnbackedAccess:
            raise CpuFault(GENERAL_PROTECTION, 0) from None
        if len(self._tlb) > _TLB_LIMIT:
            self._tlb.clear()
        self._tlb[vaddr >> 12] = (cr3, writable, view, offset)
        return view, offset + (vaddr & 0xFFF)

    def _translate(self, env: memoryview, cr0: int, cr3: int, vaddr: int,
                   write: bool) -> tuple[int, bool]:
        nxe = bool(U64.unpack_from(env, self.layout.efer)[0] & EFER_NXE)
        wp = bool(cr0 & CR0_WP)
        try:
            result = paging.walk(self.memory.read_u64, cr3, vaddr, nxe)
        except UnbackedAccess:
            raise CpuFault(PAGE_FAULT, PF_RESERVED | PF_PRESENT, vaddr) from None
        code = paging.fault_code(result, write=write, user=False, fetch=False, wp=wp, nxe=nxe)
        if code is not None:
            raise CpuFault(PAGE_FAULT, code, vaddr)
        writable = paging.fault_code(result, write=True, user=False, fetch=False, wp=wp,
                                     nxe=nxe) is None
        return result.paddr & ~0xFFF, writable

    def read(self, env: memoryview, vaddr: int, size: int) -> bytes:
        out = b""
        while size:
            chunk = min(size, PAGE_SIZE - (vaddr & 0xFFF))
            view, offset = self.locate(env, vaddr, write=False)
            out += view[offset:offset + chunk]
            vaddr += chunk
            size -= chunk
        return out

    def write(self, env: memoryview, vaddr: int, data: bytes) -> None:
        """Every page is translated first: a fault leaves no half-written frame."""
        pieces = []
        done = 0
        while done < len(data):
            chunk = min(len(data) - done, PAGE_SIZE - ((vaddr + done) & 0xFFF))
            view, offset = self.locate(env, vaddr + done, write=True)
            pieces.append((view, offset, data[done:done + chunk]))
            done += chunk
        for view, offset, piece in pieces:
            view[offset:offset + len(piece)] = piece

    # ---- descriptor tables ------------------------------------------------------------

    def gate(self, env: memoryview, vector: int, idt_error: int) -> tuple:
        """The decoded IDT gate of `vector`; #GP(idt_error) beyond the IDT's limit."""
        lay = self.layout
        idt_base = U64.unpack_from(env, lay.idt + 8)[0]
        idt_limit = U32.unpack_from(env, lay.idt + 16)[0]
        if vector * GATE_SIZE + GATE_SIZE - 1 > idt_limit:
            raise CpuFault(GENERAL_PROTECTION, idt_error)
        raw = self.read(env, idt_base + vector * GATE_SIZE, GATE_SIZE)
        gate = self._gates.get(raw)
        if gate is None:
            gate = self._gates[raw] = decode_gate(raw)
        return gate

    def code_descriptor(self, env: memoryview, selector: int, cpl: int, external: int) -> int:
        """The GDT descriptor of an interrupt gate's code selector, checked: present,
        code, DPL <= CPL (#GP or #NP with the selector as error code)."""
        lay = self.layout
        index = selector & ~7
        error = (selector & ~SELECTOR_RPL) + external
        if index == 0 or selector & SELECTOR_TI:
            raise CpuFault(GENERAL_PROTECTION, error)
        gdt_base = U64.unpack_from(env, lay.gdt + 8)[0]
        gdt_limit = U32.unpack_from(env, lay.gdt + 16)[0]
        if index + 7 > gdt_limit:
            raise CpuFault(GENERAL_PROTECTION, error)
        descriptor = U64.unpack_from(self.read(env, gdt_base + index, 8))[0]
        flags = descriptor >> 32
        if not (flags & DESC_CODE and flags & DESC_S) or not flags & DESC_L or \
                (flags >> DESC_DPL_SHIFT) & 3 > cpl:
            raise CpuFault(GENERAL_PROTECTION, error)
        if not flags & DESC_P:
            raise CpuFault(SEGMENT_NOT_PRESENT, error)
        return descriptor

    def tss_field(self, env: memoryview, offset: int) -> int:
        """A 64-bit field of the TSS (RSPn, ISTn); #TS when outside the TSS or zero."""
        lay = self.layout
        base = U64.unpack_from(env, lay.tr + 8)[0]
        limit = U32.unpack_from(env, lay.tr + 16)[0]
        selector = U32.unpack_from(env, lay.tr)[0]
        if offset + 7 > limit:
            raise CpuFault(INVALID_TSS, selector & ~SELECTOR_RPL)
        value = U64.unpack_from(self.read(env, base + offset, 8))[0]
        if not value:
            raise CpuFault(INVALID_TSS, selector & ~SELECTOR_RPL)   # a zero RSPn/IST is broken
        return value
