"""USER_FRAME_LEAK: the frames of a process go back to the PMM when nothing maps them."""
from __future__ import annotations

from emu.monitor.checks.rules.base import ProcessRule

_SHOWN = 8                    # frames named in a report


class UserFrameLeak(ProcessRule):
    """Remembers, per live process, its page-table root and the frames it mapped when last
    checked, to name whose frames leaked; the root is judged at the process's exit (the
    check its ProcessExit event makes, right after the teardown, before anything else could
    take the frame)."""
    id = "USER_FRAME_LEAK"
    meaning = ("A frame with a user reference count above zero is mapped by no live "
               "process, or an exited process's page-table root is still allocated: "
               "frames of an exited process, or of an unmap, leaked (address: the first "
               "such frame, physical).")
    example = "exit keeping the address space, or unmap not dropping the frames' references"

    def __init__(self) -> None:
        self._roots: dict[int, tuple[int, str]] = {}          # pid -> (root, path)
        self._frames: dict[int, tuple[frozenset[int], str]] = {}   # pid -> (frames, who)

    def check_processes(self, view) -> None:
        self._exited_root(view)
        mapped = view.mappings
        leaked = sorted(pfn for pfn in view.refs if pfn not in mapped)
        if leaked:
            owners = [who for frames, who in self._frames.values()
                      if not frames.isdisjoint(leaked)]
            whose = f" (mapped by {', '.join(owners)} when last checked)" if owners else ""
            shown = ", ".join(f"{pfn << 12:#x}" for pfn in leaked[:_SHOWN])
            more = ", ..." if len(leaked) > _SHOWN else ""
            view.report(self.id, leaked[0] << 12,
                        f"{len(leaked)} frames have references but no live process maps "
                        f"them: {shown}{more}{whose}")
        live = {space.process.pid for space in view.spaces}
        for pid in set(self._frames) - live:
            del self._frames[pid]
        for space in view.spaces:
            frames = frozenset(paddr >> 12 for _, paddr, _ in space.pages())
            self._frames[space.process.pid] = (frames, space.who)
            self._roots[space.process.pid] = (space.root, space.who)

    def _exited_root(self, view) -> None:
        if view.exited is None or view.exited not in self._roots:
            return
        root, who = self._roots.pop(view.exited)
        if view.pmm is None or view.pmm.is_free(root >> 12):
            return
        if any(space.root == root for space in view.spaces):
            return                        # taken again already (not today: nothing runs between)
        view.report(self.id, root,
                    f"the page-table root {root:#x} of {who} is still allocated after it "
                    f"exited")
