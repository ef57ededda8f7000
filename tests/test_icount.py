"""The instruction count is exact: retired instructions only, whatever faults, software
interrupts and SYSCALLs happen in between, and the budget stops a runaway loop."""
from __future__ import annotations

import pytest
from unicorn import x86_const as X

from emu.bare import CODE, DEMAND, PT0, UCODE, UDATA, BareMachine
from emu.engine.icount import NEVER

PROLOGUE = 11              # BareMachine.load's prologue: lgdt lidt mov ltr mov mov mov push
                           # lea push retfq
PF_HANDLER = f"""
        push rax
        push rbx
        mov rax, cr2
        mov rbx, rax
        shr rbx, 12
        and rax, -4096
        or rax, 7
        mov qword ptr [{PT0} + rbx*8], rax
        pop rbx
        pop rax
        add rsp, 8
        iretq
"""
PF_HANDLER_INSTRUCTIONS = 12
NOPS = "nop\n" * 100


@pytest.fixture
def m() -> BareMachine:
    return BareMachine()


def test_prologue_and_hlt():
    m = BareMachine()
    m.load("hlt")
    m.boot()
    assert m.run() == "halt"
    assert m.cpu.icount() == PROLOGUE + 1              # hlt retires


@pytest.mark.parametrize("iterations", [1, 2, 255, 256, 1000, 100_000])
def test_loop_count_is_exact(m, iterations):
    m.load(f"""
        mov ecx, {iterations}
    again:
        dec ecx
        jnz again
        hlt
    """)
    m.boot()
    assert m.run() == "halt"
    assert m.cpu.icount() == PROLOGUE + 1 + 2 * iterations + 1


def test_long_straight_line_blocks_are_counted_exactly(m):
    # 3000 nops: TCG splits them into several blocks (at most 512 instructions each)
    m.load("mov ecx, 3\nagain:\n" + "nop\n" * 3000 + "dec ecx\njnz again\nhlt")
    m.boot()
    assert m.run() == "halt"
    assert m.cpu.icount() == PROLOGUE + 1 + 3 * 3002 + 1


@pytest.mark.parametrize("faults", [1, 7, 300])
def test_faulting_instruction_counts_once_when_it_retires(m, faults):
    # per iteration: the store faults (not retired), the handler runs (12), the store
    # retries and retires; then 4 more instructions
    m.load(f"""
        mov rcx, {faults}
        mov rax, {DEMAND}
        mov rdi, {PT0 + 8 * (DEMAND >> 12)}
    again:
        mov qword ptr [rax], rcx
        mov qword ptr [rdi], 0
        invlpg [rax]
        dec rcx
        jnz again
        hlt
    """, pf=PF_HANDLER)
    m.gate(14, CODE + 0x1000)
    m.boot()
    m.cpu.watch_privileged([(CODE, CODE + 0x2000)])
    assert m.run() == "halt"
    assert m.cpu.exceptions_by_vector == {14: faults}
    assert m.cpu.icount() == PROLOGUE + 3 + faults * (5 + PF_HANDLER_INSTRUCTIONS) + 1


def test_fault_in_the_middle_of_a_block(m):
    # the faulting load sits in the middle of a long block: the instructions after it in
    # that block were counted when the block started and must be taken back
    m.load(f"""
        mov rax, {DEMAND + 0x1000}
        {NOPS}
        mov rbx, qword ptr [rax]
        {NOPS}
        hlt
    """, pf=PF_HANDLER)
    m.gate(14, CODE + 0x1000)
    m.boot()
    assert m.run() == "halt"
    assert m.cpu.exceptions_by_vector == {14: 1}
    assert m.cpu.icount() == PROLOGUE + 1 + 100 + PF_HANDLER_INSTRUCTIONS + 1 + 100 + 1


def test_ud2_skipped_by_the_handler_never_retires(m):
    m.load("""
        mov ecx, 10
    again:
        ud2
        dec ecx
        jnz again
        hlt
    """, ud="""
        add qword ptr [rsp], 2
        iretq
    """)
    m.gate(6, CODE + 0x1000)
    m.boot()
    assert m.run() == "halt"
    assert m.cpu.exceptions_by_vector == {6: 10}
    assert m.cpu.icount() == PROLOGUE + 1 + 10 * (2 + 2) + 1


