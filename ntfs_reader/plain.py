"""A directory's plain files as a restore writes them: one C call per directory
(``_ntfsparse.plain_files``) turns the listing's record numbers and the $MFT blocks holding
them into arrays of sizes, times and where each file's bytes lie, so a walk of many small
files makes no node, entry or stream per file. ``plain_files_python`` is its reference twin.

A child is "plain" (status BYTES or VOLUME) when its record is a base record in use as a
file (not a directory), with the index's sequence, one name outside the DOS namespace, no
attribute list, no reparse point, not encrypted, not a possible Interix symlink, times that
fit 64 bits of ns, and one unnamed $DATA of at most ``max_size`` bytes that is resident
(BYTES: the value) or empty (BYTES, no bytes), or lies whole in one run on the volume below
its valid data length (VOLUME: at that byte). Everything else is NODE: the caller goes
through the node, which reads it the general way and reports any damage.
"""

from __future__ import annotations

import struct
from array import array
from collections import namedtuple

from streams.errors import FormatError

from . import native
from .attrs import FILE_ATTRIBUTE_ENCRYPTED, FILE_ATTRIBUTE_SYSTEM, NS_DOS
from .record import (AT_ATTRIBUTE_LIST, AT_DATA, AT_FILE_NAME, AT_REPARSE_POINT,
                     AT_STANDARD_INFORMATION, ATTR_COMPRESSED, ATTR_ENCRYPTED, REC_DIRECTORY,
                     REC_IN_USE, parse_record_python)
from .runlist import decode_runlist_python

NODE, BYTES, VOLUME = 0, 1, 2
NT_EPOCH_OFFSET = 116_444_736_000_000_000
INT64 = 1 << 63


class PlainFiles(namedtuple("PlainFiles", "status sizes at times data")):
    """Per child i: ``status[i]`` (bytes); ``sizes[i]``; ``at[i]`` (BYTES: offset in
    ``data``; VOLUME: byte offset on the volume); ``times[2 * i]``, ``times[2 * i + 1]``:
    atime and mtime in ns since 1970 (these three arrays); ``data``: the resident values
    one after the other (bytes)."""

    __slots__ = ()

    @classmethod
    def from_bytes(cls, parts: tuple) -> "PlainFiles":
        status, sizes, at, times, data = parts
        out = []
        for raw in (sizes, at, times):
            a = array("q")
            a.frombytes(raw)
            out.append(a)
        return cls(bytes(status), out[0], out[1], out[2], bytes(data))


def plain_files(blocks: dict, block_size: int, record_size: int, records: int, numbers: array,
                sequences: array, cluster_size: int, total_clusters: int,
                max_size: int) -> PlainFiles:
    """See the module docstring; ``blocks``: block number -> $MFT bytes from
    ``block * block_size`` (a missing block: NODE for its records)."""
    p = native.parser
    fn = None if p is None else getattr(p, "plain_files", None)
    if fn is None:    # not built, or built before this function
        return plain_files_python(blocks, block_size, record_size, records, numbers,
                                  sequences, cluster_size, total_clusters, max_size)
    return PlainFiles.from_bytes(fn(blocks, block_size, record_size, records, numbers,
                                    sequences, cluster_size, total_clusters, max_size))


