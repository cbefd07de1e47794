"""A folder (or a selection) of the namespace as a zip, produced while it is sent.

Written here rather than with ``zipfile``, for memory: ``zipfile`` keeps an object per entry
until it writes the central directory (about half a KiB each: 50 MB for a 100,000-file
folder, and Python does not give it back). Here each entry's central directory record goes to
a temporary file as soon as the entry is written and is copied out at the end, so memory stays
at about one block whatever the folder holds (plus the names of the folder being written, to
keep them unique). Entries carry data descriptors (CRC and sizes after the data: nothing is
staged), ZIP64 fields where sizes, offsets or the entry count need them, UTF-8 names (flag
bit 11), the Unix mode (so symlinks stay symlinks) and the modification time (DOS time plus
the Info-ZIP "UT" field, which unzip restores exactly). Files are stored, not compressed.

Names follow ``rpfs restore`` (its ``safe_name``: no ``/``, ``\\``, NUL, ``.`` or ``..``,
at most 255 bytes; links stay links; hard links are copies), so unpacking the zip gives what
restore writes, with two more rules, because a zip is unpacked by other programs on other
systems:

- bytes that are not UTF-8 (names rpfs escapes: an unpaired UTF-16 surrogate, ``/`` or NUL
  inside an NTFS name) are written as ``%XX``; ``safe_name`` already wrote ``%`` itself as
  ``%25``, so no other name reads the same;
- within each folder, a name already taken (after every transformation), or one equal but for
  case to a symlink's, gets `` (2)``, `` (3)``...: no two entries share a path, and no entry
  is ever placed under a name that is a symlink in the same archive, even on a system that
  ignores case.
"""

from __future__ import annotations

import hashlib
import stat
import struct
import tempfile
import time
import zlib
from typing import Iterable, Iterator

from streams.errors import RpfsError
from rpfs.restore import fsname, safe_name
from rpfs.tree import Node

BLOCK = 1 << 20
NAME_MAX = 255
DOS_FIRST = 315532800  # 1980-01-01 00:00:00 UTC
DOS_LAST = 4354819198  # 2107-12-31 23:59:58 UTC
ERRORS_NAME = "rpfs-errors.txt"
ZIP64_LIMIT = (1 << 31) - 1  # past this an entry's sizes or offset go in a ZIP64 field
FLAGS = 0x0808               # bit 3: sizes in a data descriptor; bit 11: UTF-8 names
VERSION = 45                 # 4.5: ZIP64
MADE_BY = 3 << 8 | VERSION   # Unix: external attributes hold the mode


def zip_name(name: str) -> str:
    """``safe_name``, then bytes that are not UTF-8 as ``%XX``, then at most 255 bytes."""
    raw = fsname(safe_name(name))
    text = raw.decode("utf-8", "surrogateescape")
    if any("\udc80" <= c <= "\udcff" for c in text):
        text = "".join(f"%{ord(c) - 0xDC00:02X}" if "\udc80" <= c <= "\udcff" else c
                       for c in text)
    data = text.encode("utf-8")
    if len(data) <= NAME_MAX:
        return text
    digest = hashlib.sha256(raw).hexdigest()[:16]
    return data[:NAME_MAX - 17].decode("utf-8", "ignore") + "~" + digest


def numbered(name: str, n: int) -> str:
    """``name (n)``, cut to fit 255 bytes."""
    suffix = f" ({n})"
    data = name.encode("utf-8")[:NAME_MAX - len(suffix)]
    return data.decode("utf-8", "ignore") + suffix


class FolderNames:
    """The names given so far in one folder of the zip."""

    def __init__(self):
        self.exact: set[str] = set()
        self.folded: set[str] = set()
        self.links: set[str] = set()  # case-folded names of symlinks

    def claim(self, name: str, is_link: bool) -> str:
        n, candidate = 1, name
        while self._taken(candidate, is_link):
            n += 1
            candidate = numbered(name, n)
        folded = candidate.casefold()
        self.exact.add(candidate)
        self.folded.add(folded)
        if is_link:
            self.links.add(folded)
        return candidate

    def _taken(self, name: str, is_link: bool) -> bool:
        folded = name.casefold()
        return name in self.exact or folded in self.links or (is_link and folded in self.folded)


def dos_time(seconds: int) -> tuple[int, int]:
    """(time, date) in DOS format, UTC; clamped to 1980-2107."""
    t = time.gmtime(min(max(seconds, DOS_FIRST), DOS_LAST))
    return (t.tm_hour << 11 | t.tm_min << 5 | t.tm_sec // 2,
            (t.tm_year - 1980) << 9 | t.tm_mon << 5 | t.tm_mday)


