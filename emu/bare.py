"""A bare x86-64 machine for conformance tests and benchmarks: identity-mapped RAM, a GDT,
TSS and IDT built from Python, and guest code assembled with keystone. The guest itself runs
lgdt/lidt/ltr and its own handlers; the monitor only delivers, as on hardware.

Owns: that machine (the public helper tests and bench/ use instead of the Machine's
insides). Keystone is a test dependency (`pip install 'emu[test]'`); it is imported when
code is first assembled.
Does not own: the CPU or RAM (emu/cpu, emu/hw), the Limine boot (emu/machine.py).
"""
from __future__ import annotations

import functools
import struct

from unicorn import UC_ARCH_X86, UC_MODE_64, Uc
from unicorn import x86_const as X

from emu.cpu import Cpu
from emu.engine.guard import HookGuard
from emu.errors import ConfigError
from emu.events import EventBus
from emu.hw.bus import Bus
from emu.hw.clock import DEFAULT_IPS
from emu.hw.memory import PhysicalMemory
from emu.hw.platform import PcPlatform
from emu.result import RunEnd

GDT, TSS, IDT = 0x1000, 0x2000, 0x3000
PML4, PDPT, PD, PT0 = 0x10000, 0x11000, 0x12000, 0x13000   # PT0..: 4 page tables (8 MiB)
KERNEL_STACK_TOP, IST1_TOP, IST2_TOP, USER_STACK_TOP = 0x9000, 0xB000, 0xD000, 0x7F000
MMIO_PT = 0x17000                 # after PT0..PT0+3
MMIO_VIRTUAL = 0x800000           # map_mmio's pages: the 2 MiB after the identity map
BOOT_TIME = 1_700_000_000
CODE = 0x100000
DEMAND = 0x400000          # pages here start not present
RAM = 8 << 20
KCODE, KDATA, UDATA, UCODE, TSS_SEL = 0x08, 0x10, 0x1B, 0x23, 0x28
P, W, U, PCD = 1, 2, 4, 0x10

@functools.lru_cache(maxsize=1)
def _keystone():
    try:
        from keystone import KS_ARCH_X86, KS_MODE_64, Ks
    except ImportError:
        raise ConfigError("assembling guest code needs keystone: pip install 'emu[test]'") \
            from None
    return Ks(KS_ARCH_X86, KS_MODE_64)


@functools.lru_cache(maxsize=512)
def assemble(source: str, address: int) -> bytes:
    """Keystone, cached (property tests assemble the same code for every example).
    Beware keystone 0.9.2: some absolute memory operands are encoded RIP-relative without
    subtracting RIP (`mov rsi, qword ptr [0x400000]` reads [rip + 0x400000]); load the
    address into a register, or use a SIB form such as `[0x13000 + rbx*8]`."""
    encoding, _ = _keystone().asm(source, address)
    return bytes(encoding)


