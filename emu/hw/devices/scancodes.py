"""Keyboard facts for the PS/2 model: the keys of a US 101-key layout with their scan code set
1 (XT) and set 2 (AT) make codes, text characters as key presses, and the 8042's set 2 -> set
1 translation (IBM PC AT Technical Reference, keyboard chapter; the translation table is the
set 1 code of each set 2 key, so it is derived from the same rows).

Owns: which key makes which code in each set, how a character is typed (with Shift or not),
and the translation of the bytes the keyboard sends. Does not own: the keyboard's commands or
the controller (ps2.py). Keys with E0-prefixed codes (arrows, right Ctrl/Alt, keypad Enter) are
not in the table: text does not need them.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Key:
    name: str
    set1: int
    set2: int


KEYS: tuple[Key, ...] = tuple(Key(name, set1, set2) for name, set1, set2 in (
    ("Escape", 0x01, 0x76), ("1", 0x02, 0x16), ("2", 0x03, 0x1E), ("3", 0x04, 0x26),
    ("4", 0x05, 0x25), ("5", 0x06, 0x2E), ("6", 0x07, 0x36), ("7", 0x08, 0x3D),
    ("8", 0x09, 0x3E), ("9", 0x0A, 0x46), ("0", 0x0B, 0x45), ("-", 0x0C, 0x4E),
    ("=", 0x0D, 0x55), ("Backspace", 0x0E, 0x66), ("Tab", 0x0F, 0x0D), ("q", 0x10, 0x15),
    ("w", 0x11, 0x1D), ("e", 0x12, 0x24), ("r", 0x13, 0x2D), ("t", 0x14, 0x2C),
    ("y", 0x15, 0x35), ("u", 0x16, 0x3C), ("i", 0x17, 0x43), ("o", 0x18, 0x44),
    ("p", 0x19, 0x4D), ("[", 0x1A, 0x54), ("]", 0x1B, 0x5B), ("Enter", 0x1C, 0x5A),
    ("LeftCtrl", 0x1D, 0x14), ("a", 0x1E, 0x1C), ("s", 0x1F, 0x1B), ("d", 0x20, 0x23),
    ("f", 0x21, 0x2B), ("g", 0x22, 0x34), ("h", 0x23, 0x33), ("j", 0x24, 0x3B),
    ("k", 0x25, 0x42), ("l", 0x26, 0x4B), (";", 0x27, 0x4C), ("'", 0x28, 0x52),
    ("`", 0x29, 0x0E), ("LeftShift", 0x2A, 0x12), ("\\", 0x2B, 0x5D), ("z", 0x2C, 0x1A),
    ("x", 0x2D, 0x22), ("c", 0x2E, 0x21), ("v", 0x2F, 0x2A), ("b", 0x30, 0x32),
    ("n", 0x31, 0x31), ("m", 0x32, 0x3A), (",", 0x33, 0x41), (".", 0x34, 0x49),
    ("/", 0x35, 0x4A), ("RightShift", 0x36, 0x59), ("Keypad*", 0x37, 0x7C),
    ("LeftAlt", 0x38, 0x11), ("Space", 0x39, 0x29), ("CapsLock", 0x3A, 0x58),
    ("F1", 0x3B, 0x05), ("F2", 0x3C, 0x06), ("F3", 0x3D, 0x04), ("F4", 0x3E, 0x0C),
    ("F5", 0x3F, 0x03), ("F6", 0x40, 0x0B), ("F7", 0x41, 0x83), ("F8", 0x42, 0x0A),
    ("F9", 0x43, 0x01), ("F10", 0x44, 0x09), ("NumLock", 0x45, 0x77),
    ("ScrollLock", 0x46, 0x7E), ("Keypad7", 0x47, 0x6C), ("Keypad8", 0x48, 0x75),
    ("Keypad9", 0x49, 0x7D), ("Keypad-", 0x4A, 0x7B), ("Keypad4", 0x4B, 0x6B),
    ("Keypad5", 0x4C, 0x73), ("Keypad6", 0x4D, 0x74), ("Keypad+", 0x4E, 0x79),
    ("Keypad1", 0x4F, 0x69), ("Keypad2", 0x50, 0x72), ("Keypad3", 0x51, 0x7A),
    ("Keypad0", 0x52, 0x70), ("Keypad.", 0x53, 0x71), ("F11", 0x57, 0x78),
    ("F12", 0x58, 0x07),
))
KEY_BY_NAME = {key.name: key for key in KEYS}
SHIFT = KEY_BY_NAME["LeftShift"]

_SHIFTED = dict(zip('!@#$%^&*()_+{}:"~|<>?', "1234567890-=[];'`\\,./"))
_NAMED = {" ": "Space", "\n": "Enter", "\t": "Tab", "\b": "Backspace", "\x1b": "Escape"}


def keystrokes(char: str) -> tuple[Key, bool] | None:
    """(key, with Shift) that types `char` on a US layout; None if no key types it."""
    if char in _NAMED:
        return KEY_BY_NAME[_NAMED[char]], False
    if char in _SHIFTED:
        return KEY_BY_NAME[_SHIFTED[char]], True
    if char.isascii() and char.isalpha():
        return KEY_BY_NAME[char.lower()], char.isupper()
    key = KEY_BY_NAME.get(char)
    return (key, False) if key is not None and len(char) == 1 else None


def scancode_bytes(key: Key, make: bool, scancode_set: int) -> tuple[int, ...]:
    """The bytes a key press (make) or release (break) sends in set 1 or set 2."""
    if scancode_set == 1:
        return (key.set1,) if make else (key.set1 | 0x80,)
    return (key.set2,) if make else (0xF0, key.set2)


# The 8042 translates codes below 0x80 (and F7's 0x83) to set 1; 0x02 is no key but
# translates to 0x41 like 0x83, so a "get scan code set" answer of 2 arrives as 0x41.
TRANSLATION = {key.set2: key.set1 for key in KEYS}
TRANSLATION[0x02] = 0x41
TRANSLATION[0x00] = 0xFF
BREAK_PREFIX = 0xF0


class Translator:
    """The 8042's set 2 -> set 1 translation of the byte stream from the keyboard: F0 is
    swallowed and sets bit 7 of the next translated byte; bytes of 0x80 and above other than
    0x83 pass unchanged; codes of no key pass unchanged."""

    def __init__(self) -> None:
        self.break_pending = False

    def translate(self, byte: int) -> int | None:
        if byte == BREAK_PREFIX:
            self.break_pending = True
            return None
        code = TRANSLATION.get(byte, byte) if byte < 0x80 or byte == 0x83 else byte
        if self.break_pending:
            self.break_pending = False
            code |= 0x80
        return code
