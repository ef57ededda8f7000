"""The bus and device models on a bare Unicorn CPU: long mode, CPL 0, paging off unless a
test turns it on, so virtual and physical addresses are the same."""
from __future__ import annotations

import struct

import pytest
from keystone import KS_ARCH_X86, KS_MODE_64, Ks
from unicorn import UC_ARCH_X86, UC_MODE_64, Uc, UcError
from unicorn.x86_const import (UC_X86_REG_CR0, UC_X86_REG_CR3, UC_X86_REG_CR4, UC_X86_REG_RAX,
                               UC_X86_REG_RBX, UC_X86_REG_RSP)

from emu.hw.bus import Access, Bus, Device, Register
from emu.hw.devices.pc import (COM1, DebugExit, Uart16550, install_pc_devices, qemu_status)
from emu.errors import ConfigError, GuestCrash
from emu.events import EventBus, MmioAccess, Observer, PortAccess, SerialOutput
from emu.engine.guard import HookGuard

CODE = 0x1000
STACK_TOP = 0x9000
MMIO = 0x10000
_ks = Ks(KS_ARCH_X86, KS_MODE_64)


class Recorder(Observer):
    def __init__(self) -> None:
        self.events = []

    def on_event(self, event) -> None:
        self.events.append(event)

    def of(self, kind):
        return [event for event in self.events if isinstance(event, kind)]


class Rig:
    """A bare CPU with a code page, a stack, a bus and the PC devices."""

    def __init__(self, unknown_ports: str = "error") -> None:
        self.uc = Uc(UC_ARCH_X86, UC_MODE_64)
        self.uc.mem_map(0, 0x10000)
        self.recorder = Recorder()
        self.events = EventBus([self.recorder], clock=lambda: 42)
        self.guard = HookGuard(self.uc)
        self.bus = Bus(self.uc, self.events, self.guard,
                       read_code=lambda address, size: bytes(self.uc.mem_read(address, size)),
                       unknown_ports=unknown_ports)
        self.text: list[str] = []
        self.exits: list[int] = []
        self.pc = install_pc_devices(self.bus, self.text.append, on_exit=self._exit)

    def _exit(self, value: int) -> None:
        self.exits.append(value)
        self.uc.emu_stop()

    def run(self, assembly: str, **registers: int) -> None:
        code = bytes(_ks.asm(assembly, CODE)[0])
        self.uc.mem_write(CODE, code)
        self.uc.reg_write(UC_X86_REG_RSP, STACK_TOP)
        for name, value in registers.items():
            self.uc.reg_write(_REGISTERS[name], value)
        try:
            self.uc.emu_start(CODE, CODE + len(code))
        except UcError:
            self.guard.reraise()    # the hook's own error explains the UcError
            raise
        self.guard.reraise()

    def reg(self, name: str) -> int:
        return self.uc.reg_read(_REGISTERS[name])


_REGISTERS = {"rax": UC_X86_REG_RAX, "rbx": UC_X86_REG_RBX}


def _puts(text: str | bytes, port: int = COM1) -> str:
    lines = [f"mov dx, {port:#x}"]
    for char in text.encode() if isinstance(text, str) else text:
        lines += [f"mov al, {char:#x}", "out dx, al"]
    return "; ".join(lines)


@pytest.fixture
def rig() -> Rig:
    return Rig()


# --- UART --------------------------------------------------------------------------------

def test_uart_line_becomes_serial_output_and_streams(rig):
    rig.run(_puts("hello\r\nwor"))
    serial = rig.recorder.of(SerialOutput)
    assert serial == [SerialOutput(icount=42, port=COM1, text="hello")]
    assert "".join(rig.text) == "hello\nwor"
    assert list(rig.pc.com1.lines) == ["hello"]
    assert rig.pc.com1.partial == "wor"
    assert rig.pc.com1.tail(5) == ["hello", "wor"]


def test_uart_decodes_utf8_split_across_writes(rig):
    rig.run(_puts("é€\n"))
    assert rig.pc.com1.lines[-1] == "é€"


