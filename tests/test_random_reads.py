"""Random 4 KiB reads of a big NTFS file in a repository mount (issue 17): each READ goes
from the file's run to the stored file in one step from memory (the volume's
``streams.stream.Spans``, made when the NTFS volume is opened), not down the partition and
VHDX layers every time. Counted (the VHDX layer's ``_span`` calls in the serving process,
tests/helpers/countmount.py), never timed; every byte is checked against what ntfs-3g
wrote.

The volume: a 40 MiB NTFS volume (mkntfs + ntfs-3g) holding one 24 MiB file of random
bytes, made a dynamic VHDX by qemu-img and backed up with ``rpfs backup``."""

from __future__ import annotations

import json
import os
import random
import shutil

import pytest

from streams.stream import Spans, bottom
from tests.helpers.cli import image_repo
from tests.helpers.countmount import counted_mount
from tests.helpers.ntfs_images import _rand, build_image
from tests.helpers.streams import ShiftedLayer, ViewBytes

needs_tools = pytest.mark.skipif(
    any(shutil.which(t) is None for t in ("mkntfs", "ntfs-3g", "qemu-img"))
    or not os.path.exists("/dev/fuse"),
    reason="needs mkntfs and ntfs-3g (FUSE)")

BIG = 24 << 20


def populate_big(m: str, man: dict) -> None:
    """One big file of random bytes (``_rand(BIG, 7)``)."""
    with open(m + "/big.bin", "wb") as fh:
        fh.write(_rand(BIG, 7))
    man["big"] = BIG


@pytest.fixture(scope="module")
def big_repo(tmp_path_factory):
    image, _ = build_image("bigfile", 40 << 20, 512, 4096, populate_big, "Big")
    return image_repo(image, tmp_path_factory.mktemp("randomreads"), "big")


@needs_tools
def test_random_reads_of_a_big_file_skip_the_layers_below_the_volume(big_repo, tmp_path):
    data = _rand(BIG, 7)
    rnd = random.Random(4096)
    offsets = [rnd.randrange(BIG // 4096) * 4096 for _ in range(300)]
    with counted_mount(big_repo, tmp_path) as (mp, report):
        path = mp / "big" / "latest" / "volumes" / "big-p0" / "big.bin"
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)   # one READ per pread
            for off in offsets:
                assert os.pread(fd, 4096, off) == data[off:off + 4096], off
        finally:
            os.close(fd)
    counts = json.loads(report.read_text())
    reads = counts["binding"]["15"][1]
    assert reads >= len(set(offsets)) * 3 // 4, counts
    # before: the VHDX layer was asked where each READ lies (one _span per READ, and more
    # for the volume's metadata); now once per MiB window of the volume the file touches
    # (24 here, and a few for the MFT and the boot sector)
    assert counts["vhdx_spans"] < 60 < reads, counts


def test_bottom_steps_from_a_volume_with_spans_to_the_stored_file():
    held = ViewBytes(bytes(range(256)) * (32 << 10))   # 8 MiB, as a stored file
    vhdx = ShiftedLayer(held, 4096)
    volume = ShiftedLayer(vhdx, 1 << 20)                 # a partition at 1 MiB
    file = ShiftedLayer(volume, 8192)                    # a file's run on the volume
    spans = Spans.on(volume)
    assert Spans.on(volume) is spans and volume.spans is spans and file.spans is None
    offsets = [(i * 37 % 1000) * 4096 for i in range(300)]   # inside the first 4 MiB
    for off in offsets:
        below, at = bottom(file, off, 4096)
        assert below is held and at == 4096 + (1 << 20) + 8192 + off
        assert b"".join(file.read_buffers(off, 4096)) == held._data[at:at + 4096]
    windows = len({(8192 + off) >> 20 for off in offsets})
    # the file's own layer is asked each time; those below the volume once per window
    assert file.asked == 2 * len(offsets)
    assert vhdx.asked == windows == spans.walks and volume.asked == windows
