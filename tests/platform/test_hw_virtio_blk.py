"""The virtio-blk device on the virtio-mmio transport, register by register (virtio v1.2:
4.2.2 the register layout, 3.1.1 driver initialisation, 2.7 split virtqueues, 5.2 the block
device), including every malformed input the device must survive: each sets
DEVICE_NEEDS_RESET, raises a configuration-change interrupt and emits a DeviceError event,
and none raises a Python exception."""
from __future__ import annotations

import struct

import pytest

from emu.hw.devices import virtio_blk as B
from emu.hw.devices import virtio_mmio as M
from emu.hw.devices.virtqueue import DESC_F_INDIRECT, DESC_F_NEXT, DESC_F_WRITE
from virtio_rig import AVAIL, DESC, QSIZE, RAM, USED, Rig

SECTOR = 512


def test_identification_and_configuration_space():
    rig = Rig(disk_bytes=3 << 20)
    assert rig.r(M.MAGIC_VALUE) == 0x74726976
    assert rig.r(M.VERSION_REG) == 2
    assert rig.r(M.DEVICE_ID) == 2
    assert rig.r(M.VENDOR) == M.VENDOR_ID
    rig.w(M.DEVICE_FEATURES_SEL, 1)
    assert rig.r(M.DEVICE_FEATURES) == 1               # VERSION_1 is bit 32
    rig.w(M.DEVICE_FEATURES_SEL, 0)
    assert rig.r(M.DEVICE_FEATURES) == B.F_SEG_MAX | B.F_BLK_SIZE | B.F_FLUSH
    rig.w(M.DEVICE_FEATURES_SEL, 2)
    assert rig.r(M.DEVICE_FEATURES) == 0
    sectors = (3 << 20) // SECTOR
    assert rig.r(0x100) == sectors and rig.r(0x104) == 0      # capacity, as two halves
    assert rig.r(0x100, 8) == sectors and rig.r(0x100, 1) == sectors & 0xFF
    assert rig.r(0x10C) == B.QUEUE_SIZE - 2                  # seg_max
    assert rig.r(0x114) == SECTOR                            # blk_size
    assert rig.r(0x200) == 0
    rig.w(M.QUEUE_SEL, 0)
    assert rig.r(M.QUEUE_NUM_MAX) == B.QUEUE_SIZE
    rig.w(M.QUEUE_SEL, 1)
    assert rig.r(M.QUEUE_NUM_MAX) == 0                       # one queue only
    assert rig.dev.register_at(M.QUEUE_NOTIFY, write=True).name == "QueueNotify"
    assert rig.dev.register_at(M.QUEUE_NOTIFY, write=False) is None
    assert rig.seen.errors == []


@pytest.mark.parametrize("features, accepted", [
    (M.F_VERSION_1, True),
    (M.F_VERSION_1 | B.F_FLUSH | B.F_BLK_SIZE, True),
    (B.F_FLUSH, False),                                  # a legacy driver: no VERSION_1
    (M.F_VERSION_1 | 1 << 28, False),                    # INDIRECT_DESC is not offered
])
def test_features_ok_only_for_a_subset_with_version_1(features, accepted):
    rig = Rig()
    status = rig.negotiate(features)
    assert bool(status & M.FEATURES_OK) == accepted
    assert status & (M.ACKNOWLEDGE | M.DRIVER) == M.ACKNOWLEDGE | M.DRIVER


def test_write_then_read_back_with_interrupts_and_events():
    rig = Rig().start()
    data = bytes(range(256)) * 4                          # two sectors
    head, _, status = rig.request(B.T_OUT, 6, data)
    assert rig.status_byte(status) == B.S_OK
    assert rig.used() == (1, [(head, 1)])
    assert rig.disk.read(6 * SECTOR, 1024) == data
    assert rig.r(M.INTERRUPT_STATUS) == M.INT_USED_BUFFER and rig.probe.level
    rig.w(M.INTERRUPT_ACK, M.INT_USED_BUFFER)
    assert rig.r(M.INTERRUPT_STATUS) == 0 and not rig.probe.level
    head, payload, status = rig.request(B.T_IN, 6, 1024)
    assert rig.memory.read(payload, 1024) == data
    assert rig.used() == (2, [(0, 1), (head, 1025)])
    assert rig.probe.edges == 2
    out, read = rig.seen.requests
    assert (out.kind, out.sector, out.length, out.status) == ("out", 6, 1024, "ok")
    assert (read.kind, read.sector, read.length, read.status) == ("in", 6, 1024, "ok")
    assert read.segments == ((payload, 1024),)


