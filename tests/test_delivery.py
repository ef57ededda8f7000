"""Exception, interrupt and SYSCALL delivery through the guest IDT, checked against the
architecture (Intel SDM vol. 3, ch. 6): the guest's own handlers record what they see (their
stack pointer, the frame the CPU pushed, CR2, their CS) in RAM and the test compares it with
what a real CPU would have produced."""
from __future__ import annotations

from dataclasses import dataclass

import pytest
from unicorn import x86_const as X

from emu.bare import (CODE, DEMAND, IST1_TOP, IST2_TOP, KCODE, KERNEL_STACK_TOP, PT0, TSS, UCODE,
                  UDATA, BareMachine)
from emu.errors import TripleFault
from emu.result import RunEnd
from emu.events import ExceptionDelivered, Observer

RESULT = 0x60000           # handlers' records: one 0x100-byte slot per handler (user page)
USER_RSP = 0x7E000         # ring-3 stack (below USER_STACK_TOP, user accessible)
OTHER_RSP = 0x7D000        # another CPL-0 stack, not the TSS's
RO_PAGE = 0x300000         # made present but read-only by tests that need it
PROLOGUE = 11              # instructions of BareMachine.load's prologue (lgdt .. retfq)


@dataclass
class Record:
    """What a recording handler stored: its RSP on entry, the frame, CR2, its own CS, SS and
    RFLAGS, how many times it ran, and RBX (the interrupted code's loop counter)."""
    entry_rsp: int
    error: int | None
    rip: int
    cs: int
    rflags: int
    rsp: int
    ss: int
    cr2: int
    handler_cs: int
    count: int
    rbx: int
    handler_ss: int
    handler_rflags: int


def slot(n: int) -> int:
    return RESULT + 0x100 * n


def recorder(n: int, error: bool, then: str = "hlt") -> str:
    """Assembly of a handler that records into slot n, then:
    "hlt" stops the machine, "iret" returns, "map" maps the page at CR2 (present, writable,
    user) and returns to retry, "skip K" returns K bytes after the frame's RIP.
    (Memory operands use a base register: keystone 0.9.2 mis-encodes some absolute
    operands as RIP-relative without subtracting RIP, e.g. `mov rsi, qword ptr [0x400000]`.)"""
    words = 6 if error else 5
    lines = ["push rax", "push rbp", f"mov rbp, {slot(n)}",
             "lea rax, [rsp + 16]", "mov qword ptr [rbp], rax"]
    for i in range(words):
        lines += [f"mov rax, qword ptr [rsp + {16 + 8 * i}]",
                  f"mov qword ptr [rbp + {8 + 8 * i + (0 if error else 8)}], rax"]
    lines += ["mov rax, cr2", "mov qword ptr [rbp + 0x40], rax",
              "xor eax, eax", "mov ax, cs", "mov qword ptr [rbp + 0x48], rax",
              "inc qword ptr [rbp + 0x50]", "mov qword ptr [rbp + 0x58], rbx",
              "xor eax, eax", "mov ax, ss", "mov qword ptr [rbp + 0x60], rax",
              "pushfq", "pop rax", "mov qword ptr [rbp + 0x68], rax",
              "pop rbp", "pop rax"]
    if then == "hlt":
        lines += ["hlt"]
        return "\n".join(lines)
    if then == "map":
        lines += ["push rax", "push rbx", "mov rax, cr2", "invlpg [rax]", "mov rbx, rax",
                  "shr rbx, 12", "and rax, -4096", "or rax, 7",
                  f"mov qword ptr [{PT0} + rbx*8], rax", "pop rbx", "pop rax"]
    elif then.startswith("skip"):
        lines += [f"add qword ptr [rsp + {8 if error else 0}], {int(then.split()[1])}"]
    if error:
        lines += ["add rsp, 8"]
    lines += ["iretq"]
    return "\n".join(lines)


def record(m: BareMachine, n: int) -> Record:
    values = [m.memory.read_u64(slot(n) + 8 * i) for i in range(14)]
    entry_rsp, error, rip, cs, rflags, rsp, ss, _, cr2, handler_cs, count, rbx, hss, hfl = values
    return Record(entry_rsp, error, rip, cs, rflags, rsp, ss, cr2, handler_cs, count, rbx, hss,
                  hfl)


def to_ring3(target: str = "{user}", rsp: int = USER_RSP, rflags: int = 0x202) -> str:
    return f"""
        push {UDATA}
        push {rsp}
        push {rflags}
        push {UCODE}
        mov rax, {target}
        push rax
        iretq
    """


def pte(page: int) -> int:
    return PT0 + 8 * (page >> 12)


@pytest.fixture
def m() -> BareMachine:
    return BareMachine()


def reg(m: BareMachine, name: str) -> int:
    return m.reg(getattr(X, f"UC_X86_REG_{name.upper()}"))


