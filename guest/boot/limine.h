/*
 * limine.h - the Limine boot protocol (x86-64) as this kernel uses it.
 *
 * Owns: the layout of the base revision tag, the request markers, the
 * requests and the responses the loader fills in, and macros that place
 * them where the loader looks (section .limine_requests, kept by kernel.ld
 * between .limine_requests_start and .limine_requests_end in file data).
 * Does not own: which requests the kernel makes or how it reads the answers
 * (boot.c). Written by us from the Limine protocol description (PROTOCOL.md).
 *
 * Every request begins with a 4-word ID (two common words, two per request),
 * then a revision word and a response pointer that the loader fills with an
 * HHDM virtual address, or leaves NULL if it does not support the request.
 */
#ifndef LIMINE_H
#define LIMINE_H

#include "lib/types.h"

#define LIMINE_COMMON_MAGIC 0xc7b1dd30df4c8b88ULL, 0x0a82e883a194f07bULL
#define LIMINE_ID(a, b) { LIMINE_COMMON_MAGIC, (a), (b) }

/* Placement: every request object must be declared with one of these. */
#define LIMINE_REQUEST USED ALIGNED(8) __attribute__((section(".limine_requests")))
#define LIMINE_REQUESTS_START \
    USED ALIGNED(8) __attribute__((section(".limine_requests_start")))
#define LIMINE_REQUESTS_END \
    USED ALIGNED(8) __attribute__((section(".limine_requests_end")))

/* Markers: only requests between them count (binding from revision 2). */
#define LIMINE_REQUESTS_START_MARKER_WORDS                                  \
    { 0xf6b8f4b39de7d1aeULL, 0xfab91a6940fcb9cfULL, 0x785c6ed015d3e316ULL, \
      0x181e920a7852b9d9ULL }
#define LIMINE_REQUESTS_END_MARKER_WORDS \
    { 0xadc0e0531bb10d03ULL, 0x9572709f31764c62ULL }

/*
 * Base revision tag. A loader that supports revision N writes 0 into word
 * [2]; loaders of revision 3 and later also write the revision used into
 * word [1]. Without a tag the loader assumes revision 0.
 */
#define LIMINE_BASE_REVISION_WORDS(n) \
    { 0xf9562b2d5c95a6c8ULL, 0x6a7b384944536bdcULL, (n) }
#define LIMINE_BASE_REVISION_ACCEPTED(tag) ((tag)[2] == 0)

/* Request IDs (words 3 and 4). */
#define LIMINE_BOOTLOADER_INFO_ID LIMINE_ID(0xf55038d8e2a1202fULL, 0x279426fcf5f59740ULL)
#define LIMINE_EXECUTABLE_CMDLINE_ID LIMINE_ID(0x4b161536e598651eULL, 0xb390ad4a2f1f303aULL)
#define LIMINE_FIRMWARE_TYPE_ID LIMINE_ID(0x8c2f75d90bef28a8ULL, 0x7045a4688eac00c3ULL)
#define LIMINE_STACK_SIZE_ID LIMINE_ID(0x224ef0460a8e8926ULL, 0xe1cb0fc25f46ea3dULL)
#define LIMINE_HHDM_ID LIMINE_ID(0x48dcf1cb8ad2b852ULL, 0x63984e959a98244bULL)
#define LIMINE_FRAMEBUFFER_ID LIMINE_ID(0x9d5827dcd881dd75ULL, 0xa3148604f6fab11bULL)
#define LIMINE_PAGING_MODE_ID LIMINE_ID(0x95c1a0edab0944cbULL, 0xa4e5cb3842f7488aULL)
#define LIMINE_MEMMAP_ID LIMINE_ID(0x67cf3d9d378a806fULL, 0xe304acdfc50c3c62ULL)
#define LIMINE_EXECUTABLE_FILE_ID LIMINE_ID(0xad97e90e83f1ed67ULL, 0x31eb5d1c5ff23b69ULL)
#define LIMINE_MODULE_ID LIMINE_ID(0x3e7e279702be32afULL, 0xca1c4f3bd1280ceeULL)
#define LIMINE_DATE_AT_BOOT_ID LIMINE_ID(0x502746e184c088aaULL, 0xfbc5ec83e6327893ULL)
#define LIMINE_EXECUTABLE_ADDRESS_ID LIMINE_ID(0x71ba76863cc55f63ULL, 0xb2644a48c516a487ULL)
#define LIMINE_RSDP_ID LIMINE_ID(0xc5e77b6b397e7b43ULL, 0x27637845accdcf3cULL)

