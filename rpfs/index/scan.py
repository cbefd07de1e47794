"""What the index knows about one NTFS file, read from its MFT record(s) only.

A pass over ``$MFT`` (MftScan) reads it in 1 MiB pieces and hashes it in ``BLOCK``-byte
blocks; the records of a block whose hash equals the one stored for the previous recovery point of the
same volume are not parsed again (their rows are reused). Contents are never read: a
file's data is identified by a fingerprint of its attributes (size plus data runs, or the
resident bytes), which changes whenever NTFS writes the data somewhere else or the size
changes. An in-place rewrite keeps the runs but bumps the modification time, which is
part of what tells versions apart (see query.py).
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from blake3 import blake3

from ntfs_reader import names, native
from ntfs_reader.attrs import NS_DOS, parse_file_name, parse_standard_information
from ntfs_reader.record import (
    AT_ATTRIBUTE_LIST, AT_DATA, AT_FILE_NAME, AT_REPARSE_POINT, AT_STANDARD_INFORMATION,
    REC_DIRECTORY, REC_IN_USE, parse_record, ref_number, ref_sequence,
)
from ntfs_reader.reparse import (
    IO_REPARSE_TAG_LX_SYMLINK, IO_REPARSE_TAG_MOUNT_POINT, IO_REPARSE_TAG_SYMLINK,
)
from streams.errors import RpfsError
from rpfs.index.provenance import pieces, split
from rpfs.log import get_logger

log = get_logger(__name__)

BLOCK = 16 << 10          # MFT bytes per hashed block (16 records of 1 KiB)
READ = 1 << 20            # MFT bytes per read
FILE_ROOT = 5
FILE_EXTEND = 11
FIRST_USER_RECORD = 16
LINK_TAGS = (IO_REPARSE_TAG_SYMLINK, IO_REPARSE_TAG_MOUNT_POINT, IO_REPARSE_TAG_LX_SYMLINK)
_HDR = struct.Struct("<4sHHQHHHHIIQ")   # record header up to base_ref (see record.py)


@dataclass(frozen=True, slots=True)
class FileInfo:
    """One base MFT record in use: everything a row of the index holds but its path.

    ``links`` are the (parent record, parent sequence, Linux name) of every hard link
    (DOS 8.3 aliases left out); times are raw NT ticks from $STANDARD_INFORMATION.
    """

    ref: int
    seq: int
    kind: str                    # "file", "dir", "symlink"
    links: tuple
    size: int
    allocated: int
    created: int
    modified: int
    changed: int
    accessed: int
    attributes: int
    reparse_tag: int
    ads: str | None              # "name:size" joined by "/" (names cannot hold "/")
    fingerprint: bytes


class MftScan:
    """The records of one volume's ``$MFT`` that changed since ``old`` (block -> hash of
    the previous indexed state; None: everything), in two passes so that memory holds only
    the directories, not every file:

    1. ``__init__`` reads the whole $MFT once (but for the 1 MiB pieces stored as the same
       chunks as before, per provenance.py): the hash of every block (``hashes``), the
       numbers of the records in changed blocks plus the base records of changed extension
       records (``changed``), and the FileInfo of every changed directory (``dirs``);
    2. ``records()`` re-reads only the changed blocks (runs of them, up to ``READ`` bytes a
       read) and yields (number, FileInfo or None)
       for every record in ``changed``, extension records folded into their base records.

    ``everything``: every block counts as changed (hashes are still computed).
    """

    def __init__(self, volume, old: dict[int, tuple] | None, everything: bool = False):
        self.volume = volume
        self.record_size = rs = volume.record_size
        self.hashes: dict[int, tuple] = {}      # block -> (content hash, token or None)
        self.changed: set[int] = set()
        self.dirs: dict[int, FileInfo] = {}
        self.bytes_read = 0
        self._blocks: list[int] = []
        bases: set[int] = set()
        mft = volume._mft
        for off in range(0, mft.size, READ):
            n = min(READ, mft.size - off)
            found = pieces(mft, off, n)
            tokens = ([blake3(repr(b).encode()).digest(16) for b in split(found, BLOCK)]
                      if found is not None else [None] * -(-n // BLOCK))
            first = off // BLOCK
            if old is not None and not everything and found is not None and all(
                    old.get(first + j, (None, None))[1] == t for j, t in enumerate(tokens)):
                for j, t in enumerate(tokens):        # the same stored bytes: not read
                    self.hashes[first + j] = (old[first + j][0], t)
                continue
            data = mft.read(off, n)
            self.bytes_read += n
            for i in range(0, len(data), BLOCK):
                block = (off + i) // BLOCK
                h = blake3(data[i:i + BLOCK]).digest(16)
                self.hashes[block] = (h, tokens[i // BLOCK])
                if old is not None and old.get(block, (None,))[0] == h and not everything:
                    continue
                self._blocks.append(block)
                for at in range(i, min(i + BLOCK, len(data)), rs):
                    num = (off + at) // rs
                    self.changed.add(num)
                    flags, base_ref = _header(data, at)
                    if base_ref:
                        bases.add(ref_number(base_ref))
                    elif flags & REC_DIRECTORY:
                        info = _record(volume, num, data[at:at + rs])[0]
                        if info is not None and info.kind == "dir":
                            self.dirs[num] = info
        self._bases = bases - self.changed
        for num in self._bases:
            info = _record_by_number(volume, num)
            if info is not None and info.kind == "dir":
                self.dirs[num] = info
        self.changed |= self._bases

    def records(self):
        rs = self.record_size
        mft = self.volume._mft
        for start, count in _runs(self._blocks, READ // BLOCK):
            off = start * BLOCK
            data = mft.read(off, min(count * BLOCK, mft.size - off))
            for at in range(0, len(data), rs):
                num = (off + at) // rs
                info = self.dirs.get(num)
                yield num, info if info is not None else _record(self.volume, num, data[at:at + rs])[0]
        for num in self._bases:
            yield num, self.dirs.get(num) or _record_by_number(self.volume, num)


def _runs(blocks: list[int], most: int):
    """(first block, count) of each run of consecutive blocks (ascending), at most ``most``
    long: one read per run instead of one per block."""
    start = prev = None
    for b in blocks:
        if start is not None and b == prev + 1 and b - start < most:
            prev = b
            continue
        if start is not None:
            yield start, prev - start + 1
        start = prev = b
    if start is not None:
        yield start, prev - start + 1


def _header(data: bytes, at: int) -> tuple[int, int]:
    """(flags, base reference) of the record at ``at`` ((0, 0) if not a record in use)."""
    if data[at:at + 4] != b"FILE" or len(data) < at + 0x30:
        return 0, 0
    h = _HDR.unpack_from(data, at)
    return (h[7], h[10]) if h[7] & REC_IN_USE else (0, 0)


def _record(volume, num: int, raw: bytes):
    """(FileInfo or None, base record number if this is an extension record in use)."""
    flags, base_ref = _header(raw, 0)
    if not flags & REC_IN_USE:
        return None, None
    if base_ref:
        return None, ref_number(base_ref)
    if num < FIRST_USER_RECORD:
        return None, None
    p = native.parser
    if p is not None:
        summary = p.record_summary(raw, num)
        if summary is not None:
            return _from_summary(num, summary), None
    try:
        rec = parse_record(raw, num, volume.name, 0)
        if any(a.type == AT_ATTRIBUTE_LIST for a in rec.attributes):
            return _record_by_number(volume, num), None
        return file_info(volume, rec, rec.attributes), None
    except RpfsError as e:
        log.info("index: %s: MFT record %d skipped: %s", volume.name, num, e)
        return None, None


def _record_by_number(volume, num: int) -> FileInfo | None:
    try:
        fa = volume.file(num)
        if not fa.record.in_use or fa.record.base_ref or num < FIRST_USER_RECORD:
            return None
        return file_info(volume, fa.record, fa.attrs)
    except RpfsError as e:
        log.info("index: %s: MFT record %d skipped: %s", volume.name, num, e)
        return None


def file_info(volume, rec, attrs) -> FileInfo | None:
    """A FileInfo from a base record and all its attributes (None: no name, not a file)."""
    si = None
    links = []
    dos = []
    reparse_tag = 0
    size = allocated = 0
    ads = []
    fp = hashlib.blake2b(digest_size=16)
    interix = False
    for a in attrs:
        t = a.type
        if t == AT_STANDARD_INFORMATION and a.resident and si is None:
            si = parse_standard_information(a.value, {"source": volume.name,
                                                      "structure": f"MFT record {rec.number}",
                                                      "offset": None})
        elif t == AT_FILE_NAME and a.resident:
            fn = parse_file_name(a.value, {"source": volume.name,
                                           "structure": f"MFT record {rec.number}",
                                           "offset": None})
            link = (ref_number(fn.parent_ref), ref_sequence(fn.parent_ref),
                    names.from_raw(fn.raw_name))
            (dos if fn.namespace == NS_DOS else links).append(link)
        elif t == AT_REPARSE_POINT:
            value = a.value if a.resident else volume.read_attribute(volume.file(rec.number),
                                                                      AT_REPARSE_POINT)
            reparse_tag = struct.unpack_from("<I", value, 0)[0] if len(value) >= 4 else 0
            fp.update(b"R" + value)
        elif t == AT_DATA:
            fp.update(b"D" + a.name.encode("utf-16-le", "surrogatepass") + b"\0")
            if a.resident:
                fp.update(a.value)
            else:
                fp.update(struct.pack("<qqqq", a.lowest_vcn, a.data_size, a.initialized_size,
                                      a.compressed_size))
                fp.update(a.raw[a.pairs_at:a.pairs_end])
            if a.name == "":
                if a.resident or a.lowest_vcn == 0:
                    size = a.size
                    if not a.resident:
                        allocated = (a.compressed_size if a.compression_unit or a.flags & 0x8001
                                     else a.allocated_size)
                    elif a.value.startswith(b"IntxLNK\x01"):
                        interix = True
            elif a.resident or a.lowest_vcn == 0:
                ads.append(f"{names.to_linux(a.name)}:{a.size}")
    times = si.times if si else None
    return _file_info(rec.number, rec.sequence, rec.flags, si.file_attributes if si else 0,
                      tuple(times) if times else None, links or dos, reparse_tag, size,
                      allocated, interix, ads, fp.digest())


def _from_summary(num: int, s: tuple) -> FileInfo | None:
    """file_info from what the C parser read of a record (``record_summary`` in
    ntfs_reader/_ntfsparse.c: the same fields, in file_info's order and by its rules)."""
    seq, rflags, si, fns, reparse_tag, material, size, allocated, interix, streams = s
    links = []
    dos = []
    for parent, namespace, raw in fns:
        (dos if namespace == NS_DOS else links).append(
            (ref_number(parent), ref_sequence(parent), names.from_raw(raw)))
    ads = [f"{names.to_linux(name)}:{n}" for name, n in streams]
    return _file_info(num, seq, rflags, si[4] if si else 0, si[:4] if si else None,
                      links or dos, reparse_tag, size, allocated, interix, ads,
                      hashlib.blake2b(material, digest_size=16).digest())


def _file_info(num, seq, rflags, sattr, times, links, reparse_tag, size, allocated, interix,
               ads, fingerprint) -> FileInfo | None:
    if not links:
        return None
    if reparse_tag in LINK_TAGS or (interix and not reparse_tag and sattr & 0x4
                                    and not rflags & REC_DIRECTORY):
        kind = "symlink"
    elif rflags & REC_DIRECTORY:
        kind = "dir"
    else:
        kind = "file"
    if kind != "file":
        size = allocated = 0
    created, modified, changed, accessed = times or (0, 0, 0, 0)
    return FileInfo(
        num, seq, kind, tuple(links), size, allocated, created, modified, changed, accessed,
        sattr | (0x10 if rflags & REC_DIRECTORY else 0), reparse_tag, "/".join(ads) or None,
        fingerprint)
