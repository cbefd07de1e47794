"""Which sectors of a BitLocker volume hold ciphertext, as Windows records it.

A volume whose conversion (encryption or decryption) has not finished holds ciphertext in
some places and plaintext in others, and Windows records which is where in one of two ways:

* **Full-volume conversion** (Windows 7 and later, boot sector GUID ``4967d63b-...``): one
  watermark, ``encrypted_size`` in the FVE metadata block header. Bytes below it are
  encrypted, bytes at or past it are not. While a conversion runs (``current_state`` 2),
  the ``convert_size`` bytes at the watermark are being rewritten and are read as neither.
* **Used space only / encrypt on write** (Windows 8 and later, GUID ``92a84d3b-...``): the
  boot sector names two copies of an ``FVE-EOW`` block (after the three metadata offsets).
  It gives a chunk size (8 MiB from Windows) and one ``FVE-EOWBM`` bitmap per region of the
  volume; each bitmap keeps two ``FVE-EOWBR`` records, the one with the higher sequence
  number being current, and in it bit *i* set means chunk *i* of the region is encrypted,
  clear means it is not. ``current_state`` stays 4 (encrypted) however far the conversion
  got, so only the bitmap says it. Each region also has a conversion log (``OLRDHEVF2``)
  with two slots; the slot with the higher sequence number names the chunk being converted
  (offset 0: none) and holds the first 16 bytes of each of its sectors as ciphertext.
  Windows fills it before it rewrites the chunk and empties it after the bitmap is updated,
  so a named chunk may be half converted. (Seen in Windows' own volumes, dissect.fve's
  ``eow_partial`` and ``decrypted``: the header block and the MFT mirror sit in plain chunks
  with their bits clear, and the log's samples decrypt to the data at the offset it names.)

Everything rpfs cannot decide with certainty — a chunk named by a conversion log, a region
whose bitmap or log is damaged (either record or slot: the damaged one may have been the
newer), the whole volume when both ``FVE-EOW`` copies are, a part of the volume no region
covers — is ``UNKNOWN``: reading it is an error (EIO in the mount),
never guessed bytes. The ``FVE-EOW`` blocks, bitmaps and logs read as zeros, like the FVE
metadata blocks. Every structure is checked with its CRC-32, as Windows does.
"""

from __future__ import annotations

import bisect
import zlib
from dataclasses import dataclass, field

from construct import Bytes, Int16ul, Int32ul, Int64ul, Struct

from streams.errors import FormatError
from streams.stream import Stream

ENCRYPTED, PLAIN, UNKNOWN = "encrypted", "plain", "unknown"

EOW_SIGNATURE = b"FVE-EOW\0"
BITMAP_SIGNATURE = b"FVE-EOWBM\0"
RECORD_SIGNATURE = b"FVE-EOWBR\0"
LOG_SIGNATURE = b"OLRDHEVF2\0"   # "FVEHDRLO" backwards, then "2"
MAX_BITMAP = 16 << 20            # bytes of one bitmap record: 128 Mi chunks (1 PiB at 8 MiB)
STATE_CONVERTING = 2             # current_state while a full-volume conversion runs

