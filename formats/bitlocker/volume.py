"""A BitLocker volume read decrypted, as Windows presents it.

What Windows shows at the start of the volume is the original boot sector(s), which
BitLocker moved to the volume header block (``header_offset``) and replaced with its own;
the three FVE metadata areas, that header block and (used space only) the FVE-EOW blocks,
bitmaps and conversion logs read as zeros. Everything else is read in place: decrypted with
the IV of its own offset where the volume's conversion state (``conversion.py``) says it is
encrypted, as it is where it says it is not, and not at all — a FormatError, EIO in the
mount — where that state is unknown. This is the same view ``cryptsetup bitlkOpen`` gives
of a volume encrypted in full, so exports can be checked against it.

Windows Vista (version 1) moved nothing: its first 16 sectors are stored in the clear, the
first one being NTFS's boot sector with ``-FVE-FS-`` for ``NTFS    `` and the first metadata
block's cluster where the MFT mirror's belongs (both put back here, as libbde, dislocker and
dissect do); the backup boot sector at the volume's end is altered the same way when it
holds that signature.
"""

from __future__ import annotations

import bisect

from formats.bitlocker import ahead, conversion
from formats.bitlocker.cipher import SectorCipher
from formats.bitlocker.metadata import SIGNATURE, Metadata
from streams.errors import FormatError
from streams.stream import Stream

PHYS, ZEROS, RAW, VISTA_BOOT = "phys", "zeros", "raw", "vista boot"


