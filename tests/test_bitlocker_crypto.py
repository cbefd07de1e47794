"""BitLocker's cipher helpers: the C extension equals its pure-Python twins, and every
method decrypts what it encrypts, whole or into a buffer. (That the methods are BitLocker's
own is proved on Windows-written volumes in test_bitlocker_images and against dislocker in
test_bitlocker_fixtures.)"""

from __future__ import annotations

import functools
import platform
import random
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from formats.bitlocker import fvecrypt
from formats.bitlocker.cipher import SLICE, SectorCipher
from formats.bitlocker.metadata import METHODS
from streams.errors import RpfsError
from tests.helpers.bitlocker import every_volume, python_only
from tools.fixtures import bitlocker as blfx

native = pytest.mark.skipif(not fvecrypt.NATIVE, reason="formats.bitlocker._fvecrypt not built")


@native
@pytest.mark.parametrize("ss", [512, 4096])
@pytest.mark.parametrize("count", [1, 3, 32, 41])
def test_extension_equals_twins(ss, count):
    rnd = random.Random(ss * 100 + count)
    data = rnd.randbytes(ss * count)
    tweaks, other, keys = rnd.randbytes(16 * count), rnd.randbytes(ss * count), rnd.randbytes(32 * count)
    for fast, slow, args in (
            (fvecrypt.xts_xor, fvecrypt.py_xts_xor, (tweaks, ss)),
            (fvecrypt.cbc_xor, fvecrypt.py_cbc_xor, (other, tweaks, ss)),
            (fvecrypt.elephant_decrypt, fvecrypt.py_elephant_decrypt, (ss, keys)),
            (fvecrypt.elephant_encrypt, fvecrypt.py_elephant_encrypt, (ss, keys)),
            (fvecrypt.elephant_decrypt, fvecrypt.py_elephant_decrypt, (ss,))):
        a, b = bytearray(data), bytearray(data)
        fast(a, *args)
        slow(b, *args)
        assert a == b and a != data, fast.__name__
    for args in ((0, 5, 1), (1 << 30, count, ss, True), (2 ** 63, count, 4096)):
        assert fvecrypt.counters(*args) == fvecrypt.py_counters(*args)
    # with src: the XOR copies in (buf = src XOR ...), the same as copying first
    for fast, slow, args in ((fvecrypt.xts_xor, fvecrypt.py_xts_xor, (tweaks, ss)),
                             (fvecrypt.cbc_xor, fvecrypt.py_cbc_xor, (other, tweaks, ss))):
        want = bytearray(data)
        slow(want, *args)
        for f in (fast, slow):
            a = bytearray(rnd.randbytes(len(data)))
            f(a, *args, data)
            assert a == want, f.__name__
        with pytest.raises(ValueError):
            fast(bytearray(data), *args, data[:-16])
    # CBC chaining written over the ciphertext itself (each block after the one it needs)
    ct = bytearray(other)
    want = bytearray(data)
    fvecrypt.py_cbc_xor(want, other, tweaks, ss)
    for f in (fvecrypt.cbc_xor, fvecrypt.py_cbc_xor):
        ct = bytearray(other)
        f(ct, ct, tweaks, ss, data)
        assert ct == want, f.__name__