EOW_INFO = Struct(               # 56 bytes, then (size - header_size) / 8 bitmap offsets
    "signature" / Bytes(8),
    "header_size" / Int16ul,
    "size" / Int16ul,
    "sector_size" / Int32ul,
    "sector_size2" / Int32ul,
    "chunk_size" / Int32ul,
    "log_size" / Int32ul,        # bytes of each region's conversion log
    "unknown" / Int32ul,
    "regions" / Int32ul,
    "crc32" / Int32ul,           # of the first ``size`` bytes with this field zero
    "copies" / Int64ul[2],
)
BITMAP = Struct(                 # 60 bytes; CRC-32 over the bytes before the first record
    "signature" / Bytes(10),
    "header_size" / Int16ul,
    "size" / Int32ul,
    "index" / Int32ul,
    "region_offset" / Int64ul,
    "region_size" / Int64ul,
    "log_offset" / Int64ul,
    "records" / Int32ul[2],      # offsets of the two records, from the bitmap's start
    "record_size" / Int32ul,
    "crc32" / Int32ul,
)
RECORD = Struct(                 # 36 bytes, then the bitmap; CRC-32 over ``size`` bytes
    "signature" / Bytes(10),
    "header_size" / Int16ul,
    "size" / Int32ul,
    "bits" / Int32ul,
    "sequence" / Int64ul,
    "flags" / Int32ul,
    "crc32" / Int32ul,
)
LOG_HEADER = Struct(             # first (and last) sector of a conversion log
    "signature" / Bytes(10),
    "version" / Int16ul,
    "slots" / Int16ul,
    "sector_size" / Int32ul,
    "volume_size" / Int64ul,
    "chunk_size" / Int32ul,
    "slot_size" / Int32ul,       # a record sector, then 16 bytes per sector of the chunk
    "record_size" / Int32ul,
    "unknown" / Int32ul,         # 2 (as many as the slots?)
    "region_offset" / Int64ul,
)                                # the slots follow this sector; a copy of it ends the log
LOG_RECORD = Struct(             # 32 bytes at the start of each slot
    "size" / Int16ul,
    "version" / Int16ul,
    "sequence" / Int32ul,
    "unknown" / Int32ul,
    "offset" / Int64ul,          # the chunk being converted; 0 when none is
    "length" / Int32ul,          # bytes of samples that follow: 16 per sector
    "data_crc32" / Int32ul,
    "crc32" / Int32ul,           # of the 28 bytes before it
)


@dataclass
class Part:
    """``start .. end`` of the volume in one ``state``; or, when ``bits`` is set, a bitmap
    region whose chunk *i* is encrypted when bit *i* is set (chunks that overlap
    ``flight`` are unknown: a conversion was rewriting them)."""

    start: int
    end: int
    state: str
    why: str | None = None
    chunk: int = 0
    bits: bytes | None = None
    flight: tuple[int, int] | None = None

    def resolve(self, offset: int, end: int):
        """(start, end, state, why) runs of ``offset .. end`` (inside this part)."""
        if self.bits is None:
            yield offset, end, self.state, self.why
            return
        cur = None
        i = (offset - self.start) // self.chunk
        while offset < end:
            a = self.start + i * self.chunk
            b = min(a + self.chunk, self.end, end)
            if self.flight and a < self.flight[1] and self.flight[0] < a + self.chunk:
                run = (UNKNOWN, self.why)
            else:
                run = (ENCRYPTED if self.bits[i >> 3] >> (i & 7) & 1 else PLAIN, None)
            if cur is not None and cur[2:] == run:
                cur = (cur[0], b, *run)
            else:
                if cur is not None:
                    yield cur
                cur = (offset, b, *run)
            offset = b
            i += 1
        if cur is not None:
            yield cur


@dataclass
class ConversionMap:
    """The state of every byte of the volume: ``parts`` sorted and contiguous from 0 to
    ``size``; ``reserved`` areas read as zeros; ``summary`` is what ``rpfs info`` shows."""

    size: int
    parts: list[Part]
    reserved: list[tuple[int, int]] = field(default_factory=list)
    summary: dict = field(default_factory=dict)

    def __post_init__(self):
        self._starts = [p.start for p in self.parts]

    def state_runs(self, offset: int, length: int):
        """(start, end, state, why) runs covering ``offset .. offset + length``, neighbours
        in the same state merged; a read costs one step per part and per chunk it crosses,
        never a walk of the bitmap."""
        cur = None
        for run in self._runs(offset, offset + length):
            if cur is not None and cur[1] == run[0] and cur[2:] == run[2:]:
                cur = (cur[0], run[1], *run[2:])
                continue
            if cur is not None:
                yield cur
            cur = run
        if cur is not None:
            yield cur

    def _runs(self, offset: int, end: int):
        i = max(0, bisect.bisect_right(self._starts, offset) - 1)
        while offset < end and i < len(self.parts):
            p = self.parts[i]
            if p.end > offset:
                stop = min(p.end, end)
                yield from p.resolve(max(offset, p.start), stop)
                offset = stop
            i += 1
        if offset < end:
            yield offset, end, UNKNOWN, "past the end of the recorded conversion state"

    def encrypted(self, offset: int, length: int) -> bool:
        """Whether all of ``offset .. offset + length`` is ciphertext (the fast path)."""
        i = bisect.bisect_right(self._starts, offset) - 1
        if i < 0:
            return False
        p = self.parts[i]
        if offset + length > p.end:
            return False
        if p.bits is None:
            return p.state == ENCRYPTED
        runs = p.resolve(offset, offset + length)
        first = next(runs)
        return first[2] == ENCRYPTED and first[1] == offset + length


