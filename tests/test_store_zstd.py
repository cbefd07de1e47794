"""rpfs.store.zstd: the C decoder (libzstd) against its reference twin (the zstandard
package) on the same frames. Good frames give the same bytes; damaged ones (hypothesis:
bytes flipped, cut, appended) give, through every reader that uses them (a chunk, a framed
chunk's frames, a chunk map), the same outcome, or the right bytes through one and an error
through the other (the two libzstd versions check some damage differently), never two
different decodings nor a traceback. (Through a chunk, a damaged frame may decode without an
error to wrong bytes, different through the two: our frames carry no checksum, the chunk id
over the result is the check.)"""

from __future__ import annotations

import os

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings, strategies as st

from streams.errors import FormatError, IntegrityError
from rpfs.store import catalog, packs, zstd

SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

TEXT = b"".join(b"2026-12-07 22:%02d:%02d host rpfs[%d]: read %d\n" % (i // 60 % 60, i % 60, i, i * 7)
                for i in range(3000))
RANDOM = os.urandom(20000)


def test_the_extension_is_built():
    """setup.sh installs libzstd-dev: without the extension every read goes through the
    twin, and this file would compare the twin with itself."""
    assert zstd._zstd is not None


def _frame(data: bytes, level: int = 3, size: bool = True) -> bytes:
    return zstandard.ZstdCompressor(level=level, write_content_size=size).compress(data)


def _skippable(body: bytes) -> bytes:
    return (0x184D2A50).to_bytes(4, "little") + len(body).to_bytes(4, "little") + body


GOOD = {
    "text": [_frame(TEXT)],
    "random": [_frame(RANDOM)],
    "no size": [_frame(TEXT, size=False)],
    "empty": [_frame(b"")],
    "level 19": [_frame(TEXT[:5000], 19)],
    "several": [_frame(TEXT[:7000]), _frame(RANDOM[:3000], size=False), _frame(TEXT[7000:9000])],
    "skippable between": [_frame(TEXT[:4000]), _skippable(b"note"), _frame(TEXT[4000:6000])],
}


@pytest.mark.parametrize("name", GOOD)
def test_good_frames_give_the_same_bytes_through_both(name):
    frames = GOOD[name]
    src = b"".join(frames)
    whole = zstandard.ZstdDecompressor().stream_reader(src, read_across_frames=True).read()
    first = zstandard.ZstdDecompressor().stream_reader(frames[0]).read()
    assert zstd.content_size(src) == zstd.py_content_size(src)
    assert zstd.decompress(src, len(first)) == zstd.py_decompress(src, len(first)) == first
    assert zstd.decompress(src, len(whole), across=True) == \
        zstd.py_decompress(src, len(whole), across=True) == whole
    a, b = bytearray(len(whole)), bytearray(len(whole))
    assert zstd.decompress_into(src, a) == zstd.py_decompress_into(src, b) == len(whole)
    assert a == b == whole
    if whole:   # one byte less room: both refuse
        for fn in (zstd.decompress, zstd.py_decompress):
            with pytest.raises(zstd.Error):
                fn(src, len(whole) - 1, across=True)


def test_a_window_larger_than_allowed_is_refused_by_both():
    params = zstandard.ZstdCompressionParameters.from_level(1, window_log=20, write_content_size=False)
    co = zstandard.ZstdCompressor(compression_params=params).compressobj()   # size unknown
    frame = co.compress(TEXT) + co.flush()
    for fn in (zstd.decompress, zstd.py_decompress):
        assert fn(frame, len(TEXT), window_max=1 << 20) == TEXT
        with pytest.raises(zstd.Error, match="too much memory"):
            fn(frame, len(TEXT), window_max=1 << 19)


def test_a_declared_size_beyond_the_room_is_refused_before_decoding():
    """(a header claiming exabytes: tests/test_store_hostile.py)"""
    for fn in (zstd.decompress, zstd.py_decompress):
        with pytest.raises(zstd.Error, match=f"declares {len(TEXT)} bytes"):
            fn(_frame(TEXT), len(TEXT) - 1)


def _outcome(right, fn, *args):
    """"right" if ``fn(*args)`` gives ``right``, else the error it raises, or "wrong" (which
    a reader's check of the chunk id turns into IntegrityError)"""
    try:
        out = fn(*args)
    except (IntegrityError, FormatError) as e:
        return type(e).__name__
    out = bytes(out) if isinstance(out, (memoryview, bytearray)) else out
    return "right" if out == right else "wrong"


def _both(right, fn, *args):
    """(the C decoder's outcome, the twin's)"""
    c = _outcome(right, fn, *args)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(zstd, "_zstd", None)
        py = _outcome(right, fn, *args)
    return c, py


def _checked(outcome: str) -> str:
    return "IntegrityError" if outcome == "wrong" else outcome


def _agree(c: str, py: str) -> bool:
    """The same outcome, or one refuses what the other decodes: the system's libzstd
    (1.5.4 here) and zstandard's own (1.5.7) check some damage differently (a flipped bit
    near a chunk map's end: 1.5.7 says "Data corruption detected", 1.5.4 decodes the right
    ids). Never two different decodings."""
    decoded = ("right", "wrong")
    return c == py or (c in decoded) != (py in decoded)


def _damaged(data: st.DataObject, good: bytes) -> bytes:
    b = bytearray(good)
    for _ in range(data.draw(st.integers(0, 4))):
        if b:
            b[data.draw(st.integers(0, len(b) - 1))] ^= data.draw(st.integers(1, 255))
    cut = data.draw(st.integers(0, len(b)))
    return bytes(b[:cut] if data.draw(st.booleans()) else b) + data.draw(st.binary(max_size=8))


@SETTINGS
@given(st.data(), st.sampled_from(["text", "random", "no size", "several", "skippable between"]))
def test_damaged_chunks_read_the_same_through_both(data, name):
    src = _damaged(data, b"".join(GOOD[name]))
    first = zstandard.ZstdDecompressor().stream_reader(GOOD[name][0]).read()
    c, py = _both(first, packs.decompress, packs.ZSTD, src, len(first))
    assert _agree(_checked(c), _checked(py)), (c, py)
    whole = zstandard.ZstdDecompressor().stream_reader(b"".join(GOOD[name]),
                                                       read_across_frames=True).read()
    c, py = _both(whole, packs.decompress_frames, memoryview(src), len(whole))
    assert _agree(_checked(c), _checked(py)), (c, py)
    c, py = _both(whole, lambda: packs.decompress_frames(memoryview(src), len(whole),
                                                         memoryview(bytearray(len(whole)))))
    assert _agree(_checked(c), _checked(py)), (c, py)


@SETTINGS
@given(st.data(), st.integers(0, 3000))
def test_damaged_chunk_maps_read_the_same_through_both(data, n):
    ids = [data.draw(st.integers(0, 1 << 40)) for _ in range(min(n, 20))] + list(range(n))
    blob = catalog.encode_map(ids)
    assert catalog.decode_map(blob, len(ids)).tolist() == ids
    damaged = blob[:2] + _damaged(data, blob[2:])
    count = max(0, len(ids) + data.draw(st.sampled_from([0, 0, 1, -1])))
    c, py = _both(ids, lambda: catalog.decode_map(damaged, count).tolist())
    assert _agree(c, py), (c, py)