@pytest.mark.parametrize("ss", [512, 4096])
def test_diffuser_round_trip(ss):
    data = random.Random(ss).randbytes(ss * 5)
    keys = random.Random(1).randbytes(32 * 5)
    buf = bytearray(data)
    fvecrypt.elephant_encrypt(buf, ss, keys)
    assert buf != data
    fvecrypt.elephant_decrypt(buf, ss, keys)
    assert buf == data


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("ss", [512, 4096])
def test_methods_round_trip(method, ss):
    rnd = random.Random(method + ss)
    c = SectorCipher(method, rnd.randbytes(64), ss)
    plain = rnd.randbytes(ss * 40)
    offset = ss * 1000
    enc = c.encrypt(plain, offset)
    assert enc != plain and c.encrypt(plain, offset + ss) != enc  # the offset is the IV
    assert c.decrypt(enc, offset) == plain
    out = bytearray(len(plain))
    c.decrypt_into(enc, offset, out)
    assert out == plain
    with pytest.raises(ValueError):
        c.decrypt(enc[:ss // 2], offset)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_reads_larger_than_a_slice_equal_sector_by_sector(method):
    """decrypt_into works SLICE bytes at a time; a read of two slices and a bit gives what
    each sector decrypted on its own gives (the IV/tweak of every piece at its own offset)."""
    rnd = random.Random(method)
    c = SectorCipher(method, rnd.randbytes(64), 512)
    enc = rnd.randbytes(2 * SLICE + 3 * 512)
    offset = 512 * 777
    out = bytearray(len(enc))
    c.decrypt_into(enc, offset, out)
    assert out == b"".join(c.decrypt(enc[i:i + 512], offset + i) for i in range(0, len(enc), 512))
    assert c.encrypt(out, offset) == enc


@native
@pytest.mark.parametrize("path", fvecrypt.PATHS)
@pytest.mark.parametrize("ss", [512, 4096])
@pytest.mark.parametrize("count", [1, 3, 32, 41])
def test_one_pass_cbc_elephant_equals_its_twin(ss, count, path):
    """CBC chaining + diffusers + sector keys in one C pass, into a separate buffer or into
    the ciphertext's own buffer, equal the Python twin (cbc_xor then elephant_decrypt), on
    each C path this CPU can run (41 sectors: whole SIMD groups and a rest)."""
    rnd = random.Random(ss * 7 + count)
    ecb, ct = rnd.randbytes(ss * count), rnd.randbytes(ss * count)
    ivs, keys = rnd.randbytes(16 * count), rnd.randbytes(32 * count)
    want, got = bytearray(ss * count + 5), bytearray(ss * count + 5)
    fvecrypt.py_cbc_elephant_decrypt(want, ecb, ct, ivs, keys, ss)
    fvecrypt.cbc_elephant_decrypt(got, ecb, ct, ivs, keys, ss, path)
    assert got == want and got[:ss * count] != ecb
    in_place = bytearray(ct)
    fvecrypt.cbc_elephant_decrypt(in_place, ecb, in_place, ivs, keys, ss, path=path)
    assert in_place == want[:ss * count]
    plain = bytearray(ecb)   # the diffusers alone, with and without sector keys
    for k in ((keys,), ()):
        a, b = bytearray(ecb), bytearray(ecb)
        fvecrypt.elephant_decrypt(a, ss, *k, path=path)
        fvecrypt.py_elephant_decrypt(b, ss, *k)
        assert a == b != plain
    with pytest.raises(ValueError):
        fvecrypt.cbc_elephant_decrypt(bytearray(ss * count - 16), ecb, ct, ivs, keys, ss, path)


@native
@pytest.mark.skipif(platform.machine() != "x86_64" or not Path("/proc/cpuinfo").exists(),
                    reason="not an x86-64 Linux machine")  # the list holds "portable" only
def test_the_cpus_vector_paths_are_built_and_the_widest_is_used():
    """A build that lost its AVX2/AVX-512 paths would still pass the tests above, slowly."""
    flags = set(Path("/proc/cpuinfo").read_text().split("flags", 1)[1].split("\n", 1)[0].split())
    want = [name for name, flag in (("avx512", "avx512f"), ("avx2", "avx2")) if flag in flags]
    assert list(fvecrypt.PATHS) == want + ["portable"]
    with pytest.raises(ValueError):
        fvecrypt.cbc_elephant_decrypt(bytearray(512), bytes(512), bytes(512), bytes(16),
                                      bytes(32), 512, "no-such-path")


SECTOR_SIZES = [64, 96, 208, 512, 1024, 4096]  # 96, 208: sizes no SIMD block divides evenly (208: nor 32)


ELEPHANT = [m for m in sorted(METHODS) if METHODS[m][1] == "cbc-elephant"]
# (Elephant path, AES path): every combination this CPU runs through cbc_elephant_sectors,
# and (path, None) for the one without AES instructions (cryptography, cbc_elephant_decrypt)
ELEPHANT_PATHS = [(p, a) for p in fvecrypt.PATHS for a in fvecrypt.AES_PATHS] + \
    [(p, None) for p in fvecrypt.PATHS]


def on_path(mp: pytest.MonkeyPatch, path: str, aes: str | None) -> None:
    """SectorCipher with Elephant path ``path`` and AES path ``aes`` (None: no AES
    instructions, so cryptography's AES and cbc_elephant_decrypt on ``path``)."""
    mp.setattr(fvecrypt, "cbc_elephant_decrypt",
               functools.partial(fvecrypt.cbc_elephant_decrypt, path=path))
    mp.setattr(fvecrypt, "ELEPHANT_IN_C", aes is not None)
    if aes is None:
        mp.setattr(fvecrypt, "AES_PATHS", ())
    else:
        mp.setattr(fvecrypt, "cbc_elephant_sectors",
                   functools.partial(fvecrypt.cbc_elephant_sectors, path=path, aes=aes))


@native
@pytest.mark.parametrize("path,aes", ELEPHANT_PATHS)
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_each_path_decrypts_random_sectors_as_the_twin_does(path, aes, data):
    """Differential: random key, sector size, first sector number and sector count read
    through SectorCipher with C paths ``path`` and ``aes`` and with the Python twins give the
    same bytes, and those are what the writer encrypted."""
    ss = data.draw(st.sampled_from(SECTOR_SIZES), "sector size")
    count = data.draw(st.integers(1, max(1, (24 << 10) // ss)), "sectors")
    sector = data.draw(st.integers(0, (1 << 40) - 1), "first sector")
    fvek = data.draw(st.binary(min_size=64, max_size=64), "FVEK")
    method = data.draw(st.sampled_from(ELEPHANT))
    c = SectorCipher(method, fvek, ss)
    plain = random.Random(data.draw(st.integers(0, 2 ** 64), "plaintext seed")).randbytes(ss * count)
    enc = c.encrypt(plain, sector * ss)
    with pytest.MonkeyPatch.context() as mp:
        on_path(mp, path, aes)
        got = bytearray(len(enc))
        c.decrypt_into(enc, sector * ss, got)
    with pytest.MonkeyPatch.context() as mp:
        python_only(mp)
        assert c.decrypt(enc, sector * ss) == got == plain


@native
@pytest.mark.skipif(not fvecrypt.AES_PATHS, reason="this CPU has no AES instructions")
@pytest.mark.parametrize("path", fvecrypt.PATHS)
@pytest.mark.parametrize("aes", fvecrypt.AES_PATHS)
@pytest.mark.parametrize("klen", [16, 32])
def test_elephant_from_ciphertext_equals_its_twin(path, aes, klen):
    """cbc_elephant_sectors (IVs, sector keys, AES, chaining, diffusers, sector key, 16
    sectors at a time) equals its Python twin on random keys, sector sizes, offsets and
    sector counts around its group of 16, into a separate buffer (nothing written past the
    sectors) and in place; and on mutated ciphertext (one bit flipped: the sector differs)."""
    rnd = random.Random(f"{path}{aes}{klen}")
    for ss in SECTOR_SIZES + [4096 - 16]:
        for count in (1, 8, 15, 16, 17, 33, 41):
            key, tweak = rnd.randbytes(klen), rnd.randbytes(klen)
            offset = rnd.randrange(1 << 44) * ss
            data = bytearray(rnd.randbytes(ss * count))
            for mutate in (False, True):
                if mutate:
                    bit = rnd.randrange(8 * len(data))
                    data[bit >> 3] ^= 1 << (bit & 7)
                want = bytearray(len(data))
                fvecrypt.py_cbc_elephant_sectors(want, data, offset, key, tweak, ss)
                got = bytearray(len(data) + 7)
                fvecrypt.cbc_elephant_sectors(got, data, offset, key, tweak, ss, path, aes)
                assert got[:len(data)] == want and got[len(data):] == bytes(7), (ss, count)
                in_place = bytearray(data)
                fvecrypt.cbc_elephant_sectors(in_place, in_place, offset, key, tweak, ss,
                                              path=path, aes=aes)
                assert in_place == want, (ss, count)
                if mutate:
                    assert want[bit // 8 // ss * ss:][:ss] != before[bit // 8 // ss * ss:][:ss]
                before = want
    key = bytes(klen)
    for bad in ((bytearray(512), bytes(511), 0, key, key, 512),      # not whole sectors
                (bytearray(511), bytes(512), 0, key, key, 512),      # short output
                (bytearray(512), bytes(512), 0, key[:15], key[:15], 512),
                (bytearray(512), bytes(512), 0, key, bytes(48 - klen), 512),   # other lengths
                (bytearray(8192), bytes(8192), 0, key, key, 8192)):  # sector over 4096
        with pytest.raises(ValueError):
            fvecrypt.cbc_elephant_sectors(*bad, path, aes)
    for names in (("no-such-path", aes), (path, "no-such-aes")):
        with pytest.raises(ValueError):
            fvecrypt.cbc_elephant_sectors(bytearray(512), bytes(512), 0, key, key, 512, *names)


@pytest.mark.parametrize("method", ELEPHANT)
def test_elephant_sectors_same_through_c_and_python(method, monkeypatch):
    """Whole-volume reads of Elephant sectors (SectorCipher.decrypt_into) give the same
    bytes with the extension (all in C where the CPU has AES instructions) and with the
    Python twins."""
    rnd = random.Random(method)
    c = SectorCipher(method, rnd.randbytes(64), 512)
    enc = rnd.randbytes(512 * 300)
    fast = c.decrypt(enc, 512 * 12345)
    python_only(monkeypatch)
    assert c.decrypt(enc, 512 * 12345) == fast


def read_or_error(vol, offset: int, n: int):
    try:
        return vol.read(offset, n)
    except RpfsError as e:
        return type(e)


@native
def test_every_fixture_volume_same_through_c_and_python(bitlk_images_dir, dissect_fve_dir,
                                                        small_fixtures):
    """Differential over every BitLocker volume the suite has (Windows-written and the
    factory's, every method): reads at the start, the end and seeded random places,
    aligned and not, give the same bytes (or the same typed error) through the C paths and
    through the Python twins with cryptography's AES."""
    vols = every_volume(bitlk_images_dir, dissect_fve_dir, blfx.build(small_fixtures))
    assert sum(v.meta.method in ELEPHANT for v in vols.values()) >= 5
    rnd = random.Random(17)
    decrypted = 0   # volumes that gave bytes other than zeros (used-space-only ones may not)
    for name, vol in vols.items():
        spots = [(0, 64 << 10), (vol.size - (48 << 10), 48 << 10), (12345, 7000)]
        spots += [(rnd.randrange(vol.size - (64 << 10)) & ~511, 32 << 10) for _ in range(3)]
        fast = [read_or_error(vol, at, n) for at, n in spots]
        with pytest.MonkeyPatch.context() as mp:
            python_only(mp)
            assert [read_or_error(vol, at, n) for at, n in spots] == fast, name
        decrypted += any(isinstance(b, bytes) and any(b) for b in fast)
    assert decrypted >= len(vols) - 3 and len(vols) >= 30


@native
@pytest.mark.parametrize("path", fvecrypt.AES_PATHS)
@pytest.mark.parametrize("klen", [16, 32])
def test_each_aes_path_equals_cryptography(path, klen):
    """The CPU's AES-ECB decryption (VAES, AES-NI) equals cryptography's for AES-128 and
    AES-256, for block counts around each path's group (16 / 8 blocks), in place too."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    rnd = random.Random(f"{path}{klen}")
    for n in (0, 1, 7, 8, 9, 15, 16, 17, 31, 33, 1000):
        key, data = rnd.randbytes(klen), rnd.randbytes(16 * n)
        want = Cipher(algorithms.AES(key), modes.ECB()).decryptor().update(data)
        out = bytearray(16 * n + 5)
        fvecrypt.ecb_decrypt(out, data, key, path)
        assert bytes(out[:16 * n]) == want and out[16 * n:] == bytes(5), (n, klen)
        buf = bytearray(data)
        fvecrypt.ecb_decrypt(buf, buf, key, path)
        assert buf == want
    for bad in ((bytearray(16), bytes(17), bytes(16)), (bytearray(15), bytes(16), bytes(16)),
                (bytearray(16), bytes(16), bytes(24))):
        with pytest.raises(ValueError):
            fvecrypt.ecb_decrypt(*bad, path)
    with pytest.raises(ValueError):
        fvecrypt.ecb_decrypt(bytearray(16), bytes(16), bytes(16), "no-such-path")


@native
@pytest.mark.skipif(platform.machine() != "x86_64" or not Path("/proc/cpuinfo").exists(),
                    reason="not an x86-64 Linux machine")
def test_the_cpus_aes_paths_are_built():
    """A CPU with AES-NI decrypts with it (VAES first where it has VAES and AVX-512), and
    Elephant all in C where it also has AVX2."""
    flags = set(Path("/proc/cpuinfo").read_text().split("flags", 1)[1].split("\n", 1)[0].split())
    want = (["vaes"] if {"vaes", "avx512f", "aes"} <= flags else []) + (["aesni"] if "aes" in flags else [])
    assert list(fvecrypt.AES_PATHS) == want
    assert fvecrypt.ELEPHANT_IN_C == (bool(want) and "avx2" in flags)   # all in C where it pays


@native
@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("ss", [512, 4096])
def test_every_method_same_with_the_cpus_aes_and_with_cryptography(method, ss, monkeypatch):
    """Differential: reads of two slices and a bit through SectorCipher give the same bytes
    with each of the CPU's AES paths and with cryptography's AES, and those are what the
    writer encrypted."""
    rnd = random.Random(f"{method}{ss}")
    c = SectorCipher(method, rnd.randbytes(64), ss)
    plain = rnd.randbytes(2 * SLICE + 3 * ss)
    enc = c.encrypt(plain, ss * 777)
    got = {}
    for path in fvecrypt.AES_PATHS:
        monkeypatch.setattr(fvecrypt, "ecb_decrypt", functools.partial(fvecrypt.ecb_decrypt, path=path))
        monkeypatch.setattr(fvecrypt, "cbc_elephant_sectors",
                            functools.partial(fvecrypt.cbc_elephant_sectors, aes=path))
        got[path] = bytes(c.decrypt(enc, ss * 777))
        monkeypatch.undo()
    monkeypatch.setattr(fvecrypt, "AES_PATHS", ())
    monkeypatch.setattr(fvecrypt, "ELEPHANT_IN_C", False)
    got["cryptography"] = bytes(c.decrypt(enc, ss * 777))
    assert set(got.values()) == {plain}, [k for k, v in got.items() if v != plain]