# --- 1. #PF at CPL 0 ---------------------------------------------------------------------

@pytest.mark.parametrize("name, access, address, setup, code", [
    ("write not present", "mov qword ptr [rbx], 0x55", DEMAND, None, 0x2),
    ("read not present", "mov rsi, qword ptr [rbx]", DEMAND + 0x5008, None, 0x0),
    ("write read-only with WP", "mov qword ptr [rbx], 0x55", RO_PAGE + 0x10, "ro", 0x3),
])
def test_page_fault_cpl0_resolved(m, name, access, address, setup, code):
    if setup == "ro":
        m.u64(pte(RO_PAGE), RO_PAGE | 1)
    m.memory.write_u64(address, 0x1234)
    m.load(f"""
        mov rbx, {address}
        lea rdx, [rip + fault]
    fault:
        {access}
        mov rdi, qword ptr [rbx]
        mov r15, 0x600d
        hlt
    """, pf=recorder(1, error=True, then="map"))
    m.gate(14, CODE + 0x1000)
    m.boot()
    assert m.run() == "halt"
    r = record(m, 1)
    assert r.error == code, f"{name}: error code {r.error:#x}"
    assert r.cr2 == address
    assert r.rip == reg(m, "rdx")                      # the faulting instruction
    assert r.cs == KCODE and r.ss == 0x10 and r.handler_cs == KCODE
    assert r.handler_ss == 0x10                        # no CPL change: SS kept
    assert r.rsp == KERNEL_STACK_TOP - 0x800           # no stack switch at CPL 0
    assert r.entry_rsp == KERNEL_STACK_TOP - 0x800 - 48
    assert r.count == 1
    assert reg(m, "r15") == 0x600D                     # resumed and finished
    if "write" in name:
        assert reg(m, "rdi") == 0x55
        assert m.memory.read_u64(address) == 0x55
    else:
        assert reg(m, "rsi") == 0x1234 and reg(m, "rdi") == 0x1234
    assert m.cpu.exceptions_by_vector == {14: 1}


def test_supervisor_write_to_read_only_page_without_wp_does_not_fault(m):
    m.u64(pte(RO_PAGE), RO_PAGE | 1)
    m.load(f"""
        mov rax, cr0
        btr rax, 16
        mov cr0, rax
        mov rax, {RO_PAGE}
        mov qword ptr [rax], 0x77
        hlt
    """, pf=recorder(1, error=True))
    m.gate(14, CODE + 0x1000)
    m.boot()
    assert m.run() == "halt"
    assert m.cpu.exceptions_by_vector == {}
    assert m.memory.read_u64(RO_PAGE) == 0x77


# --- 2. a fault at CPL 3: switch to TSS.RSP0 --------------------------------------------

def test_user_page_fault_switches_to_rsp0_and_returns_to_ring3(m):
    m.load(to_ring3(), user=f"""
        xor eax, eax
        mov ax, cs
        mov r8, rax
        mov r9, rsp
        mov rcx, {DEMAND}
        lea rdx, [rip + fault]
    fault:
        mov qword ptr [rcx], 0x77
        xor eax, eax
        mov ax, cs
        mov r10, rax
        mov r11, qword ptr [rcx]
        int 0x80
    """, pf=recorder(1, error=True, then="map"), done="hlt")
    m.gate(14, CODE + 0x2000)
    m.gate(0x80, CODE + 0x3000, dpl=3)
    m.boot()
    assert m.run() == "halt"
    r = record(m, 1)
    assert r.handler_cs & 3 == 0 and r.handler_cs == KCODE
    assert r.handler_ss == 0                           # SS is NULL after a CPL change
    assert r.entry_rsp == KERNEL_STACK_TOP - 48        # on RSP0, frame of 6 words
    assert r.error == 0x6                              # U=1, W=1, P=0
    assert r.cr2 == DEMAND
    assert r.rip == reg(m, "rdx")
    assert (r.cs, r.ss) == (UCODE, UDATA)
    assert r.rsp == USER_RSP == reg(m, "r9")
    assert r.rflags & 0x202 == 0x202
    assert reg(m, "r8") == UCODE                       # CPL 3 before
    assert reg(m, "r10") == UCODE                      # and after the handler's iretq
    assert reg(m, "r11") == 0x77
    assert m.cpu.exceptions_by_vector == {14: 1, 0x80: 1}


# --- 3. IST stacks -------------------------------------------------------------------------

