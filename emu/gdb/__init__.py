"""Debugging a run with GDB (`emu run --gdb PORT`), backwards as well as forwards.

  travel.py    TimeTravel: breakpoints, watchpoints on physical bytes, and moving the
               machine forwards and backwards by snapshots and deterministic re-execution
  protocol.py  the GDB remote serial protocol's framing: packets, checksums, acks, Ctrl-C
  registers.py the target description (XML) and the register file in GDB's order
  stub.py      the stub: packets to TimeTravel, memory by virtual address, monitor commands
Layer: beside emu.replay (it runs a Machine and takes its snapshots); the commands use it.
"""
