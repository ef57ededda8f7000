"""USER_KERNEL_FRAME: user pages never map what the kernel keeps for itself."""
from __future__ import annotations

from emu.monitor.checks.rules.base import ProcessRule


class UserKernelFrame(ProcessRule):
    id = "USER_KERNEL_FRAME"
    meaning = ("A page of a process's user half maps a frame the kernel owns: a page-table "
               "page, or a frame the kernel half maps other than through the HHDM (the "
               "kernel image, heap, stacks) (address: the virtual page).")
    example = "a read fault on fresh anonymous memory mapping a zero page of the kernel image"

    def check_processes(self, view) -> None:
        for space in view.spaces:
            for vaddr, paddr, leaf in space.pages():
                for _, _, what in view.kernel_frames.overlaps(paddr, paddr + 4096):
                    view.report(self.id, vaddr,
                                f"{vaddr:#x} of {space.who} ({leaf.perms}) maps frame "
                                f"{paddr:#x}, {what}", root=space.root)
                    break
