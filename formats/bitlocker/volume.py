"""A BitLocker volume read decrypted, as Windows presents it.

What Windows shows at the start of the volume is the original boot sector(s), which
BitLocker moved to the volume header block (``header_offset``) and replaced with its own;
the three FVE metadata areas and that header block read as zeros. Everything else is
decrypted in place with the IV of its own offset. Bytes at or past ``encrypted_size`` are
still plaintext (a conversion that was paused or is under way encrypts from the start).
This is the same view ``cryptsetup bitlkOpen`` gives, so exports can be checked against it.

A volume encrypted with "used space only" (encrypt on write) may keep the moved boot sectors
in the clear (Windows wrote them before any key existed): they are read as they are when
they hold a boot sector in the clear.
"""

from __future__ import annotations

import bisect

from formats.bitlocker.cipher import SCRATCH_MAX, SectorCipher, scratch
from formats.bitlocker.metadata import METADATA_AREA, Metadata
from rpfs.errors import FormatError
from rpfs.stream import Stream

CRYPT, ZEROS, MOVED, PLAIN = "crypt", "zeros", "moved", "plain"


class BitLockerVolume(Stream):
    """The decrypted volume over ``base`` (the partition), given its metadata and FVEK.

    The volume is cut into ranges once: moved boot sectors, zero areas, and the rest
    (decrypted in place); a read finds its first range by bisection."""

    def __init__(self, base: Stream, meta: Metadata, fvek: bytes):
        self.base = base
        self.meta = meta
        self.name = f"{base.name} (BitLocker)"
        self.size = base.size
        self.sector_size = ss = meta.sector_size
        self.cipher = SectorCipher(meta.method, fvek, ss)
        self.encrypted_size = min(meta.encrypted_size, base.size) if meta.encrypted_size else base.size
        hs, ho = meta.header_size, meta.header_offset
        self.plain_header = meta.eow and _boot_sector(base.read(ho, 512))
        special = [(0, hs, PLAIN if self.plain_header else MOVED, ho), (ho, hs, ZEROS, 0)]
        special += [(m, METADATA_AREA, ZEROS, 0) for m in sorted(set(meta.metadata_offsets))]
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
                self._add(pos, first - pos, CRYPT, pos)
            self._add(first, end - first, kind, src + (first - start))
            pos = end
        if pos < self.size:
            self._add(pos, self.size - pos, CRYPT, pos)

    def describe(self) -> dict:
        """For ``rpfs info`` on the volume: what encrypts it (it is unlocked, or we would
        not be reading it)."""
        from formats.bitlocker import summary

        return {"bitlocker": {**summary(self.meta), "unlocked": True}}

    def _add(self, start, length, kind, src):
        self._starts.append(start)
        self._ranges.append((start, length, kind, src))

    def _read(self, offset: int, length: int) -> bytes:
        end = offset + length
        i = bisect.bisect_right(self._starts, offset) - 1
        start, rlen, kind, src = self._ranges[i]
        if kind == CRYPT and end <= start + rlen:  # the common case: inside one range
            return self._physical(src + (offset - start), length)
        out = bytearray()
        pos = offset
        while pos < end:
            start, rlen, kind, src = self._ranges[i]
            stop = min(end, start + rlen)
            if kind == ZEROS:
                out += bytes(stop - pos)
            elif kind == PLAIN:
                out += self.base.read(src + (pos - start), stop - pos)
            else:
                out += self._physical(src + (pos - start), stop - pos)
            pos = stop
            i += 1
        return bytes(out)

    def readinto(self, offset: int, buffer) -> int:
        """Decrypts straight into ``buffer`` (how NTFS reads file data) when the range is
        whole sectors inside one encrypted range; anything else goes through ``read``."""
        view = memoryview(buffer).cast("B")
        n = max(0, min(len(view), self.size - offset))
        ss = self.sector_size
        if n and not (offset | n) % ss:
            i = bisect.bisect_right(self._starts, offset) - 1
            start, rlen, kind, src = self._ranges[i]
            phys = src + (offset - start)
            if (kind == CRYPT and offset + n <= start + rlen and phys + n <= self.encrypted_size
                    and n <= SCRATCH_MAX):
                data = scratch(2, n)[:n]
                if self.base.readinto(phys, data) == n:
                    self.cipher.decrypt_into(data, phys, view[:n])
                    return n
        return super().readinto(offset, view[:n])

    def _physical(self, phys: int, length: int) -> bytes:
        """``length`` decrypted bytes at ``phys`` on the underlying volume."""
        ss = self.sector_size
        if not (phys | length) % ss and phys + length <= self.encrypted_size:
            return bytes(self.cipher.decrypt(self.base.read(phys, length), phys))
        lo = phys - phys % ss
        hi = min(-(-(phys + length) // ss) * ss, self.base.size)
        parts = []
        if lo < self.encrypted_size:
            cut = min(hi, self.encrypted_size)
            data = self.base.read(lo, cut - lo)
            whole = len(data) - len(data) % ss
            parts.append(self.cipher.decrypt(data[:whole], lo))
            parts.append(data[whole:])  # a partial last sector at the volume's end
            lo = cut
        if lo < hi:
            parts.append(self.base.read(lo, hi - lo))
        data = b"".join(parts)
        skip = phys % ss
        return data[skip:skip + length]


def _boot_sector(sector: bytes) -> bool:
    return len(sector) == 512 and sector[510:512] == b"\x55\xaa" and sector[0] in (0xEB, 0xE9)