/* Memory map entry types. */
enum limine_memmap_type {
    LIMINE_MEMMAP_USABLE = 0,
    LIMINE_MEMMAP_RESERVED = 1,
    LIMINE_MEMMAP_ACPI_RECLAIMABLE = 2,
    LIMINE_MEMMAP_ACPI_NVS = 3,
    LIMINE_MEMMAP_BAD_MEMORY = 4,
    LIMINE_MEMMAP_BOOTLOADER_RECLAIMABLE = 5,
    LIMINE_MEMMAP_EXECUTABLE_AND_MODULES = 6,
    LIMINE_MEMMAP_FRAMEBUFFER = 7,
    LIMINE_MEMMAP_RESERVED_MAPPED = 8, /* base revision 4 and later */
    LIMINE_MEMMAP_TYPE_COUNT
};

enum limine_firmware_type {
    LIMINE_FIRMWARE_X86_BIOS = 0,
    LIMINE_FIRMWARE_EFI32 = 1,
    LIMINE_FIRMWARE_EFI64 = 2,
};

enum limine_paging_mode {
    LIMINE_PAGING_MODE_4LEVEL = 0,
    LIMINE_PAGING_MODE_5LEVEL = 1,
};

/* A file the loader loaded: the executable itself or a module (112 bytes). */
struct limine_uuid {
    uint32_t a;
    uint16_t b;
    uint16_t c;
    uint8_t d[8];
};

struct limine_file {
    uint64_t revision;
    void *address; /* HHDM address, 4 KiB aligned */
    uint64_t size;
    char *path;
    char *string; /* the module's command line */
    uint32_t media_type;
    uint32_t unused;
    uint32_t tftp_ip;
    uint32_t tftp_port;
    uint32_t partition_index;
    uint32_t mbr_disk_id;
    struct limine_uuid gpt_disk_uuid;
    struct limine_uuid gpt_part_uuid;
    struct limine_uuid part_uuid;
};

struct limine_memmap_entry {
    paddr_t base;
    uint64_t length;
    uint64_t type; /* enum limine_memmap_type */
};

struct limine_framebuffer {
    void *address;
    uint64_t width;
    uint64_t height;
    uint64_t pitch;
    uint16_t bpp;
    uint8_t memory_model; /* 1 = RGB */
    uint8_t red_mask_size;
    uint8_t red_mask_shift;
    uint8_t green_mask_size;
    uint8_t green_mask_shift;
    uint8_t blue_mask_size;
    uint8_t blue_mask_shift;
    uint8_t unused[7];
    uint64_t edid_size;
    void *edid;
    uint64_t mode_count;
    void **modes;
};

/* Responses: a revision word, then the fields. */
struct limine_bootloader_info_response {
    uint64_t revision;
    char *name;
    char *version;
};

struct limine_executable_cmdline_response {
    uint64_t revision;
    char *cmdline;
};

struct limine_firmware_type_response {
    uint64_t revision;
    uint64_t firmware_type; /* enum limine_firmware_type */
};

struct limine_stack_size_response {
    uint64_t revision;
};

struct limine_hhdm_response {
    uint64_t revision;
    uint64_t offset; /* virtual = physical + offset */
};

