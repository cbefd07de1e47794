"""Which stored bytes a range of a stream comes from, without reading it.

Following the layers down (an NTFS runlist, a partition slice, a VHDX block map and its
differencing parents, a raw disk, a stored file's chunk map) turns a range into pieces:
``("C", chunk id, offset in chunk, length)`` or ``("Z", length)`` for known zeros. Chunk
ids name immutable contents, so two ranges with the same pieces hold the same bytes: an
$MFT block whose pieces are the same as in the previous recovery point need not be read.
A layer this module does not know (or any doubt: a range past an end, a partly present
VHDX block, a damaged map) answers None, and the caller reads and hashes the bytes.
"""

from __future__ import annotations

import functools
import importlib

from streams.errors import RpfsError

MAX_PIECES = 4096
MAX_DEPTH = 300


def pieces(stream, offset: int, length: int) -> list | None:
    out: list = []
    try:
        return out if _walk(stream, offset, length, out, 0) else None
    except (RpfsError, AttributeError, IndexError, TypeError, ValueError):
        return None


@functools.cache
def _layers() -> dict:
    """The classes this module can see through (one that moved or was renamed is simply
    not seen through: its ranges are read)."""
    found = {}
    for module, name in (("formats.disk", "RawDisk"), ("formats.vhdx.reader", "VhdxDisk"),
                         ("ntfs_reader.datastream", "RunlistStream"),
                         ("rpfs.store.repository", "StoredFile"),
                         ("rpfs.store.readahead", "ReadAhead"), ("streams.stream", "SliceStream"),
                         ("rpfs.tree", "_LazyStream")):
        try:
            found[name] = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            found[name] = None
    try:
        from formats.vhdx.reader import _FILE, _PARENT, _ZERO
        found["plan"] = (_FILE, _ZERO, _PARENT)
    except ImportError:
        found["VhdxDisk"] = None
    return found


def _walk(stream, offset: int, length: int, out: list, depth: int) -> bool:
    L = _layers()
    if length <= 0:
        return True
    if offset < 0 or offset + length > stream.size or depth > MAX_DEPTH or len(out) > MAX_PIECES:
        return False
    kind = type(stream)
    if kind is L["RunlistStream"]:
        for pos, n, disk in stream._pieces(offset, offset + length):
            if disk is None:
                out.append(("Z", n))
            elif not _walk(stream.volume, disk, n, out, depth + 1):
                return False
        return True
    if kind is L["SliceStream"]:
        return _walk(stream.base, stream.offset + offset, length, out, depth + 1)
    if kind is L["_LazyStream"]:
        return _walk(stream.stream, offset, length, out, depth + 1)
    if kind is L["ReadAhead"]:
        return _walk(stream.file, offset, length, out, depth + 1)
    if kind is L["RawDisk"]:
        return _walk(stream.source, offset, length, out, depth + 1)
    if kind is L["VhdxDisk"]:
        _FILE, _ZERO, _PARENT = L["plan"]
        for what, voff, n, foff in stream._plan(offset, length):
            if what == _FILE:
                ok = _walk(stream.file, foff, n, out, depth + 1)
            elif what == _ZERO:
                out.append(("Z", n))
                ok = True
            elif what == _PARENT and stream.parent is not None:
                ok = _walk(stream.parent, voff, n, out, depth + 1)
            else:
                ok = False
            if not ok:
                return False
        return True
    if kind is L["StoredFile"]:
        cs = stream.chunk_size
        pos, end = offset, offset + length
        while pos < end:
            i = pos // cs
            stop = min((i + 1) * cs, end)
            out.append(("C", stream.ids[i], pos - i * cs, stop - pos))
            pos = stop
        return True
    return False


def split(found: list, block: int) -> list[tuple]:
    """``found`` (pieces of a range) cut into consecutive ranges of ``block`` bytes."""
    blocks: list[tuple] = []
    cur: list = []
    room = block
    for p in found:
        n = p[-1]
        start = 0
        while n > 0:
            take = min(n, room)
            cur.append(("Z", take) if p[0] == "Z" else ("C", p[1], p[2] + start, take))
            start += take
            n -= take
            room -= take
            if room == 0:
                blocks.append(tuple(cur))
                cur, room = [], block
    if cur:
        blocks.append(tuple(cur))
    return blocks