def watermark(meta, size: int) -> ConversionMap:
    """A full-volume conversion: encrypted below ``encrypted_size``, plain above it; while
    a conversion runs, the ``convert_size`` bytes either side of the watermark are unknown
    (which side Windows is rewriting depends on the direction)."""
    if meta.current_state == 1 and not meta.encrypted_size:
        mark = 0  # decrypted: nothing is encrypted any more
    else:
        mark = min(meta.encrypted_size, size) if meta.encrypted_size else size
    parts = [Part(0, mark, ENCRYPTED), Part(mark, size, PLAIN)]
    ss = meta.sector_size
    if meta.version == 1 and meta.current_state not in (1, 4):
        why = (f"a Windows Vista volume whose conversion did not finish (state "
               f"{meta.current_state}): where it stopped is not known")
        return ConversionMap(size, [Part(0, size, UNKNOWN, why)],
                             summary={"conversion": "full volume", "damaged": why})
    if mark % ss:  # Windows converts whole sectors: a watermark inside one is damage
        down, up = mark - mark % ss, min(size, mark - mark % ss + ss)
        why = f"the encrypted size {mark:#x} is not a whole number of sectors"
        parts = [Part(0, down, ENCRYPTED), Part(down, up, UNKNOWN, why), Part(up, size, PLAIN)]
    if meta.current_state == STATE_CONVERTING and meta.convert_size:
        lo, hi = max(0, mark - meta.convert_size), min(size, mark + meta.convert_size)
        why = (f"a conversion was running over {lo:#x}-{hi:#x} (state 2, convert size "
               f"{meta.convert_size:#x}): its sectors may be either encrypted or not")
        parts = [Part(0, lo, ENCRYPTED), Part(lo, hi, UNKNOWN, why), Part(hi, size, PLAIN)]
    return ConversionMap(size, [p for p in parts if p.end > p.start],
                         summary={"conversion": "full volume", "encrypted_below": mark})


class _Damaged(Exception):
    """One EOW structure cannot be trusted (the message says why)."""