def test_uart_ascii_after_a_broken_utf8_sequence_goes_through_the_decoder(rig):
    # 0xc3 opens a two-byte character; "A" cannot continue it: a replacement character,
    # then the A (the ASCII fast path must not skip the decoder's pending byte)
    rig.run(_puts(b"\xc3A\xffB\n"))
    assert rig.pc.com1.lines[-1] == "\ufffdA\ufffdB"


def test_uart_lsr_idle(rig):
    rig.run(f"mov dx, {COM1 + 5:#x}; in al, dx", rax=0xabcd)
    assert rig.reg("rax") & 0xff == 0x60


def test_uart_loopback_echoes_thr_to_rbr(rig):
    rig.run(f"""
        mov dx, {COM1 + 4:#x}; mov al, 0x1e; out dx, al
        mov dx, {COM1:#x}; mov al, 0xae; out dx, al
        mov dx, {COM1 + 5:#x}; in al, dx; mov bl, al
        mov dx, {COM1:#x}; in al, dx
    """, rax=0, rbx=0)
    assert rig.reg("rax") & 0xff == 0xae
    assert rig.reg("rbx") & 0xff == 0x61        # data ready while RBR held the byte
    assert rig.text == [] and rig.recorder.of(SerialOutput) == []
    assert rig.pc.com1.partial == ""


def test_uart_scratch_register_round_trip(rig):
    rig.run(f"mov dx, {COM1 + 7:#x}; mov al, 0x5a; out dx, al; xor eax, eax; in al, dx")
    assert rig.reg("rax") == 0x5a


def test_uart_divisor_latch_banks(rig):
    rig.run(f"""
        mov dx, {COM1 + 3:#x}; mov al, 0x80; out dx, al
        mov dx, {COM1:#x}; mov al, 0x03; out dx, al
        mov dx, {COM1 + 1:#x}; mov al, 0x00; out dx, al
        mov dx, {COM1 + 3:#x}; mov al, 0x03; out dx, al
    """)
    com1 = rig.pc.com1
    assert com1.divisor == 3
    assert rig.text == []                       # the divisor write did not transmit
    assert com1.register_at(0, write=True).name == "THR"
    com1.lcr |= 0x80
    assert com1.register_at(0, write=True).name == "DLL"


def test_uart_feed_reaches_rbr(rig):
    rig.pc.com1.feed(b"k")
    rig.run(f"mov dx, {COM1 + 5:#x}; in al, dx; mov bl, al; mov dx, {COM1:#x}; in al, dx",
            rax=0, rbx=0)
    assert (rig.reg("rbx") & 0xff, rig.reg("rax") & 0xff) == (0x61, ord("k"))


def test_uart_without_events_or_callback():
    uart = Uart16550()
    uart.write(0, 1, ord("x"))
    uart.write(0, 1, ord("\n"))
    assert list(uart.lines) == ["x"]


# --- Debug exit and legacy ports ---------------------------------------------------------

def test_debug_exit_calls_on_exit(rig):
    rig.run("mov dx, 0xf4; mov eax, 5; out dx, eax; hlt")
    assert rig.exits == [5]
    assert rig.pc.debug_exit.value == 5
    assert qemu_status(5) == 11


def test_emu_stop_in_a_port_hook_finishes_the_translated_block(rig):
    # Unicorn fact: emu_stop() takes effect at the next block boundary, so the instructions
    # after the OUT in the same block still run. The machine must not rely on an instant stop.
    rig.run("mov dx, 0xf4; mov eax, 5; out dx, eax; mov eax, 7; out dx, eax; hlt")
    assert rig.exits == [5, 7]


def test_debug_exit_byte_write():
    seen = []
    DebugExit(seen.append).write(0, 1, 0)
    assert seen == [0]


def test_ignored_ports_read_zero_and_swallow_writes(rig):
    rig.run("mov al, 1; out 0x80, al; out 0x20, al; out 0xa1, al; out 0x43, al; "
            "mov eax, 0x12345678; in al, 0x64; mov ebx, eax")
    assert rig.reg("rbx") == 0x12345600


def test_port_events_reach_late_subscribers(rig):
    late = Recorder()
    rig.events.subscribe(late)
    rig.run("mov al, 0x33; out 0x80, al")
    assert late.of(PortAccess) == [PortAccess(icount=42, port=0x80, size=1, value=0x33,
                                              write=True)]