def test_ist_stack_from_cpl0_on_another_stack(m):
    m.load(f"""
        mov rsp, {OTHER_RSP}
        lea rdx, [rip + fault]
    fault:
        ud2
        mov rcx, {DEMAND + 0x8000}
        mov rbx, qword ptr [rcx]
        mov r15, 0x600d
        hlt
    """, ud=recorder(1, error=False, then="skip 2"), pf=recorder(2, error=True, then="map"))
    m.gate(6, CODE + 0x1000, ist=1)
    m.gate(14, CODE + 0x2000, ist=2)
    m.boot()
    assert m.run() == "halt"
    ud, pf = record(m, 1), record(m, 2)
    assert ud.entry_rsp == IST1_TOP - 40               # 5 words, no error code
    assert ud.rip == reg(m, "rdx") and ud.rsp == OTHER_RSP and ud.cs == KCODE
    assert pf.entry_rsp == IST2_TOP - 48
    assert pf.rsp == OTHER_RSP and pf.error == 0 and pf.cr2 == DEMAND + 0x8000
    assert reg(m, "r15") == 0x600D
    assert reg(m, "rsp") == OTHER_RSP
    assert m.cpu.exceptions_by_vector == {6: 1, 14: 1}


def test_ist_stack_overrides_rsp0_from_cpl3(m):
    m.load(to_ring3(), user="""
        ud2
        int 0x80
    """, ud=recorder(1, error=False, then="skip 2"), done="hlt")
    m.gate(6, CODE + 0x2000, ist=1)
    m.gate(0x80, CODE + 0x3000, dpl=3)
    m.boot()
    assert m.run() == "halt"
    ud = record(m, 1)
    assert ud.entry_rsp == IST1_TOP - 40
    assert (ud.cs, ud.ss, ud.rsp, ud.rip) == (UCODE, UDATA, USER_RSP, CODE + 0x1000)
    assert ud.handler_cs == KCODE


def test_frame_is_pushed_on_a_16_byte_aligned_stack(m):
    m.load(f"""
        mov rsp, {OTHER_RSP - 8}
        ud2
        hlt
    """, ud=recorder(1, error=False, then="skip 2"))
    m.gate(6, CODE + 0x1000)
    m.boot()
    assert m.run() == "halt"
    r = record(m, 1)
    assert r.entry_rsp == OTHER_RSP - 16 - 40          # aligned down, then 5 words
    assert r.rsp == OTHER_RSP - 8                      # the frame keeps the old RSP
    assert reg(m, "rsp") == OTHER_RSP - 8              # and iretq restores it


@pytest.mark.parametrize("gate_type, if_in_handler", [(0xE, 0), (0xF, 0x200)])
def test_interrupt_gate_clears_if_trap_gate_keeps_it(m, gate_type, if_in_handler):
    m.load(to_ring3(rflags=0x202), user="""
        int 0x80
    """, sys=recorder(1, error=False))
    m.gate(0x80, CODE + 0x2000, dpl=3, gate_type=gate_type)
    m.boot()
    assert m.run() == "halt"
    r = record(m, 1)
    assert r.rflags & 0x200                            # the frame has the caller's IF
    assert r.handler_rflags & 0x200 == if_in_handler


def test_instruction_fetch_fault_on_an_instruction_straddling_a_page(m):
    # movabs rax, imm64 (10 bytes) starts 3 bytes before the not-present page DEMAND
    start = DEMAND - 3
    m.memory.write(start, bytes.fromhex("48b8") + (0x1122334455667788).to_bytes(8, "little")
                   + bytes.fromhex("f4"))
    m.load(f"""
        mov rcx, {start}
        jmp rcx
    """, pf=recorder(1, error=True, then="map"))
    m.gate(14, CODE + 0x1000)
    m.boot()
    assert m.run() == "halt"
    r = record(m, 1)
    assert r.error == 0x10                             # I/D=1 (EFER.NXE=1), not present
    assert r.cr2 == DEMAND and r.rip == start
    assert reg(m, "rax") == 0x1122334455667788
    assert m.cpu.exceptions_by_vector == {14: 1}
    handler = len(recorder(1, error=True, then="map").splitlines())   # one per line
    assert m.cpu.icount() == PROLOGUE + 2 + handler + 1 + 1


# --- 4. int3 -------------------------------------------------------------------------------

def test_int3_at_cpl0_returns_after_the_breakpoint(m):
    m.load("""
        lea rdx, [rip + after]
        int3
    after:
        mov r15, 0x600d
        hlt
    """, bp=recorder(1, error=False, then="iret"))
    m.gate(3, CODE + 0x1000)
    m.boot()
    assert m.run() == "halt"
    r = record(m, 1)
    assert r.rip == reg(m, "rdx")                      # the instruction after int3
    assert r.entry_rsp == KERNEL_STACK_TOP - 0x800 - 40
    assert reg(m, "r15") == 0x600D
    assert m.cpu.exceptions_by_vector == {3: 1}


