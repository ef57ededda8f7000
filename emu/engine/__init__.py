"""Unicorn, extended: the one module that touches Unicorn's private API (capi.py, pinned and
checked at start-up), the saved-context layout measured at start-up (context.py), hooks
whose Python exceptions are never lost (guard.py), and the C instruction counter
(icount.py, icount.c).

May import: emu.errors, emu.x86, emu.build (to build the counter). Imported by emu.hw and
above.
"""
