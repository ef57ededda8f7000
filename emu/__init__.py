"""emu: an instruction-level x86-64 emulator harness for OS memory managers."""
__version__ = "0.1.0"