def test_unknown_port_is_guest_crash(rig):
    with pytest.raises(GuestCrash, match=r"in from port 0x61 with no device behind it "
                                         r"\(RIP 0x1000: in al, 0x61\)"):
        rig.run("in al, 0x61; nop")


def test_unknown_port_write_is_guest_crash(rig):
    with pytest.raises(GuestCrash, match=r"out of 0x7 to port 0x2fc "):
        rig.run("mov dx, 0x2fc; mov al, 7; out dx, al")


def test_unknown_ports_float():
    rig = Rig(unknown_ports="float")
    rig.run("mov dx, 0x2f8; out dx, al; xor eax, eax; in ax, dx")
    assert rig.reg("rax") == 0xffff


def test_bad_unknown_ports_setting():
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    with pytest.raises(ConfigError, match="unknown_ports"):
        Bus(uc, EventBus(), HookGuard(uc), unknown_ports="ignore")


def test_port_ranges_must_not_overlap(rig):
    with pytest.raises(ValueError, match="0x3fd .* already taken by COM1"):
        rig.bus.ignore_ports(0x3fd, 2)


# --- MMIO --------------------------------------------------------------------------------

class Latch(Device):
    """A test device: registers of 8 bytes, every access logged."""
    registers = (Register(0, "A", 8), Register(8, "B", 8, Access.WRITE))

    def __init__(self) -> None:
        super().__init__("latch")
        self.log: list[tuple] = []
        self.values: dict[int, int] = {0: 0x1122334455667788}

    def read(self, offset: int, size: int) -> int:
        self.log.append(("read", offset, size))
        return self.values.get(offset, 0xa5a5a5a5a5a5a5a5) & ((1 << 8 * size) - 1)

    def write(self, offset: int, size: int, value: int) -> None:
        self.log.append(("write", offset, size, value))
        self.values[offset] = value


@pytest.fixture
def latch(rig) -> Latch:
    device = Latch()
    rig.bus.add_mmio(MMIO, 0x1000, device)
    return device


def test_mmio_8_byte_read_is_one_access(rig, latch):
    rig.run("nop; inc rcx; mov rax, qword ptr [rbx]", rbx=MMIO)
    assert latch.log == [("read", 0, 8)]
    assert rig.reg("rax") == 0x1122334455667788
    assert rig.recorder.of(MmioAccess) == [MmioAccess(icount=42, address=MMIO, size=8,
                                                      value=0x1122334455667788, write=False)]


def test_mmio_8_byte_write_is_one_access(rig, latch):
    rig.run("nop; mov qword ptr [rbx + 8], rax", rbx=MMIO, rax=0xdeadbeefcafef00d)
    assert latch.log == [("write", 8, 8, 0xdeadbeefcafef00d)]
    assert rig.recorder.of(MmioAccess)[-1].write


def test_mmio_read_modify_write(rig, latch):
    rig.run("or qword ptr [rbx], rax", rbx=MMIO, rax=0xff00000000000000)
    assert latch.log == [("read", 0, 8), ("write", 0, 8, 0xff22334455667788)]


def test_mmio_unaligned_read_touches_only_its_bytes(rig, latch):
    latch.values[12] = 0x0807060504030201
    rig.run("mov rax, qword ptr [rbx + 12]", rbx=MMIO)
    assert latch.log == [("read", 12, 8)]     # not the 8..24 Unicorn asks for
    assert rig.reg("rax") == 0x0807060504030201


def test_mmio_unaligned_write_is_one_access(rig, latch):
    rig.run("mov dword ptr [rbx + 3], eax", rbx=MMIO, rax=0x44332211)
    assert latch.log == [("write", 3, 4, 0x44332211)]


def test_mmio_small_accesses(rig, latch):
    rig.run("mov word ptr [rbx + 16], ax; mov eax, dword ptr [rbx]; mov bl, byte ptr [rbx + 1]",
            rbx=MMIO, rax=0xbeef)
    assert latch.log == [("write", 16, 2, 0xbeef), ("read", 0, 4), ("read", 1, 1)]
    assert rig.reg("rax") == 0x55667788
    assert rig.reg("rbx") & 0xff == 0xa5


