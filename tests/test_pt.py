"""`emu pt`: runs the kernel with the machine options of `emu run` and lists an address space
(the CR3 at the end, a given CR3, or the CR3 at the Nth guest checkpoint) like QEMU's
`info mem`, with a header and the bytes mapped per permission."""
from __future__ import annotations

import re

import pytest
from elftools.elf.elffile import ELFFile

from emu.cli import build_parser, main

HHDM = 0xFFFF_8000_0000_0000
PAGE = 4096
SCRATCH = 0xFFFF_C000_0000_0000          # guest/test/selftest.c
LINE = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16}) ([0-9a-f]{16}) ([rw][us][x-]) -> (0x[0-9a-f]+)$",
                  re.M)


def symbols(kernel) -> dict[str, int]:
    with kernel.open("rb") as stream:
        table = ELFFile(stream).get_section_by_name(".symtab")
        return {s.name: s["st_value"] for s in table.iter_symbols() if s.name}


def pt(capsys, *args: str) -> tuple[int, str, str]:
    status = main(["pt", *args])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return status, out, err


def ranges(out: str) -> list[tuple[int, int, str, int]]:
    return [(int(a, 16), int(b, 16), perms, int(phys, 16))
            for a, b, _, perms, phys in LINE.findall(out)]


def test_lists_the_kernel_image_and_the_hhdm(kernel, capsys):
    status, out, err = pt(capsys, str(kernel))
    assert status == 0
    lines = out.splitlines()
    assert re.fullmatch(r"address space of CR3 0x[0-9a-f]+, at the end of the run \(exit\): "
                        r"\d+ ranges", lines[0])
    assert lines[1].split() == ["start", "end", "size", "prm", "->", "physical"]
    sym = symbols(kernel)
    text = (sym["__text_start"], (sym["__text_end"] + PAGE - 1) & ~(PAGE - 1))
    listed = ranges(out)
    assert any((start, end, perms) == (*text, "rsx") for start, end, perms, _ in listed), out
    rodata = [r for r in listed if r[0] == sym["__rodata_start"]]
    assert rodata and rodata[0][2] == "rs-"
    data = [r for r in listed if r[0] <= sym["__data_start"] < r[1]]
    assert data and data[0][2] == "ws-"
    hhdm = [r for r in listed if HHDM <= r[0] and r[3] == r[0] - HHDM]
    assert hhdm and all(r[2] in ("ws-", "rs-") for r in hhdm)       # never executable
    assert any(r[0] == HHDM + 0x100000 and r[2] == "ws-" for r in hhdm)   # RAM from 1 MiB
    assert "--- guest exited with 0" in err


def test_totals_by_permission(kernel, capsys):
    status, out, _ = pt(capsys, str(kernel), "--memmap", "tiny")
    assert status == 0
    totals = out.splitlines()[-1]
    assert totals.startswith("mapped: ")
    listed = ranges(out)
    by_perm: dict[str, int] = {}
    for start, end, perms, _ in listed:
        by_perm[perms] = by_perm.get(perms, 0) + end - start
    assert set(re.findall(r", ([rw][us][x-]) ", totals)) == set(by_perm)
    assert f"rsx {(by_perm['rsx'] // 1024)} KiB" in totals
    assert "ws-" in totals and "wsx" not in totals


def test_at_checkpoint_lists_the_tables_of_that_moment(kernel, capsys):
    """Checkpoint 1 follows mm_init; selftest=paging's scratch mappings come and go later
    and the test leaves the tables as it found them: both listings agree. (Without the
    platform: its device registers are mapped after checkpoint 1.)"""
    status, at_one, _ = pt(capsys, str(kernel), "--cmdline", "selftest=paging",
                           "--at-checkpoint", "1", "--no-platform")
    assert status == 0
    assert re.match(r"address space of CR3 0x[0-9a-f]+, at checkpoint #1 \(number 1, "
                    r"instruction [\d,]+\)", at_one)
    _, at_end, _ = pt(capsys, str(kernel), "--cmdline", "selftest=paging", "--no-platform")
    assert ranges(at_one) == ranges(at_end)
    assert not any(SCRATCH <= start < SCRATCH + (4 << 30) for start, *_ in ranges(at_one))


def test_at_checkpoint_sees_a_mapping_that_is_gone_at_the_end(capsys):
    """selftest=planted in the PLANT_BUG=3 build maps a page at SCRATCH, checkpoints (the
    second checkpoint of the run), then unmaps it: only the checkpoint's listing has it."""
    from emu.build import build_guest
    kernel = build_guest(defines={"PLANT_BUG": "3"})
    _, at_two, _ = pt(capsys, str(kernel), "--cmdline", "selftest=planted",
                      "--at-checkpoint", "2")
    _, at_end, _ = pt(capsys, str(kernel), "--cmdline", "selftest=planted")
    assert any(start == SCRATCH for start, *_ in ranges(at_two)), at_two
    assert not any(start == SCRATCH for start, *_ in ranges(at_end))


def test_cr3_option_lists_the_given_tables(kernel, capsys):
    _, out, _ = pt(capsys, str(kernel))
    cr3 = re.match(r"address space of CR3 (0x[0-9a-f]+)", out)[1]
    status, again, _ = pt(capsys, str(kernel), "--cr3", cr3)
    assert status == 0
    assert again.splitlines()[0].startswith(f"address space of CR3 {cr3}, given with --cr3")
    assert ranges(again) == ranges(out)


@pytest.mark.parametrize("args, message", [
    (["--at-checkpoint", "9"], "emu: error: the guest reached 1 checkpoints, not 9"),
    (["--cr3", "0x7000000000"], "emu: error: no page tables at CR3 0x7000000000"),
])
def test_nothing_to_list_is_a_one_line_error(kernel, capsys, args, message):
    status, out, err = pt(capsys, str(kernel), "--memmap", "tiny", *args)
    assert status == 2 and out == ""
    assert err.splitlines()[-1].startswith(message)


def test_run_and_pt_share_the_machine_options():
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices

    def options(name: str) -> set[str]:
        return {o for a in commands[name]._actions for o in a.option_strings}

    machine = {"--memory", "--memmap", "--cmdline", "--module", "--max-instructions",
               "--boot-time", "--no-count"}
    assert machine <= options("run") & options("pt")
    assert {"--cr3", "--at-checkpoint"} <= options("pt") - options("run")
    assert {"--check", "--strict", "--check-every"} <= options("run") - options("pt")
    args = parser.parse_args(["pt", "k.elf", "--memory", "64G", "--memmap", "fragmented",
                              "--cmdline", "pmm=buddy", "--max-instructions", "1000",
                              "--cr3", "0x3000"])
    assert (args.memory, args.memmap, args.cmdline, args.max_instructions, args.cr3) == \
        ("64G", "fragmented", "pmm=buddy", 1000, 0x3000)
