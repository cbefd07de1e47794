"""Seeds for the Linux guests' fuzz targets (``ext4_volume``, ``lvm``, ``lvm_text``), made by
the real tools: small ext2/3/4 images from ``mkfs.* -d`` with each layout the reader knows
(extents with and without metadata_csum, indirect blocks, inline data, 1 KiB blocks,
meta_bg), the image whose journal holds committed transactions (tools/fixtures/linux.py),
and the physical volumes of the LVM fixture (pvcreate/vgcreate/vgcfgrestore)."""

from __future__ import annotations

import os
import struct
import random
import subprocess
import tempfile
from pathlib import Path

from streams.stream import FileStream, SliceStream
from tests.fuzz.targets import encode_image

MAX_SEED = 192 << 10
LAYOUTS = {
    "ext4-csum": ["mkfs.ext4", "-O", "metadata_csum,64bit"],
    "ext4-plain": ["mkfs.ext4", "-O", "^metadata_csum,^64bit"],
    "ext4-inline": ["mkfs.ext4", "-O", "inline_data,^metadata_csum", "-I", "256"],
    "ext4-1k-metabg": ["mkfs.ext4", "-b", "1024", "-O", "^resize_inode,meta_bg,^metadata_csum"],
    "ext3": ["mkfs.ext3"],
    "ext2": ["mkfs.ext2"],
}


def _blocks(stream, budget: int, block: int = 1024, start: int = 0, end: int | None = None):
    out, used = [], 0
    end = stream.size if end is None else min(end, stream.size)
    for off in range(start, end, block):
        b = stream.read(off, block)
        if b.count(0) != len(b):
            if used + len(b) > budget:
                break
            out.append((off - start, b))
            used += len(b)
    return out


def _tree(root: Path) -> None:
    rnd = random.Random(1)
    (root / "d" / "sub").mkdir(parents=True)
    (root / "small").write_bytes(b"tiny")
    (root / "d" / "file").write_bytes(rnd.randbytes(9000))
    for i in range(40):
        (root / "d" / "sub" / f"entry-{i:03d}-{'x' * (i % 30)}").write_bytes(bytes([i]) * i)
    os.symlink("d/file", root / "fast")
    os.symlink("x" * 90, root / "slow")
    with open(root / "sparse", "wb") as f:
        f.seek(300_000)
        f.write(b"end")


def ext4_seeds() -> list[bytes]:
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        _tree(src)
        for name, mkfs in LAYOUTS.items():
            img = Path(tmp) / f"{name}.img"
            subprocess.run(mkfs + ["-q", "-F", "-N", "128", "-d", str(src), str(img), "3M"],
                           check=True, capture_output=True)
            s = FileStream(img)
            out.append(encode_image(s.size, _blocks(s, MAX_SEED - 2048)))
    from tools.fixtures import linux
    try:
        j = FileStream(linux.image("ext4-journal") / "journal.img")
    except linux.Unavailable:
        return out
    # the metadata at the start, then the journal's log (where the reader finds it)
    import ext4_reader
    vol = ext4_reader.open_volume(j)
    bs = vol.block_size
    run = vol.block_map(vol.inode(vol.sb.journal_inum)).runs[0]
    log = _blocks(j, 80 << 10, bs, run.physical * bs, (run.physical + run.count) * bs)
    table = vol._desc(0).inode_table * bs
    inodes = _blocks(j, 16 << 10, bs, table, table + (16 << 10))
    budget = MAX_SEED - 4096 - sum(len(b) for _, b in log + inodes)
    head = _blocks(j, budget, bs)
    out.append(encode_image(j.size, head + [(table + o, b) for o, b in inodes]
                            + [(run.physical * bs + o, b) for o, b in log]))
    return out


def lvm_seeds() -> tuple[list[bytes], list[bytes]]:
    """(PV images, metadata texts) from the LVM fixture."""
    from formats import lvm
    from tools.fixtures import linux
    try:
        d = linux.image("lvm")
    except linux.Unavailable:
        return [], []
    pvs, texts = [], []
    a = FileStream(d / "lvm-a.raw")
    for s in (FileStream(d / "lvm-b.raw"), SliceStream(a, 1 << 20, a.size - (1 << 20))):
        pvs.append(encode_image(s.size, _blocks(s, (96 << 10) - 2048, 512, 0, 1 << 20)))
        texts.append(lvm.read_metadata(lvm.read_pv("seed", s))[0].encode())
    return pvs, texts


def linux_seeds(save) -> None:
    """``save(target, data)`` for every seed above."""
    for data in ext4_seeds():
        save("ext4_volume", data)
    pvs, texts = lvm_seeds()
    for data in pvs:
        save("lvm", data)
    for data in texts:
        save("lvm_text", data)
    for target, data in ldm_seeds():
        save(target, data)


def ldm_seeds() -> list[tuple[str, bytes]]:
    """Each dynamic disk of the LDM fixture VM (MBR and GPT) and its database."""
    from tools.fixtures import ldm as factory
    out = []
    vm = factory.vm()
    for n in (1, 4):
        s = FileStream(vm / "raw" / f"disk{n}.raw")
        ph = 6 * 512 if n == 1 else (34 + 2047) * 512
        cfg_start = struct.unpack_from(">Q", s.read(ph + 299, 8))[0] * 512
        blocks = [(0, s.read(0, 34 * 512)), (cfg_start, s.read(cfg_start, 20 << 10))]
        if n == 4:      # GPT: the PRIVHEAD ends the metadata partition; the backup table
            blocks.append((ph, s.read(ph, 512)))
            blocks.append((s.size - 33 * 512, s.read(s.size - 33 * 512, 33 * 512)))
        out.append(("ldm", encode_image(s.size, blocks, 0)))
        out.append(("ldm_database", s.read(cfg_start, 20 << 10)))
    return out