def test_int3_at_cpl3_through_dpl3_gate(m):
    m.load(to_ring3(), user="""
        lea rdx, [rip + after]
        int3
    after:
        xor eax, eax
        mov ax, cs
        mov r10, rax
        int 0x80
    """, bp=recorder(1, error=False, then="iret"), done="hlt")
    m.gate(3, CODE + 0x2000, dpl=3, gate_type=0xF)
    m.gate(0x80, CODE + 0x3000, dpl=3)
    m.boot()
    assert m.run() == "halt"
    r = record(m, 1)
    assert r.rip == reg(m, "rdx")
    assert (r.cs, r.ss, r.rsp) == (UCODE, UDATA, USER_RSP)
    assert r.handler_cs == KCODE and r.entry_rsp == KERNEL_STACK_TOP - 40
    assert reg(m, "r10") == UCODE
    assert m.cpu.exceptions_by_vector == {3: 1, 0x80: 1}


# --- 5. / 6. int 0x80 from CPL 3 -------------------------------------------------------------

def test_int80_from_ring3_returns_value(m):
    m.load(to_ring3(), user="""
        mov rax, 5
        int 0x80
        mov r8, rax
        xor eax, eax
        mov ax, cs
        mov r10, rax
        int 0x81
    """, sys=f"""
        xor ebx, ebx
        mov bx, cs
        mov rcx, {slot(1)}
        mov qword ptr [rcx], rbx
        mov qword ptr [rcx + 8], rsp
        add rax, 100
        iretq
    """, done="hlt")
    m.gate(0x80, CODE + 0x2000, dpl=3)
    m.gate(0x81, CODE + 0x3000, dpl=3)
    m.boot()
    assert m.run() == "halt"
    assert m.memory.read_u64(slot(1)) == KCODE         # arrived at CPL 0
    assert m.memory.read_u64(slot(1) + 8) == KERNEL_STACK_TOP - 40
    assert reg(m, "r8") == 105
    assert reg(m, "r10") == UCODE


@pytest.mark.parametrize("instruction, vector", [
    ("int 0x80", 0x80), ("int3", 3), ("int 0xcc", 0xCC), ("int 3", 3),
])
def test_software_interrupt_through_dpl0_gate_is_gp(m, instruction, vector):
    m.load(to_ring3(), user=f"""
        lea rdx, [rip + here]
        mov al, 0xcd          # the byte before the int is 0xCD: not an `int n` prefix
    here:
        {instruction}
        hlt
    """, gp=recorder(1, error=True), sys=recorder(2, error=False))
    m.gate(13, CODE + 0x2000)
    m.gate(vector, CODE + 0x3000, dpl=0)
    m.boot()
    assert m.run() == "halt"
    r = record(m, 1)
    assert r.error == vector * 8 + 2                   # IDT, not external
    assert r.rip == reg(m, "rdx")                      # a fault: RIP of the int instruction
    assert (r.cs, r.ss, r.rsp) == (UCODE, UDATA, USER_RSP)
    assert record(m, 2).count == 0
    assert m.cpu.exceptions_by_vector == {13: 1}


# --- 7. SYSCALL / SYSRET -----------------------------------------------------------------------

SYSCALL_SETUP = """
        mov ecx, 0xC0000081
        xor eax, eax
        mov edx, 0x00100008
        wrmsr
        mov ecx, 0xC0000082
        mov rax, {entry}
        mov rdx, rax
        shr rdx, 32
        wrmsr
        mov ecx, 0xC0000084
        mov eax, 0x200
        xor edx, edx
        wrmsr
"""


def test_syscall_sysret_round_trip(m):
    m.load(SYSCALL_SETUP + to_ring3(), user="""
        mov rbx, 0x1234
        lea rdx, [rip + back]
        syscall
    back:
        mov r8, rax
        xor eax, eax
        mov ax, cs
        mov r9, rax
        mov ax, ss
        mov r10, rax
        pushfq
        pop r12
        int 0x80
    """, entry=f"""
        mov rdi, {slot(1)}
        xor eax, eax
        mov ax, cs
        mov qword ptr [rdi], rax
        mov qword ptr [rdi + 8], rcx
        mov qword ptr [rdi + 16], r11
        pushfq
        pop rax
        mov qword ptr [rdi + 24], rax
        mov qword ptr [rdi + 32], rsp
        xor eax, eax
        mov ax, ss
        mov qword ptr [rdi + 40], rax
        lea rax, [rbx + 1]
        sysret
    """, done="hlt")
    m.gate(0x80, CODE + 0x3000, dpl=3)
    m.boot(efer=0xD01)
    assert m.run() == "halt"
    cs, rcx, r11, rflags, rsp, ss = (m.memory.read_u64(slot(1) + 8 * i) for i in range(6))
    assert cs == KCODE and ss == 0x10                  # STAR[47:32] and +8
    assert rcx == reg(m, "rdx")                        # the return RIP
    assert r11 == 0x202                                # user RFLAGS (iretq gave 0x202)
    assert rflags & 0x200 == 0                         # FMASK cleared IF
    assert rsp == USER_RSP                             # SYSCALL does not switch stacks
    assert reg(m, "r8") == 0x1235
    assert reg(m, "r9") == UCODE and reg(m, "r10") == UDATA
    assert reg(m, "r12") & 0x200                       # SYSRET restored IF from R11
    assert m.cpu.exceptions_by_vector == {256: 1, 0x80: 1}


