"""Export a disk as VHD: fixed, dynamic, or differencing against an existing VHD parent.

Footer choices: creator application "win " on host "Wi2k" (Hyper-V's values), so every
reader takes the footer's *current size* as the disk size: Hyper-V and libvhdi always do,
and qemu does for "win " (for "vpc "/"qemu" it would use the CHS geometry and cut the tail).
The current size is the source size rounded up to whole 512-byte sectors; the CHS geometry
is the spec's approximation of it.

Dynamic layout: footer copy (0), dynamic header (512), BAT (1536), parent locator data
(differencing only), then blocks in disk order, each a sector bitmap and ``block_size``
bytes, then the footer. Blocks whose bytes are all zero (or, for a child, all equal to the
parent) are not allocated; ZERO extents of the source are never read.
"""

from __future__ import annotations

import os
import time
import uuid

from formats.raw_writer import atomic_output, data_chunks, nonzero_runs, pwrite_all
from formats.vhd import (DYNAMIC_HEADER, FOOTER, NO_DATA_OFFSET, SECTOR, TYPE_DIFFERENCING,
                         TYPE_DYNAMIC, TYPE_FIXED, chs_geometry, vhd_checksum)
from streams.errors import FormatError, UsageError
from streams.stream import DATA, Stream, is_zero

DEFAULT_BLOCK_SIZE = 2 << 20
MAX_VHD_SIZE = 2040 << 30          # Hyper-V's and qemu's limit for VHD
VHD_EPOCH = 946684800              # 2000-01-01T00:00:00Z
CREATOR_APP = b"win "
CREATOR_HOST = b"Wi2k"
CREATOR_VERSION = 0x000A0000
HEADER_AT = 512
BAT_AT = 1536


def _vhd_time(t: float | None = None) -> int:
    return max(0, int(time.time() if t is None else t) - VHD_EPOCH) & 0xFFFFFFFF


def build_footer(size: int, disk_type: int, unique_id: uuid.UUID, *,
                 timestamp: int | None = None, creator_app: bytes = CREATOR_APP) -> bytes:
    """A 512-byte footer with its checksum."""
    c, h, s = chs_geometry(size)
    raw = bytearray(FOOTER.build(dict(
        cookie=b"conectix", features=2, version=0x00010000,
        data_offset=NO_DATA_OFFSET if disk_type == TYPE_FIXED else HEADER_AT,
        timestamp=_vhd_time() if timestamp is None else timestamp,
        creator_app=creator_app, creator_version=CREATOR_VERSION, creator_host=CREATOR_HOST,
        original_size=size, current_size=size, cylinders=c, heads=h, sectors_per_track=s,
        disk_type=disk_type, checksum=0, unique_id=unique_id.bytes, saved_state=0)))
    raw[64:68] = vhd_checksum(raw, 64).to_bytes(4, "big")
    return bytes(raw)


