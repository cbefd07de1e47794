"""streams.crc32c (our C CRC-32C) against published check values and the crc32c package,
through both of its paths (the SSE 4.2 instruction and the tables)."""

from __future__ import annotations

import random

import crc32c as oracle
import pytest

import streams.crc32c
from streams import _crc32c

# RFC 3720 (iSCSI) B.4, and the CRC catalogue's check value for CRC-32/ISCSI
VECTORS = [
    (bytes(32), 0x8A9136AA),
    (b"\xff" * 32, 0x62A8AB43),
    (bytes(range(32)), 0x46DD794E),
    (bytes(range(31, -1, -1)), 0x113FDB5C),
    (b"123456789", 0xE3069283),
    (b"", 0),
]
PATHS = [_crc32c.crc32c, _crc32c.table_crc32c]


def test_the_c_extension_is_what_streams_uses():
    assert streams.crc32c.crc32c is _crc32c.crc32c


@pytest.mark.parametrize("crc", PATHS)
def test_published_check_values(crc):
    for data, want in VECTORS:
        assert crc(data) == want, data


@pytest.mark.parametrize("crc", PATHS)
def test_matches_the_crc32c_package_at_every_length_and_alignment(crc):
    rnd = random.Random(17)
    blob = rnd.randbytes(70_000 + 8)
    for n in list(range(0, 80)) + [511, 512, 4095, 4096, 65535, 65536, 70_000]:
        for start in range(8):
            data = memoryview(blob)[start:start + n]   # unaligned starts, no copy
            value = rnd.choice([0, 0xFFFFFFFF, rnd.getrandbits(32)])
            assert crc(data, value) == oracle.crc32c(bytes(data), value), (n, start, value)


@pytest.mark.parametrize("crc", PATHS)
def test_continues_from_a_previous_result(crc):
    data = random.Random(3).randbytes(10_000)
    for cut in (0, 1, 7, 4096, 9_999, 10_000):
        assert crc(data[cut:], crc(data[:cut])) == crc(data)


def test_takes_any_buffer_and_refuses_what_is_not_one():
    data = b"vhdx header" * 50
    want = oracle.crc32c(data)
    for form in (data, bytearray(data), memoryview(data)):
        assert _crc32c.crc32c(form) == want
    with pytest.raises(TypeError):
        _crc32c.crc32c("text")
