"""BitLocker's cipher helpers: the C extension equals its pure-Python twins, and every
method decrypts what it encrypts, whole or into a buffer. (That the methods are BitLocker's
own is proved on Windows-written volumes in test_bitlocker_images and against dislocker in
test_bitlocker_fixtures.)"""

from __future__ import annotations

import random

import pytest

from formats.bitlocker import fvecrypt
from formats.bitlocker.cipher import SectorCipher
from formats.bitlocker.metadata import METHODS

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


@native
@pytest.mark.parametrize("ss", [512, 4096])
@pytest.mark.parametrize("count", [1, 3, 32, 41])
def test_one_pass_cbc_elephant_equals_its_twin(ss, count):
    """CBC chaining + diffusers + sector keys in one C pass, into a separate buffer or into
    the ciphertext's own buffer, equal the Python twin (cbc_xor then elephant_decrypt)."""
    rnd = random.Random(ss * 7 + count)
    ecb, ct = rnd.randbytes(ss * count), rnd.randbytes(ss * count)
    ivs, keys = rnd.randbytes(16 * count), rnd.randbytes(32 * count)
    want, got = bytearray(ss * count + 5), bytearray(ss * count + 5)
    fvecrypt.py_cbc_elephant_decrypt(want, ecb, ct, ivs, keys, ss)
    fvecrypt.cbc_elephant_decrypt(got, ecb, ct, ivs, keys, ss)
    assert got == want and got[:ss * count] != ecb
    in_place = bytearray(ct)
    fvecrypt.cbc_elephant_decrypt(in_place, ecb, in_place, ivs, keys, ss)
    assert in_place == want[:ss * count]
    with pytest.raises(ValueError):
        fvecrypt.cbc_elephant_decrypt(bytearray(ss * count - 16), ecb, ct, ivs, keys, ss)


@pytest.mark.parametrize("method", [m for m in sorted(METHODS) if METHODS[m][1] == "cbc-elephant"])
def test_elephant_sectors_same_through_c_and_python(method, monkeypatch):
    """Whole-volume reads of Elephant sectors (SectorCipher.decrypt_into) give the same
    bytes with the one-pass extension and with the Python twin."""
    rnd = random.Random(method)
    c = SectorCipher(method, rnd.randbytes(64), 512)
    enc = rnd.randbytes(512 * 300)
    fast = c.decrypt(enc, 512 * 12345)
    monkeypatch.setattr(fvecrypt, "cbc_elephant_decrypt", fvecrypt.py_cbc_elephant_decrypt)
    assert c.decrypt(enc, 512 * 12345) == fast