struct limine_framebuffer_response {
    uint64_t revision;
    uint64_t framebuffer_count;
    struct limine_framebuffer **framebuffers;
};

struct limine_paging_mode_response {
    uint64_t revision;
    uint64_t mode; /* enum limine_paging_mode */
};

struct limine_memmap_response {
    uint64_t revision;
    uint64_t entry_count;
    struct limine_memmap_entry **entries;
};

struct limine_executable_file_response {
    uint64_t revision;
    struct limine_file *executable_file;
};

struct limine_module_response {
    uint64_t revision;
    uint64_t module_count;
    struct limine_file **modules;
};

struct limine_date_at_boot_response {
    uint64_t revision;
    int64_t timestamp; /* UNIX seconds */
};

struct limine_executable_address_response {
    uint64_t revision;
    paddr_t physical_base;
    vaddr_t virtual_base;
};

struct limine_rsdp_response {
    uint64_t revision;
    uint64_t address; /* physical from base revision 3, an HHDM address before */
};

/* Requests: id, revision, response, then request-specific fields. */
#define LIMINE_REQUEST_HEAD(response_type) \
    uint64_t id[4];                        \
    uint64_t revision;                     \
    struct response_type *response

struct limine_bootloader_info_request {
    LIMINE_REQUEST_HEAD(limine_bootloader_info_response);
};

struct limine_executable_cmdline_request {
    LIMINE_REQUEST_HEAD(limine_executable_cmdline_response);
};

struct limine_firmware_type_request {
    LIMINE_REQUEST_HEAD(limine_firmware_type_response);
};

struct limine_stack_size_request {
    LIMINE_REQUEST_HEAD(limine_stack_size_response);
    uint64_t stack_size;
};

struct limine_hhdm_request {
    LIMINE_REQUEST_HEAD(limine_hhdm_response);
};

struct limine_framebuffer_request {
    LIMINE_REQUEST_HEAD(limine_framebuffer_response);
};

struct limine_paging_mode_request {
    LIMINE_REQUEST_HEAD(limine_paging_mode_response);
    uint64_t mode;
    uint64_t max_mode; /* request revision 1 and later */
    uint64_t min_mode;
};

struct limine_memmap_request {
    LIMINE_REQUEST_HEAD(limine_memmap_response);
};

struct limine_executable_file_request {
    LIMINE_REQUEST_HEAD(limine_executable_file_response);
};

struct limine_module_request {
    LIMINE_REQUEST_HEAD(limine_module_response);
    uint64_t internal_module_count; /* request revision 1 and later */
    void **internal_modules;
};

struct limine_date_at_boot_request {
    LIMINE_REQUEST_HEAD(limine_date_at_boot_response);
};

struct limine_executable_address_request {
    LIMINE_REQUEST_HEAD(limine_executable_address_response);
};

struct limine_rsdp_request {
    LIMINE_REQUEST_HEAD(limine_rsdp_response);
};

/* The offsets the protocol fixes. */
static_assert(offsetof(struct limine_hhdm_request, revision) == 32, "request revision");
static_assert(offsetof(struct limine_hhdm_request, response) == 40, "request response");
static_assert(offsetof(struct limine_stack_size_request, stack_size) == 48, "stack size");
static_assert(offsetof(struct limine_paging_mode_request, min_mode) == 64, "paging mode");
static_assert(sizeof(struct limine_file) == 112, "limine_file size");
static_assert(offsetof(struct limine_file, media_type) == 40, "limine_file media_type");
static_assert(offsetof(struct limine_file, gpt_disk_uuid) == 64, "limine_file uuids");
static_assert(sizeof(struct limine_framebuffer) == 80, "limine_framebuffer size");
static_assert(offsetof(struct limine_framebuffer, edid_size) == 48, "framebuffer edid");
static_assert(sizeof(struct limine_memmap_entry) == 24, "memmap entry size");
static_assert(offsetof(struct limine_executable_address_response, virtual_base) == 16,
              "executable address");

#endif