class BareMachine:
    """`ram` bytes of RAM at physical 0; the first 8 MiB identity-mapped (user-accessible
    when `user_pages`), except the demand pages at DEMAND, which start not present."""

    def __init__(self, user_pages: bool = True, observers=(), count: bool = True,
                 ram: int = RAM, platform: bool = False, ips: int = DEFAULT_IPS):
        self.uc = Uc(UC_ARCH_X86, UC_MODE_64)
        self.memory = PhysicalMemory(self.uc)
        self.memory.add(0, ram)
        self.hooks = HookGuard(self.uc)
        self.events = EventBus(observers)
        self._tables(user_pages)
        self.cpu = Cpu(self.uc, self.memory, self.events, self.hooks, count=count, ips=ips)
        self.gates: dict[int, tuple[int, int, int]] = {}
        self._mmio_slots: dict[int, int] = {}
        self.platform: PcPlatform | None = None
        self.endings: list[str] = []            # resets and power-offs, as the platform said
        if platform:
            self._attach_platform()

    def _attach_platform(self) -> None:
        """The PC platform (emu/hw/platform.py) on a bus of its own. Its MMIO lies far
        above the identity map: `map_mmio` maps a device's page for the guest."""
        self.bus = Bus(self.uc, self.events, self.hooks, read_code=self.cpu.read_virtual,
                       io_gate=self.cpu.io)
        self.bus.limit_unbacked_checks(self.memory.ranges())

        def end(what: str, how: RunEnd) -> None:
            self.endings.append(what)
            self.cpu.request_stop(how, in_instruction=self.bus.in_access)
        self.platform = PcPlatform(
            self.cpu.clock, boot_time=BOOT_TIME,
            on_reset=lambda reason: end(f"reset: {reason.value}", RunEnd.RESET),
            on_power_off=lambda: end("power off", RunEnd.POWER_OFF))
        self.cpu.attach_platform(self.platform, self.bus)

    def map_mmio(self, paddr: int) -> int:
        """Map the 4 KiB page at physical `paddr` (a device's MMIO, e.g. the LAPIC at
        0xFEE00000) uncached at the next free page from MMIO_VIRTUAL; returns its address.
        Call before boot(), or flush the TLB."""
        slot = self._mmio_slots.setdefault(paddr & ~0xFFF, len(self._mmio_slots))
        if slot >= 512:
            raise ValueError("the bare machine maps at most 512 MMIO pages")
        self.u64(MMIO_PT + 8 * slot, (paddr & ~0xFFF) | P | W | PCD)
        return MMIO_VIRTUAL + 0x1000 * slot + (paddr & 0xFFF)

    def u64(self, paddr: int, value: int) -> None:
        self.memory.write_u64(paddr, value)

    def _tables(self, user_pages: bool) -> None:
        user = U if user_pages else 0
        self.u64(PML4, PDPT | P | W | U)
        self.u64(PDPT, PD | P | W | U)
        for i in range(4):
            self.u64(PD + 8 * i, (PT0 + 0x1000 * i) | P | W | U)
            for page in range(512):
                frame = (i * 512 + page) << 12
                self.u64(PT0 + 0x1000 * i + 8 * page, frame | P | W | user)
        for page in range(1, 16):     # descriptor tables, kernel stacks: supervisor only
            self.u64(PT0 + 8 * page, (page << 12) | P | W)
        for page in range(DEMAND >> 12, (DEMAND >> 12) + 512):
            self.u64(PT0 + 8 * page, 0)
        self.u64(PD + 8 * (MMIO_VIRTUAL >> 21), MMIO_PT | P | W)   # filled by map_mmio
        gdt = [0, 0x00209A0000000000, 0x0000920000000000, 0x0000F20000000000,
               0x0020FA0000000000]
        limit = 0x67
        tss_low = (limit & 0xFFFF) | ((TSS & 0xFFFFFF) << 16) | (0x89 << 40) | \
                  (((TSS >> 24) & 0xFF) << 56)
        gdt += [tss_low, TSS >> 32]
        self.memory.write(GDT, struct.pack(f"<{len(gdt)}Q", *gdt))
        self.memory.write(TSS, bytes(0x68))
        self.u64(TSS + 4, KERNEL_STACK_TOP)      # RSP0
        self.u64(TSS + 36, IST1_TOP)             # IST1
        self.u64(TSS + 44, IST2_TOP)             # IST2

    def gate(self, vector: int, handler: int, dpl: int = 0, ist: int = 0,
             gate_type: int = 0xE, present: bool = True, selector: int = KCODE) -> None:
        low = (handler & 0xFFFF) | (selector << 16) | (ist << 32) | (gate_type << 40) | \
              (dpl << 45) | (int(present) << 47) | (((handler >> 16) & 0xFFFF) << 48)
        self.memory.write(IDT + 16 * vector, struct.pack("<QQ", low, handler >> 32))

    def load(self, main: str, **routines: str) -> dict[str, int]:
        """Assemble `main` at CODE after a prologue that loads GDT, IDT and TR; each routine
        at its own page after it (CODE + 0x1000 * n). Returns the routines' addresses, which
        `main` and the routines may also use as {name} placeholders."""
        addresses = {name: CODE + 0x1000 * (n + 1) for n, name in enumerate(routines)}
        prologue = f"""
            lgdt [rip + gdtr]
            lidt [rip + idtr]
            mov ax, {TSS_SEL}
            ltr ax
            mov ax, {KDATA}
            mov ds, ax
            mov ss, ax
            push {KCODE}
            lea rax, [rip + main]
            push rax
            retfq
        gdtr: .word {7 * 8 - 1}
              .quad {GDT}
        idtr: .word {256 * 16 - 1}
              .quad {IDT}
        main:
        """
        self.memory.write(CODE, assemble(prologue + main.format(**addresses), CODE))
        for name, source in routines.items():
            address = addresses[name]
            self.memory.write(address, assemble(source.format(**addresses), address))
        return addresses

    def boot(self, efer: int = 0xD01, rsp: int = KERNEL_STACK_TOP - 0x800) -> None:
        uc = self.uc
        uc.reg_write(X.UC_X86_REG_CR4, 0x20)
        uc.reg_write(X.UC_X86_REG_CR3, PML4)
        uc.reg_write(X.UC_X86_REG_CR0, 0x80010011)
        uc.reg_write(X.UC_X86_REG_MSR, (0xC0000080, efer))
        uc.reg_write(X.UC_X86_REG_RSP, rsp)
        uc.reg_write(X.UC_X86_REG_RIP, CODE)

    def run(self, budget: int = 5_000_000) -> RunEnd:
        return self.cpu.run(budget)

    def reg(self, register: int) -> int:
        return self.uc.reg_read(register)
