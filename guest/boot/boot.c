/*
 * boot.c - the Limine requests of the kernel and read access to the answers.
 *
 * Owns: the base revision tag, the request markers and one request object
 * per feature the kernel asks for; they are placed in .limine_requests so
 * kernel.ld keeps them between the markers in file-backed data.
 * Does not own: the meaning of the answers (the PMM reads the memory map,
 * cmdline.c parses the command line, main.c prints them).
 *
 * The objects are volatile: the loader writes them before the kernel runs,
 * so the compiler must not assume the initial values (a NULL response, a
 * nonzero revision word) are still there.
 */
#include "boot/boot.h"

#define BOOT_STACK_SIZE (64 * 1024)

LIMINE_REQUESTS_START
static volatile uint64_t requests_start_marker[4] = LIMINE_REQUESTS_START_MARKER_WORDS;

LIMINE_REQUEST
static volatile uint64_t base_revision[3] = LIMINE_BASE_REVISION_WORDS(BOOT_BASE_REVISION);

LIMINE_REQUEST
static volatile struct limine_bootloader_info_request bootloader_info_request = {
    .id = LIMINE_BOOTLOADER_INFO_ID, .revision = 0};

LIMINE_REQUEST
static volatile struct limine_executable_cmdline_request cmdline_request = {
    .id = LIMINE_EXECUTABLE_CMDLINE_ID, .revision = 0};

LIMINE_REQUEST
static volatile struct limine_firmware_type_request firmware_type_request = {
    .id = LIMINE_FIRMWARE_TYPE_ID, .revision = 0};

LIMINE_REQUEST
static volatile struct limine_stack_size_request stack_size_request = {
    .id = LIMINE_STACK_SIZE_ID, .revision = 0, .stack_size = BOOT_STACK_SIZE};

LIMINE_REQUEST
static volatile struct limine_hhdm_request hhdm_request = {
    .id = LIMINE_HHDM_ID, .revision = 0};

LIMINE_REQUEST
static volatile struct limine_framebuffer_request framebuffer_request = {
    .id = LIMINE_FRAMEBUFFER_ID, .revision = 0};

LIMINE_REQUEST
static volatile struct limine_paging_mode_request paging_mode_request = {
    .id = LIMINE_PAGING_MODE_ID,
    .revision = 1,
    .mode = LIMINE_PAGING_MODE_4LEVEL,
    .max_mode = LIMINE_PAGING_MODE_4LEVEL,
    .min_mode = LIMINE_PAGING_MODE_4LEVEL};

LIMINE_REQUEST
static volatile struct limine_memmap_request memmap_request = {
    .id = LIMINE_MEMMAP_ID, .revision = 0};

LIMINE_REQUEST
static volatile struct limine_executable_file_request executable_file_request = {
    .id = LIMINE_EXECUTABLE_FILE_ID, .revision = 0};

LIMINE_REQUEST
static volatile struct limine_module_request module_request = {
    .id = LIMINE_MODULE_ID, .revision = 0};

LIMINE_REQUEST
static volatile struct limine_date_at_boot_request date_request = {
    .id = LIMINE_DATE_AT_BOOT_ID, .revision = 0};

LIMINE_REQUEST
static volatile struct limine_executable_address_request executable_address_request = {
    .id = LIMINE_EXECUTABLE_ADDRESS_ID, .revision = 0};

LIMINE_REQUEST
static volatile struct limine_rsdp_request rsdp_request = {.id = LIMINE_RSDP_ID, .revision = 0};

LIMINE_REQUESTS_END
static volatile uint64_t requests_end_marker[2] = LIMINE_REQUESTS_END_MARKER_WORDS;

bool boot_revision_accepted(void)
{
    return LIMINE_BASE_REVISION_ACCEPTED(base_revision);
}

const struct limine_bootloader_info_response *boot_bootloader_info(void)
{
    return bootloader_info_request.response;
}

const struct limine_firmware_type_response *boot_firmware_type(void)
{
    return firmware_type_request.response;
}

const struct limine_hhdm_response *boot_hhdm(void)
{
    return hhdm_request.response;
}

const struct limine_memmap_response *boot_memmap(void)
{
    return memmap_request.response;
}

const struct limine_executable_address_response *boot_executable_address(void)
{
    return executable_address_request.response;
}

const struct limine_executable_file_response *boot_executable_file(void)
{
    return executable_file_request.response;
}

const struct limine_module_response *boot_modules(void)
{
    return module_request.response;
}

const struct limine_framebuffer_response *boot_framebuffers(void)
{
    return framebuffer_request.response;
}

const struct limine_paging_mode_response *boot_paging_mode(void)
{
    return paging_mode_request.response;
}

const struct limine_date_at_boot_response *boot_date(void)
{
    return date_request.response;
}

paddr_t boot_rsdp(void)
{
    const struct limine_rsdp_response *rsdp = rsdp_request.response;
    const struct limine_hhdm_response *hhdm = hhdm_request.response;

    if (rsdp == NULL)
        return 0;
    /* A loader that did not take base revision 3 hands over an HHDM address. */
    if (hhdm != NULL && rsdp->address >= hhdm->offset)
        return rsdp->address - hhdm->offset;
    return rsdp->address;
}

bool boot_stack_size_answered(void)
{
    return stack_size_request.response != NULL;
}

const char *boot_cmdline(void)
{
    const struct limine_executable_cmdline_response *r = cmdline_request.response;

    if (r == NULL || r->cmdline == NULL)
        return "";
    return r->cmdline;
}

const char *boot_memmap_type_name(uint64_t type)
{
    static const char *const names[LIMINE_MEMMAP_TYPE_COUNT] = {
        [LIMINE_MEMMAP_USABLE] = "USABLE",
        [LIMINE_MEMMAP_RESERVED] = "RESERVED",
        [LIMINE_MEMMAP_ACPI_RECLAIMABLE] = "ACPI_RECLAIMABLE",
        [LIMINE_MEMMAP_ACPI_NVS] = "ACPI_NVS",
        [LIMINE_MEMMAP_BAD_MEMORY] = "BAD_MEMORY",
        [LIMINE_MEMMAP_BOOTLOADER_RECLAIMABLE] = "BOOTLOADER_RECLAIMABLE",
        [LIMINE_MEMMAP_EXECUTABLE_AND_MODULES] = "EXECUTABLE_AND_MODULES",
        [LIMINE_MEMMAP_FRAMEBUFFER] = "FRAMEBUFFER",
        [LIMINE_MEMMAP_RESERVED_MAPPED] = "RESERVED_MAPPED",
    };

    if (type >= LIMINE_MEMMAP_TYPE_COUNT)
        return "UNKNOWN";
    return names[type];
}
