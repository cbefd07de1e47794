"""VHDX log replay in memory ([MS-VHDX] 2.3): a file with a non-empty log is read as
Hyper-V would see it after replaying, without ever writing the file.

``replay_log`` finds the active sequence (the newest valid, complete run of entries whose
head's tail lies inside it) and returns a ``LogOverlay``: the file's bytes with the logged
4 KiB sector writes and zeroed ranges laid over them, grown to the head's LastFileOffset.
"""

from __future__ import annotations

import bisect
import struct
import uuid
from dataclasses import dataclass

from streams.errors import FormatError, UnsupportedError
from streams.stream import DATA, ZERO, Extent, Stream

from .structures import (
    LOG_DATA_DESC_SIGNATURE, LOG_DATA_SECTOR_SIGNATURE, LOG_DESCRIPTOR_SIZE,
    LOG_ENTRY_HEADER_SIZE, LOG_ENTRY_SIGNATURE, LOG_SECTOR, LOG_ZERO_DESC_SIGNATURE, MiB,
    LogDescriptor, LogEntryHeader, checksum_with_field_zeroed,
)

MAX_LOG_LENGTH = 16 * MiB          # Hyper-V and qemu write 1 MiB logs; read whole into memory
MAX_ENTRY_PADDING = 64 * 1024      # entries may be aligned to at most 64 KiB host sectors
MAX_FILE_OFFSET = 1 << 50          # anything a log points beyond this is hostile
MAX_ENTRY_VISITS = 1_000_000       # bounds the active-sequence search on crafted logs


class NoActiveSequence(FormatError):
    """The header names a log but no valid, complete sequence carries its LogGuid."""


@dataclass(frozen=True)
class LogEntry:
    start: int          # offset in the log
    length: int
    sequence: int
    tail: int
    flushed_file_offset: int
    last_file_offset: int
    ops: tuple          # ("data", file_offset, 4096 bytes) | ("zero", file_offset, length)