def used_space_only(stream: Stream, meta, size: int) -> ConversionMap:
    """The map of a used-space-only volume from its ``FVE-EOW`` block and bitmaps. Damage
    never raises here: what it hides becomes ``UNKNOWN`` (the volume opens, ``info`` says
    why, and reads there fail)."""
    ss = meta.sector_size
    reserved = [(off, ss) for off in dict.fromkeys(meta.eow_offsets)
                if off and off % ss == 0 and off + ss <= size]
    info, errors = None, []
    for off in dict.fromkeys(meta.eow_offsets):
        try:
            info = _eow_info(stream, off, ss, size)
            break
        except _Damaged as e:
            errors.append(f"{off:#x}: {e}")
    if info is None:
        why = ("used-space-only volume whose map of encrypted chunks (FVE-EOW at "
               + "; ".join(errors or ["no offset"]) + ") cannot be read, so no sector's "
               "state is known")
        return ConversionMap(size, [Part(0, size, UNKNOWN, why)], reserved,
                             {"conversion": "used space only", "damaged": why})
    head, bitmaps = info
    eow_bytes = -(-head.size // ss) * ss
    reserved = [(off, eow_bytes) for off in dict.fromkeys(head.copies)
                if off and off % ss == 0 and off + eow_bytes <= size]
    parts: list[Part] = []
    problems, in_flight, encrypted = [], [], 0
    for bm_off in dict.fromkeys(bitmaps):
        try:
            part, more = _region(stream, bm_off, head, ss, size)
        except _Damaged as e:
            problems.append(f"bitmap at {bm_off:#x}: {e}")
            continue
        reserved += more
        parts.append(part)
        if part.bits is None:
            problems.append(part.why)
            continue
        if part.flight:
            in_flight.append(f"{part.flight[0]:#x}-{part.flight[1]:#x}")
        chunks = -(-(part.end - part.start) // part.chunk)
        mask = int.from_bytes(part.bits, "little") & ((1 << chunks) - 1)
        encrypted += mask.bit_count()
    parts.sort(key=lambda p: p.start)
    filled, pos = [], 0
    for p in parts:
        if p.start < pos:
            why = f"regions of the used-space-only map overlap at {p.start:#x}"
            return ConversionMap(size, [Part(0, size, UNKNOWN, why)], reserved,
                                 {"conversion": "used space only", "damaged": why})
        if p.start > pos:
            filled.append(Part(pos, p.start, UNKNOWN,
                               f"no region of the used-space-only map covers {pos:#x}-{p.start:#x}"))
        filled.append(p)
        pos = p.end
    if pos < size:
        filled.append(Part(pos, size, UNKNOWN,
                           f"no region of the used-space-only map covers {pos:#x}-{size:#x}"))
    summary = {"conversion": "used space only", "chunk_size": head.chunk_size,
               "regions": len(parts), "encrypted_chunks": encrypted, "in_flight": in_flight}
    if problems:
        summary["damaged"] = "; ".join(problems)
    return ConversionMap(size, filled, sorted(set(reserved)), summary)


def _eow_info(stream: Stream, offset: int, ss: int, size: int):
    if offset <= 0 or offset % ss or offset + 512 > size:
        raise _Damaged("outside the volume")
    raw = stream.read(offset, 4096 if offset + 4096 <= size else 512)
    head = EOW_INFO.parse(raw)
    if head.signature != EOW_SIGNATURE:
        raise _Damaged("no FVE-EOW signature")
    if head.header_size != EOW_INFO.sizeof() or not head.header_size <= head.size <= len(raw) \
            or (head.size - head.header_size) % 8:
        raise _Damaged(f"sizes {head.header_size}/{head.size} are inconsistent")
    if _crc(raw[:head.size], 0x24) != head.crc32:
        raise _Damaged("CRC-32 does not match")
    if head.chunk_size < ss or head.chunk_size % ss or head.sector_size != ss:
        raise _Damaged(f"chunk size {head.chunk_size:#x} / sector size {head.sector_size} "
                       "do not fit the volume")
    n = (head.size - head.header_size) // 8
    bitmaps = [int.from_bytes(raw[head.header_size + 8 * i:head.header_size + 8 * i + 8],
                              "little") for i in range(n)]
    return head, bitmaps


def _crc(data: bytes, at: int) -> int:
    """CRC-32 of ``data`` with the 4-byte CRC field at ``at`` taken as zero."""
    return zlib.crc32(bytes(data[:at]) + bytes(4) + bytes(data[at + 4:]))


def _region(stream: Stream, offset: int, head, ss: int, size: int) -> tuple[Part, list]:
    """One bitmap's region as a Part, and the areas the bitmap and its log take."""
    if offset <= 0 or offset % ss or offset + 512 > size:
        raise _Damaged("outside the volume")
    bm = BITMAP.parse(stream.read(offset, 512))
    if bm.signature != BITMAP_SIGNATURE:
        raise _Damaged("no FVE-EOWBM signature")
    rstart, rsize = bm.region_offset, bm.region_size
    if not (0 < rsize and rstart + rsize <= size) or (rstart | rsize) % ss:
        raise _Damaged(f"region {rstart:#x}+{rsize:#x} is outside the volume or not whole sectors")
    where = f"region {rstart:#x}-{rstart + rsize:#x}"
    if not (bm.header_size == BITMAP.sizeof() <= min(bm.records)
            and bm.record_size >= RECORD.sizeof()
            and max(bm.records) + bm.record_size <= bm.size <= MAX_BITMAP + 4096
            and offset + bm.size <= size):
        raise _Damaged(f"{where}: sizes are inconsistent")
    raw = stream.read(offset, bm.size)
    if _crc(raw[:min(bm.records)], 56) != bm.crc32:
        raise _Damaged(f"{where}: CRC-32 does not match")
    reserved = [(offset, -(-bm.size // ss) * ss)]

    def unknown(why):
        return Part(rstart, rstart + rsize, UNKNOWN, f"{where}: {why}"), reserved

    # Both records must be intact: a damaged one may have been the newer, and the older
    # one's bits would then be wrong for the chunk converted in between.
    chunks = -(-rsize // head.chunk_size)
    best = None
    for n, at in enumerate(bm.records):
        rec = RECORD.parse(raw[at:])
        if rec.signature != RECORD_SIGNATURE or rec.header_size != RECORD.sizeof() \
                or not rec.header_size <= rec.size <= bm.record_size \
                or rec.bits < chunks or rec.size - rec.header_size < -(-rec.bits // 8) \
                or _crc(raw[at:at + rec.size], 32) != rec.crc32:
            return unknown(f"record {n + 1} of its bitmap (at {offset + at:#x}) is damaged, "
                           "so which chunks are encrypted is unknown")
        if best is None or rec.sequence > best[0].sequence:
            best = (rec, bytes(raw[at + rec.header_size:at + rec.size]))
    log = bm.log_offset
    if not (head.log_size and log > 0 and log % ss == 0 and log + head.log_size <= size):
        return unknown(f"its conversion log at {log:#x} is outside the volume")
    reserved.append((log, -(-head.log_size // ss) * ss))
    try:
        busy = _busy(stream, log, head, ss, rstart)
    except _Damaged as e:
        return unknown(f"its conversion log at {log:#x} cannot be read ({e})")
    why = None
    if busy is not None:
        lo, hi = busy
        if not (rstart <= lo < hi <= rstart + rsize):
            return unknown(f"its conversion log names {lo:#x}-{hi:#x}, outside the region")
        why = (f"{where}: a chunk was being converted when the copy was taken (conversion "
               f"log at {log:#x}), so its sectors may be either encrypted or not")
    return Part(rstart, rstart + rsize, "bitmap", why, head.chunk_size, best[1], busy), reserved


def _busy(stream: Stream, offset: int, head, ss: int, region: int) -> tuple[int, int] | None:
    """The range the conversion log says is being converted, or None when it is idle."""
    first = stream.read(offset, 512)
    h = LOG_HEADER.parse(first)
    if h.signature != LOG_SIGNATURE:
        raise _Damaged("no OLRDHEVF2 signature")
    if not (h.sector_size == ss and 1 <= h.slots <= 16 and h.slot_size >= 512
            and ss + h.slots * h.slot_size <= head.log_size):
        raise _Damaged("sizes are inconsistent")
    if h.region_offset != region:
        raise _Damaged(f"it belongs to the region at {h.region_offset:#x}")
    best = None
    for i in range(h.slots):  # all intact, or the newest one may be the damaged one
        at = offset + ss + i * h.slot_size
        raw = stream.read(at, LOG_RECORD.sizeof())
        rec = LOG_RECORD.parse(raw)
        if rec.size != LOG_RECORD.sizeof() or zlib.crc32(raw[:28]) != rec.crc32:
            raise _Damaged(f"slot {i + 1} (at {at:#x}) is damaged")
        if best is None or rec.sequence > best.sequence:
            best = rec
    if best.offset == 0:
        return None
    if best.offset % ss or best.length % 16 or not best.length:
        raise _Damaged(f"its current slot names {best.offset:#x}+{best.length:#x}")
    return best.offset, best.offset + best.length // 16 * ss
