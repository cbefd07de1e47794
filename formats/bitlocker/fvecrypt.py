"""The byte-shuffling half of BitLocker's ciphers, in C when the extension is built.

AES comes from ``cryptography`` (one ECB call over a whole read), except on CPUs with AES
instructions (``AES_PATHS``: VAES or AES-NI), which release the GIL where ``cryptography``
holds it for the whole call: ``ecb_decrypt`` (XTS, CBC) and ``cbc_elephant_sectors``, which
decrypts AES-CBC + Elephant sectors from their ciphertext in C, 16 at a time while they are
in L1 (IVs, sector keys, AES, chaining, diffusers, sector key; Python twin
``py_cbc_elephant_sectors``). The rest is per-block arithmetic
that Python does slowly: the XTS tweak sequence, the CBC chaining
XOR, and Elephant's sector key XOR and diffuser (which no library has). Each has a
pure-Python twin below; the extension ``_fvecrypt`` replaces them when it was built (tests
check both against each other). Elephant decryption has several C paths (``PATHS``: AVX-512
and AVX2 on x86-64 CPUs that have them, then portable C); the first is used, and
``cbc_elephant_decrypt``/``elephant_decrypt`` take ``path=`` so tests can run each. The key
stretch stays in Python: hashlib's SHA-256 is faster than a plain C one.
"""

from __future__ import annotations

import hashlib
import struct
import warnings

MASK32 = 0xFFFFFFFF
ROT_A = (9, 0, 13, 0)
ROT_B = (0, 10, 0, 25)
CYCLES_A, CYCLES_B = 5, 3
STRETCH_ROUNDS = 0x100000


