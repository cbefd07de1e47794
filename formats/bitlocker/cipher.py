"""Sector encryption of BitLocker volumes: AES-XTS, AES-CBC, AES-CBC + Elephant diffuser.

Every method works on whole sectors whose IV/tweak comes from the sector's byte offset in
the volume (XTS: offset / sector size; CBC: AES of the offset). A read of many sectors
costs one AES-ECB call over the whole buffer plus the C helpers in ``fvecrypt`` — not one
cipher object per sector, which would cap throughput far below the disk's.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from formats.bitlocker import fvecrypt
from formats.bitlocker.metadata import METHODS
from rpfs.errors import FormatError


def _ecb(key: bytes, data, encrypt: bool) -> bytes:
    c = Cipher(algorithms.AES(key), modes.ECB())
    ctx = c.encryptor() if encrypt else c.decryptor()
    return ctx.update(data) + ctx.finalize()


def _offsets(first: int, count: int, step: int) -> bytes:
    """``count`` 16-byte little-endian numbers ``first, first+step, ...``."""
    return b"".join((first + i * step).to_bytes(16, "little") for i in range(count))


class SectorCipher:
    """``decrypt``/``encrypt`` whole sectors that start at byte ``offset`` of the volume."""

    def __init__(self, method: int, fvek: bytes, sector_size: int):
        if method not in METHODS:
            raise FormatError(f"encryption method {method:#06x} is not supported")
        self.name, self.mode, klen = METHODS[method]
        self.sector_size = sector_size
        need = {"xts": 2 * klen, "cbc": klen, "cbc-elephant": 32 + klen}[self.mode]
        if len(fvek) < need:
            raise FormatError(f"FVEK of {len(fvek)} bytes is too short for {self.name}",
                              structure="FVEK")
        if self.mode == "xts":
            self.key, self.tweak_key = fvek[:klen], fvek[klen:2 * klen]
        else:
            self.key = fvek[:klen]
            self.tweak_key = fvek[32:32 + klen] if self.mode == "cbc-elephant" else None

    def _check(self, data, offset: int) -> int:
        ss = self.sector_size
        if offset % ss or len(data) % ss:
            raise ValueError(f"unaligned sector I/O at {offset:#x}+{len(data):#x}")
        return len(data) // ss

    def _xts_tweaks(self, offset: int, count: int) -> bytes:
        return _ecb(self.tweak_key, _offsets(offset // self.sector_size, count, 1), True)

    def _ivs(self, offset: int, count: int) -> bytes:
        return _ecb(self.key, _offsets(offset, count, self.sector_size), True)

    def _sector_keys(self, offset: int, count: int) -> bytes:
        """Elephant's 32-byte sector keys: AES of the offset, and of the offset with byte 15
        set to 0x80."""
        plain = b"".join(o + o[:15] + b"\x80" for o in
                         ((offset + i * self.sector_size).to_bytes(16, "little") for i in range(count)))
        return _ecb(self.tweak_key, plain, True)

    def decrypt(self, data, offset: int) -> bytearray:
        count = self._check(data, offset)
        ss = self.sector_size
        if count == 0:
            return bytearray()
        if self.mode == "xts":
            tw = self._xts_tweaks(offset, count)
            buf = bytearray(data)
            fvecrypt.xts_xor(buf, tw, ss)
            buf = bytearray(_ecb(self.key, buf, False))
            fvecrypt.xts_xor(buf, tw, ss)
            return buf
        buf = bytearray(_ecb(self.key, data, False))
        fvecrypt.cbc_xor(buf, data, self._ivs(offset, count), ss)
        if self.mode == "cbc-elephant":
            fvecrypt.elephant_decrypt(buf, ss)
            fvecrypt.sector_key_xor(buf, self._sector_keys(offset, count), ss)
        return buf

    def encrypt(self, data, offset: int) -> bytes:
        """The inverse of ``decrypt`` (used by the test-image writer, not on the read path)."""
        count = self._check(data, offset)
        ss = self.sector_size
        if self.mode == "xts":
            tw = self._xts_tweaks(offset, count)
            buf = bytearray(data)
            fvecrypt.xts_xor(buf, tw, ss)
            buf = bytearray(_ecb(self.key, buf, True))
            fvecrypt.xts_xor(buf, tw, ss)
            return bytes(buf)
        buf = bytearray(data)
        if self.mode == "cbc-elephant":
            fvecrypt.sector_key_xor(buf, self._sector_keys(offset, count), ss)
            fvecrypt.elephant_encrypt(buf, ss)
        ivs = self._ivs(offset, count)
        out = bytearray()
        for i in range(count):
            enc = Cipher(algorithms.AES(self.key), modes.CBC(ivs[16 * i:16 * i + 16])).encryptor()
            out += enc.update(bytes(buf[i * ss:(i + 1) * ss])) + enc.finalize()
        return bytes(out)