class BitLockerVolume(Stream):
    """The decrypted volume over ``base`` (the partition), given its metadata and FVEK.

    The volume is cut into ranges once: moved boot sectors (read at the header block),
    zero areas, and the rest (read in place); a read finds its first range by bisection and
    asks the conversion map which of its sectors are encrypted."""

    def __init__(self, base: Stream, meta: Metadata, fvek: bytes | None):
        self.base = base
        self.meta = meta
        self.name = f"{base.name} (BitLocker)"
        self.size = base.size
        self.sector_size = ss = meta.sector_size
        # no FVEK: a volume Windows decrypted and removed the keys of
        self.cipher = SectorCipher(meta.method, fvek, ss) if fvek is not None else None
        self.blocks = ahead.Blocks(self)   # decrypted ahead of readers in order (views)
        if meta.eow:
            self.map = conversion.used_space_only(base, meta, base.size)
        else:
            self.map = conversion.watermark(meta, base.size)
        hs, ho = meta.header_size, meta.header_offset
        if meta.version == 1:
            special = [(0, ss, VISTA_BOOT, 0), (ss, hs - ss, RAW, ss)]
            backup = int.from_bytes(base.read(40, 8), "little") * ss  # NTFS's total sectors
            if hs <= backup <= self.size - ss and base.read(backup + 3, 8) == SIGNATURE:
                special.append((backup, ss, VISTA_BOOT, backup))
        else:
            special = [(0, hs, PHYS, ho), (ho, hs, ZEROS, 0)]
        special += [(m, meta.metadata_size, ZEROS, 0) for m in sorted(set(meta.metadata_offsets))]
        special += [(off, n, ZEROS, 0) for off, n in self.map.reserved]
        special.sort()
        self._starts, self._ranges = [], []
        pos = 0
        for start, length, kind, src in special:
            if start % ss or length % ss:
                raise FormatError(f"area {start:#x}+{length:#x} is not sector aligned",
                                  source=base.name, structure="FVE metadata", offset=meta.block_offset)
            end = min(start + length, self.size)
            first = max(start, pos)  # overlapping areas: the earlier one wins
            if end <= first:
                continue
            if first > pos:
                self._add(pos, first - pos, PHYS, pos)
            self._add(first, end - first, kind, src + (first - start))
            pos = end
        if pos < self.size:
            self._add(pos, self.size - pos, PHYS, pos)

    def describe(self) -> dict:
        """For ``rpfs info`` on the volume: what encrypts it (it is unlocked, or we would
        not be reading it)."""
        return {"bitlocker": {**self.meta.summary(), "unlocked": True,
                              "conversion": self.map.summary}}

    def _add(self, start, length, kind, src):
        self._starts.append(start)
        self._ranges.append((start, length, kind, src))

    def _read(self, offset: int, length: int) -> bytes:
        end = offset + length
        i = bisect.bisect_right(self._starts, offset) - 1
        start, rlen, kind, src = self._ranges[i]
        if kind == PHYS and end <= start + rlen:  # the common case: inside one range
            return self._physical(src + (offset - start), length)
        out = bytearray()
        pos = offset
        while pos < end:
            start, rlen, kind, src = self._ranges[i]
            stop = min(end, start + rlen)
            if kind == ZEROS:
                out += bytes(stop - pos)
            elif kind == RAW:
                out += self.base.read(src + (pos - start), stop - pos)
            elif kind == VISTA_BOOT:
                out += self._vista_boot(src)[pos - start:stop - start]
            else:
                out += self._physical(src + (pos - start), stop - pos)
            pos = stop
            i += 1
        return bytes(out)

    def readinto(self, offset: int, buffer) -> int:
        """Decrypts in ``buffer`` (how NTFS reads file data) when the range is whole
        encrypted sectors inside one range; anything else goes through ``read``."""
        view = memoryview(buffer).cast("B")
        n = max(0, min(len(view), self.size - offset))
        ss = self.sector_size
        if n and not (offset | n) % ss:
            i = bisect.bisect_right(self._starts, offset) - 1
            start, rlen, kind, src = self._ranges[i]
            phys = src + (offset - start)
            if (kind == PHYS and offset + n <= start + rlen
                    and self.cipher and self.map.encrypted(phys, n)):
                # the ciphertext is read into the caller's buffer and decrypted there (every
                # method decrypts in place): no 1 MiB scratch buffer to go through the cache
                out = view[:n]
                if self.base.readinto(phys, out) == n:
                    self.cipher.decrypt_into(out, phys, out)
                    return n
        return super().readinto(offset, view[:n])

    def views(self, offset: int, length: int, sequential: bool = False):
        """A read that continues an earlier one (a file read in order through the mount) is
        answered from 1 MiB blocks decrypted once and ahead of it (``ahead.Blocks``); None
        for any other, and for a volume with nothing to decrypt (the caller reads)."""
        if self.cipher is None:
            return None
        return self.blocks.views(offset, length, sequential)

    def _physical(self, phys: int, length: int) -> bytes:
        """``length`` bytes at ``phys`` on the underlying volume, each decrypted or not as
        the conversion map says; a FormatError where it does not know."""
        ss = self.sector_size
        if not (phys | length) % ss and self.cipher and self.map.encrypted(phys, length):
            return bytes(self.cipher.decrypt(self.base.read(phys, length), phys))
        parts = []
        for a, b, state, why in self.map.state_runs(phys, length):
            if state == conversion.UNKNOWN:
                raise FormatError(f"cannot tell whether these sectors are encrypted: {why}",
                                  source=self.base.name, structure="BitLocker conversion state",
                                  offset=a)
            if state == conversion.PLAIN:
                parts.append(self.base.read(a, b - a))
            elif self.cipher is None:
                raise FormatError("sectors recorded as encrypted on a volume whose keys were "
                                  "removed (decrypted)", source=self.base.name,
                                  structure="BitLocker conversion state", offset=a)
            else:
                parts.append(self._decrypt(a, b - a))
        return b"".join(parts)

    def _vista_boot(self, at: int) -> bytes:
        """A Vista boot sector (or its backup) as NTFS wrote it."""
        sector = bytearray(self.base.read(at, self.sector_size))
        sector[3:11] = b"NTFS    "
        sector[56:64] = self.meta.mft_mirror.to_bytes(8, "little")
        return bytes(sector)

    def _decrypt(self, phys: int, length: int) -> bytes:
        """Decrypted bytes of an encrypted run, which may start or end inside a sector."""
        ss = self.sector_size
        lo = phys - phys % ss
        hi = min(-(-(phys + length) // ss) * ss, self.base.size)
        data = self.base.read(lo, hi - lo)
        whole = len(data) - len(data) % ss
        out = bytes(self.cipher.decrypt(data[:whole], lo)) + data[whole:]  # a partial last sector
        skip = phys - lo
        return out[skip:skip + length]