def py_xts_xor(buf: bytearray, tweaks: bytes, sector_size: int, src=None) -> None:
    """XOR each 16-byte block j of sector s with ``tweaks[s] * alpha^j`` in GF(2^128) (with
    ``src``: buf = src XOR that)."""
    view = memoryview(buf)
    if src is not None:
        view[:len(buf)] = memoryview(src)[:len(buf)]
    for s in range(len(buf) // sector_size):
        t = int.from_bytes(tweaks[16 * s:16 * s + 16], "little")
        base = s * sector_size
        for off in range(base, base + sector_size, 16):
            block = int.from_bytes(view[off:off + 16], "little") ^ t
            view[off:off + 16] = block.to_bytes(16, "little")
            t <<= 1
            if t >> 128:
                t = (t & ((1 << 128) - 1)) ^ 0x87


def py_cbc_xor(buf: bytearray, ciphertext: bytes, ivs: bytes, sector_size: int,
               src=None) -> None:
    """CBC decryption's chaining: block j of sector s ^= ciphertext block j-1 (IV for j=0)
    (with ``src``, the ECB output: buf = src XOR that; buf may be the ciphertext)."""
    ciphertext = bytes(ciphertext)
    if src is not None:
        memoryview(buf)[:len(buf)] = memoryview(src)[:len(buf)]
    prev = bytearray(len(buf))
    for s in range(len(buf) // sector_size):
        base = s * sector_size
        prev[base:base + 16] = ivs[16 * s:16 * s + 16]
        prev[base + 16:base + sector_size] = ciphertext[base:base + sector_size - 16]
    n = len(buf)
    buf[:] = (int.from_bytes(buf, "little") ^ int.from_bytes(prev, "little")).to_bytes(n, "little")


def py_sector_key_xor(buf: bytearray, keys: bytes, sector_size: int) -> None:
    """Elephant: XOR each sector with its 32-byte sector key, repeated across the sector
    (cut at its end where the sector size is not a multiple of 32)."""
    reps = -(-sector_size // 32)
    pad = b"".join((keys[32 * s:32 * s + 32] * reps)[:sector_size]
                   for s in range(len(buf) // sector_size))
    n = len(buf)
    buf[:] = (int.from_bytes(buf, "little") ^ int.from_bytes(pad, "little")).to_bytes(n, "little")


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (32 - r))) & MASK32 if r else x


def py_elephant_decrypt(buf: bytearray, sector_size: int, keys: bytes | None = None) -> None:
    """Undo the Elephant diffusers (B, then A) on every sector, in place; then, with
    ``keys`` (32 bytes per sector), XOR the sector keys."""
    n = sector_size // 4
    for base in range(0, len(buf), sector_size):
        d = list(struct.unpack_from(f"<{n}I", buf, base))
        for _ in range(CYCLES_B):
            for i in range(n):
                d[i] = (d[i] + (d[(i + 2) % n] ^ _rotl(d[(i + 5) % n], ROT_B[i % 4]))) & MASK32
        for _ in range(CYCLES_A):
            for i in range(n):
                d[i] = (d[i] + (d[i - 2] ^ _rotl(d[i - 5], ROT_A[i % 4]))) & MASK32
        struct.pack_into(f"<{n}I", buf, base, *d)
    if keys is not None:
        py_sector_key_xor(buf, keys, sector_size)


def py_elephant_encrypt(buf: bytearray, sector_size: int, keys: bytes | None = None) -> None:
    """With ``keys``, XOR the sector keys; then apply the Elephant diffusers (A, then B) to
    every sector, in place."""
    if keys is not None:
        py_sector_key_xor(buf, keys, sector_size)
    n = sector_size // 4
    for base in range(0, len(buf), sector_size):
        d = list(struct.unpack_from(f"<{n}I", buf, base))
        for _ in range(CYCLES_A):
            for i in reversed(range(n)):
                d[i] = (d[i] - (d[i - 2] ^ _rotl(d[i - 5], ROT_A[i % 4]))) & MASK32
        for _ in range(CYCLES_B):
            for i in reversed(range(n)):
                d[i] = (d[i] - (d[(i + 2) % n] ^ _rotl(d[(i + 5) % n], ROT_B[i % 4]))) & MASK32
        struct.pack_into(f"<{n}I", buf, base, *d)


def py_cbc_elephant_decrypt(out, ecb, ciphertext: bytes, ivs: bytes, keys: bytes,
                            sector_size: int) -> None:
    """AES-CBC + Elephant decryption of whole sectors into ``out``, given ``ecb`` (the
    sectors' AES-ECB decryption): CBC chaining, the diffusers, the sector key XOR."""
    buf = bytearray(ecb)
    py_cbc_xor(buf, ciphertext, ivs, sector_size)
    py_elephant_decrypt(buf, sector_size, keys)
    memoryview(out)[:len(buf)] = buf


def py_cbc_elephant_sectors(out, data, offset: int, key: bytes, tweak_key: bytes,
                            sector_size: int) -> None:
    """AES-CBC + Elephant decryption of whole sectors of ciphertext ``data``, the first at
    byte ``offset`` of the volume, into ``out``: the IVs (AES of each sector's offset under
    ``key``), the sector keys (under ``tweak_key``) and the AES-ECB decryption with
    cryptography, then ``py_cbc_elephant_decrypt``."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    def ecb(k: bytes):
        return Cipher(algorithms.AES(k), modes.ECB())

    count = len(data) // sector_size
    ivs = ecb(key).encryptor().update(py_counters(offset, count, sector_size))
    keys = ecb(tweak_key).encryptor().update(py_counters(offset, count, sector_size, True))
    plain = ecb(key).decryptor().update(bytes(data))
    py_cbc_elephant_decrypt(out, plain, bytes(data), ivs, keys, sector_size)


def py_counters(first: int, count: int, step: int, elephant: bool = False) -> bytes:
    """``count`` 16-byte little-endian numbers ``first, first+step, ...`` (the plaintext of
    XTS tweaks and CBC IVs); with ``elephant`` each is followed by the same number with its
    byte 15 set to 0x80 (Elephant's sector key)."""
    width = 4 if elephant else 2
    values = [0] * (width * count)
    numbers = range(first, first + count * step, step)
    values[0::width] = numbers
    if elephant:
        values[2::4] = numbers
        values[3::4] = [1 << 63] * count
    return struct.pack(f"<{width * count}Q", *values)


def py_blank(n: int) -> bytearray:
    """A buffer of ``n`` bytes to be written whole (the C one is not zero-filled)."""
    return bytearray(n)


def stretch(initial: bytes, salt: bytes) -> bytes:
    """BitLocker's key stretch: 2^20 rounds of SHA-256 over (last, initial, salt, count)."""
    last = bytes(32)
    sha = hashlib.sha256
    tail = initial
    pack = struct.Struct("<Q").pack
    for count in range(STRETCH_ROUNDS):
        last = sha(last + tail + salt + pack(count)).digest()
    return last


try:
    from formats.bitlocker._fvecrypt import (cbc_elephant_decrypt, cbc_xor, counters,
                                             elephant_decrypt, elephant_encrypt, paths, xts_xor)
    NATIVE = True
    PATHS: tuple[str, ...] = tuple(paths())
    from formats.bitlocker import _fvecrypt
    from streams.builds import check
    check(_fvecrypt)
except ImportError:  # built with optional=True: slower, same results
    warnings.warn("formats.bitlocker._fvecrypt is not built: BitLocker volumes are read with "
                  "the pure-Python helpers (slow)", RuntimeWarning, stacklevel=2)
    NATIVE = False
    PATHS = ()
    xts_xor, cbc_xor, counters = py_xts_xor, py_cbc_xor, py_counters
    elephant_decrypt, elephant_encrypt = py_elephant_decrypt, py_elephant_encrypt
    cbc_elephant_decrypt = py_cbc_elephant_decrypt
try:   # (apart: a build from before them keeps its C paths; streams.builds says to rebuild)
    from formats.bitlocker._fvecrypt import aes_paths, blank, cbc_elephant_sectors, ecb_decrypt
    AES_PATHS: tuple[str, ...] = tuple(aes_paths())
except ImportError:
    blank, ecb_decrypt, AES_PATHS = py_blank, None, ()
    cbc_elephant_sectors = py_cbc_elephant_sectors
# SectorCipher decrypts AES-CBC + Elephant all in C (cbc_elephant_sectors) where the CPU has
# AES instructions and a SIMD Elephant path. On the portable path it cost 0.95-1.07 ms/MiB
# against 0.40-0.42 for cbc_elephant_decrypt after the AES (same instruction count under
# callgrind; cause not found), so a CPU with AES-NI but no AVX2 keeps the two calls.
ELEPHANT_IN_C = bool(AES_PATHS) and PATHS[:1] not in ((), ("portable",))