def plain_files_python(blocks: dict, block_size: int, record_size: int, records: int,
                       numbers, sequences, cluster_size: int, total_clusters: int,
                       max_size: int) -> PlainFiles:
    """The reference twin of plain_files."""
    if (record_size < 0x30 or record_size > 1 << 20 or block_size < record_size
            or block_size % record_size or cluster_size <= 0 or len(numbers) != len(sequences)):
        raise ValueError("plain_files: arrays or sizes do not fit")
    per = block_size // record_size
    status = bytearray(len(numbers))
    sizes, at, times = array("q", bytes(8 * len(numbers))), array("q", bytes(8 * len(numbers))), \
        array("q", bytes(16 * len(numbers)))
    data = bytearray()
    for i, (number, seq) in enumerate(zip(numbers, sequences)):
        if number >= records:
            continue
        block = blocks.get(number // per)
        start = number % per * record_size
        if block is None or start + record_size > len(block):
            continue
        got = plain_file_python(bytes(block[start:start + record_size]), number, seq,
                                cluster_size, total_clusters, max_size)
        if got is None:
            continue
        kind, size, where, atime, mtime = got
        if kind == BYTES and size:
            where, data = len(data), data + where
        status[i], sizes[i], at[i] = kind, size, where if kind == VOLUME else (
            where if size else 0)
        times[2 * i], times[2 * i + 1] = atime, mtime
    return PlainFiles(bytes(status), sizes, at, times, bytes(data))


def plain_file_python(record: bytes, number: int, sequence: int, cluster_size: int,
                      total_clusters: int, max_size: int):
    """(BYTES, size, value, atime, mtime) | (VOLUME, size, byte offset, atime, mtime) |
    None (the node path) for one record."""
    try:
        rec = parse_record_python(record, number, "<record>", 0)
    except FormatError:
        return None
    if rec.base_ref or rec.flags & (REC_IN_USE | REC_DIRECTORY) != REC_IN_USE:
        return None
    if sequence and rec.sequence != sequence:
        return None
    si = found = None
    si_seen = False
    nondos = 0
    for a in rec.attributes:
        if a.type in (AT_ATTRIBUTE_LIST, AT_REPARSE_POINT):
            return None
        if a.type == AT_STANDARD_INFORMATION and not si_seen:
            si_seen = True
            if a.name or not a.resident or len(a.value) < 48:
                return None
            si = a.value
        elif a.type == AT_FILE_NAME and a.resident:
            v = a.value
            if len(v) < 66 or v[64] == 0 or 66 + 2 * v[64] > len(v):
                return None
            nondos += v[65] != NS_DOS
        elif a.type == AT_DATA and a.name == "":
            if found is not None:
                return None
            found = a
    if si is None or found is None or nondos > 1:
        return None
    fattr = struct.unpack_from("<I", si, 32)[0]
    if fattr & FILE_ATTRIBUTE_SYSTEM or fattr & FILE_ATTRIBUTE_ENCRYPTED:
        return None        # a possible Interix symlink; EFS
    ns = []
    for off in (24, 8):    # accessed, modified
        ticks = struct.unpack_from("<Q", si, off)[0]
        value = (ticks - NT_EPOCH_OFFSET) * 100
        if ticks >= INT64 or not -INT64 <= value < INT64:
            return None
        ns.append(value)
    a = found
    if a.flags & ATTR_ENCRYPTED:
        return None
    if a.resident:
        if len(a.value) > max_size:
            return None
        return BYTES, len(a.value), bytes(a.value), ns[0], ns[1]
    if a.lowest_vcn != 0 or a.data_size > max_size or (a.flags & ATTR_COMPRESSED
                                                        and a.compression_unit):
        return None
    try:
        runs = decode_runlist_python(a.raw, a.pairs_at, a.pairs_end, 0, total_clusters)
    except FormatError:
        return None
    vcn = runs[-1][0] + runs[-1][1] if runs else 0
    if vcn >= INT64 or any(lcn is not None and lcn >= INT64 for _, _, lcn in runs):
        return None
    if runs and a.highest_vcn >= 0 and vcn - 1 < a.highest_vcn:
        return None        # the runlist ends before the header's highest VCN
    if a.data_size == 0:
        return BYTES, 0, b"", ns[0], ns[1]
    if not runs or a.initialized_size < a.data_size:
        return None
    _, length, lcn = runs[0]
    for _, n, next_lcn in runs[1:]:       # runs that continue the first on disk join it
        if lcn is None or next_lcn != lcn + length:
            break
        length += n
    if lcn is None or a.data_size > length * cluster_size:
        return None
    if lcn * cluster_size >= INT64:
        return None
    return VOLUME, a.data_size, lcn * cluster_size, ns[0], ns[1]
