"""Log replay: a VHDX with a pending log reads as the same file with the updates applied,
and as qemu-img sees it after `qemu-img check -r all` replays the log into a copy."""

from __future__ import annotations

import shutil
import subprocess
import uuid

import pytest

from formats.vhdx import VhdxDisk
from formats.vhdx import structures as S
from formats.vhdx.log import LogOverlay
from formats.vhdx.writer import LOG_LENGTH, LOG_OFFSET
from streams.errors import FormatError
from streams.stream import BytesStream, FileStream, ZERO
from tests.helpers import vhdx_fixtures as F

MiB = 1 << 20


@pytest.mark.parametrize("start", [0, 64 * 1024, LOG_LENGTH - 8192])
def test_replay_equals_applied_updates(start):
    pending, applied, raw = F.logged(start)
    disk = VhdxDisk(FileStream(pending))
    plain = VhdxDisk(FileStream(applied))
    assert disk.log_replayed and not plain.log_replayed
    assert disk.file.sequence == (10, 12)
    ours = disk.read(0, disk.size)
    assert ours == plain.read(0, plain.size)
    assert ours != raw.read_bytes()              # replay visibly changed the disk
    # the pending file itself still reads differently without its log: it was never written
    assert FileStream(pending).read(disk.bat_offset, 4096) != disk.file.read(disk.bat_offset, 4096)
    assert b"REPLAYED-SECTOR!" in ours
    for e in disk.extents():                    # zero extents are honest (data may hold zeros)
        if e.kind == ZERO:
            assert ours[e.offset:e.end] == bytes(e.length)


def test_qemu_replay_agrees(tmp_path):
    """qemu replays the log in place on a copy; both must then read the same."""
    pending, applied, _ = F.logged(0)
    copy = tmp_path / "copy.vhdx"
    shutil.copyfile(pending, copy)
    subprocess.run(["qemu-img", "check", "-r", "all", str(copy)], check=True, capture_output=True)
    out = tmp_path / "q.raw"
    subprocess.run(["qemu-img", "convert", "-f", "vhdx", "-O", "raw", str(copy), str(out)], check=True)
    ours = VhdxDisk(FileStream(pending))
    assert ours.read(0, ours.size) == out.read_bytes()
    after = VhdxDisk(FileStream(copy))           # replayed by qemu: log empty now
    assert not after.log_replayed


def test_qemu_disagrees_on_wrapped_sequence_and_spec_wins(tmp_path):
    """qemu 7.2's search keeps the first sequence with the highest head sequence number and
    does not check that the head's tail lies inside it, so for a sequence that wraps the ring
    it replays only the entries after the wrap. [MS-VHDX] 2.3.3 requires the tail to be
    contained: we replay all three entries, as the applied copy shows."""
    pending, applied, _ = F.logged(LOG_LENGTH - 8192)
    ours = VhdxDisk(FileStream(pending))
    assert ours.read(0, ours.size) == VhdxDisk(FileStream(applied)).read(0, ours.size)


def _log_image(entries_bytes: bytes, file_size: int = 4 * MiB) -> BytesStream:
    data = bytearray(file_size)
    data[LOG_OFFSET:LOG_OFFSET + len(entries_bytes)] = entries_bytes
    return BytesStream(data, "log-test")


def test_overlay_orders_data_and_zero():
    g = uuid.uuid4()
    a = bytes([1]) * 4096
    b = bytes([2]) * 4096
    e1 = F._log_entry(5, 0, g, [("data", 2 * MiB, a), ("data", 2 * MiB + 4096, a)], 4 * MiB, 4 * MiB)
    e2 = F._log_entry(6, 0, g, [("zero", 2 * MiB, 8192), ("data", 2 * MiB + 4096, b)], 4 * MiB, 5 * MiB)
    from formats.vhdx.log import replay_log
    ov = replay_log(_log_image(e1 + e2), LOG_OFFSET, LOG_LENGTH, g)
    assert ov.size == 5 * MiB                    # grown to LastFileOffset
    assert ov.read(2 * MiB, 8192) == bytes(4096) + b
    assert ov.read(5 * MiB - 10, 100) == bytes(10)
    kinds = [(e.offset, e.kind) for e in ov.extents(4 * MiB, MiB)]
    assert kinds == [(4 * MiB, ZERO)]


