"""The GDB stub: a GDB remote serial protocol server on localhost driving a TimeTravel.

Owns: `serve(machine, port, ...)` (listen, accept one debugger, answer its packets until it
detaches, kills or goes away), memory by virtual address through the current CR3, stop
replies, and the `monitor` commands of the harness:
  monitor icount          instructions retired so far
  monitor phys ADDR [N]   N bytes (default 64) of physical memory at ADDR
  monitor pt [VADDR]      the page walk of VADDR (default RIP) through the current CR3
  monitor check           run the page-table and PMM checks now (needs --check pt)
  monitor heap            the outside heap checker's live blocks and findings (--check heap)
  monitor snapshots       the instruction counts time travel can go back to directly
Packets answered: qSupported, qXfer:features:read, ?, g, G, p, P, m, M, c, s, bc, bs,
Z0-Z4/z0-z4, vCont?, qRcmd, k, D, H, T, qC, qfThreadInfo, qsThreadInfo, qAttached; any other
gets the empty reply (unsupported), as the protocol says.
Does not own: moving the machine (travel.py), framing (protocol.py), registers (registers.py).
"""
from __future__ import annotations

import enum
import socket
from typing import Callable

from unicorn import x86_const as X

from emu.errors import ConfigError, GuestMemoryError
from emu.gdb import registers
from emu.gdb.protocol import Connection, Disconnected, unescape
from emu.gdb.travel import Stop, StopKind, TimeTravel, WatchKind
from emu.result import RunResult
from emu.x86 import PAGE_SIZE

SIGTRAP, SIGINT = 5, 2
MAX_MEMORY_READ = 1 << 16
WATCH_KINDS = {"2": WatchKind.WRITE, "3": WatchKind.READ, "4": WatchKind.ACCESS}
SUPPORTED = ("PacketSize=4000;qXfer:features:read+;swbreak+;hwbreak+;ReverseStep+;"
             "ReverseContinue+;vContSupported-")


class SessionEnd(enum.Enum):
    DETACHED = "detached"       # the run goes on without the debugger
    KILLED = "killed"


def listen(port: int) -> socket.socket:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        server.bind(("127.0.0.1", port))
    except OSError as exc:
        server.close()
        raise ConfigError(f"--gdb {port}: cannot listen on localhost: {exc.strerror}") \
            from None
    server.listen(1)
    return server


def serve(machine, server: socket.socket, *, checker=None, heap_checker=None,
          say: Callable[[str], None] = print) -> tuple[SessionEnd, RunResult | None]:
    """Wait for one debugger on `server` and answer it; the machine stands before its first
    instruction (or where it was resumed). Returns how the session ended and, if the run
    ended while debugged, its result."""
    connection, _ = server.accept()
    server.close()
    connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    stub = Stub(machine, Connection(connection), checker, heap_checker)
    try:
        end = stub.loop()
    except Disconnected:
        if stub.result is None:
            say("--- the debugger went away; the run goes on")
        end = SessionEnd.DETACHED
    finally:
        stub.travel.close()
        connection.close()
    return end, stub.result


