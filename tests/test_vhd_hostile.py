"""Truncated, bit-flipped and hostile VHDs: typed errors only, no hangs, bounded memory."""

from __future__ import annotations

import itertools
import random
import struct
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from formats import open_image
from formats.disk import RawDisk
from formats.vhd import VhdDisk, vhd_checksum
from formats.vhd_writer import write_vhd
from streams.errors import FormatError
from streams.stream import BytesStream

SIZE = 3 << 20
BLOCK = 256 << 10


def _content(seed: int) -> bytes:
    rnd = random.Random(seed)
    data = bytearray(SIZE)
    for _ in range(12):
        at = rnd.randrange(0, SIZE - 40000)
        data[at : at + 40000] = rnd.randbytes(40000)
    return bytes(data)


def _build() -> dict[str, bytes]:
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        base = _content(1)
        write_vhd(BytesStream(base), d / "base.vhd", block_size=BLOCK)
        child = bytearray(base)
        child[100000:100700] = b"c" * 700
        child[2 << 20 : (2 << 20) + 5000] = bytes(5000)
        write_vhd(BytesStream(bytes(child)), d / "child.avhd", parent=d / "base.vhd",
                  block_size=BLOCK)
        write_vhd(BytesStream(base), d / "fixed.vhd", fixed=True)
        return {"base": (d / "base.vhd").read_bytes(), "child": (d / "child.avhd").read_bytes(),
                "fixed": (d / "fixed.vhd").read_bytes(), "content": base}


IMAGES = _build()


def _exercise(data: bytes, parent_content: bytes | None = None) -> None:
    """Open and read like the layers above would; only FormatError may come out."""
    try:
        disk = open_image(BytesStream(data, name="hostile.vhd"))
        if not isinstance(disk, VhdDisk):
            return  # no signature left: it is a raw disk now, which is fine
        if disk.kind == "differencing":
            disk.set_parent(RawDisk(BytesStream(parent_content or bytes(SIZE))))
        n = min(disk.size, 4 << 20)
        disk.read(0, n)
        disk.read(max(0, disk.size - n), n)
        buf = bytearray(70000)
        disk.readinto(max(0, disk.size // 2 - 1000), buf)
        for _ in itertools.islice(disk.extents(0, 64 << 20), 10000):
            pass
        _ = disk.parent_ref
    except FormatError as e:
        assert "hostile.vhd" in str(e) or e.source
    except MemoryError:  # pragma: no cover
        pytest.fail("unbounded allocation")


def test_sound_images_read_back():
    disk = open_image(BytesStream(IMAGES["child"]))
    disk.set_parent(open_image(BytesStream(IMAGES["base"])))
    assert disk.read(100000, 700) == b"c" * 700
    assert disk.read(0, 100000) == IMAGES["content"][:100000]
    assert open_image(BytesStream(IMAGES["fixed"])).read(0, SIZE) == IMAGES["content"]


def _regions(name: str) -> dict[str, tuple[int, int]]:
    data = IMAGES[name]
    if name == "fixed":
        return {"footer": (len(data) - 512, 512)}
    return {"footer": (len(data) - 512, 512), "footer copy": (0, 512),
            "header": (512, 1024), "bat": (1536, 512), "locators": (2048, 2048),
            "first block": (4096, 2048)}


@pytest.mark.parametrize("name", ["base", "child", "fixed"])
def test_truncations(name):
    data = IMAGES[name]
    for cut in sorted({0, 1, 511, 512, 513, 1535, 1536, 2047, 4096, 5000, len(data) // 2,
                       len(data) - 513, len(data) - 512, len(data) - 1}):
        _exercise(data[:cut], IMAGES["content"])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(["base", "child", "fixed"]), data=st.data(),
       fix_checksums=st.booleans())
def test_mutations(name, data, fix_checksums):
    raw = bytearray(IMAGES[name])
    region = data.draw(st.sampled_from(sorted(_regions(name).items())), label="region")[1]
    for _ in range(data.draw(st.integers(1, 6), label="flips")):
        at = region[0] + data.draw(st.integers(0, region[1] - 1), label="offset")
        raw[min(at, len(raw) - 1)] = data.draw(st.integers(0, 255), label="byte")
    if fix_checksums:  # get past the checksums so the field checks are what is tested
        for at in (0, len(raw) - 512):
            if raw[at : at + 8] == b"conectix":
                raw[at + 64 : at + 68] = vhd_checksum(raw[at : at + 512], 64).to_bytes(4, "big")
        if raw[512:520] == b"cxsparse":
            raw[548:552] = vhd_checksum(raw[512:1536], 36).to_bytes(4, "big")
    _exercise(bytes(raw), IMAGES["content"])


def _patched(name: str, where: str, offset: int, fmt: str, value: int) -> bytes:
    raw = bytearray(IMAGES[name])
    base = {"footer": len(raw) - 512, "header": 512}[where]
    struct.pack_into(fmt, raw, base + offset, value)
    for at in (0, len(raw) - 512):
        if raw[at : at + 8] == b"conectix":
            if where == "footer" and at == 0:
                struct.pack_into(fmt, raw, offset, value)
            raw[at + 64 : at + 68] = vhd_checksum(raw[at : at + 512], 64).to_bytes(4, "big")
    raw[548:552] = vhd_checksum(raw[512:1536], 36).to_bytes(4, "big")
    return bytes(raw)


@pytest.mark.parametrize("where,offset,fmt,value,match", [
    ("footer", 48, ">Q", 1 << 62, "BAT"),                  # current size: BAT cannot hold it
    ("footer", 16, ">Q", 1 << 62, "dynamic header"),       # data offset outside the file
    ("footer", 60, ">I", 7, "disk type"),
    ("header", 16, ">Q", 1 << 40, "BAT"),                  # table offset outside the file
    ("header", 28, ">I", 1, "entries"),                    # max table entries too small
    ("header", 32, ">I", 0, "block size"),
    ("header", 32, ">I", 3 << 20, "block size"),
    ("header", 32, ">I", 1 << 31, "block size"),
    ("header", 576 + 24 + 8, ">I", 1 << 30, "locator"),   # locator length
    ("header", 576 + 24 + 16, ">Q", 1 << 50, "locator"),  # locator offset
])
def test_hostile_fields(where, offset, fmt, value, match):
    data = _patched("child", where, offset, fmt, value)
    with pytest.raises(FormatError, match=match):
        disk = VhdDisk(BytesStream(data, name="hostile.vhd"))
        disk.set_parent(RawDisk(BytesStream(bytes(SIZE))))
        disk.read(0, disk.size)


def test_bat_entry_past_end_is_typed():
    raw = bytearray(IMAGES["base"])
    struct.pack_into(">I", raw, 1536, 0x7FFFFFF0)
    disk = VhdDisk(BytesStream(bytes(raw), name="hostile.vhd"))
    with pytest.raises(FormatError, match="BAT entry"):
        disk.read(0, 10)
    with pytest.raises(FormatError, match="BAT entry"):
        list(disk.extents())
    assert disk.read(BLOCK, 10) == IMAGES["content"][BLOCK : BLOCK + 10]


def test_too_small_and_garbage():
    for data in (b"", b"conectix", b"conectix" + bytes(600), bytes(511) + b"c"):
        try:
            d = open_image(BytesStream(data, name="hostile.vhd"))
        except FormatError:
            continue
        assert d.format == "raw"