def test_log_with_no_valid_sequence_is_an_error():
    g = uuid.uuid4()
    e1 = bytearray(F._log_entry(5, 0, g, [("zero", 2 * MiB, 4096)], 4 * MiB, 4 * MiB))
    e1[100] ^= 1                                 # checksum no longer matches
    from formats.vhdx.log import replay_log
    with pytest.raises(FormatError, match="no valid sequence"):
        replay_log(_log_image(bytes(e1)), LOG_OFFSET, LOG_LENGTH, g)
    with pytest.raises(FormatError, match="no valid sequence"):   # other LogGuid: stale
        replay_log(_log_image(F._log_entry(5, 0, uuid.uuid4(), [], 4 * MiB, 4 * MiB)), LOG_OFFSET, LOG_LENGTH, g)


def test_truncated_file_is_refused():
    g = uuid.uuid4()
    e = F._log_entry(5, 0, g, [], 8 * MiB, 8 * MiB)   # file was 8 MiB when logged
    from formats.vhdx.log import replay_log
    with pytest.raises(FormatError, match="truncated"):
        replay_log(_log_image(e), LOG_OFFSET, LOG_LENGTH, g)


def test_newest_sequence_wins_and_tail_must_be_inside():
    g = uuid.uuid4()
    old = F._log_entry(7, 0, g, [("data", 2 * MiB, bytes([7]) * 4096)], 4 * MiB, 4 * MiB)
    # at 8 KiB: a newer sequence whose head's tail points back at itself
    new = F._log_entry(9, 8192, g, [("data", 2 * MiB, bytes([9]) * 4096)], 4 * MiB, 4 * MiB)
    # at 64 KiB: an entry with an even higher number whose tail is outside its sequence
    orphan = F._log_entry(20, 4096 * 100, g, [("data", 2 * MiB, bytes([20]) * 4096)], 4 * MiB, 4 * MiB)
    ring = bytearray(LOG_LENGTH)
    ring[0:len(old)] = old
    ring[8192:8192 + len(new)] = new
    ring[65536:65536 + len(orphan)] = orphan
    from formats.vhdx.log import replay_log
    ov = replay_log(_log_image(bytes(ring)), LOG_OFFSET, LOG_LENGTH, g)
    assert ov.read(2 * MiB, 1) == bytes([9])


def test_sequence_cannot_lap_the_ring():
    """Entries whose chain would wrap onto itself end the sequence instead of looping."""
    g = uuid.uuid4()
    ring = bytearray()
    n = LOG_LENGTH // 4096
    for i in range(n):
        ring += F._log_entry(100 + i, 0, g, [], 4 * MiB, 4 * MiB)
    from formats.vhdx.log import replay_log
    ov = replay_log(_log_image(bytes(ring)), LOG_OFFSET, LOG_LENGTH, g)
    assert isinstance(ov, LogOverlay) and ov.sequence == (100, 100 + n - 1)


def test_log_guid_without_entries_reads_unreplayed(tmp_path):
    """A header LogGuid that no complete entry carries (a file copied right after Hyper-V
    opened it, or torn entries): nothing was applied from the log, so the file is read as it
    stands, with a warning."""
    from formats.vhdx.writer import build_header
    pending, applied, raw = F.logged(0)
    path = tmp_path / "x.vhdx"
    shutil.copyfile(pending, path)
    disk = VhdxDisk(FileStream(path))
    with open(path, "r+b") as f:
        for i, off in enumerate(S.HEADER_OFFSETS):
            f.seek(off)
            f.write(build_header(disk.header.sequence_number + 5 + i, uuid.uuid4(), disk.identity,
                                 log_guid=uuid.uuid4()))
    again = VhdxDisk(FileStream(path))
    assert not again.log_replayed and "no valid sequence" in again.warnings[0]
    assert again.read(0, again.size) == raw.read_bytes()
    subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "vhdx", str(raw), str(path)], check=True,
                   capture_output=True)   # qemu agrees: nothing to replay
