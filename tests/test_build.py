"""Tests of emu.build: the guest kernel build.

They check the build (reproducible, incremental, defines, errors) and, by
static inspection of the ELF, the properties the loader and the kernel rely
on: three page-aligned PT_LOAD segments R+X, R, R+W in the top 2 GiB, the
Limine requests between their markers, no SSE/x87 code and no red zone.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import capstone
import pytest
from elftools.elf.constants import P_FLAGS
from elftools.elf.elffile import ELFFile

import emu.build.zig
from emu.build import build_guest, guest_source_dir
from emu.errors import BuildError, ConfigError

KERNEL_BASE = 0xFFFFFFFF80000000
PAGE = 4096
R, W, X = P_FLAGS.PF_R, P_FLAGS.PF_W, P_FLAGS.PF_X

LIMINE_COMMON = (0xC7B1DD30DF4C8B88, 0x0A82E883A194F07B)
START_MARKER = (0xF6B8F4B39DE7D1AE, 0xFAB91A6940FCB9CF, 0x785C6ED015D3E316, 0x181E920A7852B9D9)
END_MARKER = (0xADC0E0531BB10D03, 0x9572709F31764C62)
BASE_REVISION_TAG = (0xF9562B2D5C95A6C8, 0x6A7B384944536BDC, 3)
REQUEST_IDS = {
    "bootloader info": (0xF55038D8E2A1202F, 0x279426FCF5F59740),
    "executable cmdline": (0x4B161536E598651E, 0xB390AD4A2F1F303A),
    "firmware type": (0x8C2F75D90BEF28A8, 0x7045A4688EAC00C3),
    "stack size": (0x224EF0460A8E8926, 0xE1CB0FC25F46EA3D),
    "hhdm": (0x48DCF1CB8AD2B852, 0x63984E959A98244B),
    "framebuffer": (0x9D5827DCD881DD75, 0xA3148604F6FAB11B),
    "paging mode": (0x95C1A0EDAB0944CB, 0xA4E5CB3842F7488A),
    "memory map": (0x67CF3D9D378A806F, 0xE304ACDFC50C3C62),
    "executable file": (0xAD97E90E83F1ED67, 0x31EB5D1C5FF23B69),
    "module": (0x3E7E279702BE32AF, 0xCA1C4F3BD1280CEE),
    "date at boot": (0x502746E184C088AA, 0xFBC5EC83E6327893),
    "executable address": (0x71BA76863CC55F63, 0xB2644A48C516A487),
}


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_guest(build_dir=tmp_path_factory.mktemp("build"))


@pytest.fixture
def guest_copy(tmp_path: Path) -> Path:
    """A private copy of guest/ that a test may edit."""
    return Path(shutil.copytree(guest_source_dir(), tmp_path / "guest"))


def words(data: bytes) -> list[int]:
    return [int.from_bytes(data[i : i + 8], "little") for i in range(0, len(data) - 7, 8)]


def find_words(haystack: list[int], needle: tuple[int, ...]) -> list[int]:
    n = len(needle)
    return [i for i in range(len(haystack) - n + 1) if tuple(haystack[i : i + n]) == needle]


def symbols(elf: ELFFile) -> dict[str, int]:
    return {s.name: s["st_value"] for s in elf.get_section_by_name(".symtab").iter_symbols()}


# --- the build --------------------------------------------------------------


def test_two_builds_in_different_dirs_are_identical(tmp_path: Path) -> None:
    first = build_guest(build_dir=tmp_path / "one")
    second = build_guest(build_dir=tmp_path / "two")
    assert first.parent != second.parent
    assert first.name == second.name
    assert first.read_bytes() == second.read_bytes()


def test_elf_contains_no_absolute_paths(kernel: Path) -> None:
    data = kernel.read_bytes()
    for path in (guest_source_dir(), kernel.parent):
        assert str(path).encode() not in data


def test_second_build_does_not_run_the_compiler(
    kernel: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_compiler(*args: object, **kwargs: object) -> None:
        raise AssertionError("the compiler ran although the ELF was up to date")

    monkeypatch.setattr(emu.build.zig.subprocess, "run", no_compiler)
    assert build_guest(build_dir=kernel.parent) == kernel


def test_source_change_rebuilds(guest_copy: Path, tmp_path: Path) -> None:
    before = build_guest(source_dir=guest_copy, build_dir=tmp_path / "b")
    with open(guest_copy / "main.c", "a") as f:
        f.write("\n/* an edit */\n")
    after = build_guest(source_dir=guest_copy, build_dir=tmp_path / "b")
    assert after != before and after.exists() and before.exists()


def test_define_changes_the_output(guest_copy: Path, tmp_path: Path) -> None:
    (guest_copy / "probe.c").write_text(
        "#ifndef PROBE\n#define PROBE 0\n#endif\n"
        "__attribute__((used, retain)) const unsigned long probe = PROBE;\n"
    )
    one = build_guest(source_dir=guest_copy, build_dir=tmp_path, defines={"PROBE": "1"})
    two = build_guest(source_dir=guest_copy, build_dir=tmp_path, defines={"PROBE": "0x5a5a"})
    assert one != two
    assert one.read_bytes() != two.read_bytes()
    with open(two, "rb") as f:
        elf = ELFFile(f)
        (probe,) = elf.get_section_by_name(".symtab").get_symbol_by_name("probe")
        section = elf.get_section(probe["st_shndx"])
        offset = probe["st_value"] - section["sh_addr"]
        assert int.from_bytes(section.data()[offset : offset + 8], "little") == 0x5A5A


def test_define_changes_the_real_guest_hash(kernel: Path) -> None:
    variant = build_guest(build_dir=kernel.parent, defines={"EMU_UNUSED_OPTION": "1"})
    assert variant != kernel


def test_bad_define_name_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a C identifier"):
        build_guest(build_dir=tmp_path, defines={"2bad name": "1"})


def test_syntax_error_gives_build_error_with_the_line(guest_copy: Path, tmp_path: Path) -> None:
    lines = (guest_copy / "main.c").read_text().count("\n")
    with open(guest_copy / "main.c", "a") as f:
        f.write("int broken(void) { return 1 }\n")
    with pytest.raises(BuildError) as info:
        build_guest(source_dir=guest_copy, build_dir=tmp_path / "b")
    message = str(info.value)
    assert f"main.c:{lines + 1}:" in message
    assert "error: expected ';'" in message
    assert "int broken(void) { return 1 }" in message
    assert "Traceback" not in message and str(guest_copy) not in message
    assert not list((tmp_path / "b").glob("kernel-*.elf"))
    assert not list((tmp_path / "b").glob(".kernel-*"))


def test_link_error_gives_build_error(guest_copy: Path, tmp_path: Path) -> None:
    (guest_copy / "extra.c").write_text(
        "void missing(void);\nvoid kmain_helper(void) { missing(); }\n"
        "__attribute__((used, retain)) void (*keep)(void) = kmain_helper;\n"
    )
    with pytest.raises(BuildError, match="undefined symbol: missing"):
        build_guest(source_dir=guest_copy, build_dir=tmp_path)


def test_missing_source_dir_is_a_build_error(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="no guest sources"):
        build_guest(source_dir=tmp_path / "nothing", build_dir=tmp_path / "b")


# --- the image --------------------------------------------------------------


def test_three_page_aligned_load_segments(kernel: Path) -> None:
    with open(kernel, "rb") as f:
        elf = ELFFile(f)
        assert elf["e_type"] == "ET_EXEC" and elf["e_machine"] == "EM_X86_64"
        loads = [s for s in elf.iter_segments() if s["p_type"] == "PT_LOAD"]
        assert [s["p_flags"] for s in loads] == [R | X, R, R | W]
        previous_end = KERNEL_BASE
        for seg in loads:
            assert seg["p_vaddr"] >= KERNEL_BASE
            assert seg["p_vaddr"] % PAGE == 0 and seg["p_offset"] % PAGE == 0
            assert seg["p_vaddr"] >= previous_end  # no page holds two segments
            previous_end = -(-(seg["p_vaddr"] + seg["p_memsz"]) // PAGE) * PAGE
        assert elf["e_entry"] == symbols(elf)["kmain"]


def test_limine_requests_sit_between_the_markers(kernel: Path) -> None:
    with open(kernel, "rb") as f:
        elf = ELFFile(f)
        section = elf.get_section_by_name(".limine_requests")
        data_segment = [s for s in elf.iter_segments() if s["p_type"] == "PT_LOAD"][2]
        assert data_segment.section_in_segment(section)
        assert section["sh_type"] == "SHT_PROGBITS"  # file data, not .bss
        image = words(section.data())
    (start,) = find_words(image, START_MARKER)
    (end,) = find_words(image, END_MARKER)
    (tag,) = find_words(image, BASE_REVISION_TAG)
    assert start < tag < end
    for name, (a, b) in REQUEST_IDS.items():
        found = find_words(image, (*LIMINE_COMMON, a, b))
        assert len(found) == 1, name
        assert start < found[0] < end, name
        assert image[found[0] + 5] == 0, f"{name}: response must start NULL"


def _function_code(elf: ELFFile) -> list[tuple[str, int, bytes]]:
    text = elf.get_section_by_name(".text")
    base, data = text["sh_addr"], text.data()
    funcs = []
    for sym in elf.get_section_by_name(".symtab").iter_symbols():
        if sym["st_info"]["type"] == "STT_FUNC" and sym["st_size"] > 0:
            off = sym["st_value"] - base
            funcs.append((sym.name, sym["st_value"], data[off : off + sym["st_size"]]))
    return funcs


_FP_REGISTER = re.compile(r"\b([xyz]mm\d+|mm\d|st\(\d\)|k[0-7])\b")
# The instructions that save, restore and reset user programs' FPU state (the scheduler,
# fork and exec: guest/arch/x86_64/fpu.h); they compute nothing.
_FPU_STATE = frozenset({"fxsave64", "fxrstor64", "fninit", "ldmxcsr"})


def test_no_sse_mmx_or_x87_code(kernel: Path) -> None:
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    with open(kernel, "rb") as f:
        text = ELFFile(f).get_section_by_name(".text")
        code, base = text.data(), text["sh_addr"]
    decoded = 0
    for insn in md.disasm(code, base):
        where = f"{insn.address:#x}: {insn.mnemonic} {insn.op_str}"
        decoded += insn.size
        if insn.mnemonic in _FPU_STATE:
            continue
        assert not _FP_REGISTER.search(insn.op_str), where
        assert not insn.mnemonic.startswith("f"), where  # x87: fld, fstp...
    assert decoded == len(code)  # capstone stops at the first byte it cannot decode


def _red_zone_uses(md: capstone.Cs, addr: int, code: bytes) -> list[str]:
    """Accesses below RSP: [rsp - n], or [rbp - n] beyond what was allocated."""
    from capstone import x86

    allocated, frame = 0, False
    bad = []
    for insn in md.disasm(code, addr):
        ops = insn.operands
        if insn.mnemonic == "mov" and len(ops) == 2 and all(o.type == x86.X86_OP_REG for o in ops):
            if (ops[0].reg, ops[1].reg) == (x86.X86_REG_RBP, x86.X86_REG_RSP):
                frame = True
        elif frame and insn.mnemonic == "push":
            allocated += 8
        elif (
            frame
            and insn.mnemonic == "sub"
            and ops[0].type == x86.X86_OP_REG
            and ops[0].reg == x86.X86_REG_RSP
            and ops[1].type == x86.X86_OP_IMM
        ):
            allocated += ops[1].imm
        for op in ops:
            if op.type != x86.X86_OP_MEM or op.mem.disp >= 0:
                continue
            if op.mem.base == x86.X86_REG_RSP or (
                op.mem.base == x86.X86_REG_RBP and frame and -op.mem.disp > allocated
            ):
                bad.append(f"{insn.address:#x}: {insn.mnemonic} {insn.op_str}")
    return bad


def test_no_red_zone(kernel: Path) -> None:
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    md.detail = True
    with open(kernel, "rb") as f:
        funcs = _function_code(ELFFile(f))
    assert len(funcs) > 20
    bad = [u for name, addr, code in funcs for u in _red_zone_uses(md, addr, code)]
    assert bad == []


def test_string_functions_do_not_call_themselves(kernel: Path) -> None:
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    with open(kernel, "rb") as f:
        funcs = {name: (addr, code) for name, addr, code in _function_code(ELFFile(f))}
    for name in ("memset", "memcpy", "memmove", "memcmp", "strlen", "strcmp", "strncmp"):
        addr, code = funcs[name]
        for insn in md.disasm(code, addr):
            if insn.mnemonic in ("call", "jmp"):
                assert insn.op_str != hex(addr), f"{name} calls itself"


ERROR_CODE_VECTORS = {8, 10, 11, 12, 13, 14, 17, 21, 29, 30}


def test_interrupt_stubs_push_a_dummy_error_code_only_where_needed(kernel: Path) -> None:
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    with open(kernel, "rb") as f:
        elf = ELFFile(f)
        syms = symbols(elf)
        text = elf.get_section_by_name(".text")
        code, base = text.data(), text["sh_addr"]
    stubs = syms["isr_stubs"]
    for vector in range(256):
        addr = stubs + 16 * vector
        insns = list(md.disasm(code[addr - base : addr - base + 16], addr))
        pushes = [int(i.op_str, 0) for i in insns if i.mnemonic == "push"]
        jump = next(i for i in insns if i.mnemonic == "jmp")
        expected = [vector] if vector in ERROR_CODE_VECTORS else [0, vector]
        assert pushes == expected, vector
        assert int(jump.op_str, 0) == syms["isr_common"], vector


# --- the build cache ----------------------------------------------------------


def test_a_damaged_cached_kernel_is_rebuilt_not_reused(tmp_path: Path) -> None:
    built = build_guest(build_dir=tmp_path)
    good = built.read_bytes()
    built.write_bytes(good[: len(good) // 2])         # a truncated copy (a full disk, say)
    again = build_guest(build_dir=tmp_path)
    assert again == built and again.read_bytes() == good


def test_a_kernel_without_its_digest_is_rebuilt(tmp_path: Path) -> None:
    from emu.build import cache
    built = build_guest(build_dir=tmp_path)
    cache.sidecar(built).unlink()                     # killed between the two renames
    assert cache.is_fresh(built) is False
    assert build_guest(build_dir=tmp_path) == built and cache.is_fresh(built)


def test_stale_temporaries_of_a_killed_build_are_removed(tmp_path: Path) -> None:
    import os
    from emu.build import cache
    old = tmp_path / (cache.TEMPORARY_PREFIX + "abc.elf")
    old.write_bytes(b"half a kernel")
    os.utime(old, (1, 1))
    recent = tmp_path / (cache.TEMPORARY_PREFIX + "def.elf")
    recent.write_bytes(b"a build in progress")
    build_guest(build_dir=tmp_path)
    assert not old.exists() and recent.exists()


@pytest.mark.parametrize("bad", ["/dev/null", "file"])
def test_an_unusable_cache_directory_falls_back(bad: str, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from emu.build import cache
    if bad == "file":
        bad = str(tmp_path / "not-a-directory")
        Path(bad).write_text("x")
    monkeypatch.delenv("EMU_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", bad)
    root = cache.cache_root()
    assert not str(root).startswith(bad) and root.is_dir()


def test_a_damaged_counter_library_is_rebuilt(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from emu.engine import icount
    monkeypatch.setenv("EMU_CACHE_DIR", str(tmp_path))
    library = icount.library_path()
    good = library.read_bytes()
    library.write_bytes(good[:4096])                  # loading this would crash the process
    assert icount.library_path() == library and library.read_bytes() == good
