"""The guard page below the boot stack (issue 15, item 5): RESERVED in the map, nothing
behind it, and an overflow into it reported as such at the faulting instruction, whether
the kernel still runs on the loader's page tables (the access reaches the empty page) or on
its own that leave the RESERVED page out (a page fault on it)."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import deadline
from emu.hw.memmap import MemoryType
from emu.machine import Machine, MachineConfig
from emu.result import RunEnd
from test_loader import COMMON_FLAGS, KERNEL_FLAGS, KERNEL_LD, _zig

RECURSE_C = r"""
typedef unsigned long long u64;
static volatile u64 limit = ~0ULL;
__attribute__((noinline)) u64 recurse(u64 depth) {
    volatile unsigned char frame[512];
    if (depth == limit)
        return 0;
    frame[depth % 512] = (unsigned char)depth;
    return recurse(depth + 1) + frame[0];
}
void _start(void) {
    recurse(0);
    for (;;)
        __asm__ volatile("hlt");
}
"""


@pytest.fixture(scope="module")
def recursing_kernel(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("stack")
    (root / "recurse.c").write_text(RECURSE_C)
    (root / "kernel.ld").write_text(KERNEL_LD.replace("BASE", "0xffffffff80000000"))
    _zig([*KERNEL_FLAGS, *COMMON_FLAGS, "-fno-omit-frame-pointer", "-Wl,-T,kernel.ld",
          "recurse.c", "-o", "recurse.elf"], root)
    return root / "recurse.elf"


def test_guard_page_is_reserved_and_below_the_stack(boot):
    machine, _ = boot()
    info = machine.boot
    guard = info.stack_guard
    region = next(r for r in info.memmap.regions if r.base <= guard < r.end)
    assert region.type == MemoryType.RESERVED and region.length == 0x1000
    above = next(r for r in info.memmap.regions if r.base == guard + 0x1000)
    assert above.type == MemoryType.BOOTLOADER_RECLAIMABLE
    assert info.hhdm_offset + guard + 0x1000 < info.stack_pointer
    assert not machine.memory.is_ram(guard) and machine.memory.is_ram(guard + 0x1000)
    assert machine.memory.is_ram(guard - 1)


def test_overflow_on_the_loaders_page_tables_is_caught_at_the_push(recursing_kernel):
    machine = Machine(MachineConfig(kernel=recursing_kernel))
    with deadline(30):
        result = machine.run()
    assert result.end is RunEnd.CRASH
    assert result.message.startswith("boot stack overflow (the guard page below the boot "
                                     "stack): write of ")
    guard = machine.boot.stack_guard
    address = int(result.message.split("physical ")[1].split()[0], 16)
    assert guard <= address < guard + 0x1000
    lines = result.report.splitlines()
    instruction = lines[lines.index("instruction:") + 1]
    assert "recurse+" in instruction and ("call" in instruction or "push" in instruction
                                          or "mov" in instruction)
    assert any("(recursion)" in line or "recurse+" in line
               for line in lines[lines.index("backtrace:"):])
    assert any("_start+" in line for line in lines[lines.index("backtrace:"):])


def test_overflow_on_the_kernels_own_page_tables_is_a_page_fault_named(boot):
    _, result = boot("test=overflow")
    assert result.end is RunEnd.CRASH
    assert result.message.startswith("boot stack overflow: page fault at 0xffff8")
    backtrace = result.report.split("backtrace:")[1]
    assert "overflow_frame+" in backtrace and "frames: recursion" in backtrace
    assert "kmain+" in backtrace
