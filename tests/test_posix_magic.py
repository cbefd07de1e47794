"""The magic rpfs.tree checks before importing a POSIX reader is the one the reader's own
probe requires: a volume the reader would recognise is never skipped."""

from __future__ import annotations

import importlib
import struct

from rpfs.tree import POSIX_MAGIC, POSIX_READERS


def test_each_reader_has_its_magic_where_its_probe_looks():
    from btrfs_reader import superblock as btrfs
    from ext4_reader import superblock as ext4
    from xfs_reader import superblock as xfs

    assert set(POSIX_MAGIC) == set(POSIX_READERS)
    assert POSIX_MAGIC["ext4_reader"] == (ext4.SUPERBLOCK_OFFSET + 56, struct.pack("<H", ext4.MAGIC))
    assert POSIX_MAGIC["xfs_reader"] == (0, xfs.MAGIC)
    assert POSIX_MAGIC["btrfs_reader"] == (btrfs.OFFSET + 64, btrfs.MAGIC)


def test_a_stream_without_the_magic_is_refused_by_the_readers_probe_too():
    """Whatever the magic check skips, the reader's probe would have said no to."""
    from streams.stream import BytesStream

    for module in POSIX_READERS:
        offset, magic = POSIX_MAGIC[module]
        data = bytearray(b"\xff" * (offset + 4096 + 65536))
        data[offset:offset + len(magic)] = bytes(len(magic))  # anything but the magic
        assert not importlib.import_module(module).probe(BytesStream(bytes(data), "t")), module
