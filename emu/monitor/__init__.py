"""Watching the guest from outside: the kernel's ELF symbols (symbols.py), traces
(trace.py), crash reports (report.py), the page-table and PMM invariant checker (checks/),
the heap checker (heapcheck.py), and framebuffer screenshots (screenshot.py). Observers
attach to a Machine through its public surface (emu/machine.py's docstring).

May import: everything below emu.machine. Imported by emu.machine and above.
"""