def test_syscall_without_sce_is_ud(m):
    m.load("""
        lea rdx, [rip + here]
    here:
        syscall
        hlt
    """, ud=recorder(1, error=False))
    m.gate(6, CODE + 0x1000)
    m.boot(efer=0xD00)
    assert m.run() == "halt"
    r = record(m, 1)
    assert r.rip == reg(m, "rdx")
    assert r.cs == KCODE and r.count == 1
    assert m.cpu.exceptions_by_vector == {6: 1}


def test_page_fault_after_a_halt_and_a_new_run_is_not_a_double_fault(m):
    """emu_start's return leaves QEMU's in-flight exception set (it probes the `until`
    address); the next run's first page fault must still arrive as #PF."""
    m.load(f"""
        hlt
        mov rax, {DEMAND}
        mov qword ptr [rax], 1
        mov r15, 0x600d
        hlt
    """, pf=recorder(1, error=True, then="map"))
    m.gate(14, CODE + 0x1000)
    m.boot()
    assert m.run() == "halt" and m.cpu.exceptions_by_vector == {}
    assert m.run() == "halt"
    assert m.cpu.exceptions_by_vector == {14: 1}
    assert reg(m, "r15") == 0x600D
    assert record(m, 1).cr2 == DEMAND


# --- 8. 10,000 consecutive page faults --------------------------------------------------------

def test_ten_thousand_page_faults_without_double_fault(m):
    count = 10_000
    m.load(f"""
        mov rcx, {count}
        mov rax, {DEMAND}
        mov rdi, {pte(DEMAND)}
    again:
        mov qword ptr [rax], rcx
        mov qword ptr [rdi], 0
        invlpg [rax]
        dec rcx
        jnz again
        mov r15, 0x600d
        hlt
    """, pf=recorder(1, error=True, then="map"))
    m.gate(14, CODE + 0x1000)
    m.boot()
    m.cpu.watch_privileged([(CODE, CODE + 0x2000)])
    assert m.run() == "halt"
    assert m.cpu.exceptions_by_vector == {14: count}
    assert record(m, 1).count == count
    assert reg(m, "r15") == 0x600D
    assert m.memory.read_u64(DEMAND) == 1


# --- 9. / 10. #DF and the triple fault ---------------------------------------------------------

def test_fault_on_page_fault_stack_is_double_fault_cpl0(m):
    m.load(f"""
        mov rsp, {DEMAND + 0x10000}
        mov rcx, {DEMAND}
        lea rdx, [rip + fault]
    fault:
        mov qword ptr [rcx], 1
        hlt
    """, df=recorder(1, error=True), pf=recorder(2, error=True))
    m.gate(8, CODE + 0x1000, ist=1)
    m.gate(14, CODE + 0x2000)
    m.boot()
    assert m.run() == "halt"
    df = record(m, 1)
    assert df.error == 0
    assert df.entry_rsp == IST1_TOP - 48
    assert df.cs == KCODE and df.rip == reg(m, "rdx")
    assert df.rsp == DEMAND + 0x10000
    assert record(m, 2).count == 0                     # the #PF handler never ran
    assert m.cpu.exceptions_by_vector == {14: 1, 8: 1}


@pytest.mark.parametrize("first", ["mov qword ptr [rcx], 1", "int 0x80"])
def test_broken_rsp0_is_double_fault_from_cpl3(m, first):
    # a #PF, or int 0x80 whose delivery raises a #PF (serially) and then another: #DF
    m.u64(TSS + 4, DEMAND + 0x20000)                   # RSP0 in a not-present page
    m.load(to_ring3(), user=f"""
        mov rcx, {DEMAND}
        lea rdx, [rip + fault]
    fault:
        {first}
    """, df=recorder(1, error=True), pf=recorder(2, error=True), sys=recorder(3, False))
    m.gate(8, CODE + 0x2000, ist=1)
    m.gate(14, CODE + 0x3000)
    m.gate(0x80, CODE + 0x4000, dpl=3)
    m.boot()
    assert m.run() == "halt"
    df = record(m, 1)
    assert df.error == 0 and df.entry_rsp == IST1_TOP - 48
    assert (df.cs, df.ss, df.rsp) == (UCODE, UDATA, USER_RSP)
    assert df.rip == reg(m, "rdx") and df.handler_cs == KCODE
    assert record(m, 2).count == 0
    assert m.cpu.exceptions_by_vector == {14: 1, 8: 1}


