"""A folder (or a selection) of the namespace as a zip, produced while it is sent.

The stdlib ``zipfile`` writes to an unseekable sink (entries carry data descriptors), so
nothing is staged: each file is read in blocks and every block leaves as soon as it is
written, keeping memory at one block whatever the folder's size. ZIP64 records appear where
sizes or offsets need them; names are UTF-8 (zipfile sets the flag); each entry keeps its
modification time (DOS time plus the Info-ZIP "UT" field, which unzip restores exactly).

Names, symlinks and times follow ``rpfs restore`` (same ``safe_name``; links stay links), so
unpacking the zip gives the same tree as restoring the folder. Hard links are stored as
copies: zip has no hard links.
"""

from __future__ import annotations

import datetime as dt
import os
import stat
import struct
import zipfile
from typing import Iterable, Iterator

from rpfs.errors import RpfsError
from rpfs.restore import fsname, safe_name
from rpfs.tree import Node

BLOCK = 1 << 20
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
DOS_FIRST = 315532800  # 1980-01-01 00:00:00 UTC
DOS_LAST = 4354819198  # 2107-12-31 23:59:58 UTC
ERRORS_NAME = "rpfs-errors.txt"


class _Sink:
    """What zipfile writes into; ``take()`` hands the bytes on and forgets them."""

    def __init__(self):
        self._parts: list[bytes] = []

    def write(self, data) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        return data


def zip_name(name: str) -> str:
    """``safe_name`` as valid UTF-8 (NTFS names may hold escaped unpaired surrogates)."""
    name = safe_name(name)
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        return os.fsencode(name).decode("utf-8", "replace")


def _info(arcname: str, node: Node, mode: int) -> zipfile.ZipInfo:
    # DOS times hold 1980-2107 (others are clamped); the UT field gives unzip the exact
    # second, in UTC, up to 2038.
    seconds = node.attr().mtime_ns // 1_000_000_000
    when = EPOCH + dt.timedelta(seconds=min(max(seconds, DOS_FIRST), DOS_LAST))
    zi = zipfile.ZipInfo(arcname, date_time=when.timetuple()[:6])
    zi.create_system = 3  # Unix: external_attr carries the mode (symlinks need it)
    zi.external_attr = mode << 16 | (0x10 if stat.S_ISDIR(mode) else 0)
    if DOS_FIRST <= seconds < 1 << 31:
        zi.extra = struct.pack("<HHBi", 0x5455, 5, 1, seconds)  # "UT": mtime
    return zi


def zip_chunks(items: Iterable[tuple[str, Node]]) -> Iterator[bytes]:
    """The zip of ``(name, node)`` pairs (directories recursively), block by block.

    An object that cannot be opened is left out and named in ``rpfs-errors.txt``; damage
    found in the middle of a file raises, so a client never gets a silently wrong zip.
    """
    sink = _Sink()
    errors: list[str] = []
    with zipfile.ZipFile(sink, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, node in items:
            yield from _add(zf, sink, zip_name(name), node, errors)
        if errors:
            zf.writestr(ERRORS_NAME, "".join(f"{e}\n" for e in errors))
    yield sink.take()


def _add(zf: zipfile.ZipFile, sink: _Sink, arcname: str, node: Node,
         errors: list[str], ancestors: frozenset = frozenset()) -> Iterator[bytes]:
    try:
        if node.kind == "dir":
            if node.key and node.key in ancestors:   # a damaged file system's cycle
                errors.append(f"{arcname}: a directory that contains itself: not followed")
                return
            children = list(node.iterdir())
            zf.writestr(_info(arcname + "/", node, stat.S_IFDIR | 0o755), b"")
            yield sink.take()
            inner = ancestors | {node.key}
            for child in children:
                yield from _add(zf, sink, f"{arcname}/{zip_name(child.name)}", child, errors,
                                inner)
            return
        if node.kind == "symlink":
            zf.writestr(_info(arcname, node, stat.S_IFLNK | 0o777),
                        fsname(node.readlink()))
            yield sink.take()
            return
        stream = node.open()
        zi = _info(arcname, node, stat.S_IFREG | 0o644)
        zi.file_size = stream.size
    except RpfsError as e:
        errors.append(f"{arcname}: {e}")
        return
    with zf.open(zi, "w") as out:
        pos = 0
        while pos < stream.size:
            data = stream.read(pos, min(BLOCK, stream.size - pos))
            out.write(data)
            pos += len(data)
            yield sink.take()
    yield sink.take()
