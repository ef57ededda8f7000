"""Unicorn's C API where the Python binding falls short: the one module of emu that touches
the binding's private names (`unicorn.unicorn_py3.unicorn.uclib`, `Uc._uch`).

Why it is needed (each measured with unicorn 2.1.4, see docs/UNICORN.md):
- the binding wraps every hook callback in two more Python layers (0.40 us per IN/OUT
  against 0.17 us for a bare ctypes callback), and cannot install a C function as a hook
  (the instruction counter is a C block hook);
- `uc_vmem_translate` (Unicorn's own translation, TLB first) has no Python wrapper;
- `uc_reg_read` through the binding's dispatch costs about 2 us; a direct call 0.3 us;
- a CPU context's bytes are patched in place (emu/engine/context.py), which needs the raw
  `uc_context_save`/`uc_context_restore`.

Pinned: PINNED_VERSION. `check()` runs once when the first machine is built and refuses any
other release with a one-line EngineError: the context layout and several workarounds are
calibrated for this release.
"""
from __future__ import annotations

import ctypes
import functools
from typing import Any, Callable

import unicorn
from unicorn import UC_HOOK_BLOCK, UC_HOOK_INSN
from unicorn.unicorn_py3 import unicorn as _binding

from emu.errors import EngineError

PINNED_VERSION = "2.1.4"
_NEEDED = ("uc_context_save", "uc_context_restore", "uc_context_size", "uc_hook_add",
           "uc_reg_read", "uc_vmem_translate", "uc_emu_stop", "uc_ctl")

# C signatures of UC_HOOK_INSN callbacks; the first argument is the raw engine handle.
PORT_IN = ctypes.CFUNCTYPE(ctypes.c_uint32, ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                           ctypes.c_void_p)
PORT_OUT = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                            ctypes.c_uint32, ctypes.c_void_p)
NO_OPERANDS = ctypes.CFUNCTYPE(ctypes.c_uint32, ctypes.c_void_p, ctypes.c_void_p)  # rdtsc
EMU_STOP = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)


@functools.lru_cache(maxsize=1)
def check() -> None:
    """Refuse a Unicorn other than the pinned release, or one missing a C entry point."""
    version = getattr(unicorn, "__version__", "unknown")
    if version != PINNED_VERSION:
        raise EngineError(f"unicorn {version} is installed; emu is calibrated for unicorn "
                          f"{PINNED_VERSION}: pip install unicorn=={PINNED_VERSION}")
    missing = [name for name in _NEEDED if not hasattr(_binding.uclib, name)]
    if missing:
        raise EngineError(f"this unicorn build lacks {', '.join(missing)}; "
                          f"pip install unicorn=={PINNED_VERSION}")


def handle(uc) -> ctypes.c_void_p:
    """The raw engine handle (`uc_engine *`) of a Uc."""
    return uc._uch


def function_pointer(name: str) -> ctypes.c_void_p:
    """The address of a libunicorn function, for C code that calls back into Unicorn."""
    return ctypes.cast(getattr(_binding.uclib, name), ctypes.c_void_p)


def emu_stop(raw_handle) -> int:
    """uc_emu_stop on a raw handle (as C callbacks receive it)."""
    return _binding.uclib.uc_emu_stop(raw_handle)


def register_reader(uc) -> Callable[[int], int]:
    """`read(register) -> int` through uc_reg_read directly: about 0.3 us against 2 us for
    the binding's `reg_read`, for hooks that run once per call or fault."""
    handle = uc._uch
    value = ctypes.c_uint64()
    reference = ctypes.byref(value)
    read = _binding.uclib.uc_reg_read

    def read_register(register: int) -> int:
        # Unicorn writes only 4 bytes for EFLAGS and segment selectors: without this the
        # upper half would be the previous register's (a pushed RFLAGS of 0xffff8000...).
        value.value = 0
        read(handle, register, reference)
        return value.value
    return read_register


def hook_function(uc, kind: int, function: Any, user_data: Any = None, begin: int = 1,
                  end: int = 0, *extra: int) -> int:
    """Install a C function pointer (or a ctypes callback, which the caller keeps alive) as
    a hook of `kind` on [begin, end]; `extra` are the varargs some kinds take (the
    instruction of UC_HOOK_INSN). Returns the hook handle."""
    hook = ctypes.c_size_t()
    status = _binding.uclib.uc_hook_add(
        uc._uch, ctypes.byref(hook), kind, ctypes.cast(function, ctypes.c_void_p),
        user_data, ctypes.c_uint64(begin), ctypes.c_uint64(end),
        *(ctypes.c_int(value) for value in extra))
    if status != 0:
        raise EngineError(f"cannot install a hook of kind {kind} (unicorn error {status})")
    return hook.value


def hook_instruction(uc, instruction: int, callback: Any) -> int:
    """A ctypes callback (PORT_IN, PORT_OUT or NO_OPERANDS) for every `instruction` (a
    UC_X86_INS_* constant)."""
    return hook_function(uc, UC_HOOK_INSN, callback, None, 1, 0, instruction)


def hook_block_function(uc, function: Any, user_data: ctypes.Array) -> int:
    """A C function of a loaded library as a UC_HOOK_BLOCK on all code, with `user_data`
    (which must outlive the hook) as its data pointer."""
    return hook_function(uc, UC_HOOK_BLOCK, function,
                         ctypes.c_void_p(ctypes.addressof(user_data)))


def vmem_translate(uc, vaddr: int, prot: int) -> int | None:
    """Unicorn's own translation of vaddr for an access of `prot` (its TLB first, then its
    MMU), or None. Clobbers CR2 when it fails: callers save and restore it."""
    out = ctypes.c_uint64()
    error = _binding.uclib.uc_vmem_translate(uc._uch, ctypes.c_uint64(vaddr),
                                             ctypes.c_int(prot), ctypes.byref(out))
    return out.value if error == 0 else None


def context_size(uc) -> int:
    """Bytes of a CPU context (uc_context_size)."""
    return _binding.uclib.uc_context_size(uc._uch)


def context_address(context) -> int:
    """Where a UcContext's bytes start in host memory."""
    return context.context.value


class ContextSaver:
    """uc_context_save/restore of one preallocated UcContext, without the binding's
    allocation per save (the fast path of exception delivery)."""

    def __init__(self, uc, context) -> None:
        self._handle = uc._uch
        self._context = context.context
        self._save = _binding.uclib.uc_context_save
        self._restore = _binding.uclib.uc_context_restore

    def save(self) -> None:
        self._save(self._handle, self._context)

    def restore(self) -> None:
        self._restore(self._handle, self._context)
