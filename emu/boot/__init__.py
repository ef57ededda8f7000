"""The bootloader: the Limine protocol (limine.py: facts and the machine state at entry),
kernel ELF files (elf.py), finding requests (requests.py), building responses
(responses.py), and the load itself (loader.py: image, memory map, page tables, stack).

May import: emu.errors, emu.x86, emu.arch, emu.hw. Imported by emu.machine and above.
"""
