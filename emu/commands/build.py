"""`emu build`: build the project's kernel and print the path of its ELF."""
from __future__ import annotations

import argparse

from emu.commands import console

NAME = "build"
HELP = "build the project's guest kernel and print the path of its ELF"


def add_arguments(command: argparse.ArgumentParser) -> None:
    pass


def execute(args) -> int:
    from emu.build import build_guest
    console.out(str(build_guest()))
    return 0
