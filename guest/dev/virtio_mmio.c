/*
 * virtio_mmio.c - the virtio-mmio transport from the driver's side
 * (virtio v1.2, 4.2.3 "MMIO-specific Initialization And Device Operation").
 *
 * Owns: the register window of one device and the order in which it is
 * brought up: reset, ACKNOWLEDGE, DRIVER, features, FEATURES_OK (read
 * back), queues, DRIVER_OK.
 * Does not own: the rings, the device's requests, the interrupt line.
 */
#include "dev/virtio_mmio.h"

#include "dev/apic.h"
#include "mm/pmm.h"

static uint32_t reg_read(struct virtio_mmio *dev, uint32_t offset)
{
    return dev->regs[offset / 4];
}

static void reg_write(struct virtio_mmio *dev, uint32_t offset, uint32_t value)
{
    dev->regs[offset / 4] = value;
}

/* A number in base 10 or (with 0x) 16 at *p; advances *p. False if none. */
static bool parse_number(const char **p, uint64_t *out)
{
    uint64_t value = 0, base = 10;
    const char *s = *p;
    bool any = false;

    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        base = 16;
        s += 2;
    }
    for (;; s++) {
        uint64_t digit;

        if (*s >= '0' && *s <= '9')
            digit = (uint64_t)(*s - '0');
        else if (base == 16 && *s >= 'a' && *s <= 'f')
            digit = (uint64_t)(*s - 'a' + 10);
        else if (base == 16 && *s >= 'A' && *s <= 'F')
            digit = (uint64_t)(*s - 'A' + 10);
        else
            break;
        value = value * base + digit;
        any = true;
    }
    *p = s;
    *out = value;
    return any;
}

int virtio_mmio_parse(const char *text, paddr_t *base, uint64_t *size, uint8_t *irq)
{
    const char *p = text;
    uint64_t length, address, line;

    if (!parse_number(&p, &length))
        return VIRTIO_BAD_ANNOUNCEMENT;
    if (*p == 'K' || *p == 'k')
        length <<= 10, p++;
    else if (*p == 'M' || *p == 'm')
        length <<= 20, p++;
    if (*p++ != '@' || !parse_number(&p, &address) || *p++ != ':' ||
        !parse_number(&p, &line) || *p != '\0' || line > 255 || length == 0 ||
        address % PAGE_SIZE != 0)
        return VIRTIO_BAD_ANNOUNCEMENT;
    *base = address;
    *size = length;
    *irq = (uint8_t)line;
    return VIRTIO_OK;
}

/* The register page at its HHDM address, uncached; NULL without memory. */
static volatile uint32_t *map_registers(paddr_t base)
{
    return (volatile uint32_t *)apic_map_device(base, PAGE_SIZE);
}