def _check(source: Stream, block_size: int) -> int:
    # Below 4 KiB a block's bitmap is shorter than a byte per 8 sectors rounds to, and qemu
    # (bitmap size 0) and libvhdi (I/O error) both misread such files: refuse to write them.
    if block_size < 4096 or block_size & (block_size - 1) or block_size > 256 << 20:
        raise UsageError(f"VHD block size {block_size} must be a power of two, 4 KiB-256 MiB")
    size = -(-source.size // SECTOR) * SECTOR
    if size > MAX_VHD_SIZE:
        raise UsageError(f"{source.name} is {size} bytes; VHD holds at most 2040 GiB "
                         "(export as VHDX)")
    return size


def write_vhd(source: Stream, dest: str | os.PathLike, *, fixed: bool = False,
              block_size: int = DEFAULT_BLOCK_SIZE, parent=None,
              parent_path: str | os.PathLike | None = None,
              parent_locators: list[tuple[str, str]] | None = None, progress=None,
              unique_id: uuid.UUID | None = None, timestamp: int | None = None,
              creator_app: bytes = CREATOR_APP) -> uuid.UUID:
    """Write ``source`` as a VHD at ``dest``; returns the new disk's unique id.

    ``parent``: a VHD to make a differencing child of, as a path (its chain resolved among
    its siblings) or an opened VHD ``Disk`` (then ``parent_path`` names its file); only
    sectors where ``source`` differs from the parent are stored. ``parent_locators``
    overrides the (code, path) locators written (default: W2ku absolute, W2ru ".\\name").
    """
    size = _check(source, block_size)
    unique_id = unique_id or uuid.uuid4()
    if fixed:
        if parent is not None:
            raise UsageError("a differencing VHD cannot be fixed")
        _write_fixed(source, dest, size, unique_id, timestamp, creator_app, progress)
    else:
        _write_dynamic(source, dest, size, block_size, unique_id, timestamp, creator_app,
                       parent, parent_path, parent_locators, progress)
    return unique_id


def _write_fixed(source, dest, size, unique_id, timestamp, creator_app, progress):
    footer = build_footer(size, TYPE_FIXED, unique_id, timestamp=timestamp,
                          creator_app=creator_app)
    with atomic_output(dest) as fd:
        os.ftruncate(fd, size + SECTOR)
        for pos, view in data_chunks(source):
            if view is not None:
                pwrite_all(fd, view, pos)
            elif progress:
                progress(pos, source.size)
        pwrite_all(fd, footer, size)
    if progress:
        progress(source.size, source.size)


def _data_blocks(stream: Stream, block_size: int) -> set[int]:
    """Indices of blocks holding any DATA extent of ``stream``."""
    blocks: set[int] = set()
    for e in stream.extents():
        if e.kind == DATA and e.length:
            blocks.update(range(e.offset // block_size, (e.end - 1) // block_size + 1))
    return blocks


def _locators(dest: str, parent_path: str, override) -> list[tuple[bytes, bytes]]:
    if override is None:
        absolute = os.path.abspath(parent_path)
        rel = os.path.relpath(absolute, os.path.dirname(os.path.abspath(dest)))
        rel = rel.replace(os.sep, "\\")
        if not rel.startswith(".."):
            rel = ".\\" + rel
        override = [("W2ku", absolute), ("W2ru", rel)]
    out = []
    for code, text in override:
        if len(code) != 4:
            raise UsageError(f"parent locator code {code!r} must be 4 characters")
        out.append((code.encode("latin-1"), text.encode("utf-16-le")))
    if len(out) > 8:
        raise UsageError("a VHD holds at most 8 parent locators")
    return out


def _open_parent(parent, parent_path, size):
    from formats.disk import Disk
    if isinstance(parent, Disk):
        disk = parent
        if parent_path is None:
            parent_path = getattr(disk.source, "path", None)
        if parent_path is None:
            raise UsageError("parent_path is needed to write the parent locators")
    else:
        from formats.chain import open_path
        parent_path = parent
        (disk,) = open_path(parent).values()
    if disk.format != "vhd":
        raise UsageError(f"parent {parent} is {disk.format}; a VHD child needs a VHD parent")
    if disk.size != size:
        raise UsageError(f"parent {parent} is {disk.size} bytes, child would be {size}")
    return disk, os.fspath(parent_path)


def _differing_sectors(a: memoryview, b: memoryview) -> list[int]:
    """Sector numbers where ``a`` and ``b`` differ (compared 64 KiB at a time first)."""
    out = []
    step = 64 << 10
    for base in range(0, len(a), step):
        if a[base : base + step] == b[base : base + step]:
            continue
        for s in range(base, min(base + step, len(a)), SECTOR):
            if a[s : s + SECTOR] != b[s : s + SECTOR]:
                out.append(s // SECTOR)
    return out


def _write_dynamic(source, dest, size, bs, unique_id, timestamp, creator_app, parent,
                   parent_path, locator_override, progress):
    dest = os.fspath(dest)
    count = -(-size // bs)
    bitmap_size = -(-(bs // SECTOR) // 8 // SECTOR) * SECTOR
    bat_bytes = -(-count * 4 // SECTOR) * SECTOR
    disk_type = TYPE_DYNAMIC
    parent_disk = None
    locators: list[tuple[bytes, bytes]] = []
    header_extra = dict(parent_unique_id=bytes(16), parent_timestamp=0,
                        parent_name=bytes(512))
    if parent is not None:
        disk_type = TYPE_DIFFERENCING
        parent_disk, parent_path = _open_parent(parent, parent_path, size)
        locators = _locators(dest, parent_path, locator_override)
        pname = os.path.basename(parent_path).encode("utf-16-be")[:512]
        header_extra = dict(parent_unique_id=parent_disk.identity.bytes,
                            parent_timestamp=_vhd_time(os.stat(parent_path).st_mtime),
                            parent_name=pname.ljust(512, b"\0"))
    pos = BAT_AT + bat_bytes
    loc_entries = []
    for code, data in locators:
        space = -(-len(data) // SECTOR) * SECTOR
        loc_entries.append(dict(code=code, data_space=space // SECTOR, data_length=len(data),
                                reserved=0, data_offset=pos))
        pos += space
    loc_entries += [dict(code=bytes(4), data_space=0, data_length=0, reserved=0,
                         data_offset=0)] * (8 - len(loc_entries))
    header = bytearray(DYNAMIC_HEADER.build(dict(
        cookie=b"cxsparse", data_offset=NO_DATA_OFFSET, table_offset=BAT_AT,
        version=0x00010000, max_table_entries=count, block_size=bs, checksum=0,
        reserved=0, locators=loc_entries, **header_extra)))
    header[36:40] = vhd_checksum(header, 36).to_bytes(4, "big")
    footer = build_footer(size, disk_type, unique_id, timestamp=timestamp,
                          creator_app=creator_app)

    blocks = _data_blocks(source, bs)
    if parent_disk is not None:
        blocks |= _data_blocks(parent_disk, bs)
    bat = bytearray(b"\xff" * bat_bytes)
    full_bitmap = b"\xff" * bitmap_size
    buf = bytearray(bs)
    pbuf = bytearray(bs)
    with atomic_output(dest) as fd:
        pwrite_all(fd, footer, 0)
        pwrite_all(fd, header, HEADER_AT)
        for (code, data), entry in zip(locators, loc_entries):
            pwrite_all(fd, data, entry["data_offset"])
        for index in sorted(blocks):
            start = index * bs
            n = min(bs, source.size - start)
            view = memoryview(buf)
            if n > 0:
                got = source.readinto(start, view[:n])
                if got != n:
                    raise FormatError(f"short read: {got} of {n} bytes", source=source.name,
                                      structure="VHD export", offset=start)
            view[max(n, 0):] = bytes(bs - max(n, 0))
            if parent_disk is None:
                if is_zero(view):
                    continue
                bitmap = full_bitmap
            else:
                pn = min(bs, parent_disk.size - start)
                pview = memoryview(pbuf)
                parent_disk.readinto(start, pview[:pn])
                pview[pn:] = bytes(bs - pn)
                diff = _differing_sectors(view, pview)
                if not diff:
                    continue
                bits = bytearray(bitmap_size)
                for s in diff:
                    bits[s >> 3] |= 0x80 >> (s & 7)
                bitmap = bytes(bits)
            bat[index * 4 : index * 4 + 4] = (pos // SECTOR).to_bytes(4, "big")
            pwrite_all(fd, bitmap, pos)
            for at, run in nonzero_runs(view, pos + bitmap_size):  # zeros stay holes
                pwrite_all(fd, run, at)
            pos += bitmap_size + bs
            if progress:
                progress(min(start + bs, source.size), source.size)
        pwrite_all(fd, bat, BAT_AT)
        pwrite_all(fd, footer, pos)
    if progress:
        progress(source.size, source.size)
