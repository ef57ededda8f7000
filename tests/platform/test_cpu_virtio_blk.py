"""The virtio-blk device on a running CPU: a small kernel assembled here brings the device
up register by register, writes a sector, reads it back, and halts until each completion
interrupt arrives through the platform's routing (the 8259 pair, or the IOAPIC and local
APIC) on ISA IRQ 5. The interrupt must come exactly `latency` ticks after the notify, the
same in every run, and a latency of 0 must complete within the notify itself."""
from __future__ import annotations

import struct

import pytest

from emu.bare import BareMachine
from emu.hw.blockdev import VIRTIO_BLK_BASE, VIRTIO_BLK_IRQ, install_swap_device
from emu.hw.devices import virtio_blk as B
from emu.hw.disk import DiskImage
from emu.result import RunEnd

DESC, AVAIL, USED, REQ = 0x200000, 0x201000, 0x202000, 0x203000
HEADERS, STATUS, DATA_OUT, DATA_IN = REQ, REQ + 0x100, REQ + 0x1000, REQ + 0x2000
COUNT, STAMPS = 0x5000, 0x5100          # interrupts seen; [notify TSC, interrupt TSC] each
IOAPIC, LAPIC = 0xFEC00000, 0xFEE00000
VECTOR = 0x35

PIC_ROUTE = f"""
    mov al, 0x11
    out 0x20, al
    out 0xA0, al
    mov al, 0x30
    out 0x21, al
    mov al, 0x38
    out 0xA1, al
    mov al, 4
    out 0x21, al
    mov al, 2
    out 0xA1, al
    mov al, 1
    out 0x21, al
    out 0xA1, al
    mov al, {0xFF & ~(1 << VIRTIO_BLK_IRQ)}
    out 0x21, al
    mov al, 0xFF
    out 0xA1, al
"""
PIC_EOI = "mov al, 0x20\n out 0x20, al"
IOAPIC_ROUTE = f"""
    mov al, 0xFF
    out 0x21, al
    out 0xA1, al
    mov rax, {{lapic}}
    mov dword ptr [rax + 0xF0], 0x1FF
    mov rax, {{ioapic}}
    mov dword ptr [rax], {0x10 + 2 * VIRTIO_BLK_IRQ}
    mov dword ptr [rax + 0x10], {VECTOR}
    mov dword ptr [rax], {0x11 + 2 * VIRTIO_BLK_IRQ}
    mov dword ptr [rax + 0x10], 0
"""
LAPIC_EOI = "mov rax, {lapic}\n mov dword ptr [rax + 0xB0], 0"

BRING_UP = f"""
    mov rbx, {{virtio}}
    mov dword ptr [rbx + 0x70], 0
    mov dword ptr [rbx + 0x70], 1
    mov dword ptr [rbx + 0x70], 3
    mov dword ptr [rbx + 0x24], 1
    mov dword ptr [rbx + 0x20], 1                 /* VERSION_1 */
    mov dword ptr [rbx + 0x24], 0
    mov dword ptr [rbx + 0x20], 0
    mov dword ptr [rbx + 0x70], 0xB
    mov dword ptr [rbx + 0x30], 0
    mov dword ptr [rbx + 0x38], 8
    mov dword ptr [rbx + 0x80], {DESC}
    mov dword ptr [rbx + 0x84], 0
    mov dword ptr [rbx + 0x90], {AVAIL}
    mov dword ptr [rbx + 0x94], 0
    mov dword ptr [rbx + 0xA0], {USED}
    mov dword ptr [rbx + 0xA4], 0
    mov dword ptr [rbx + 0x44], 1
    mov dword ptr [rbx + 0x70], 0xF
"""


def submit(n: int) -> str:
    """Offer request n (head 3n), stamp the TSC, notify, halt until interrupt n+1."""
    return f"""
    mov rax, {AVAIL}
    mov word ptr [rax + {4 + 2 * n}], {3 * n}
    mov word ptr [rax + 2], {n + 1}
    rdtsc
    shl rdx, 32
    or rax, rdx
    mov rdx, {STAMPS + 16 * n}
    mov [rdx], rax
    mov dword ptr [rbx + 0x50], 0
    sti
wait{n}:
    mov rax, {COUNT}
    cmp qword ptr [rax], {n + 1}
    jae done{n}
    hlt
    jmp wait{n}
done{n}:
    cli
"""


