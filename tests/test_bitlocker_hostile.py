"""Hostile BitLocker metadata: random damage to the header and the FVE blocks of a real
(Windows-written) volume raises typed errors or still opens; never anything else."""

from __future__ import annotations

import random

import pytest

from formats.bitlocker import describe, is_bitlocker, open_volume
from formats.bitlocker.keys import Key, KeyRing, recovery_key
from formats.bitlocker.metadata import read_metadata
from streams.errors import RpfsError
from streams.stream import FileStream, Stream

NAME = "bitlk-aes-xts-128-startup-key"


class Patched(Stream):
    """``base`` with some byte ranges replaced (the image stays on disk, unchanged)."""

    def __init__(self, base: Stream, patches: dict[int, bytes], size: int | None = None):
        self.base, self.patches = base, patches
        self.size = base.size if size is None else size
        self.name = "patched"

    def _read(self, offset, length):
        data = bytearray(self.base.read(offset, length))
        for at, patch in self.patches.items():
            lo, hi = max(at, offset), min(at + len(patch), offset + length)
            if lo < hi:
                data[lo - offset:hi - offset] = patch[lo - at:hi - at]
        return bytes(data)


@pytest.fixture(scope="module")
def image(bitlk_images_dir):
    d, confs = bitlk_images_dir
    conf = confs[NAME]
    base = FileStream(d / f"{NAME}.img")
    keys = KeyRing([Key("startup key", (d / f"{conf['SK_VMK_GUID'].upper()}.BEK").read_bytes(), 1),
                    Key("recovery password", recovery_key(conf["RP"]), 2)])
    return base, keys, d


def test_random_damage_is_typed(image):
    base, keys, _ = image
    meta = read_metadata(base)
    block = bytearray(base.read(meta.block_offset, 4096))
    head = bytearray(base.read(0, 512))
    rnd = random.Random(12)
    outcomes = {"opened": 0, "error": 0}
    for i in range(200):
        b, h = bytearray(block), bytearray(head)
        target = b if i % 5 else h
        for _ in range(rnd.randint(1, 8)):
            at = rnd.randrange(0, 1200 if target is b else 512)
            if rnd.random() < 0.5:
                target[at] = rnd.randrange(256)
            else:  # a plausible size or offset field
                target[at:at + 2] = rnd.choice([b"\0\0", b"\xff\xff", b"\x08\0", b"\x10\0"])
        patches = {0: bytes(h)}
        patches.update({off: bytes(b) for off in meta.metadata_offsets})  # all three copies
        stream = Patched(base, patches)
        try:
            if is_bitlocker(stream):
                describe(stream, keys)
                open_volume(stream, keys).read(0, 4096)
            outcomes["opened"] += 1
        except RpfsError as e:
            assert "\n" not in str(e)
            outcomes["error"] += 1
    assert outcomes["error"] > 40 and outcomes["opened"] > 10, outcomes


def test_truncated_anywhere(image):
    base, keys, _ = image
    meta = read_metadata(base)
    assert not is_bitlocker(Patched(base, {}, 0)) and not is_bitlocker(Patched(base, {}, 100))
    for size in (512, meta.metadata_offsets[0] + 64, meta.metadata_offsets[0] + 700,
                 meta.header_offset + 100):
        stream = Patched(base, {}, size)
        assert is_bitlocker(stream)
        with pytest.raises(RpfsError):
            open_volume(stream, keys)
    # cut after the first two copies and the moved boot sectors: it opens, and ends there
    vol = open_volume(Patched(base, {}, meta.metadata_offsets[2] + 1000), keys)
    assert vol.size == meta.metadata_offsets[2] + 1000 and vol.read(3, 8) == b"NTFS    "


def test_bek_for_another_volume_is_not_used(image):
    base, _, d = image
    wrong = d / "AA80A52B-9B66-47AE-B097-33F536FFBB07.BEK"  # the Windows 11 image's
    with pytest.raises(RpfsError) as e:
        open_volume(base, KeyRing([Key("startup key", wrong.read_bytes(), 1)]))
    assert "none of the 1 key" in str(e.value)