def test_mmio_16_byte_access_is_two_8_byte_accesses(rig, latch):
    rig.run("movdqu xmm0, xmmword ptr [rbx]; movdqu xmmword ptr [rbx + 32], xmm0", rbx=MMIO)
    assert latch.log == [("read", 0, 8), ("read", 8, 8),
                         ("write", 32, 8, 0x1122334455667788),
                         ("write", 40, 8, 0xa5a5a5a5a5a5a5a5)]


def test_mmio_through_paging_sees_physical_offsets(rig, latch):
    # Map virtual 0x40000000 (PML4[0] -> PDPT[1] -> PD[0] -> PT[5]) to the MMIO page; the
    # code and stack stay identity mapped by PD[0] of PDPT[0] as one 2 MiB page.
    pml4, pdpt, pd_low, pd_high, pt = 0xa000, 0xb000, 0xc000, 0xd000, 0xe000
    entry = struct.Struct("<Q")
    rig.uc.mem_write(pml4, entry.pack(pdpt | 3))
    rig.uc.mem_write(pdpt, entry.pack(pd_low | 3) + entry.pack(pd_high | 3))
    rig.uc.mem_write(pd_low, entry.pack(0x83))
    rig.uc.mem_write(pd_high, entry.pack(pt | 3))
    rig.uc.mem_write(pt + 5 * 8, entry.pack(MMIO | 3))
    rig.uc.reg_write(UC_X86_REG_CR4, rig.uc.reg_read(UC_X86_REG_CR4) | 0x20)
    rig.uc.reg_write(UC_X86_REG_CR3, pml4)
    rig.uc.reg_write(UC_X86_REG_CR0, rig.uc.reg_read(UC_X86_REG_CR0) | 0x80010000)
    rig.run("mov rax, qword ptr [rbx]; mov qword ptr [rbx + 8], rax", rbx=0x40005000)
    assert latch.log == [("read", 0, 8), ("write", 8, 8, 0x1122334455667788)]
    assert [event.address for event in rig.recorder.of(MmioAccess)] == [MMIO, MMIO + 8]


def test_mmio_must_be_whole_pages(rig):
    with pytest.raises(ValueError, match="whole pages"):
        rig.bus.add_mmio(MMIO + 0x10, 0x1000, Latch())


def test_mmio_regions_must_not_overlap(rig, latch):
    with pytest.raises(ValueError, match="overlaps latch"):
        rig.bus.add_mmio(MMIO, 0x2000, Latch())


def test_executing_mmio_is_guest_crash(rig, latch):
    with pytest.raises(GuestCrash, match=r"instruction fetch from physical 0x10000, "
                                         r"which is MMIO of latch"):
        rig.run("jmp rbx", rbx=MMIO)


# --- Nothing behind an address -----------------------------------------------------------

def test_write_to_physical_hole_is_guest_crash(rig):
    with pytest.raises(GuestCrash, match=r"^write of 4 bytes to physical 0x200000 with nothing "
                                         r"behind it \(RIP 0x1002: mov dword ptr \[rbx\], eax\)$"):
        rig.run("nop; nop; mov dword ptr [rbx], eax", rbx=0x200000)


def test_read_from_physical_hole_is_guest_crash(rig):
    with pytest.raises(GuestCrash, match=r"^read of 8 bytes from physical 0x300008 "):
        rig.run("mov rax, qword ptr [rbx + 8]", rbx=0x300000)


def test_fetch_from_physical_hole_is_guest_crash(rig):
    with pytest.raises(GuestCrash, match=r"^instruction fetch of 1 byte from physical 0x400000 "
                                         r"with nothing behind it \(RIP 0x400000\)$"):
        rig.run("jmp rbx", rbx=0x400000)


def test_mmio_over_ram_is_refused(rig):
    with pytest.raises(ValueError, match=r"cannot put MMIO for latch at 0x1000\+0x1000: "
                                         r".*\(is there RAM there\?\)"):
        rig.bus.add_mmio(CODE, 0x1000, Latch())