@pytest.mark.parametrize("df_gate", ["absent", "broken stack"])
def test_triple_fault_is_reported(m, df_gate):
    m.load(f"""
        mov rsp, {DEMAND + 0x10000}
        mov rcx, {DEMAND}
        mov qword ptr [rcx], 1
        hlt
    """, df=recorder(1, error=True), pf=recorder(2, error=True))
    m.gate(14, CODE + 0x2000)
    if df_gate == "broken stack":
        m.gate(8, CODE + 0x1000)                       # no IST: the same broken stack
    m.boot()
    with pytest.raises(TripleFault) as caught:
        m.run()
    message = str(caught.value)
    assert "triple fault" in message
    assert "#DF" in message
    assert "#PF" in message                            # the fault that started it
    assert m.cpu.exceptions_by_vector == {14: 1, 8: 1}
    assert record(m, 1).count == record(m, 2).count == 0


# --- 11. #UD, #GP, #DE, #NP ---------------------------------------------------------------------

@pytest.mark.parametrize("name, setup, instruction, vector, error", [
    ("ud2", "", "ud2", 6, None),
    ("non-canonical load", "mov rbx, 0x8000000000000000", "mov rax, qword ptr [rbx]", 13, 0),
    ("non-canonical store", "mov rbx, 0x0000800000000000", "mov qword ptr [rbx], rax", 13, 0),
    ("divide by zero", "xor ecx, ecx", "div rcx", 0, None),
    ("int through not-present gate", "", "int 0x40", 11, 0x40 * 8 + 2),
])
def test_fault_vectors(m, name, setup, instruction, vector, error):
    m.load(f"""
        {setup}
        lea rdx, [rip + here]
    here:
        {instruction}
        hlt
    """, handler=recorder(1, error=error is not None))
    m.gate(vector, CODE + 0x1000)
    m.gate(0x40, CODE + 0x1000, present=False)
    m.boot()
    m.uc.reg_write(X.UC_X86_REG_CR2, 0xC2C2000)
    assert m.run() == "halt"
    r = record(m, 1)
    assert r.count == 1, name
    assert r.rip == reg(m, "rdx")                      # RIP of the faulting instruction
    assert r.cs == KCODE
    if error is not None:
        assert r.error == error
    assert r.cr2 == 0xC2C2000                          # only #PF writes CR2
    assert m.cpu.exceptions_by_vector == {vector: 1}


def test_idt_limit_too_small_is_gp(m):
    m.load("""
        sub rsp, 16
        mov word ptr [rsp], 0x40 * 16 - 1
        mov rax, 0x3000
        mov qword ptr [rsp + 2], rax
        lidt [rsp]
        lea rdx, [rip + here]
    here:
        int 0x40
        hlt
    """, gp=recorder(1, error=True))
    m.gate(13, CODE + 0x1000)
    m.gate(0x40, CODE + 0x1000)
    m.boot()
    assert m.run() == "halt"
    r = record(m, 1)
    assert r.error == 0x40 * 8 + 2 and r.rip == reg(m, "rdx")


# --- 12. external interrupts at exact instruction counts -----------------------------------

LOOP = """
        xor ebx, ebx
        sti
    spin:
        inc rbx
        jmp spin
"""
BEFORE_LOOP = PROLOGUE + 2     # prologue, xor, sti


@pytest.mark.parametrize("n", [BEFORE_LOOP + 2, BEFORE_LOOP + 7, 300, 511, 512, 513, 1000,
                               4097, 20_001])
def test_external_interrupt_lands_after_exactly_n_instructions(m, n):
    m.load(LOOP, timer=recorder(1, error=False))
    m.gate(0x20, CODE + 0x1000)
    m.boot()
    seen = []

    class Watch(Observer):
        def on_exception(self, event):
            seen.append(event)

    m.events.subscribe(Watch())
    m.cpu.schedule_interrupt(n, 0x20)
    assert m.run() == "halt"
    in_loop = n - BEFORE_LOOP
    r = record(m, 1)
    assert r.rbx == (in_loop + 1) // 2
    assert r.rflags & 0x200
    assert r.count == 1
    # the frame's RIP: the jmp after an odd number of loop instructions, else `inc rbx`
    jmp_at = r.rip if in_loop % 2 else r.rip + 3
    assert m.memory.read(jmp_at, 2) == b"\xeb\xfb"     # jmp spin
    assert seen[0].vector == 0x20 and seen[0].kind == "external"
    assert seen[0].icount == n
    assert seen[0].rip == r.rip


MASKED = """
        xor ebx, ebx
        mov ecx, 3000
    masked:
        inc rbx
        dec ecx
        jnz masked
        lea rdx, [rip + open]
        sti
    open:
        nop
    spin:
        inc rbx
        jmp spin
"""


def run_masked(m: BareMachine) -> Record:
    m.load(MASKED, timer=recorder(1, error=False))
    m.gate(0x20, CODE + 0x1000)
    m.boot()
    m.cpu.watch_privileged([(CODE, CODE + 0x2000)])    # how the monitor finds sti
    m.cpu.schedule_interrupt(PROLOGUE + 100, 0x20)     # inside the IF=0 loop
    assert m.run() == "halt"
    r = record(m, 1)
    assert r.count == 1
    return r


