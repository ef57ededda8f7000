"""TODO"""
from emu.cpu.core import *  # noqa
from emu.cpu.core import NOWHERE, EXCEPTION_NAMES, Cpu  # noqa
