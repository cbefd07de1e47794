"""The internal log: where its head is, whether it is clean, and the records between its
tail and head (what the kernel would replay at mount).

Every 512-byte log block carries the cycle number of the pass that wrote it in its first
word (a record header keeps it at offset 4 and saves the data blocks' first words in its
cycle data), so the head is found as the kernel finds it: the first block whose cycle is
older than block 0's (binary search). The record before the head says whether the file
system was unmounted (an unmount record) and where the tail is.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator

from streams.errors import FormatError

if TYPE_CHECKING:
    from .volume import Volume

BB = 512
HEADER_MAGIC = 0xFEEDBABE
UNMOUNT_TRANS = 0x20
CYCLE_SIZE = 32768
CYCLE_WORDS = CYCLE_SIZE // BB
MAX_BACK = 8192      # log blocks searched back from the head for a record header
MAX_RECORD = 256 * 1024


@dataclass(frozen=True)
class Record:
    block: int        # log block of the header
    lsn: int
    tail_lsn: int
    num_ops: int
    data: bytes       # the record's payload, first words restored


class Log:
    def __init__(self, vol: "Volume"):
        sb = vol.sb
        self.vol = vol
        self.base = sb.fsb_to_byte(sb.logstart)
        self.nbb = sb.logblocks * sb.block_size // BB
        if sb.logstart == 0 or self.nbb < 2:
            raise FormatError("no internal log", source=vol.name, structure="XFS log",
                              offset=self.base)

    def block(self, i: int) -> bytes:
        at = self.base + (i % self.nbb) * BB
        if at + BB > min(self.vol.size, self.vol.base.size):
            raise FormatError("log block outside the volume", source=self.vol.name,
                              structure=f"XFS log block {i % self.nbb}", offset=at)
        return self.vol.base.read(at, BB)

    def blocks(self, i: int, n: int) -> bytes:
        return b"".join(self.block(i + k) for k in range(n))

    def cycle(self, i: int) -> int:
        b = self.block(i)
        word = struct.unpack_from(">I", b, 0)[0]
        return struct.unpack_from(">I", b, 4)[0] if word == HEADER_MAGIC else word

    def head(self) -> int | None:
        """The block the next record would be written at (None: never written)."""
        first, last = self.cycle(0), self.cycle(self.nbb - 1)
        if first == 0:
            return None
        if first == last:
            return 0
        lo, hi = 0, self.nbb - 1       # [0, head) carry `first`, the rest `first - 1`
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self.cycle(mid) == first:
                lo = mid
            else:
                hi = mid
        return hi

    def record_at(self, i: int) -> Record:
        """The record whose header is at log block ``i``."""
        h = self.block(i)
        where = f"XFS log record at block {i % self.nbb}"
        if struct.unpack_from(">I", h, 0)[0] != HEADER_MAGIC:
            raise FormatError("no record header", source=self.vol.name, structure=where,
                              offset=self.base + (i % self.nbb) * BB)
        version, length = struct.unpack_from(">iI", h, 8)
        lsn, tail = struct.unpack_from(">QQ", h, 16)
        num_ops = struct.unpack_from(">i", h, 40)[0]
        h_size = struct.unpack_from(">I", h, 320)[0]
        if length > MAX_RECORD or num_ops < 0 or num_ops > length:
            raise FormatError(f"record of {length} bytes, {num_ops} operations",
                              source=self.vol.name, structure=where)
        hblks = max(1, -(-h_size // CYCLE_SIZE)) if version & 2 and h_size <= MAX_RECORD else 1
        nblocks = -(-length // BB)
        data = bytearray(self.blocks(i + hblks, nblocks))
        ext = [self.block(i + k) for k in range(1, hblks)]
        for j in range(nblocks):
            if j < CYCLE_WORDS:
                word = h[44 + 4 * j:48 + 4 * j]
            else:
                k, w = divmod(j, CYCLE_WORDS)
                if k - 1 >= len(ext):
                    raise FormatError("record longer than its headers describe",
                                      source=self.vol.name, structure=where)
                word = ext[k - 1][4 + 4 * w:8 + 4 * w]
            data[j * BB:j * BB + 4] = word
        return Record(i % self.nbb, lsn, tail, num_ops, bytes(data[:length]))

    def size_of(self, rec: Record) -> int:
        """Log blocks taken by ``rec`` (headers and data)."""
        h = self.block(rec.block)
        version = struct.unpack_from(">i", h, 8)[0]
        h_size = struct.unpack_from(">I", h, 320)[0]
        hblks = max(1, -(-h_size // CYCLE_SIZE)) if version & 2 and h_size <= MAX_RECORD else 1
        return hblks + -(-len(rec.data) // BB)

    def last_record(self, head: int) -> Record | None:
        for back in range(1, min(MAX_BACK, self.nbb) + 1):
            i = (head - back) % self.nbb
            if struct.unpack_from(">I", self.block(i), 0)[0] == HEADER_MAGIC:
                return self.record_at(i)
        return None

    def records(self, tail: int, head: int) -> Iterator[Record]:
        """Every record from the tail block up to the head."""
        i, walked = tail, 0
        while i % self.nbb != head % self.nbb and walked <= self.nbb:
            rec = self.record_at(i)
            n = self.size_of(rec)
            yield rec
            i = (i + n) % self.nbb
            walked += n


def is_unmount(rec: Record) -> bool:
    """One operation flagged as an unmount record."""
    return rec.num_ops >= 1 and len(rec.data) >= 12 and bool(rec.data[9] & UNMOUNT_TRANS)


def log_state(vol: "Volume") -> tuple[str, Log | None, Record | None]:
    """(state, the log, the record before the head) for a volume."""
    if vol.sb.logstart == 0:
        return "external log (not checked)", None, None
    log = Log(vol)
    head = log.head()
    if head is None:
        return "log never written", log, None
    last = log.last_record(head)
    if last is None:
        return "needs log recovery (no record header found near the log head)", log, None
    if is_unmount(last):
        return "clean", log, last
    return "needs log recovery", log, last
