"""Things emu runs in the guest and measures: malloc-lab heap traces replayed on the guest's
allocators (heap_replay.py). Later: programs run as processes, fault-injection campaigns.

May import: emu.machine and below. Imported by emu.commands.
"""