def test_software_interrupts_and_syscalls_retire(m):
    # int 0x80 and syscall complete before their handler runs: both count
    m.load("""
        mov ecx, 0xC0000081
        xor eax, eax
        mov edx, 0x00100008
        wrmsr
        mov ecx, 0xC0000082
        mov rax, {entry}
        mov rdx, rax
        shr rdx, 32
        wrmsr
        push %d
        push 0x7E000
        push 0x2
        push %d
        mov rax, {user}
        push rax
        iretq
    """ % (UDATA, UCODE), user="""
        mov esi, 20
    again:
        int 0x80
        syscall
        dec esi
        jnz again
        int 0x81
    """, sys="iretq", entry="sysret", done="hlt")
    m.gate(0x80, CODE + 0x2000, dpl=3)                 # sys
    m.gate(0x81, CODE + 0x4000, dpl=3)                 # done
    m.boot(efer=0xD01)
    assert m.run() == "halt"
    assert m.cpu.exceptions_by_vector == {0x80: 20, 256: 20, 0x81: 1}
    setup = 9 + 6 + 1                                  # wrmsr x2, push x4 mov push iretq
    per_iteration = 1 + 1 + 1 + 1 + 2                  # int iretq syscall sysret dec jnz
    assert m.cpu.icount() == PROLOGUE + setup + 1 + 20 * per_iteration + 1 + 1


def test_count_is_deterministic():
    counts = []
    for _ in range(2):
        m = BareMachine()
        m.load(f"""
            mov rcx, 50
            mov rax, {DEMAND}
        again:
            mov qword ptr [rax], rcx
            add rax, 0x1000
            dec rcx
            jnz again
            hlt
        """, pf=PF_HANDLER)
        m.gate(14, CODE + 0x1000)
        m.boot()
        assert m.run() == "halt"
        counts.append((m.cpu.icount(), dict(m.cpu.exceptions_by_vector)))
    assert counts[0] == counts[1]
    assert counts[0] == (PROLOGUE + 2 + 50 * (4 + PF_HANDLER_INSTRUCTIONS) + 1, {14: 50})


@pytest.mark.parametrize("budget", [1, 5, PROLOGUE + 1, 10_000, 100_003])
def test_budget_stops_a_runaway_loop(m, budget):
    m.load("""
    forever:
        jmp forever
    """)
    m.boot()
    assert m.run(budget=budget) == "budget"
    assert budget <= m.cpu.icount() <= budget + 512
    assert m.cpu.icount() == budget                    # the budget is exact
    if budget > PROLOGUE:
        rip = m.reg(X.UC_X86_REG_RIP)
        assert m.memory.read(rip, 2) == b"\xeb\xfe"  # still at `jmp forever`
    # a second run continues from there
    assert m.run(budget=budget + 777) == "budget"
    assert m.cpu.icount() == budget + 777


def test_budget_with_faults_in_the_loop(m):
    m.load(f"""
        mov rax, {DEMAND}
    again:
        mov qword ptr [rax], rax
        add rax, 0x1000
        jmp again
    """, pf=PF_HANDLER)
    m.gate(14, CODE + 0x1000)
    m.boot()
    budget = 12 + 300 * (3 + PF_HANDLER_INSTRUCTIONS)
    assert m.run(budget=budget) == "budget"
    assert m.cpu.icount() == budget
    assert m.cpu.exceptions_by_vector == {14: 300}


CHAIN = 0x200000           # a chain of one-instruction blocks, entered by `call`


def _run_chain(blocks: int, passes: int, ask_unicorn: bool = True) -> BareMachine:
    """`blocks` distinct translated blocks (`jmp` to the next instruction, each ends its
    block) then `ret`, called `passes` times."""
    m = BareMachine()
    m.load(f"""
        mov ecx, {passes}
        mov rax, {CHAIN}
    again:
        call rax
        dec ecx
        jnz again
        hlt
    """)
    m.memory.write(CHAIN, b"\xeb\x00" * blocks + b"\xc3")
    m.boot()
    if not ask_unicorn:
        m.cpu.counter.state.ctl = None     # every new block decoded by Python instead
    assert m.run() == "halt"
    return m


