"""Read-only XFS (v4 and v5) over any rpfs stream, parsed lazily in user space.

The contract is the one every Linux reader keeps (docs/architecture.md, "Linux file
systems"): ``probe(stream)``, ``open_volume(stream) -> Volume``; ``Volume.root``,
``lookup(path)``, ``entry(ino)``, ``state``, ``warnings``, ``describe()``; ``Entry`` with
POSIX attributes, ``iterdir``, ``child``, ``open``, ``readlink``, ``xattrs``.

Modules, bottom up: checksum (CRC32C of v5 metadata), superblock, inode, bmap (extent
lists, bmbt B+trees, the file stream), dirs (every directory form), xattr (short-form,
leaf and node attribute forks, ACLs), log (is the log clean?), volume, entry.
"""

from __future__ import annotations

from streams.stream import Stream

from .entry import Entry
from .superblock import probe_bytes
from .volume import Volume


def probe(stream: Stream) -> bool:
    """True if the stream starts with an XFS superblock (one 512-byte read)."""
    return probe_bytes(stream.read(0, 512))


def open_volume(stream: Stream) -> Volume:
    return Volume(stream)


__all__ = ["probe", "open_volume", "Volume", "Entry"]