def test_completion_comes_exactly_latency_ticks_after_the_notify():
    rig = Rig(latency=5000).start()
    rig.time.at(100)
    _, _, status = rig.request(B.T_OUT, 0, bytes(SECTOR))
    assert rig.time.wakes == [5100] and rig.blk.next_deadline() == 5100
    rig.blk.advance(5099)
    assert rig.status_byte(status) == 0xEE and rig.used()[0] == 0 and not rig.probe.level
    rig.time.at(5100)
    rig.blk.advance(5100)
    assert rig.status_byte(status) == B.S_OK and rig.used()[0] == 1 and rig.probe.level
    assert rig.blk.next_deadline() is None
    assert rig.seen.requests[0].icount == 5100


def test_one_notify_completes_every_chain_then_available_in_ring_order():
    rig = Rig(latency=10).start()
    first = rig.request(B.T_OUT, 0, b"a" * SECTOR, notify=False)[0]
    second = rig.request(B.T_OUT, 1, b"b" * SECTOR)[0]
    third = rig.request(B.T_OUT, 2, b"c" * SECTOR)[0]       # its own notify, same tick
    rig.time.at(10)
    rig.blk.advance(10)
    assert [entry[0] for entry in rig.used()[1]] == [first, second, third]
    assert rig.probe.edges == 1


def test_flush_get_id_and_unsupported_types():
    rig = Rig().start()
    _, _, status = rig.request(B.T_FLUSH, 0)
    assert rig.status_byte(status) == B.S_OK
    _, ident, status = rig.request(B.T_GET_ID, 0, 20)
    assert rig.memory.read(ident, 20) == b"emu-virtio-blk".ljust(20, b"\0")
    assert rig.status_byte(status) == B.S_OK and rig.used()[1][-1][1] == 21
    _, _, status = rig.request(11, 0)                         # DISCARD: not offered
    assert rig.status_byte(status) == B.S_UNSUPP
    assert [r.kind for r in rig.seen.requests] == ["flush", "get-id", "unsupported type 11"]
    assert [r.status for r in rig.seen.requests] == ["ok", "ok", "unsupp"]