def test_external_interrupt_held_while_if_clear(m):
    r = run_masked(m)
    assert r.rbx >= 3000                               # not before sti
    assert r.rflags & 0x200                            # it interrupted IF=1 code
    assert r.rbx <= 3000 + 1000                        # and soon after (retry period)


def test_external_interrupt_held_until_exactly_after_sti(m):
    r = run_masked(m)
    assert r.rbx == 3000
    # delivered at the first boundary after sti's interrupt shadow: after the nop
    assert r.rip == reg(m, "rdx") + 1


def test_external_interrupt_through_not_present_gate_is_np_with_ext(m):
    m.load(LOOP, np=recorder(1, error=True))
    m.gate(11, CODE + 0x1000)
    m.gate(0x21, CODE + 0x1000, present=False)
    m.boot()
    m.cpu.schedule_interrupt(100, 0x21)
    assert m.run() == "halt"
    r = record(m, 1)
    assert r.error == 0x21 * 8 + 2 + 1                 # IDT=1, EXT=1
    assert m.cpu.exceptions_by_vector == {11: 1}


def test_external_interrupt_wakes_hlt(m):
    m.load("""
        sti
        hlt
        mov r15, 0x600d
        cli
        hlt
    """, timer=recorder(1, error=False, then="iret"))
    m.gate(0x20, CODE + 0x1000)
    m.boot()
    m.cpu.schedule_interrupt(5000, 0x20)
    assert m.run() == "halt"
    assert record(m, 1).count == 1
    assert reg(m, "r15") == 0x600D


# --- 13. events ---------------------------------------------------------------------------------

def test_observer_receives_exception_delivered(m):
    seen: list[ExceptionDelivered] = []

    class Watch(Observer):
        def on_exception(self, event):
            seen.append(event)

    m.events.subscribe(Watch())
    m.load(to_ring3(), user=f"""
        mov rcx, {DEMAND + 0x3000}
        lea rdx, [rip + fault]
    fault:
        mov qword ptr [rcx], 1
        lea r8, [rip + after]
        int 0x80
    after:
        jmp after
    """, pf=recorder(1, error=True, then="map"), sys=recorder(2, error=False))
    m.gate(14, CODE + 0x2000)
    m.gate(0x80, CODE + 0x3000, dpl=3)
    m.boot()
    assert m.run() == "halt"
    assert len(seen) == 2
    pf, syscall = seen
    assert (pf.vector, pf.kind, pf.rip, pf.error_code, pf.cr2, pf.cpl, pf.handler_rip) == \
        (14, "fault", reg(m, "rdx"), 0x6, DEMAND + 0x3000, 3, CODE + 0x2000)
    assert (syscall.vector, syscall.kind, syscall.rip, syscall.error_code, syscall.cr2,
            syscall.cpl, syscall.handler_rip) == \
        (0x80, "software", reg(m, "r8"), None, None, 3, CODE + 0x3000)
    assert 0 < pf.icount < syscall.icount
    assert m.cpu.last_exception == syscall


# --- 13. user-mode port I/O: the I/O permission check (SDM vol. 1, 19.5) -------------------

IO_MAP = 0x68              # the I/O permission bitmap starts right after the 64-bit TSS
IO_MAP_BYTES = 0x80        # ports 0-0x3ff; higher ports lie past the TSS limit


