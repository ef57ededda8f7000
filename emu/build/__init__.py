"""Building what emu runs: the guest kernel (kernel.py), static Linux programs for `emu exec`
(programs.py) and the instruction counter's C library (emu/engine/icount.py), with one
driver of the C toolchain (zig.py) and one build cache (cache.py).

May import: emu.errors. Imported by: the engine (the counter's library), the commands.
"""
from emu.build.kernel import build_guest, default_build_dir, guest_source_dir
from emu.build.programs import build_program

__all__ = ["build_guest", "guest_source_dir", "default_build_dir", "build_program"]