@pytest.mark.parametrize("kind, sector, data", [
    (B.T_IN, (1 << 20) // SECTOR, 512),                      # just past the end
    (B.T_OUT, (1 << 20) // SECTOR - 1, bytes(1024)),         # runs past the end
    (B.T_IN, 0, 100),                                        # not whole sectors
    (B.T_OUT, 0, bytes(700)),
])
def test_requests_outside_the_disk_or_not_whole_sectors_end_in_ioerr(kind, sector, data):
    rig = Rig().start()
    _, _, status = rig.request(kind, sector, data)
    assert rig.status_byte(status) == B.S_IOERR
    assert rig.seen.requests[0].status == "ioerr" and rig.seen.errors == []


def test_injected_media_errors():
    rig = Rig().start()
    rig.blk.fail_sectors.add(9)
    assert rig.status_byte(rig.request(B.T_OUT, 8, bytes(1024))[2]) == B.S_IOERR
    assert rig.status_byte(rig.request(B.T_IN, 10, 512)[2]) == B.S_OK
    assert rig.disk.read(8 * SECTOR, 1024) == bytes(1024)    # nothing was written



def test_fault_hooks_see_each_read_and_write_and_shape_its_completion():
    """ioerr moves nothing; torn lands the first K sectors and says OK; delay completes the
    request later than the others of its notify, with an interrupt of its own."""
    rig = Rig(latency=10).start()
    asked = []
    plan = {2: B.MediaFault("ioerr"), 3: B.MediaFault("torn", 1),
            4: B.MediaFault("delay", 500), 5: B.MediaFault("ioerr")}

    def hook(kind, sector, length):
        asked.append((kind, sector, length))
        return plan.get(len(asked))
    rig.blk.fault_hooks.append(hook)
    _, _, ok = rig.request(B.T_OUT, 0, b"a" * 1024, notify=False)
    _, _, failed = rig.request(B.T_OUT, 2, b"b" * 1024, notify=False)
    _, _, torn = rig.request(B.T_OUT, 4, b"c" * 1024, notify=False)
    late, _, delayed = rig.request(B.T_OUT, 6, b"d" * 1024, notify=False)
    _, payload, unread = rig.request(B.T_IN, 0, 1024)
    rig.time.at(10)
    rig.blk.advance(10)
    assert asked == [("out", 0, 1024), ("out", 2, 1024), ("out", 4, 1024), ("out", 6, 1024),
                     ("in", 0, 1024)]
    assert [rig.status_byte(s) for s in (ok, failed, torn, unread)] == \
        [B.S_OK, B.S_IOERR, B.S_OK, B.S_IOERR]
    assert rig.disk.read(0, 8 * SECTOR) == b"a" * 1024 + bytes(1024) + b"c" * 512 + \
        bytes(512 + 1024)
    assert rig.memory.read(payload, 1024) != b"a" * 1024      # the failed read moved nothing
    assert rig.status_byte(delayed) == 0xEE and rig.probe.edges == 1
    assert late not in [head for head, _ in rig.used()[1]]
    assert rig.seen.errors == [] and rig.blk.next_deadline() == 510
    rig.w(M.INTERRUPT_ACK, M.INT_USED_BUFFER)
    rig.time.at(510)
    rig.blk.advance(510)
    assert rig.status_byte(delayed) == B.S_OK and rig.used()[1][-1] == (late, 1)
    assert rig.disk.read(6 * SECTOR, 1024) == b"d" * 1024 and rig.probe.edges == 2
    assert rig.blk.next_deadline() is None and rig.seen.errors == []


def test_any_framing_header_data_and_status_split_or_merged():
    """1.x devices must not assume how the request is split into descriptors (2.6.4)."""
    rig = Rig().start()
    data = b"x" * SECTOR
    merged = rig.buffer(B.HEADER.pack(B.T_OUT, 0, 3) + data)
    status = rig.buffer(1)
    rig.offer(rig.chain((merged, 16 + SECTOR, False), (status, 1, True)))
    assert rig.disk.read(3 * SECTOR, SECTOR) == data
    header = rig.buffer(B.HEADER.pack(B.T_IN, 0, 3))
    inbound = rig.buffer(SECTOR + 1)                         # data and status in one buffer
    rig.offer(rig.chain((header, 8, False), (header + 8, 8, False),
                        (inbound, 100, True), (inbound + 100, SECTOR + 1 - 100, True)))
    assert rig.memory.read(inbound, SECTOR) == data and rig.status_byte(inbound + SECTOR) == 0
    assert rig.seen.requests[1].segments == ((inbound, 100), (inbound + 100, SECTOR - 100))


def test_no_interrupt_flag_suppresses_the_interrupt_not_the_completion():
    rig = Rig().start()
    rig.memory.write(AVAIL, struct.pack("<H", 1))            # VIRTQ_AVAIL_F_NO_INTERRUPT
    _, _, status = rig.request(B.T_OUT, 0, bytes(SECTOR))
    assert rig.status_byte(status) == B.S_OK and rig.used()[0] == 1
    assert rig.r(M.INTERRUPT_STATUS) == 0 and not rig.probe.level


def test_reset_drops_pending_completions_and_restarts_cleanly():
    rig = Rig(latency=100).start()
    rig.request(B.T_OUT, 0, b"z" * SECTOR)
    rig.w(M.STATUS, 0)
    assert rig.blk.next_deadline() is None and rig.r(M.STATUS) == 0
    rig.w(M.QUEUE_SEL, 0)
    assert rig.r(M.QUEUE_READY) == 0
    rig.time.at(1000)
    rig.blk.advance(1000)
    assert rig.disk.read(0, SECTOR) == bytes(SECTOR)
    rig.next_desc, rig.avail_idx = 0, 0
    rig.memory.write(AVAIL, bytes(4))
    rig.memory.write(USED, bytes(4))
    rig.start()
    rig.request(B.T_OUT, 0, b"y" * SECTOR)
    rig.time.at(1100)
    rig.blk.advance(1100)
    assert rig.disk.read(0, SECTOR) == b"y" * SECTOR


# --- malformed input -------------------------------------------------------------------

def assert_failed(rig: Rig, fragment: str) -> None:
    assert rig.r(M.STATUS) & M.DEVICE_NEEDS_RESET
    assert rig.r(M.INTERRUPT_STATUS) & M.INT_CONFIG_CHANGE and rig.probe.level
    assert len(rig.seen.errors) == 1, rig.seen.errors
    assert fragment in rig.seen.errors[0].detail, rig.seen.errors[0].detail
    assert rig.seen.errors[0].device == "virtio-blk"


def raw_descriptor(rig: Rig, index: int, address: int, length: int, flags: int,
                   following: int = 0) -> None:
    rig.memory.write(DESC + 16 * index, struct.pack("<QIHH", address, length, flags,
                                                     following))


def header_at(rig: Rig, kind: int = B.T_OUT) -> int:
    return rig.buffer(B.HEADER.pack(kind, 0, 0))


MALFORMED_CHAINS = {
    "not in guest RAM": lambda rig: (
        raw_descriptor(rig, 0, header_at(rig), 16, DESC_F_NEXT, 1),
        raw_descriptor(rig, 1, RAM - 256, 512, DESC_F_NEXT, 2),      # runs off the end
        raw_descriptor(rig, 2, rig.buffer(1), 1, DESC_F_WRITE)),
    "wraps": lambda rig: raw_descriptor(rig, 0, (1 << 64) - 8, 16, 0),
    "outside the table": lambda rig: raw_descriptor(rig, 0, header_at(rig), 16,
                                                     DESC_F_NEXT, QSIZE),
    "a loop": lambda rig: (raw_descriptor(rig, 0, header_at(rig), 16, DESC_F_NEXT, 1),
                           raw_descriptor(rig, 1, rig.buffer(8), 8, DESC_F_NEXT, 0)),
    "INDIRECT": lambda rig: raw_descriptor(rig, 0, rig.buffer(32), 32, DESC_F_INDIRECT),
    "device-readable after a device-writable": lambda rig: (
        raw_descriptor(rig, 0, header_at(rig), 16, DESC_F_NEXT, 1),
        raw_descriptor(rig, 1, rig.buffer(1), 1, DESC_F_WRITE | DESC_F_NEXT, 2),
        raw_descriptor(rig, 2, rig.buffer(512), 512, 0)),
    "no device-writable byte": lambda rig: raw_descriptor(rig, 0, header_at(rig), 16, 0),
    "less than its 16-byte header": lambda rig: (
        raw_descriptor(rig, 0, header_at(rig), 12, DESC_F_NEXT, 1),
        raw_descriptor(rig, 1, rig.buffer(1), 1, DESC_F_WRITE)),
}


@pytest.mark.parametrize("fragment", sorted(MALFORMED_CHAINS))
def test_malformed_chains_fail_the_device_without_an_exception(fragment):
    rig = Rig().start()
    MALFORMED_CHAINS[fragment](rig)
    rig.offer(0)
    assert_failed(rig, "(+0x10) is not in guest RAM" if fragment == "wraps" else fragment)
    assert rig.used()[0] == 0
    rig.offer(0)                                             # ignored until reset
    assert len(rig.seen.errors) == 1 and rig.seen.requests == []


def test_a_failed_request_leaves_the_ones_before_it_completed():
    rig = Rig().start()
    good = rig.request(B.T_OUT, 0, b"g" * SECTOR, notify=False)[0]
    raw_descriptor(rig, rig.next_desc, RAM + 4096, 16, 0)
    rig.offer(rig.next_desc)
    assert rig.used() == (1, [(good, 1)]) and rig.disk.read(0, 1) == b"g"
    assert_failed(rig, "not in guest RAM")


@pytest.mark.parametrize("layout, fragment", [
    (dict(desc=RAM - 64), "descriptor table"),               # 16 entries need 256 bytes
    (dict(used=0x12002), "used ring"),                       # 4-byte alignment
    (dict(avail=0x11001), "available ring"),
    (dict(desc=0x10008), "descriptor table"),
    (dict(size=12), "power of 2"),
    (dict(size=512), "power of 2 up to 256"),
    (dict(used=1 << 40), "not in guest RAM"),
])
def test_queue_areas_are_checked_when_the_queue_is_made_ready(layout, fragment):
    rig = Rig()
    assert rig.negotiate() & M.FEATURES_OK
    rig.setup_queue(**layout)
    assert_failed(rig, fragment)
    assert rig.r(M.QUEUE_READY) == 0


def test_available_index_running_ahead_of_the_queue_is_a_breach():
    rig = Rig().start()
    rig.memory.write(AVAIL + 2, struct.pack("<H", QSIZE + 1))
    rig.w(M.QUEUE_NOTIFY, 0)
    assert_failed(rig, "ahead of the device")


@pytest.mark.parametrize("breach, fragment", [
    (lambda rig: rig.w(M.QUEUE_NOTIFY, 0), "before DRIVER_OK"),
    (lambda rig: rig.w(M.STATUS, 0x0F) or rig.w(M.QUEUE_NOTIFY, 1), "not ready"),
    (lambda rig: rig.w(M.QUEUE_NUM, 8), "while it is ready"),
    (lambda rig: rig.w(M.QUEUE_DESC_LOW, 0x30000), "while it is ready"),
    (lambda rig: rig.w(M.STATUS, 0x0F, size=1), "1-byte write"),
    (lambda rig: rig.r(M.INTERRUPT_STATUS, size=8), "8-byte read"),
])
def test_driver_breaches_of_the_transport(breach, fragment):
    rig = Rig()
    assert rig.negotiate() & M.FEATURES_OK
    rig.setup_queue()
    breach(rig)
    assert_failed(rig, fragment)


def test_needs_reset_survives_status_writes_and_reset_clears_it():
    rig = Rig().start()
    rig.w(M.QUEUE_NUM, 8)
    rig.w(M.STATUS, 0x0F)
    assert rig.r(M.STATUS) == 0x0F | M.DEVICE_NEEDS_RESET
    rig.w(M.STATUS, 0)
    assert rig.r(M.STATUS) == 0 and rig.r(M.INTERRUPT_STATUS) == 0 and not rig.probe.level
