"""STALE_TLB: no translation survives in the TLB after its mapping was removed, moved or
lost a permission without an invlpg or a CR3 load.

A shadow of the translations the TLB may hold is taken at each CR3 load, kept up to date at
every invlpg (the page is walked again) and extended with the current mappings at every
check. At a checkpoint or page fault, a shadow page whose mapping has since changed is
probed with Unicorn's own translation (`uc_vmem_translate`, which looks in Unicorn's TLB
first): if Unicorn still translates it, the guest can still use it, and it is reported.
Periodic checks (`--check-every`) land between any two instructions, also between a
kernel's PTE store and its invlpg, so they only extend the shadow; a CR3 load is itself a
flush, so it starts a new shadow without probing. A mapping made and torn down between two
checks is not seen.
"""
from __future__ import annotations

from typing import Callable

from unicorn import UC_PROT_EXEC, UC_PROT_READ, UC_PROT_WRITE

from emu.arch.paging import AddressSpace, MappedRange, Walk
from emu.monitor.checks.context import Check
from emu.monitor.checks.rules.base import Rule
from emu.x86 import PAGE_SIZE, PAGE_SIZES

MAX_PROBES = 1 << 14           # probes per check
_PROTS = {UC_PROT_READ: "read", UC_PROT_WRITE: "write", UC_PROT_EXEC: "fetch"}


class StaleTlb(Rule):
    id = "STALE_TLB"
    meaning = ("Unicorn's TLB still translates a page whose mapping was removed, moved or "
               "lost a permission with no invlpg or CR3 load since (address: the virtual "
               "page).")
    example = "vmm_unmap without invlpg, then a read of the page"

    def __init__(self) -> None:
        self.shadow: dict[int, MappedRange] = {}     # what the TLB may hold, for shadow_root
        self.shadow_root: int | None = None
        self._probed: AddressSpace | None = None     # the space probed last, if no flush since
        self._included: AddressSpace | None = None   # the shadow holds its leaves, likewise

    def address_space_loaded(self, space: AddressSpace | None) -> None:
        """A CR3 load flushed the TLB: the shadow starts again from the new tables."""
        self._probed = self._included = None
        if space is None:
            self.shadow, self.shadow_root = {}, None
        else:
            self.shadow = {leaf.start: leaf for leaf in space.leaves}
            self.shadow_root = space.root

    def page_flushed(self, page: int, live_root: int, walk: Callable[[int, int], Walk]) -> None:
        """An invlpg: the page's shadow entry is what the tables say now."""
        if self.shadow_root is None or live_root != self.shadow_root:
            return
        self._probed = self._included = None
        page &= ~(PAGE_SIZE - 1)
        for size in PAGE_SIZES:
            leaf = self.shadow.get(page & ~(size - 1))
            if leaf is not None and leaf.end - leaf.start == size:
                del self.shadow[leaf.start]
        now = walk(self.shadow_root, page)
        if now.paddr is not None:
            start = page & ~(now.page_size - 1)
            self.shadow[start] = MappedRange(start, start + now.page_size,
                                             now.paddr - (page - start), now.writable,
                                             now.user, now.executable)

    def check(self, check: Check) -> None:
        if not check.live or check.root != self.shadow_root:
            return
        if check.space is self._probed or (not check.stale and check.space is self._included):
            return          # the same tables and no flush since: the same answer as before
        if check.stale:
            self._probe_lost(check)
            self._probed = check.space
        if check.space is not self._included:
            for leaf in check.space.leaves:
                self.shadow[leaf.start] = leaf
            self._included = check.space

    def _probe_lost(self, check: Check) -> None:
        current = {leaf.start: leaf for leaf in check.space.leaves}
        candidates: list[tuple[int, int]] = []
        for old in self.shadow.values():
            new = current.get(old.start)
            if new is not None and new.end == old.end and _covers(new, old, 0):
                continue
            candidates += _lost_pages(old, current)
            if len(candidates) >= MAX_PROBES:
                del candidates[MAX_PROBES:]
                break
        hits = [(page, prot, paddr) for page, prot in candidates
                if (paddr := check.tlb_translation(page, prot)) is not None]
        for page, prot, paddr in hits:
            walk = check.walk(check.root, page)
            if walk.paddr is not None and walk.paddr == paddr and \
                    (prot != UC_PROT_WRITE or walk.writable) and \
                    (prot != UC_PROT_EXEC or walk.executable):
                continue                # the probe found the current, valid translation
            now = walk.problem or f"now {walk.paddr:#x}" + \
                ("" if prot == UC_PROT_READ else f" without {_PROTS[prot]} permission")
            check.report(self.id, page,
                         f"Unicorn's TLB still allows a {_PROTS[prot]} of {page:#x} -> "
                         f"{paddr:#x}, but the tables say: {now}; no invlpg or CR3 load "
                         "since an earlier check saw the old mapping")


def _covers(new: MappedRange, old: MappedRange, offset: int) -> bool:
    """Does `new` give the page at `offset` into `old` the same frame and every permission
    `old` gave? (`offset` measured from old.start; the page must lie inside `new`.)"""
    page = old.start + offset
    return new.paddr + (page - new.start) == old.paddr + offset and \
        (new.writable or not old.writable) and (new.executable or not old.executable) and \
        (new.user or not old.user)


def _leaf_at(leaves: dict[int, MappedRange], vaddr: int) -> MappedRange | None:
    for size in PAGE_SIZES:
        leaf = leaves.get(vaddr & ~(size - 1))
        if leaf is not None and leaf.start <= vaddr < leaf.end:
            return leaf
    return None


def _lost_pages(old: MappedRange, current: dict[int, MappedRange]) -> list[tuple[int, int]]:
    """(page, access to probe) for each page of `old` that the current tables no longer
    map the same way with the same permissions."""
    out = []
    page = old.start
    while page < old.end and len(out) < MAX_PROBES:
        new = _leaf_at(current, page)
        offset = page - old.start
        if new is None or new.paddr + (page - new.start) != old.paddr + offset:
            out.append((page, UC_PROT_READ))
        elif old.writable and not new.writable:
            out.append((page, UC_PROT_WRITE))
        elif old.executable and not new.executable:
            out.append((page, UC_PROT_EXEC))
        else:
            page = min(new.end, old.end)    # the rest of this leaf is as before
            continue
        page += PAGE_SIZE
    return out
