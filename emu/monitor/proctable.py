"""The guest kernel's processes, read from outside through its `proc_descriptor`.

Owns: the layouts the kernel documents for the monitor (guest/proc/proc.h: the descriptor,
96 bytes, and the first 96 bytes of a table entry; guest/mm/vmm.h: struct address_space,
152 bytes, and struct vma, 96 bytes; guest/mm/frames.h: the reference-count directory;
static asserts there) and decoding them from kernel-virtual reads.
Does not own: finding the descriptor (the symbol service), judging what is read (the
rules in emu/monitor/checks/), the tracepoints (emu/monitor/processes.py).

Reads go through a `read(vaddr, size) -> bytes` callable over kernel-virtual addresses
(the CPU's `read_virtual` through the live root: the kernel half is the same in every
address space); it raises GuestMemoryError for an address with nothing behind it, and the
readers let that through for the caller to decide.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Callable

DESCRIPTOR_SYMBOL = "proc_descriptor"
DESCRIPTOR_MAGIC = 0x434F5250                      # "PROC"
DESCRIPTOR_VERSION = 1
DESCRIPTOR = struct.Struct("<IIIIQQQQQQQQIIQ")      # struct proc_descriptor, 96 bytes
ENTRY = struct.Struct("<IIIIQQ64s")                 # struct proc, the monitor's 96 bytes
ADDRESS_SPACE = struct.Struct("<19Q")               # struct address_space, 152 bytes
VMA = struct.Struct("<QQQQQQIIIIIIQQQ")             # struct vma, 96 bytes
MAX_REGIONS = 65530 + 1                             # AS_MAX_REGIONS: more is a broken tree
FAULT_KINDS = ("zero-fill", "file", "copy-on-write", "stack-growth", "sigsegv",
               "out-of-memory", "sigbus", "swap-in")  # enum as_fault_kind, in order
ACCESSES = ("read", "write", "execute")             # enum as_access

Read = Callable[[int, int], bytes]


class ProcState:
    """enum proc_state."""
    FREE, RUNNABLE, RUNNING, SLEEPING, ZOMBIE = range(5)


class VmaSharing:
    """enum vma_sharing."""
    PRIVATE, SHARED = 0, 1


@dataclass(frozen=True, slots=True)
class ProcDescriptor:
    magic: int
    version: int
    proc_max: int
    proc_stride: int
    procs: int                   # kernel virtual address of entry 0
    frame_refs: int              # the count directory: uint32_t *dir[chunks]
    frame_ref_chunks: int
    frames_per_chunk: int
    baseline_frames: int         # the PMM measure before the first process
    final_frames: int            # the same after the last one was reaped (0 until then)
    user_end: int                # user addresses lie below
    reaped: int
    init_status: int
    init_done: int
    reserved: int


@dataclass(frozen=True, slots=True)
class ProcEntry:
    pid: int
    state: int                   # ProcState
    ppid: int
    wait_status: int
    address_space: int           # struct address_space * (kernel virtual), 0 for a zombie
    syscalls: int
    name: str

    @property
    def alive(self) -> bool:
        """Running, runnable or asleep, with an address space: not exited."""
        return self.state in (ProcState.RUNNABLE, ProcState.RUNNING, ProcState.SLEEPING) \
            and self.address_space != 0


@dataclass(frozen=True, slots=True)
class AddressSpaceInfo:
    root: int                    # pml4_t * (kernel virtual)
    regions: int                 # the region tree's root node (struct vma *)
    region_count: int
    rss_pages: int
    peak_rss_pages: int
    faults: tuple[int, ...]      # by FAULT_KINDS


@dataclass(frozen=True, slots=True)
class Region:
    start: int
    end: int
    prot: int                    # PROT_READ 1, PROT_WRITE 2, PROT_EXEC 4
    sharing: int                 # VmaSharing


def read_descriptor(read: Read, address: int) -> ProcDescriptor | None:
    """The descriptor at `address`, or None before proc_init filled it (no magic) or for a
    version this monitor does not know."""
    descriptor = ProcDescriptor(*DESCRIPTOR.unpack(read(address, DESCRIPTOR.size)))
    if descriptor.magic != DESCRIPTOR_MAGIC or descriptor.version != DESCRIPTOR_VERSION or \
            descriptor.proc_stride < ENTRY.size:
        return None
    return descriptor


def read_entries(read: Read, descriptor: ProcDescriptor) -> list[ProcEntry]:
    """The table's entries in use, in table order."""
    out = []
    for index in range(descriptor.proc_max):
        raw = read(descriptor.procs + index * descriptor.proc_stride, ENTRY.size)
        pid, state, ppid, wait_status, space, syscalls, name = ENTRY.unpack(raw)
        if state != ProcState.FREE:
            out.append(ProcEntry(pid, state, ppid, wait_status, space, syscalls,
                                 c_string(name)))
    return out


def read_address_space(read: Read, address: int) -> AddressSpaceInfo:
    fields = ADDRESS_SPACE.unpack(read(address, ADDRESS_SPACE.size))
    return AddressSpaceInfo(fields[0], fields[1], fields[2], fields[9], fields[10],
                            tuple(fields[11:11 + len(FAULT_KINDS)]))


def read_regions(read: Read, tree_root: int) -> list[Region]:
    """The regions of a tree, in address order (an in-order walk of the AVL tree of
    guest/mm/vmm.h). Raises ValueError for a tree with a cycle or absurdly many nodes."""
    out: list[Region] = []
    stack: list[tuple[int, tuple]] = []
    node = tree_root
    while stack or node:
        while node:
            fields = VMA.unpack(read(node, VMA.size))
            stack.append((node, fields))
            if len(stack) + len(out) > MAX_REGIONS:
                raise ValueError("the region tree has more nodes than a process may hold")
            node = fields[0]                              # left
        _, fields = stack.pop()
        out.append(Region(fields[4], fields[5], fields[6], fields[7]))
        node = fields[1]                                  # right
    return out


def read_frame_refs(read: Read, descriptor: ProcDescriptor) -> dict[int, int]:
    """Frame number -> reference count, for every counted frame (count above zero)."""
    chunks = descriptor.frame_ref_chunks
    per_chunk = descriptor.frames_per_chunk
    if not chunks or not descriptor.frame_refs or per_chunk <= 0:
        return {}
    directory = struct.unpack(f"<{chunks}Q", read(descriptor.frame_refs, 8 * chunks))
    refs: dict[int, int] = {}
    for number, chunk in enumerate(directory):
        if not chunk:
            continue
        counts = struct.unpack(f"<{per_chunk}I", read(chunk, 4 * per_chunk))
        base = number * per_chunk
        refs.update((base + index, count) for index, count in enumerate(counts) if count)
    return refs


def c_string(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")
