"""Sector encryption of BitLocker volumes: AES-XTS, AES-CBC, AES-CBC + Elephant diffuser.

Every method works on whole sectors whose IV/tweak comes from the sector's byte offset in
the volume (XTS: offset / sector size; CBC: AES of the offset). A read of many sectors
costs one AES-ECB call over the whole buffer plus the C helpers in ``fvecrypt`` — not one
cipher object per sector, which would cap throughput far below the disk's. AES-CBC +
Elephant on a CPU with AES instructions and AVX2 is one C call for the whole read
(``fvecrypt.cbc_elephant_sectors``: IVs, sector keys, AES and diffusers, 16 sectors at a
time); elsewhere the AES is one call and the rest ``cbc_elephant_decrypt``.
"""

from __future__ import annotations

import threading

from formats.bitlocker import fvecrypt
from formats.bitlocker.metadata import METHODS
from streams.errors import FormatError


def _aes(key: bytes, mode: str, *args):
    """An AES ``Cipher`` in ``mode`` (a name in ``cryptography``'s ``modes``). cryptography
    costs ~20 ms to import, so it is loaded with the first BitLocker volume, not with rpfs."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    return Cipher(algorithms.AES(key), getattr(modes, mode)(*args))


class _Ecb:
    """AES-ECB under one key. ECB keeps no state between blocks, so each thread keeps its
    own encryptor/decryptor and reuses it for every read (building one costs more than
    decrypting 4 KiB)."""

    def __init__(self, key: bytes):
        self.key = key
        self._local = threading.local()

    def _ctx(self, encrypt: bool):
        name = "enc" if encrypt else "dec"
        ctx = getattr(self._local, name, None)
        if ctx is None:
            c = _aes(self.key, "ECB")
            ctx = c.encryptor() if encrypt else c.decryptor()
            setattr(self._local, name, ctx)
        return ctx

    def encrypt(self, data) -> bytes:
        return self._ctx(True).update(data)

    def decrypt(self, data) -> bytes:
        return self._ctx(False).update(data)

    def decrypt_into(self, data, out) -> None:
        """Decrypt into ``out`` (at least len(data) + 15 bytes, as cryptography asks): with
        the CPU's AES instructions where it has them (``fvecrypt.ecb_decrypt``: the GIL is
        released, so blocks decrypted ahead do not stop the threads that reply), else with
        cryptography."""
        if fvecrypt.AES_PATHS:
            fvecrypt.ecb_decrypt(out, data, self.key)
        else:
            self._ctx(False).update_into(data, out)


SLICE = 256 << 10      # decrypt_into works this much at a time
_scratch = threading.local()


def scratch(i: int, n: int) -> memoryview:
    """Per-thread buffer ``i`` of at least ``n`` bytes, reused by every read: a fresh
    128 KiB buffer per read costs more (page faults: malloc maps large blocks anew) than
    decrypting it."""
    bufs = getattr(_scratch, "bufs", None)
    if bufs is None:
        bufs = _scratch.bufs = [bytearray() for _ in range(2)]
    if len(bufs[i]) < n:
        bufs[i] = bytearray(max(n, SLICE + 16))
    return memoryview(bufs[i])


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
        self._data = _Ecb(self.key)
        self._tweak = _Ecb(self.tweak_key) if self.tweak_key else None

    def _check(self, data, offset: int) -> int:
        ss = self.sector_size
        if offset % ss or len(data) % ss:
            raise ValueError(f"unaligned sector I/O at {offset:#x}+{len(data):#x}")
        return len(data) // ss

    def _xts_tweaks(self, offset: int, count: int) -> bytes:
        return self._tweak.encrypt(fvecrypt.counters(offset // self.sector_size, count, 1))

    def _ivs(self, offset: int, count: int) -> bytes:
        return self._data.encrypt(fvecrypt.counters(offset, count, self.sector_size))

    def _sector_keys(self, offset: int, count: int) -> bytes:
        """Elephant's 32-byte sector keys: AES of the offset, and of the offset with byte 15
        set to 0x80."""
        return self._tweak.encrypt(fvecrypt.counters(offset, count, self.sector_size, True))

    def decrypt(self, data, offset: int) -> bytearray:
        out = bytearray(len(data))
        self.decrypt_into(data, offset, out)
        return out

    def decrypt_into(self, data, offset: int, out) -> None:
        """Decrypt ``data`` (whole sectors at ``offset``) into the writable buffer ``out``, a
        slice of at most SLICE bytes at a time: every pass (AES-ECB, then the C pass) then
        finds the slice's ciphertext and ECB output still in the CPU's cache. A 4 MiB read
        in one piece cost 0.63-0.72 ms/MiB of CPU, in 256 KiB slices 0.38-0.41 (Elephant,
        512-byte sectors, load 9)."""
        count = self._check(data, offset)
        if count == 0:
            return
        if self.mode == "cbc-elephant" and fvecrypt.ELEPHANT_IN_C:   # 16 sectors at a time:
            # 0.142 -> 0.114-0.125 ms/MiB of CPU (1 MiB reads, 512-byte sectors, load 5)
            fvecrypt.cbc_elephant_sectors(out, data, offset, self.key, self.tweak_key,
                                          self.sector_size)
            return
        n = len(data)
        step = max(1, SLICE // self.sector_size) * self.sector_size
        if n <= step:
            self._decrypt_slice(data, offset, out, n)
            return
        data, out = memoryview(data).cast("B"), memoryview(out).cast("B")
        for at in range(0, n, step):
            k = min(step, n - at)
            self._decrypt_slice(data[at:at + k], offset + at, out[at:at + k], k)

    def _decrypt_slice(self, data, offset: int, out, n: int) -> None:
        """``decrypt_into`` of ``n`` bytes (whole sectors, at most SLICE): nothing allocated
        but the IVs/tweaks/sector keys."""
        ss = self.sector_size
        count = n // ss
        plain = scratch(1, n + 16)
        if self.mode == "xts":   # tweak XOR copying in, AES, tweak XOR straight into out
            tw = self._xts_tweaks(offset, count)
            tmp = scratch(0, n)[:n]
            fvecrypt.xts_xor(tmp, tw, ss, data)
            self._data.decrypt_into(tmp, plain)
            fvecrypt.xts_xor(memoryview(out)[:n], tw, ss, plain[:n])
        elif self.mode == "cbc-elephant":   # the rest in one pass, straight into out
            self._data.decrypt_into(data, plain)
            fvecrypt.cbc_elephant_decrypt(out, plain[:n], data, self._ivs(offset, count),
                                          self._sector_keys(offset, count), ss)
        else:   # AES, then the chaining XOR straight into out
            self._data.decrypt_into(data, plain)
            fvecrypt.cbc_xor(memoryview(out)[:n], data, self._ivs(offset, count), ss, plain[:n])

    def encrypt(self, data, offset: int) -> bytes:
        """The inverse of ``decrypt`` (used by the test-image writer, not on the read path)."""
        count = self._check(data, offset)
        ss = self.sector_size
        if self.mode == "xts":
            tw = self._xts_tweaks(offset, count)
            buf = bytearray(data)
            fvecrypt.xts_xor(buf, tw, ss)
            buf = bytearray(self._data.encrypt(buf))
            fvecrypt.xts_xor(buf, tw, ss)
            return bytes(buf)
        buf = bytearray(data)
        if self.mode == "cbc-elephant":
            fvecrypt.elephant_encrypt(buf, ss, self._sector_keys(offset, count))
        ivs = self._ivs(offset, count)
        out = bytearray()
        for i in range(count):
            enc = _aes(self.key, "CBC", ivs[16 * i:16 * i + 16]).encryptor()
            out += enc.update(bytes(buf[i * ss:(i + 1) * ss])) + enc.finalize()
        return bytes(out)