class ZipWriter:
    """Entries in, zip bytes out (``put`` yields blocks of about ``BLOCK`` bytes); the
    central directory waits in a temporary file."""

    def __init__(self):
        self.buf = bytearray()
        self.offset = 0
        self.count = 0
        self.central = tempfile.TemporaryFile(prefix="rpfs-zip-")
        self.central_size = 0

    def close(self) -> None:
        self.central.close()

    def _put(self, data: bytes) -> Iterator[bytes]:
        if self.buf and len(self.buf) + len(data) > BLOCK:
            yield bytes(self.buf)
            self.buf.clear()
        if len(data) >= BLOCK:
            yield data
        else:
            self.buf += data
        self.offset += len(data)

    def entry(self, name: str, mode: int, mtime_s: int, size: int,
              blocks: Iterable[bytes]) -> Iterator[bytes]:
        """One entry: local header, ``blocks`` (``size`` bytes in all), data descriptor."""
        encoded = name.encode("utf-8")
        zip64 = size > ZIP64_LIMIT
        start = self.offset
        t, d = dos_time(mtime_s)
        ut = (struct.pack("<HHBi", 0x5455, 5, 1, mtime_s)
              if DOS_FIRST <= mtime_s < 1 << 31 else b"")
        local_extra = (struct.pack("<HHQQ", 1, 16, 0, 0) if zip64 else b"") + ut
        yield from self._put(struct.pack(
            "<4sHHHHHIIIHH", b"PK\x03\x04", VERSION if zip64 else 20, FLAGS, 0, t, d, 0,
            0xFFFFFFFF if zip64 else 0, 0xFFFFFFFF if zip64 else 0, len(encoded),
            len(local_extra)) + encoded + local_extra)
        crc, done = 0, 0
        for block in blocks:
            crc = zlib.crc32(block, crc)
            done += len(block)
            yield from self._put(block)
        if done != size:
            raise RpfsError(f"{name}: {done} bytes read, {size} expected")
        if zip64:
            yield from self._put(struct.pack("<4sIQQ", b"PK\x07\x08", crc, size, size))
        else:
            yield from self._put(struct.pack("<4sIII", b"PK\x07\x08", crc, size, size))
        z64 = []
        if zip64:
            z64 += [size, size]
        if start > ZIP64_LIMIT:
            z64.append(start)
        extra = (struct.pack(f"<HH{len(z64)}Q", 1, 8 * len(z64), *z64) if z64 else b"") + ut
        record = struct.pack(
            "<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", MADE_BY, VERSION if z64 else 20, FLAGS, 0,
            t, d, crc, 0xFFFFFFFF if zip64 else size, 0xFFFFFFFF if zip64 else size,
            len(encoded), len(extra), 0, 0, 0,
            mode << 16 | (0x10 if stat.S_ISDIR(mode) else 0),
            0xFFFFFFFF if start > ZIP64_LIMIT else start) + encoded + extra
        self.central.write(record)
        self.central_size += len(record)
        self.count += 1

    def finish(self) -> Iterator[bytes]:
        """The central directory and its end records."""
        cd_start, cd_size = self.offset, self.central_size
        self.central.seek(0)
        while block := self.central.read(BLOCK):
            yield from self._put(block)
        if self.count >= 0xFFFF or cd_size > ZIP64_LIMIT or cd_start > ZIP64_LIMIT:
            eocd64 = self.offset
            yield from self._put(struct.pack(
                "<4sQHHIIQQQQ", b"PK\x06\x06", 44, MADE_BY, VERSION, 0, 0, self.count,
                self.count, cd_size, cd_start))
            yield from self._put(struct.pack("<4sIQI", b"PK\x06\x07", 0, eocd64, 1))
            yield from self._put(struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF,
                                             0xFFFFFFFF, 0xFFFFFFFF, 0))
        else:
            yield from self._put(struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, self.count,
                                             self.count, cd_size, cd_start, 0))
        if self.buf:
            yield bytes(self.buf)
            self.buf.clear()


def zip_chunks(items: Iterable[tuple[str, Node]]) -> Iterator[bytes]:
    """The zip of ``(name, node)`` pairs (directories recursively), block by block.

    An object that cannot be opened is left out and named in ``rpfs-errors.txt``; damage
    found in the middle of a file raises, so a client never gets a silently wrong zip.
    """
    writer = ZipWriter()
    errors: list[str] = []
    try:
        top = FolderNames()
        for name, node in items:
            yield from _add(writer, top, "", name, node, errors)
        if errors:
            report = "".join(f"{e}\n" for e in errors).encode("utf-8", "backslashreplace")
            yield from writer.entry(top.claim(ERRORS_NAME, False), stat.S_IFREG | 0o644,
                                    int(time.time()), len(report), [report])
        yield from writer.finish()
    finally:
        writer.close()


def _mtime(node: Node) -> int:
    return node.attr().mtime_ns // 1_000_000_000


def _add(writer: ZipWriter, names: FolderNames, folder: str, name: str, node: Node,
         errors: list[str], ancestors: frozenset = frozenset()) -> Iterator[bytes]:
    shown = folder + zip_name(name)
    try:
        kind = node.kind
        if kind == "dir":
            if node.key and node.key in ancestors:   # a damaged file system's cycle
                errors.append(f"{shown}/: a directory that contains itself: not followed")
                return
            mtime = _mtime(node)
            children = node.iterdir()
        elif kind == "symlink":
            target = fsname(node.readlink())
            mtime = _mtime(node)
        else:
            stream = node.open()
            mtime = _mtime(node)
    except RpfsError as e:
        errors.append(f"{shown}: {e}")
        return
    arcname = folder + names.claim(zip_name(name), kind == "symlink")
    if kind == "dir":
        yield from writer.entry(arcname + "/", stat.S_IFDIR | 0o755, mtime, 0, [])
        inside = FolderNames()
        within = ancestors | {node.key}
        try:
            for child in children:
                yield from _add(writer, inside, arcname + "/", child.name, child, errors, within)
        except RpfsError as e:  # the listing broke part way: what was listed is in
            errors.append(f"{arcname}/: {e}")
    elif kind == "symlink":
        yield from writer.entry(arcname, stat.S_IFLNK | 0o777, mtime, len(target), [target])
    else:
        yield from writer.entry(arcname, stat.S_IFREG | 0o644, mtime, stream.size,
                                _blocks(stream))


def _blocks(stream) -> Iterator[bytes]:
    pos = 0
    while pos < stream.size:
        data = stream.read(pos, min(BLOCK, stream.size - pos))
        if not data:
            raise RpfsError(f"{stream.name}: unexpected end of data at offset {pos}")
        yield data
        pos += len(data)
