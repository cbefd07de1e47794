"""jbd2 journal replay in memory (layouts from include/linux/jbd2.h, the order of
fs/jbd2/recovery.c).

A copy of a running guest's disk may hold transactions that were committed to the journal
but not yet written to their home blocks. The kernel replays them at the next mount; rpfs
does the same in memory: ``replay`` returns, for each file system block the journal would
overwrite, where its newest committed copy sits in the journal. The volume reads those
blocks from there instead of from home. Nothing is written.

Like the kernel: a scan from ``s_start`` with sequence ``s_sequence`` follows descriptor,
commit and revoke blocks while each carries the expected sequence; a transaction counts
only once its commit block is seen (and, with checksums, matches); a block revoked by a
transaction at or after the one that logged it is not replayed.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from ext4_reader.checksum import crc32c_raw
from streams.errors import FormatError, UnsupportedError

MAGIC = 0xC03B3998
DESCRIPTOR, COMMIT, SB_V1, SB_V2, REVOKE = 1, 2, 3, 4, 5
INCOMPAT_REVOKE, INCOMPAT_64BIT, INCOMPAT_ASYNC_COMMIT = 0x1, 0x2, 0x4
INCOMPAT_CSUM_V2, INCOMPAT_CSUM_V3, INCOMPAT_FAST_COMMIT = 0x8, 0x10, 0x20
KNOWN_INCOMPAT = (INCOMPAT_REVOKE | INCOMPAT_64BIT | INCOMPAT_ASYNC_COMMIT | INCOMPAT_CSUM_V2
                  | INCOMPAT_CSUM_V3 | INCOMPAT_FAST_COMMIT)
FLAG_ESCAPE, FLAG_SAME_UUID, FLAG_DELETED, FLAG_LAST_TAG = 1, 2, 4, 8
MAX_TRANSACTIONS = 1 << 20


@dataclass
class Replay:
    """What a replay found: fs block -> (journal block, escaped), and counts for ``info``."""

    blocks: dict[int, tuple[int, bool]] = field(default_factory=dict)
    transactions: int = 0
    first_sequence: int = 0
    warnings: list[str] = field(default_factory=list)

    @property
    def needed(self) -> bool:
        return self.transactions > 0


class Journal:
    """The journal inode's bytes (``stream``: the inode's data) and its superblock."""

    def __init__(self, stream, fs_block_size: int, source: str):
        self.stream = stream
        self.source = source
        head = stream.read(0, 1024)
        if len(head) < 1024:
            raise self._bad("truncated journal superblock", 0)
        magic, btype, _seq = struct.unpack_from(">3I", head)
        if magic != MAGIC or btype not in (SB_V1, SB_V2):
            raise self._bad("bad journal superblock magic", 0)
        self.block_size, self.maxlen, self.first, self.sequence, self.start = struct.unpack_from(
            ">5I", head, 12)
        self.incompat = 0
        if btype == SB_V2:
            _compat, self.incompat, _ro = struct.unpack_from(">3I", head, 36)
        if self.block_size != fs_block_size:
            raise self._bad(f"journal block size {self.block_size} is not the file system's "
                            f"{fs_block_size}", 12)
        blocks = stream.size // self.block_size
        if not 0 < self.first < self.maxlen <= blocks:
            raise self._bad(f"journal bounds first={self.first} maxlen={self.maxlen} "
                            f"({blocks} blocks in the journal inode)", 16)
        if self.incompat & ~KNOWN_INCOMPAT:
            raise UnsupportedError(f"journal features {self.incompat:#x} unknown",
                                   source=source, structure="jbd2 superblock", offset=40)
        self.uuid = head[48:64]
        self.csum = bool(self.incompat & (INCOMPAT_CSUM_V2 | INCOMPAT_CSUM_V3))
        self.csum_seed = crc32c_raw(0xFFFFFFFF, self.uuid) if self.csum else 0
        if self.incompat & INCOMPAT_CSUM_V3:
            self.tag_size = 16
        else:
            self.tag_size = 8 + (2 if self.incompat & INCOMPAT_CSUM_V2 else 0) + (
                4 if self.incompat & INCOMPAT_64BIT else 0)

    def _bad(self, msg: str, offset: int, structure: str = "jbd2 superblock") -> FormatError:
        return FormatError(msg, source=self.source, structure=structure, offset=offset)

    def block(self, n: int) -> bytes:
        return self.stream.read(n * self.block_size, self.block_size)

    def _next(self, n: int) -> int:
        n += 1
        return self.first if n >= self.maxlen else n

    def replay(self) -> Replay:
        """Scan the log (the kernel's PASS_SCAN and PASS_REVOKE) and return the blocks that
        PASS_REPLAY would write, newest committed copy of each."""
        out = Replay(first_sequence=self.sequence)
        if self.start == 0:
            return out          # clean: nothing to replay
        if self.incompat & INCOMPAT_FAST_COMMIT:
            out.warnings.append("the journal's fast-commit area is not replayed")
        bs = self.block_size
        pos, seq = self.start, self.sequence
        pending: list[tuple[int, int, bool]] = []    # (fs block, journal block, escaped)
        revoked: dict[int, int] = {}                 # fs block -> newest revoking sequence
        committed: list[tuple[int, list]] = []
        steps = 0
        limit = self.maxlen
        while len(committed) < MAX_TRANSACTIONS:
            steps += 1
            if steps > 2 * limit:   # a cycle of the log without an end: stop, as the kernel does
                break
            data = self.block(pos)
            magic, btype, bseq = struct.unpack_from(">3I", data)
            if magic != MAGIC or bseq != seq:
                break
            here = pos
            pos = self._next(pos)
            if btype == DESCRIPTOR:
                if self.csum and not self._tail_ok(data):
                    break   # the kernel ends the scan at a descriptor whose checksum fails
                tags = self._tags(data, here)
                for fs_block, flags in tags:
                    pending.append((fs_block, pos, bool(flags & FLAG_ESCAPE)))
                    pos = self._next(pos)
                continue
            if btype == COMMIT:
                if self.csum and not self._commit_ok(data):
                    break
                committed.append((seq, pending))
                pending = []
                seq += 1
                continue
            if btype == REVOKE:
                if self.csum and not self._tail_ok(data):
                    break
                for block in self._revoked(data, here):
                    revoked[block] = max(revoked.get(block, -1), seq)
                continue
            break   # an unknown block type ends the log
        for tseq, tags in committed:
            for fs_block, jblock, escaped in tags:
                if revoked.get(fs_block, -1) >= tseq:
                    continue
                out.blocks[fs_block] = (jblock, escaped)
        out.transactions = len(committed)
        return out

    def _tags(self, data: bytes, jblock: int) -> list[tuple[int, int]]:
        bs = self.block_size
        end = bs - (4 if self.csum else 0)
        off = 12
        tags = []
        is64 = bool(self.incompat & INCOMPAT_64BIT)
        v3 = bool(self.incompat & INCOMPAT_CSUM_V3)
        while off + self.tag_size <= end:
            if v3:
                lo, flags, hi, _c = struct.unpack_from(">4I", data, off)
            else:
                lo, _c, flags = struct.unpack_from(">IHH", data, off)
                hi = struct.unpack_from(">I", data, off + 8)[0] if is64 else 0
            block = lo | (hi << 32 if is64 else 0)
            off += self.tag_size
            if not flags & FLAG_SAME_UUID:
                off += 16
            tags.append((block, flags))
            if flags & FLAG_LAST_TAG:
                break
            if len(tags) > bs:
                raise self._bad("descriptor block holds more tags than fit", jblock * bs,
                                "jbd2 descriptor block")
        return tags

    def _revoked(self, data: bytes, jblock: int) -> list[int]:
        (count,) = struct.unpack_from(">I", data, 12)
        width = 8 if self.incompat & INCOMPAT_64BIT else 4
        if count < 16 or count > self.block_size:
            raise self._bad(f"revoke block says {count} bytes", jblock * self.block_size,
                            "jbd2 revoke block")
        fmt = ">Q" if width == 8 else ">I"
        return [struct.unpack_from(fmt, data, off)[0] for off in range(16, count - width + 1,
                                                                        width)]

    def _tail_ok(self, data: bytes) -> bool:
        (stored,) = struct.unpack_from(">I", data, len(data) - 4)
        calc = crc32c_raw(self.csum_seed, data[:-4] + b"\0\0\0\0")
        return calc == stored

    def _commit_ok(self, data: bytes) -> bool:
        # commit header: 12 bytes, chksum_type, chksum_size, padding[2], chksum[8 x u32]
        stored = struct.unpack_from(">I", data, 16)[0]
        calc = crc32c_raw(self.csum_seed, data[:12] + b"\0\0" + data[14:16] + b"\0" * 4
                          + data[20:])
        return calc == stored