class _Log:
    """Reads and validates entries of the circular log (wrapping at its end)."""

    def __init__(self, stream: Stream, offset: int, length: int, log_guid: uuid.UUID):
        self.stream = stream
        self.offset = offset
        self.length = length
        self.log_guid = log_guid
        self._cache: dict[int, LogEntry | None] = {}
        ring = stream.read(offset, length)
        if len(ring) != length:
            raise FormatError("log region extends past end of file",
                              source=stream.name, structure="VHDX log", offset=offset)
        self._ring = memoryview(ring + ring)   # entries may wrap: read them from the doubled ring

    def read(self, pos: int, n: int) -> memoryview:
        return self._ring[pos:pos + n]

    def entry_at(self, pos: int) -> LogEntry | None:
        if pos not in self._cache:
            self._cache[pos] = self._parse(pos)
        return self._cache[pos]

    def _parse(self, pos: int) -> LogEntry | None:
        """The valid entry at ``pos``, or None: invalid entries are normal (stale or torn)."""
        try:
            head = self.read(pos, LOG_SECTOR)
            h = LogEntryHeader.parse(head)
        except struct.error:   # a short read at the end of the ring
            return None
        if h.signature != LOG_ENTRY_SIGNATURE or h.log_guid != self.log_guid:
            return None
        size = h.entry_length
        if size < LOG_SECTOR or size % LOG_SECTOR or size > self.length:
            return None
        if h.tail % LOG_SECTOR or h.tail >= self.length or h.sequence_number == 0:
            return None
        if h.flushed_file_offset > MAX_FILE_OFFSET or h.last_file_offset > MAX_FILE_OFFSET:
            return None
        count = h.descriptor_count
        sectors = size // LOG_SECTOR
        desc_sectors = -(-(LOG_ENTRY_HEADER_SIZE + LOG_DESCRIPTOR_SIZE * count) // LOG_SECTOR)
        if desc_sectors > sectors:
            return None
        # Cheap structural checks before summing the whole entry: one data sector per data
        # descriptor, and no more padding than a 64 KiB alignment needs.
        descs = self.read(pos, desc_sectors * LOG_SECTOR)
        data_count = sum(
            bytes(descs[LOG_ENTRY_HEADER_SIZE + LOG_DESCRIPTOR_SIZE * i:][:4]) == LOG_DATA_DESC_SIGNATURE
            for i in range(count))
        used = (desc_sectors + data_count) * LOG_SECTOR
        if used > size or size > used + MAX_ENTRY_PADDING:
            return None
        body = head if size == LOG_SECTOR else self.read(pos, size)
        if checksum_with_field_zeroed(body) != h.checksum:
            return None
        ops = []
        data_index = desc_sectors
        for i in range(count):
            d = LogDescriptor.parse(body[LOG_ENTRY_HEADER_SIZE + LOG_DESCRIPTOR_SIZE * i:])
            if d.sequence_number != h.sequence_number or d.file_offset % LOG_SECTOR:
                return None
            if d.signature == LOG_ZERO_DESC_SIGNATURE:
                length = int.from_bytes(d.leading_bytes, "little")
                if length % LOG_SECTOR or d.file_offset + length > MAX_FILE_OFFSET:
                    return None
                if length:
                    ops.append(("zero", d.file_offset, length))
            elif d.signature == LOG_DATA_DESC_SIGNATURE:
                if data_index >= sectors or d.file_offset + LOG_SECTOR > MAX_FILE_OFFSET:
                    return None
                sector = body[data_index * LOG_SECTOR:(data_index + 1) * LOG_SECTOR]
                data_index += 1
                if (bytes(sector[:4]) != LOG_DATA_SECTOR_SIGNATURE
                        or int.from_bytes(sector[4:8], "little") != h.sequence_number >> 32
                        or int.from_bytes(sector[4092:], "little") != h.sequence_number & 0xFFFFFFFF):
                    return None
                ops.append(("data", d.file_offset, d.leading_bytes + bytes(sector[8:4092]) + d.trailing_bytes))
            else:
                return None
        return LogEntry(pos, size, h.sequence_number, h.tail, h.flushed_file_offset,
                        h.last_file_offset, tuple(ops))


def find_active_sequence(log: _Log) -> list[LogEntry]:
    """The spec's search (2.3.3): scan every tail position once around the ring."""
    candidate: list[LogEntry] = []
    candidate_seq = 0
    current_tail = old_tail = 0
    visits = 0
    while True:
        entries: list[LogEntry] = []
        pos = current_tail
        covered = 0
        while True:
            visits += 1
            if visits > MAX_ENTRY_VISITS:
                raise FormatError("log too complex to search", source=log.stream.name,
                                  structure="VHDX log", offset=log.offset)
            e = log.entry_at(pos)
            if e is None or (entries and e.sequence != entries[-1].sequence + 1):
                break
            if covered + e.length > log.length:   # a sequence cannot lap the ring
                break
            entries.append(e)
            covered += e.length
            pos = (pos + e.length) % log.length
        valid = False
        if entries:
            starts = [e.start for e in entries]
            head = entries[-1]
            if head.tail in starts:
                valid = True
                if head.sequence > candidate_seq:
                    candidate = entries[starts.index(head.tail):]
                    candidate_seq = head.sequence
        if valid:
            current_tail = pos
        else:
            current_tail = (current_tail + LOG_SECTOR) % log.length
        if current_tail <= old_tail:
            break
        old_tail = current_tail
    return candidate


def replay_log(stream: Stream, log_offset: int, log_length: int, log_guid: uuid.UUID) -> "LogOverlay":
    """The file as it reads after replaying its log (never written back)."""
    where = dict(source=stream.name, structure="VHDX log", offset=log_offset)
    if log_length > MAX_LOG_LENGTH:
        raise UnsupportedError(f"log of {log_length} bytes is larger than supported", **where)
    if log_length < LOG_SECTOR or log_length % LOG_SECTOR:
        raise FormatError(f"bad log length {log_length}", **where)
    if log_offset + log_length > stream.size:
        raise FormatError("log region extends past end of file", **where)
    log = _Log(stream, log_offset, log_length, log_guid)
    entries = find_active_sequence(log)
    if not entries:
        raise NoActiveSequence("log is not empty but holds no valid sequence", **where)
    head = entries[-1]
    if stream.size < head.flushed_file_offset:
        raise FormatError(f"file truncated: log says it was at least {head.flushed_file_offset} bytes",
                          **where)
    ops = [op for e in entries for op in e.ops]
    return LogOverlay(stream, ops, head.last_file_offset, sequence=(entries[0].sequence, head.sequence))


class LogOverlay(Stream):
    """``base`` with logged writes laid over it; reads past the base's end are zeros."""

    def __init__(self, base: Stream, ops, last_file_offset: int = 0, sequence=None):
        self.base = base
        self.name = base.name
        self.sequence = sequence
        data: dict[int, bytes] = {}
        zeros: list[tuple[int, int]] = []
        end = max(base.size, last_file_offset)
        for kind, off, payload in ops:
            if kind == "data":
                data[off // LOG_SECTOR] = payload
                end = max(end, off + LOG_SECTOR)
            else:
                first, last = off // LOG_SECTOR, (off + payload) // LOG_SECTOR
                if last - first < len(data):
                    for s in range(first, last):
                        data.pop(s, None)
                else:
                    for s in [s for s in data if first <= s < last]:
                        del data[s]
                zeros.append((off, off + payload))
                end = max(end, off + payload)
        self.size = end
        self.patches = _patches(data, zeros)
        self._starts = [p[0] for p in self.patches]

    def _readinto(self, offset: int, view: memoryview) -> None:
        n = len(view)
        base_n = max(0, min(n, self.base.size - offset))
        if base_n:
            got = self.base.readinto(offset, view[:base_n])
            if got != base_n:
                raise FormatError(f"short read: wanted {base_n} bytes, got {got}",
                                  source=self.name, structure="file", offset=offset)
        if base_n < n:
            view[base_n:n] = bytes(n - base_n)
        end = offset + n
        i = max(0, bisect.bisect_right(self._starts, offset) - 1)
        while i < len(self.patches) and self.patches[i][0] < end:
            start, stop, payload = self.patches[i]
            a, b = max(start, offset), min(stop, end)
            if a < b:
                if payload is None:
                    view[a - offset:b - offset] = bytes(b - a)
                else:
                    view[a - offset:b - offset] = payload[a - start:b - start]
            i += 1

    def _extents(self, offset: int, end: int):
        pieces: list[Extent] = []
        if offset < min(end, self.base.size):
            pieces.extend(self.base.extents(offset, min(end, self.base.size) - offset))
        if max(offset, self.base.size) < end:
            a = max(offset, self.base.size)
            pieces.append(Extent(a, end - a, ZERO))
        # Patched ranges are reported as data (they may hold zeros; that is allowed).
        for e in pieces:
            if e.kind == DATA:
                yield e
                continue
            pos = e.offset
            i = max(0, bisect.bisect_right(self._starts, pos) - 1)
            while i < len(self.patches) and self.patches[i][0] < e.end:
                start, stop, _ = self.patches[i]
                a, b = max(start, pos), min(stop, e.end)
                if a < b:
                    if a > pos:
                        yield Extent(pos, a - pos, ZERO)
                    yield Extent(a, b - a, DATA)
                    pos = b
                i += 1
            if pos < e.end:
                yield Extent(pos, e.end - pos, ZERO)


def _patches(data: dict[int, bytes], zeros: list[tuple[int, int]]):
    """Disjoint sorted (start, end, bytes | None) ranges: data sectors win over zeroed ranges."""
    out: list[tuple[int, int, bytes | None]] = []
    keys = sorted(data)
    # coalesce consecutive data sectors
    runs: list[tuple[int, int, bytes]] = []
    i = 0
    while i < len(keys):
        j = i
        while j + 1 < len(keys) and keys[j + 1] == keys[j] + 1:
            j += 1
        runs.append((keys[i] * LOG_SECTOR, (keys[j] + 1) * LOG_SECTOR,
                     b"".join(data[k] for k in keys[i:j + 1])))
        i = j + 1
    merged: list[list[int]] = []
    for a, b in sorted(zeros):
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    run_starts = [r[0] for r in runs]
    for a, b in merged:  # subtract data runs from each zero range
        k = max(0, bisect.bisect_right(run_starts, a) - 1)
        pos = a
        while k < len(runs) and runs[k][0] < b:
            ra, rb, _ = runs[k]
            if rb > pos:
                if ra > pos:
                    out.append((pos, ra, None))
                pos = max(pos, rb)
            k += 1
        if pos < b:
            out.append((pos, b, None))
    out.extend(runs)
    out.sort(key=lambda p: p[0])
    return out