@pytest.mark.parametrize("blocks", [3, 20_000, 40_000])
def test_more_blocks_than_the_caches_hold_are_counted_exactly(blocks):
    # 20,000 blocks overflow the direct-mapped cache (16,384 entries); 40,000 also pass
    # the point where the table behind it starts over (32,768 blocks)
    m = _run_chain(blocks, passes=3)
    per_pass = 1 + blocks + 1 + 2                   # call, the jmps, ret, dec, jnz
    assert m.cpu.icount() == PROLOGUE + 2 + 3 * per_pass + 1
    assert m.cpu.counter.state.asked_python == 0    # Unicorn knew every block


def test_unicorn_block_counts_agree_with_the_decoder():
    with_unicorn = _run_chain(500, passes=2)
    with_python = _run_chain(500, passes=2, ask_unicorn=False)
    assert with_python.cpu.counter.state.asked_python >= 500
    assert with_unicorn.cpu.icount() == with_python.cpu.icount()


@pytest.mark.parametrize("iterations, counted", [(0, 1), (1, 2), (100, 101)])
def test_rep_string_instruction_counts_each_iteration(m, iterations, counted):
    # QEMU runs each iteration of a REP string instruction as a block of its own, so the
    # counter sees it once per iteration plus the pass that finds RCX = 0 (a hardware
    # retired-instruction count would say 1, callgrind's Ir the number of iterations)
    m.load(f"""
        mov rdi, 0x300000
        mov rcx, {iterations}
        mov eax, 0xab
        rep stosb
        hlt
    """)
    m.boot()
    assert m.run() == "halt"
    assert m.cpu.icount() == PROLOGUE + 3 + counted + 1
    assert m.memory.read(0x300000, iterations + 1) == b"\xab" * iterations + b"\x00"


def test_rdtsc_reads_the_instructions_retired_before_it(m):
    m.load("""
        nop
        nop
        rdtsc
        mov rbx, rax
        rdtscp
        hlt
    """)
    m.boot()
    m.uc.reg_write(X.UC_X86_REG_RCX, 0x1234)
    assert m.run() == "halt"
    assert m.reg(X.UC_X86_REG_RBX) == PROLOGUE + 2
    assert m.reg(X.UC_X86_REG_RAX) == PROLOGUE + 4      # nop nop rdtsc mov
    assert m.reg(X.UC_X86_REG_RDX) == 0
    assert m.reg(X.UC_X86_REG_RCX) == 0                 # RDTSCP loads TSC_AUX (0)


def test_without_counting_the_tsc_still_moves():
    # a calibration loop waiting for the TSC to advance by 5 must end
    m = BareMachine(count=False)
    m.load("""
        rdtsc
        mov rbx, rax
    wait:
        rdtsc
        sub rax, rbx
        cmp rax, 5
        jb wait
        hlt
    """)
    m.boot()
    assert m.run(budget=NEVER) == "halt"
    assert m.reg(X.UC_X86_REG_RBX) == 1                 # one tick per read
    assert m.reg(X.UC_X86_REG_RAX) == 5


def test_the_fast_register_reader_gives_whole_values_for_narrow_registers():
    """Unicorn writes 4 bytes for EFLAGS: read after a 64-bit register, its upper half
    must not be that register's (the delivery pushed RFLAGS 0xffff8000_00000006 once)."""
    from unicorn import UC_ARCH_X86, UC_MODE_64, Uc
    from unicorn import x86_const as X

    from emu.engine import capi
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    read = capi.register_reader(uc)
    uc.reg_write(X.UC_X86_REG_RSP, 0xffff8000004c1e10)
    uc.reg_write(X.UC_X86_REG_EFLAGS, 0x246)
    assert read(X.UC_X86_REG_RSP) == 0xffff8000004c1e10
    assert read(X.UC_X86_REG_EFLAGS) == 0x246
    assert read(X.UC_X86_REG_RSP) == 0xffff8000004c1e10
    assert read(X.UC_X86_REG_CS) == uc.reg_read(X.UC_X86_REG_CS)
