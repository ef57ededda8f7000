"""PMM_BASELINE: when the last process is gone, the PMM is where it was before the first."""
from __future__ import annotations

from emu.monitor.checks.rules.base import ProcessRule


class PmmBaseline(ProcessRule):
    id = "PMM_BASELINE"
    meaning = ("After the last process was reaped, the kernel's PMM measure (free frames + "
               "heap pages + page-table frames, proc_descriptor's final_frames) differs from "
               "the one before the first process (baseline_frames) (address: the frames "
               "missing).")
    example = "a page-table page or a file's frames kept by an exited process"

    def check_processes(self, view) -> None:
        final, baseline = view.descriptor.final_frames, view.descriptor.baseline_frames
        if final and final != baseline:
            view.report(self.id, (baseline - final) & ((1 << 64) - 1),
                        f"{final:,} frames are free or held by the heap and the page tables "
                        f"after the last process, {baseline:,} before the first")
