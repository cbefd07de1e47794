"""Read-only Btrfs (one device) over any rpfs stream, parsed lazily in user space.

The contract is the one every Linux reader keeps (docs/architecture.md, "Linux file
systems"): ``probe(stream)``, ``open_volume(stream) -> Volume``; ``Volume.root`` (the
top-level subvolume, id 5: every subvolume and snapshot is a directory where it was
created), ``lookup(path)``, ``entry(ino)``, ``state``, ``warnings``, ``describe()`` (with
the default subvolume and every subvolume's path); ``Entry`` with POSIX attributes,
``iterdir``, ``child``, ``open``, ``readlink``, ``xattrs``.

Modules, bottom up: checksum (crc32c/sha256/blake2b of metadata, name hashes),
superblock, tree (checksummed tree blocks, key-ordered walks), chunks (logical to
physical), items (inode, directory, extent and root items), compression (zlib, LZO,
zstd), filedata (a file's stream), volume, entry.
"""

from __future__ import annotations

from streams.stream import Stream

from .entry import Entry
from .superblock import OFFSET, probe_bytes
from .volume import Volume


def probe(stream: Stream) -> bool:
    """True if the stream holds a Btrfs superblock at 64 KiB (one small read)."""
    return stream.size >= OFFSET + 4096 and probe_bytes(stream.read(OFFSET, 72))


def open_volume(stream: Stream) -> Volume:
    return Volume(stream)


__all__ = ["probe", "open_volume", "Volume", "Entry"]
