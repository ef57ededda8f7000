"""Architecture as pure functions: x86-64 page tables walked, scanned and built from plain
reads of memory (paging.py). No Unicorn, no state.

May import: emu.x86, emu.errors. Imported by everything above.
"""