HANDLER = f"""
    push rax
    push rdx
    push rbx
    rdtsc
    shl rdx, 32
    or rax, rdx
    mov rbx, {COUNT}
    mov rbx, [rbx]
    shl rbx, 4
    mov rdx, {STAMPS + 8}
    mov [rdx + rbx], rax
    mov rbx, {{virtio}}
    mov eax, dword ptr [rbx + 0x60]
    mov dword ptr [rbx + 0x64], eax
    mov rax, {COUNT}
    inc qword ptr [rax]
    {{eoi}}
    pop rbx
    pop rdx
    pop rax
    iretq
"""


def requests(machine: BareMachine) -> bytes:
    """Two chains in memory: a write of DATA_OUT to sector 4, a read of it into DATA_IN."""
    data = bytes((i * 7) & 0xFF for i in range(512))
    memory = machine.memory
    memory.write(DATA_OUT, data)
    for n, (kind, buffer, flags) in enumerate(((B.T_OUT, DATA_OUT, 0), (B.T_IN, DATA_IN, 2))):
        memory.write(HEADERS + 16 * n, B.HEADER.pack(kind, 0, 4))
        memory.write(STATUS + n, b"\xEE")
        base = DESC + 48 * n
        memory.write(base, struct.pack("<QIHH", HEADERS + 16 * n, 16, 1, 3 * n + 1))
        memory.write(base + 16, struct.pack("<QIHH", buffer, 512, 1 | flags, 3 * n + 2))
        memory.write(base + 32, struct.pack("<QIHH", STATUS + n, 1, 2, 0))
    return data


def run(route: str, eoi: str, latency: int):
    machine = BareMachine(platform=True)
    disk = DiskImage.temporary(1 << 20)
    install_swap_device(machine.platform, machine.bus, machine.memory, machine.events, disk,
                        latency=latency)
    pages = {"virtio": machine.map_mmio(VIRTIO_BLK_BASE), "lapic": machine.map_mmio(LAPIC),
             "ioapic": machine.map_mmio(IOAPIC)}
    data = requests(machine)
    main = route.format(**pages) + BRING_UP.format(**pages) + submit(0) + submit(1) + \
        "\n hlt"
    routines = machine.load(main, handler=HANDLER.format(eoi=eoi.format(**pages), **pages))
    vector = VECTOR if "ioapic" in route else 0x30 + VIRTIO_BLK_IRQ
    machine.gate(vector, routines["handler"])
    machine.boot()
    end = machine.run(budget=1_000_000)
    stamps = struct.unpack("<4Q", machine.memory.read(STAMPS, 32))
    return end, machine, disk, data, [(stamps[0], stamps[1]), (stamps[2], stamps[3])]


@pytest.mark.parametrize("route, eoi", [(PIC_ROUTE, PIC_EOI), (IOAPIC_ROUTE, LAPIC_EOI)],
                         ids=["8259", "ioapic"])
def test_requests_complete_with_an_interrupt_exactly_latency_ticks_later(route, eoi):
    end, machine, disk, data, stamps = run(route, eoi, latency=50_000)
    assert end is RunEnd.HALT
    assert machine.memory.read(STATUS, 2) == b"\0\0"
    assert disk.read(4 * 512, 512) == data and machine.memory.read(DATA_IN, 512) == data
    delays = [interrupt - notify for notify, interrupt in stamps]
    # notify at its rdtsc + a few instructions; the handler's rdtsc a few after delivery
    assert all(50_000 < delay < 50_000 + 40 for delay in delays), delays
    assert len(set(delays)) == 1
    assert run(route, eoi, latency=50_000)[4] == stamps          # the same in every run
    assert machine.cpu.icount() < 1000                            # the wait was halted


def test_latency_zero_interrupts_right_after_the_notify():
    end, _, disk, data, stamps = run(PIC_ROUTE, PIC_EOI, latency=0)
    assert end is RunEnd.HALT and disk.read(4 * 512, 512) == data
    assert all(0 < interrupt - notify < 40 for notify, interrupt in stamps), stamps
