"""Real VHDX test images, built once and cached under .cache/vhdx/ keyed by how they were made.

- ``raw_holes()``: random data with holes at awkward offsets (block and sector boundaries).
- ``raw_ntfs()``: an NTFS volume made by mkntfs with files copied in by ntfscp.
- ``qemu_vhdx(raw, subformat, block_size)``: qemu-img's conversion of a raw image.
- ``chain(depth)``: a base VHDX and differencing children written by our writer, with the
  flat image each level must read as.
- ``logged(...)``: a VHDX with a pending log (written, not applied) and the same file with
  the updates applied directly, for replay checks.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import subprocess
import uuid
from pathlib import Path

from formats.vhdx import VhdxDisk, write_vhdx
from formats.vhdx import structures as S
from formats.vhdx.writer import LOG_LENGTH, LOG_OFFSET, build_header
from streams.stream import FileStream

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache" / "vhdx"
_SRC_KEY = hashlib.sha256(Path(__file__).read_bytes()
                          + (ROOT / "formats/vhdx/writer.py").read_bytes()).hexdigest()[:12]

MiB = 1 << 20
HOLES_SIZE = 83 * MiB + 7 * 512


def _dir(name: str) -> Path:
    d = CACHE / f"{name}-{_SRC_KEY}"
    if not d.exists():
        for old in CACHE.glob(f"{name}-*"):   # built by an older version of this file or the writer
            if old.name[len(name) + 1:].isalnum() and len(old.name) == len(d.name):
                shutil.rmtree(old, ignore_errors=True)
    d.mkdir(parents=True, exist_ok=True)
    return d


def _done(d: Path) -> bool:
    return (d / ".done").exists()


def _mark(d: Path) -> None:
    (d / ".done").write_text("ok")


def _write_sparse(path: Path, data: bytes | bytearray) -> None:
    """Write ``data`` leaving all-zero 64 KiB pieces as holes (cached images stay small)."""
    view = memoryview(data)
    zero = bytes(65536)
    with open(path, "wb") as f:
        f.truncate(len(data))
        for off in range(0, len(data), 65536):
            piece = view[off:off + 65536]
            if piece != zero[:len(piece)]:
                f.seek(off)
                f.write(piece)


def _rand(rng: random.Random, n: int) -> bytes:
    return rng.randbytes(n)


def raw_holes() -> Path:
    d = _dir("holes")
    path = d / "holes.raw"
    if not _done(d):
        rng = random.Random(1234)
        with open(path, "wb") as f:
            f.truncate(HOLES_SIZE)
            for off, n in [(0, 3 * MiB), (5 * MiB + 512 * 11, 700 * 1024 + 512), (31 * MiB + 77 * 512, 2 * MiB),
                           (50 * MiB + 512, 512), (64 * MiB - 4096, 8192), (70 * MiB, 1),
                           (HOLES_SIZE - 5 * 512, 5 * 512)]:
                f.seek(off)
                f.write(_rand(rng, n))
        _mark(d)
    return path


def raw_ntfs() -> Path:
    """A 48 MiB NTFS volume (mkntfs) holding files of assorted sizes (ntfscp)."""
    d = _dir("ntfs")
    path = d / "ntfs.raw"
    if not _done(d):
        with open(path, "wb") as f:
            f.truncate(48 * MiB)
        subprocess.run(["mkntfs", "-F", "-Q", "-q", "-L", "rpfs-vhdx", str(path)], check=True,
                       stderr=subprocess.DEVNULL)
        rng = random.Random(99)
        src = d / "src"
        src.mkdir(exist_ok=True)
        for i, size in enumerate([0, 1, 700, 4096, 65537, 1 << 20, 3 * MiB + 17, 9 * MiB]):
            p = src / f"file{i}.bin"
            p.write_bytes(_rand(rng, size))
            subprocess.run(["ntfscp", "-f", "-q", str(path), str(p), f"file{i}.bin"], check=True,
                           stdout=subprocess.DEVNULL)
        shutil.rmtree(src)
        _mark(d)
    return path


def qemu_vhdx(raw: Path, subformat: str = "dynamic", block_size: int = 32 * MiB) -> Path:
    d = _dir(f"qemu-{raw.stem}-{subformat}-{block_size >> 20}M")
    path = d / f"{raw.stem}.vhdx"
    if not _done(d):
        subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "vhdx", "-o",
                        f"subformat={subformat},block_size={block_size}", str(raw), str(path)], check=True)
        _mark(d)
    return path


def _mutate(data: bytearray, rng: random.Random, level: int, block_size: int) -> None:
    """Changes one child makes: scattered sectors, a run across a block boundary, a zeroed
    block (ZERO state over parent data) and a partly zeroed range."""
    n = len(data)
    for _ in range(40):
        s = rng.randrange(n // 512) * 512
        data[s:s + 512] = _rand(rng, 512)
    edge = (level + 1) * block_size - 3 * 512
    data[edge:edge + 7 * 512] = _rand(rng, 7 * 512)
    zb = level * block_size
    data[zb:zb + block_size] = bytes(block_size)
    data[2 * MiB + 4096 * level: 2 * MiB + 4096 * level + 64 * 1024] = bytes(64 * 1024)
    whole = (5 + level) * block_size
    if whole + block_size <= n:
        data[whole:whole + block_size] = _rand(rng, block_size)


def chain(depth: int = 3, block_size: int = 1 * MiB, logical_sector_size: int = 512,
          zero_blocks: bool = True) -> list[tuple[Path, Path]]:
    """[(vhdx, expected raw)] from base to leaf; children are .avhdx in the same folder."""
    d = _dir(f"chain{depth}-{block_size >> 20}M-{logical_sector_size}-{int(zero_blocks)}")
    base_raw = raw_holes()
    out = [(d / "base.vhdx", d / "base.raw")] + [(d / f"child{i}.avhdx", d / f"child{i}.raw")
                                                 for i in range(1, depth)]
    if _done(d):
        return out
    rng = random.Random(7 + depth)
    data = bytearray(base_raw.read_bytes())
    data = data[:len(data) // logical_sector_size * logical_sector_size]
    _write_sparse(out[0][1], data)
    write_vhdx(FileStream(out[0][1]), out[0][0], block_size=block_size, logical_sector_size=logical_sector_size)
    parent = VhdxDisk(FileStream(out[0][0]))
    for level in range(1, depth):
        _mutate(data, rng, level, block_size)
        vhdx, raw = out[level]
        _write_sparse(raw, data)
        write_vhdx(FileStream(raw), vhdx, block_size=block_size, parent=parent,
                   parent_path=str(out[level - 1][0]), zero_blocks=zero_blocks)
        child = VhdxDisk(FileStream(vhdx))
        child.set_parent(parent)
        parent = child
    _mark(d)
    return out


# ----------------------------------------------------------------------- logs
def _log_entry(seq: int, tail: int, log_guid: uuid.UUID, ops, flushed: int, last: int) -> bytes:
    """One log entry: header + descriptors, then one data sector per data descriptor."""
    descs = []
    sectors = []
    for kind, off, payload in ops:
        if kind == "zero":
            descs.append(S.LogDescriptor.build(dict(signature=S.LOG_ZERO_DESC_SIGNATURE, trailing_bytes=bytes(4),
                                                    leading_bytes=payload.to_bytes(8, "little"),
                                                    file_offset=off, sequence_number=seq)))
        else:
            assert len(payload) == 4096
            descs.append(S.LogDescriptor.build(dict(signature=S.LOG_DATA_DESC_SIGNATURE,
                                                    trailing_bytes=payload[4092:], leading_bytes=payload[:8],
                                                    file_offset=off, sequence_number=seq)))
            sectors.append(S.LOG_DATA_SECTOR_SIGNATURE + (seq >> 32).to_bytes(4, "little") + payload[8:4092]
                           + (seq & 0xFFFFFFFF).to_bytes(4, "little"))
    head_len = -(-(64 + 32 * len(descs)) // 4096) * 4096
    length = head_len + 4096 * len(sectors)
    header = S.LogEntryHeader.build(dict(signature=S.LOG_ENTRY_SIGNATURE, checksum=0, entry_length=length,
                                         tail=tail, sequence_number=seq, descriptor_count=len(descs),
                                         log_guid=log_guid, flushed_file_offset=flushed, last_file_offset=last))
    body = bytearray((header + b"".join(descs)).ljust(head_len, b"\0") + b"".join(sectors))
    body[4:8] = S.checksum_with_field_zeroed(body).to_bytes(4, "little")
    return bytes(body)


def write_pending_log(path: Path, entries: list[list], *, start: int = 0, first_seq: int = 10,
                      stale: bool = True) -> uuid.UUID:
    """Write ``entries`` (each a list of ("data", off, 4096 bytes) / ("zero", off, len)) into
    the log of the VHDX at ``path`` as one active sequence starting at log offset ``start``
    (wrapping around the ring), without applying them, and point the headers at it.
    With ``stale``, an older valid-looking entry with another LogGuid is left before it."""
    size = os.path.getsize(path)
    last = -(-max([size] + [off + (len(p) if k == "data" else p) for e in entries for k, off, p in e]) // MiB) * MiB
    log_guid = uuid.uuid4()
    disk = VhdxDisk(FileStream(path))
    ring = bytearray(LOG_LENGTH)
    if stale:
        ring[:4096] = _log_entry(3, 0, uuid.uuid4(), [], size // MiB * MiB, last)
    pos = start
    seq = first_seq
    for ops in entries:
        blob = _log_entry(seq, start, log_guid, ops, size // MiB * MiB, last)
        for i in range(0, len(blob), 4096):   # circular: sectors wrap at the end of the log
            p = (pos + i) % LOG_LENGTH
            ring[p:p + 4096] = blob[i:i + 4096]
        pos = (pos + len(blob)) % LOG_LENGTH
        seq += 1
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, bytes(ring), LOG_OFFSET)
        h = disk.header
        for i, off in enumerate(S.HEADER_OFFSETS):
            os.pwrite(fd, build_header(h.sequence_number + 1 + i, uuid.uuid4(), h.data_write_guid,
                                       log_guid=log_guid), off)
    finally:
        os.close(fd)
    return log_guid


def apply_updates(path: Path, entries: list[list]) -> None:
    """What replay must produce: the same updates written straight into the file."""
    fd = os.open(path, os.O_WRONLY)
    try:
        for ops in entries:
            for kind, off, payload in ops:
                os.pwrite(fd, payload if kind == "data" else bytes(payload), off)
    finally:
        os.close(fd)


def logged(start: int = 0) -> tuple[Path, Path, Path]:
    """(vhdx with pending log, same vhdx with updates applied, base raw) for a dynamic
    1 MiB-block VHDX of raw_holes(): the log moves a block, zeroes BAT entries with a zero
    descriptor and rewrites a payload sector, so replay visibly changes the disk."""
    d = _dir(f"logged-{start}")
    pending, applied = d / "pending.vhdx", d / "applied.vhdx"
    if _done(d):
        return pending, applied, raw_holes()
    write_vhdx(FileStream(raw_holes()), pending, block_size=1 * MiB)
    disk = VhdxDisk(FileStream(pending))
    bat_off = disk.bat_offset
    page = bytearray(disk.file.read(bat_off, 4096))
    e0 = int.from_bytes(page[0:8], "little")
    e1 = int.from_bytes(page[8:16], "little")
    page[0:8], page[8:16] = e1.to_bytes(8, "little"), e0.to_bytes(8, "little")   # swap blocks 0 and 1
    e31 = int.from_bytes(page[31 * 8:32 * 8], "little")
    page[31 * 8:32 * 8] = (S.PAYLOAD_BLOCK_ZERO).to_bytes(8, "little") if e31 else page[31 * 8:32 * 8]
    state, foff = disk.block_state(2)
    sector = bytearray(disk.file.read(foff + 8192, 4096))
    sector[:16] = b"REPLAYED-SECTOR!"
    sector[-4:] = b"TAIL"
    entries = [
        [("zero", bat_off, 4096)],                  # every block NOT_PRESENT ...
        [("data", bat_off, bytes(page))],           # ... then the new BAT page wins
        [("data", foff + 8192, bytes(sector)), ("zero", foff + 16384, 8192)],
    ]
    shutil.copyfile(pending, applied)
    apply_updates(applied, entries)
    write_pending_log(pending, entries, start=start)
    _mark(d)
    return pending, applied, raw_holes()
