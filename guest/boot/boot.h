/*
 * boot.h - what the bootloader told the kernel.
 *
 * Owns: the Limine requests and read access to the loader's answers.
 * Does not own: interpreting them (the memory map belongs to the physical
 * memory manager, the command line to cmdline.c).
 *
 * Every accessor returns NULL (or false) when the loader did not answer the
 * request; callers decide whether that is fatal. The returned structures
 * live in BOOTLOADER_RECLAIMABLE memory: do not reclaim it while using them.
 */
#ifndef BOOT_H
#define BOOT_H

#include "boot/limine.h"
#include "lib/types.h"

#define BOOT_BASE_REVISION 3

/* True if the loader accepted base revision BOOT_BASE_REVISION. */
bool boot_revision_accepted(void);

const struct limine_bootloader_info_response *boot_bootloader_info(void);
const struct limine_firmware_type_response *boot_firmware_type(void);
const struct limine_hhdm_response *boot_hhdm(void);
const struct limine_memmap_response *boot_memmap(void);
const struct limine_executable_address_response *boot_executable_address(void);
const struct limine_executable_file_response *boot_executable_file(void);
const struct limine_module_response *boot_modules(void);
const struct limine_framebuffer_response *boot_framebuffers(void);
const struct limine_paging_mode_response *boot_paging_mode(void);
const struct limine_date_at_boot_response *boot_date(void);
bool boot_stack_size_answered(void);

/* The physical address of the ACPI RSDP; 0 if the loader gave none. Read it
 * before mm_init reclaims the loader's memory. */
paddr_t boot_rsdp(void);

/* The kernel command line; "" if the loader gave none. Never NULL. */
const char *boot_cmdline(void);

/* The name of a memory map type ("USABLE", ...), or "UNKNOWN". */
const char *boot_memmap_type_name(uint64_t type);

#endif
