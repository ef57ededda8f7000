"""Snapshots of a running machine: taken and restored in memory, saved to and loaded from
files.

  state.py   the Python side: every component reachable from the machine (CPU parts,
             devices, the bus, observers) captured attribute by attribute and put back in
             place, found by walking the object graph, so state added later is covered
  ram.py     guest RAM: a forked copy of the host process holds it at snapshot time (the
             host kernel copies on write); a restore copies the pages back
  snapshot.py  Snapshot: RAM + CPU context + Python state, restore with TLB and
             translation-cache flushes; files (versioned JSON header + RAM pages)
  codec.py   captured Python values as JSON for files (no pickle)
Layer: beside emu.monitor (it reads the CPU, devices and observers); the machine uses it.
"""
from emu.snapshot.snapshot import Snapshot, load, save, take

__all__ = ["Snapshot", "take", "save", "load"]