class Stub:
    def __init__(self, machine, connection: Connection, checker, heap_checker) -> None:
        self.machine = machine
        self.uc = machine.uc
        self.connection = connection
        self.checker = checker
        self.heap_checker = heap_checker
        self.travel = TimeTravel(machine)
        self.last_stop = Stop(StopKind.STEP)
        self.result: RunResult | None = None        # once the run ended

    def loop(self) -> SessionEnd:
        while True:
            packet = self.connection.receive()
            if packet is None:          # Ctrl-C while stopped: say where we are
                self.connection.send(self._stop_reply(Stop(StopKind.INTERRUPTED)))
                continue
            text = packet.decode("latin-1")
            if text == "k" or text.startswith("vKill"):
                return SessionEnd.KILLED
            if text.startswith("D"):
                self.connection.send("OK")
                return SessionEnd.DETACHED
            self.connection.send(self._answer(text, packet))

    # ---- dispatch ---------------------------------------------------------------------

    def _answer(self, text: str, packet: bytes) -> str:
        head = text[:1]
        if text.startswith("qSupported"):
            return SUPPORTED
        if text.startswith("qXfer:features:read:target.xml:"):
            return self._xfer(registers.target_xml(), text.rsplit(":", 1)[1])
        if text.startswith("qRcmd,"):
            return self._monitor(bytes.fromhex(text[6:]).decode("latin-1", "replace"))
        if text in ("qAttached",):
            return "1"
        if text == "qC":
            return "QC1"
        if text == "qfThreadInfo":
            return "m1"
        if text == "qsThreadInfo":
            return "l"
        if text == "vCont?":
            return "vCont;c;s"
        if text.startswith("vCont;"):
            action = text[6:7]
            return self._resume({"c": "c", "s": "s", "C": "c", "S": "s"}.get(action, ""))
        if head == "?":
            return self._stop_reply(self.last_stop)
        if head in "HT":
            return "OK"
        if head == "g":
            return registers.read_all(self.uc)
        if head == "G":
            return self._write_all(text[1:])
        if head == "p":
            number = int(text[1:], 16)
            return registers.read(self.uc, number) if number < len(registers.REGISTERS) \
                else "E00"
        if head == "P":
            number, _, value = text[1:].partition("=")
            ok = int(number, 16) < len(registers.REGISTERS) and \
                registers.write(self.uc, int(number, 16), value)
            return "OK" if ok else "E01"
        if head == "m":
            return self._read_memory(text[1:])
        if head == "M":
            return self._write_memory(text[1:])
        if head == "X":
            return self._write_binary(packet[1:])
        if head in "Zz":
            return self._breakpoint(text)
        if text in ("c", "s", "bc", "bs") or head in "cs" and len(text) > 1:
            return self._resume(text if text in ("bc", "bs") else head)
        return ""

    def _resume(self, how: str) -> str:
        travel = self.travel
        if how == "c":
            stop = travel.cont(self.connection.interrupted)
        elif how == "s":
            stop = travel.step()
        elif how == "bc":
            stop = travel.reverse_cont()
        elif how == "bs":
            stop = travel.reverse_step()
        else:
            return ""
        self.last_stop = stop
        return self._stop_reply(stop)

    def _stop_reply(self, stop: Stop) -> str:
        if stop.kind is StopKind.ENDED:
            if self.result is None:         # says how it ended; nothing runs any more
                self.result = self.machine.run()
            return f"W{self.result.exit_status & 0xFF:02x}"
        if stop.kind is StopKind.INTERRUPTED:
            return f"T{SIGINT:02x}thread:1;"
        if stop.kind is StopKind.BREAKPOINT:
            return f"T{SIGTRAP:02x}thread:1;swbreak:;"
        if stop.kind is StopKind.WATCHPOINT:
            return f"T{SIGTRAP:02x}thread:1;{stop.watch.value}:{stop.address:x};"
        if stop.kind is StopKind.BEGIN:
            return f"T{SIGTRAP:02x}thread:1;replaylog:begin;"
        return f"T{SIGTRAP:02x}thread:1;"

    @staticmethod
    def _xfer(document: str, window: str) -> str:
        offset, _, length = window.partition(",")
        start, size = int(offset, 16), int(length, 16)
        part = document[start:start + size]
        return ("l" if start + size >= len(document) else "m") + part

    # ---- registers and memory ---------------------------------------------------------

    def _write_all(self, text: str) -> str:
        position = 0
        for number, register in enumerate(registers.REGISTERS):
            width = register.bits // 4
            chunk = text[position:position + width]
            position += width
            if len(chunk) == width and register.writable and "x" not in chunk:
                registers.write(self.uc, number, chunk)
        return "OK"

    def _physical_pieces(self, address: int, length: int) -> list[tuple[int, int]]:
        """(physical address, length) of each page piece of a virtual range; raises
        GuestMemoryError for an unmapped piece."""
        state = self.machine.cpu.state
        pieces = []
        while length > 0:
            chunk = min(length, PAGE_SIZE - (address & (PAGE_SIZE - 1)))
            paddr = state.translate(address)
            if paddr is None:
                raise GuestMemoryError(f"{address:#x} is not mapped")
            pieces.append((paddr, chunk))
            address += chunk
            length -= chunk
        return pieces

    def _read_memory(self, args: str) -> str:
        address, _, length = args.partition(",")
        try:
            data = self.machine.cpu.state.read_virtual(int(address, 16),
                                                       min(int(length, 16), MAX_MEMORY_READ))
        except (GuestMemoryError, ValueError):
            return "E14"
        return data.hex()

    def _store(self, address: int, data: bytes) -> str:
        try:
            pieces = self._physical_pieces(address, len(data))
            for paddr, chunk in pieces:
                self.machine.memory.write(paddr, data[:chunk])
                data = data[chunk:]
        except GuestMemoryError:
            return "E14"
        self.uc.ctl_flush_tb()          # the bytes may be code Unicorn has translated
        return "OK"

    def _write_memory(self, args: str) -> str:
        where, _, data = args.partition(":")
        address, _, _ = where.partition(",")
        return self._store(int(address, 16), bytes.fromhex(data))

    def _write_binary(self, args: bytes) -> str:
        where, _, data = args.partition(b":")
        address, _, length = where.partition(b",")
        if int(length, 16) == 0:
            return "OK"                 # GDB probing whether X works
        return self._store(int(address, 16), unescape(data))

    def _breakpoint(self, text: str) -> str:
        kind, address, length = (text[1:].split(",") + ["1"])[:3]
        address_value, size = int(address, 16), int(length.split(";")[0], 16)
        insert = text[0] == "Z"
        if kind in ("0", "1"):
            if insert:
                self.travel.breakpoints.add(address_value)
            else:
                self.travel.breakpoints.discard(address_value)
            return "OK"
        if kind in WATCH_KINDS:
            if insert:
                self.travel.watch(address_value, size, WATCH_KINDS[kind])
            else:
                self.travel.unwatch(address_value, size, WATCH_KINDS[kind])
            return "OK"
        return ""

    # ---- monitor commands -------------------------------------------------------------

    def _monitor(self, line: str) -> str:
        words = line.split()
        command = words[0] if words else ""
        handlers = {"icount": self._m_icount, "phys": self._m_phys, "pt": self._m_pt,
                    "check": self._m_check, "heap": self._m_heap,
                    "snapshots": self._m_snapshots}
        handler = handlers.get(command)
        if handler is None:
            text = f"monitor commands: {', '.join(handlers)}\n"
        else:
            try:
                text = handler(words[1:]) + "\n"
            except (ValueError, IndexError):
                text = f"monitor {command}: bad arguments\n"
            except GuestMemoryError as exc:
                text = f"monitor {command}: {exc}\n"
        self.connection.send("O" + text.encode().hex())
        return "OK"

    def _m_icount(self, _args: list[str]) -> str:
        return f"{self.travel.icount():,} instructions retired"

    def _m_phys(self, args: list[str]) -> str:
        address = int(args[0], 0)
        length = min(int(args[1], 0) if len(args) > 1 else 64, 4096)
        data = self.machine.memory.read(address, length)
        return "\n".join(f"{address + offset:#014x}: {data[offset:offset + 16].hex(' ')}"
                         for offset in range(0, len(data), 16))

    def _m_pt(self, args: list[str]) -> str:
        state = self.machine.cpu.state
        address = int(args[0], 0) if args else state.reg(X.UC_X86_REG_RIP)
        return f"CR3 {state.cr3():#x}\n{state.walk(address).describe()}"

    def _m_check(self, _args: list[str]) -> str:
        if self.checker is None:
            return "no page-table checker: run emu with --check pt"
        before = len(self.checker.violations)
        self.checker.check(reason="monitor check")
        found = self.checker.violations[before:]
        lines = [f"{event.rule} at {event.address:#x}: {event.detail.splitlines()[0]}"
                 for event in found]
        return "\n".join(lines) or f"no violations (check {self.checker.checks})"

    def _m_heap(self, _args: list[str]) -> str:
        checker = self.heap_checker
        if checker is None:
            return "no heap checker: run emu with --check heap"
        findings = [f"{f.rule} at {f.address:#x} by {f.caller}" for f in checker.findings]
        return f"{len(checker.live):,} blocks live; findings: " + ("; ".join(findings)
                                                                   or "none")

    def _m_snapshots(self, _args: list[str]) -> str:
        return "snapshots at instructions " + ", ".join(
            f"{count:,}" for count in self.travel.snapshot_counts())