def io_machine(count: bool = True, allowed: tuple[int, ...] | None = None
               ) -> tuple[BareMachine, list[str]]:
    """BareMachine with the PC devices on a bus that asks the CPU for I/O permission.
    `allowed`: give the TSS an I/O bitmap permitting just those ports (None: the bare TSS,
    whose limit leaves no room for a bitmap: every port denied at CPL 3 with IOPL 0)."""
    from emu.hw.bus import Bus
    from emu.hw.devices.pc import install_pc_devices
    m = BareMachine(count=count)
    bus = Bus(m.uc, m.events, m.hooks, read_code=m.cpu.read_virtual, io_gate=m.cpu.io)
    text: list[str] = []
    install_pc_devices(bus, text.append, on_exit=lambda value: m.cpu.request_stop(RunEnd.EXIT, value))
    if allowed is not None:
        limit = IO_MAP + IO_MAP_BYTES          # the byte after the bitmap, all ones, inside
        low = (limit & 0xFFFF) | ((TSS & 0xFFFFFF) << 16) | (0x89 << 40) | \
            (((limit >> 16) & 0xF) << 48) | (((TSS >> 24) & 0xFF) << 56)
        m.u64(0x1000 + 5 * 8, low)             # GDT entry 5: the TSS (selector 0x28)
        m.memory.write(TSS + 0x66, IO_MAP.to_bytes(2, "little"))
        bitmap = bytearray(b"\xff" * (IO_MAP_BYTES + 1))
        for port in allowed:
            bitmap[port // 8] &= ~(1 << (port % 8))
        m.memory.write(TSS + IO_MAP, bytes(bitmap))
    return m, text


def user_io(m: BareMachine, code: str, rflags: int = 0x202) -> None:
    m.load(to_ring3(rflags=rflags), user=code, gp=recorder(1, error=True, then="hlt"),
           sys=recorder(2, error=False, then="hlt"))
    m.gate(13, CODE + 0x2000)
    m.gate(0x80, CODE + 0x3000, dpl=3)
    m.boot()


@pytest.mark.parametrize("access", ["out dx, al", "in al, dx", "out dx, ax", "in eax, dx"])
def test_user_io_without_permission_raises_gp_before_the_next_instruction(access):
    m, text = io_machine()
    user_io(m, f"""
        mov dx, 0x3f8
        mov eax, 0x12345641
        mov r12, 1
        lea r13, [rip + io]
    io:
        {access}
        mov r12, 2
        int 0x80
    """)
    assert m.run() == "halt"
    assert m.cpu.exceptions_by_vector == {13: 1}
    r = record(m, 1)
    assert (r.error, r.rip, r.cs) == (0, reg(m, "r13"), UCODE)
    assert reg(m, "r12") == 1                  # nothing after the I/O instruction ran
    assert reg(m, "rax") == 0x12345641         # a refused IN leaves its destination alone
    assert text == []                          # and a refused OUT reaches no device


def test_the_tss_io_bitmap_permits_single_ports():
    m, text = io_machine(allowed=(0x3f8, 0x3fd))
    user_io(m, """
        mov dx, 0x3fd
        in al, dx                  # LSR: permitted
        mov bl, al
        mov dx, 0x3f8
        mov al, 0x41
        out dx, al                 # THR: permitted
        mov al, 0x0a
        out dx, al
        lea r13, [rip + io]
        mov dx, 0x3f9
    io:
        in al, dx                  # IER: denied
        int 0x80
    """)
    assert m.run() == "halt"
    assert reg(m, "rbx") & 0xFF == 0x60        # the LSR answered the permitted IN
    assert "".join(text) == "A\n"
    assert m.cpu.exceptions_by_vector == {13: 1}
    assert record(m, 1).rip == reg(m, "r13")


def test_a_wide_access_needs_the_bit_of_every_port_it_touches():
    m, _ = io_machine(allowed=(0x3f8,))        # 0x3f9 denied
    user_io(m, """
        lea r13, [rip + io]
        mov dx, 0x3f8
    io:
        in ax, dx
        int 0x80
    """)
    assert m.run() == "halt"
    assert m.cpu.exceptions_by_vector == {13: 1}
    assert record(m, 1).rip == reg(m, "r13")


def test_iopl_3_permits_every_port():
    m, text = io_machine()
    user_io(m, """
        mov dx, 0x3f8
        mov al, 0x42
        out dx, al
        mov al, 0x0a
        out dx, al
        int 0x80
    """, rflags=0x3202)
    assert m.run() == "halt"
    assert "".join(text) == "B\n"
    assert m.cpu.exceptions_by_vector == {0x80: 1}


def test_a_refused_rep_outs_is_undone():
    m, _ = io_machine()
    user_io(m, f"""
        mov dx, 0x3f8
        mov rsi, {USER_RSP - 0x100}
        mov rcx, 3
        lea r13, [rip + io]
    io:
        rep outsb
        int 0x80
    """)
    assert m.run() == "halt"
    assert m.cpu.exceptions_by_vector == {13: 1}
    assert record(m, 1).rip == reg(m, "r13")
    assert (reg(m, "rsi"), reg(m, "rcx")) == (USER_RSP - 0x100, 3)


def test_the_refused_instruction_does_not_retire():
    stamps = []
    for access in ("nop", "out dx, al"):
        m, _ = io_machine()
        seen: list[ExceptionDelivered] = []

        class Watch(Observer):
            def on_exception(self, event):
                seen.append(event)

        m.events.subscribe(Watch())
        user_io(m, f"""
            mov dx, 0x3f8
            {access}
            int 0x80
        """)
        assert m.run() == "halt"
        stamps.append(seen[0].icount)
    # with the nop, int 0x80 is delivered after mov, nop and int retired; the refused out
    # is delivered after the mov alone
    assert stamps[1] == stamps[0] - 2


def test_without_counting_user_io_is_not_checked():
    # documented (README, --no-count): no block hook shows the user-mode blocks
    from emu.engine.icount import NEVER
    m, text = io_machine(count=False)
    user_io(m, """
        mov dx, 0x3f8
        mov al, 0x43
        out dx, al
        int 0x80
    """)
    assert m.run(budget=NEVER) == "halt"
    assert text == ["C"]
    assert m.cpu.exceptions_by_vector == {0x80: 1}