int virtio_mmio_open(struct virtio_mmio *dev, paddr_t base, uint8_t irq, uint32_t device_id)
{
    struct virtio_mmio d = {.base = base, .irq = irq};

    d.regs = map_registers(base);
    if (d.regs == NULL)
        return VIRTIO_NO_MEMORY;
    if (reg_read(&d, VIRTIO_MMIO_MAGIC) != VIRTIO_MMIO_MAGIC_VALUE ||
        reg_read(&d, VIRTIO_MMIO_VERSION) != 2)
        return VIRTIO_NOT_VIRTIO;
    d.device_id = reg_read(&d, VIRTIO_MMIO_DEVICE_ID);
    if (d.device_id != device_id)
        return VIRTIO_WRONG_DEVICE;
    reg_write(&d, VIRTIO_MMIO_STATUS, 0);
    reg_write(&d, VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE);
    reg_write(&d, VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
    *dev = d;
    return VIRTIO_OK;
}

static uint64_t device_features(struct virtio_mmio *dev)
{
    uint64_t features;

    reg_write(dev, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
    features = (uint64_t)reg_read(dev, VIRTIO_MMIO_DEVICE_FEATURES) << 32;
    reg_write(dev, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
    return features | reg_read(dev, VIRTIO_MMIO_DEVICE_FEATURES);
}

int virtio_mmio_negotiate(struct virtio_mmio *dev, uint64_t wanted, uint64_t *accepted)
{
    uint64_t agreed = device_features(dev) & wanted;
    uint32_t status = reg_read(dev, VIRTIO_MMIO_STATUS);

    if (!(agreed & VIRTIO_F_VERSION_1)) {
        virtio_mmio_fail(dev);
        return VIRTIO_FEATURES_REFUSED;
    }
    reg_write(dev, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
    reg_write(dev, VIRTIO_MMIO_DRIVER_FEATURES, (uint32_t)(agreed >> 32));
    reg_write(dev, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
    reg_write(dev, VIRTIO_MMIO_DRIVER_FEATURES, (uint32_t)agreed);
    reg_write(dev, VIRTIO_MMIO_STATUS, status | VIRTIO_STATUS_FEATURES_OK);
    if (!(reg_read(dev, VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_FEATURES_OK)) {
        virtio_mmio_fail(dev);
        return VIRTIO_FEATURES_REFUSED;
    }
    *accepted = agreed;
    return VIRTIO_OK;
}

uint32_t virtio_mmio_queue_max(struct virtio_mmio *dev, uint32_t index)
{
    reg_write(dev, VIRTIO_MMIO_QUEUE_SEL, index);
    return reg_read(dev, VIRTIO_MMIO_QUEUE_NUM_MAX);
}

static void write_address(struct virtio_mmio *dev, uint32_t low, paddr_t pa)
{
    reg_write(dev, low, (uint32_t)pa);
    reg_write(dev, low + 4, (uint32_t)(pa >> 32));
}

int virtio_mmio_queue(struct virtio_mmio *dev, uint32_t index, uint16_t size, paddr_t desc,
                      paddr_t driver, paddr_t device)
{
    if (size == 0 || virtio_mmio_queue_max(dev, index) < size)
        return VIRTIO_NO_QUEUE;
    reg_write(dev, VIRTIO_MMIO_QUEUE_NUM, size);
    write_address(dev, VIRTIO_MMIO_QUEUE_DESC, desc);
    write_address(dev, VIRTIO_MMIO_QUEUE_DRIVER, driver);
    write_address(dev, VIRTIO_MMIO_QUEUE_DEVICE, device);
    reg_write(dev, VIRTIO_MMIO_QUEUE_READY, 1);
    return VIRTIO_OK;
}

void virtio_mmio_driver_ok(struct virtio_mmio *dev)
{
    reg_write(dev, VIRTIO_MMIO_STATUS,
              reg_read(dev, VIRTIO_MMIO_STATUS) | VIRTIO_STATUS_DRIVER_OK);
}

void virtio_mmio_fail(struct virtio_mmio *dev)
{
    reg_write(dev, VIRTIO_MMIO_STATUS, reg_read(dev, VIRTIO_MMIO_STATUS) | VIRTIO_STATUS_FAILED);
}

void virtio_mmio_notify(struct virtio_mmio *dev, uint32_t index)
{
    __asm__ volatile("" : : : "memory"); /* the rings are written before the doorbell */
    reg_write(dev, VIRTIO_MMIO_QUEUE_NOTIFY, index);
}

uint32_t virtio_mmio_ack_interrupt(struct virtio_mmio *dev)
{
    uint32_t bits = reg_read(dev, VIRTIO_MMIO_INTERRUPT_STATUS);

    if (bits != 0)
        reg_write(dev, VIRTIO_MMIO_INTERRUPT_ACK, bits);
    return bits;
}

uint32_t virtio_mmio_status(struct virtio_mmio *dev)
{
    return reg_read(dev, VIRTIO_MMIO_STATUS);
}

uint32_t virtio_mmio_config32(struct virtio_mmio *dev, uint32_t offset)
{
    return reg_read(dev, VIRTIO_MMIO_CONFIG + offset);
}

uint64_t virtio_mmio_config64(struct virtio_mmio *dev, uint32_t offset)
{
    uint32_t before, after, low, high;

    do {
        before = reg_read(dev, VIRTIO_MMIO_CONFIG_GENERATION);
        low = reg_read(dev, VIRTIO_MMIO_CONFIG + offset);
        high = reg_read(dev, VIRTIO_MMIO_CONFIG + offset + 4);
        after = reg_read(dev, VIRTIO_MMIO_CONFIG_GENERATION);
    } while (before != after);
    return ((uint64_t)high << 32) | low;
}
