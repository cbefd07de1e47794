"""Writes VHDX files: dynamic or fixed from any stream (export), and for tests a
differencing child over a parent or a file with a pending (unreplayed) log.

The writer streams: it follows ``source.extents()`` so zero ranges are neither read nor
written (dynamic: blocks left NOT_PRESENT; fixed: the file is preallocated sparse), and
writes with ``os.pwrite`` at computed offsets, never seeking a shared handle.

Layout (as qemu and Hyper-V do it): identifier, headers, region tables in the first MiB;
the log (1 MiB, empty), the metadata region (1 MiB), the BAT, then payload blocks.
"""

from __future__ import annotations

import os
import uuid
from typing import Callable

from formats.raw_writer import nonzero_runs
from formats.writebehind import WriteBehind
from streams.errors import UsageError
from streams.stream import DATA, Stream, buffers, is_zero

from . import structures as S

LOG_OFFSET = 1 * S.MiB
LOG_LENGTH = 1 * S.MiB
METADATA_OFFSET = 2 * S.MiB
METADATA_LENGTH = 1 * S.MiB
BAT_OFFSET = 3 * S.MiB
_PIECE = 8 * S.MiB


def _round_up(n: int, k: int) -> int:
    return -(-n // k) * k


def _with_checksum(raw: bytes | bytearray, field: int = 4) -> bytes:
    buf = bytearray(raw)
    buf[field:field + 4] = S.checksum_with_field_zeroed(buf, field).to_bytes(4, "little")
    return bytes(buf)


def build_header(sequence: int, file_write_guid: uuid.UUID, data_write_guid: uuid.UUID,
                 log_guid: uuid.UUID = uuid.UUID(int=0), log_offset: int = LOG_OFFSET,
                 log_length: int = LOG_LENGTH) -> bytes:
    raw = S.Header.build(dict(signature=S.HEADER_SIGNATURE, checksum=0, sequence_number=sequence,
                              file_write_guid=file_write_guid, data_write_guid=data_write_guid,
                              log_guid=log_guid, log_version=0, version=1, log_length=log_length,
                              log_offset=log_offset))
    return _with_checksum(raw.ljust(S.HEADER_SIZE, b"\0"))


def build_region_table(bat: tuple[int, int], metadata: tuple[int, int]) -> bytes:
    raw = S.RegionTableHeader.build(dict(signature=S.REGION_SIGNATURE, checksum=0, entry_count=2))
    for guid, (off, length) in ((S.BAT_GUID, bat), (S.METADATA_GUID, metadata)):
        raw += S.RegionTableEntry.build(dict(guid=guid, file_offset=off, length=length, required=1))
    return _with_checksum(raw.ljust(S.REGION_TABLE_SIZE, b"\0"))


def build_parent_locator(entries: dict[str, str]) -> bytes:
    header = S.ParentLocatorHeader.build(dict(locator_type=S.VHDX_LOCATOR_TYPE_GUID,
                                              key_value_count=len(entries)))
    table = b""
    strings = b""
    base = len(header) + 12 * len(entries)
    for key, value in entries.items():
        k, v = key.encode("utf-16-le"), value.encode("utf-16-le")
        table += S.ParentLocatorEntry.build(dict(key_offset=base + len(strings), value_offset=base + len(strings) + len(k),
                                                 key_length=len(k), value_length=len(v)))
        strings += k + v
    return header + table + strings


def build_metadata(block_size: int, flags: int, virtual_size: int, disk_id: uuid.UUID,
                   logical: int, physical: int, locator: bytes | None = None) -> bytes:
    items = [
        (S.FILE_PARAMETERS_GUID, S.FileParameters.build(dict(block_size=block_size, flags=flags)), S.META_IS_REQUIRED),
        (S.VIRTUAL_DISK_SIZE_GUID, virtual_size.to_bytes(8, "little"), S.META_IS_REQUIRED | S.META_IS_VIRTUAL_DISK),
        (S.VIRTUAL_DISK_ID_GUID, disk_id.bytes_le, S.META_IS_REQUIRED | S.META_IS_VIRTUAL_DISK),
        (S.LOGICAL_SECTOR_SIZE_GUID, logical.to_bytes(4, "little"), S.META_IS_REQUIRED | S.META_IS_VIRTUAL_DISK),
        (S.PHYSICAL_SECTOR_SIZE_GUID, physical.to_bytes(4, "little"), S.META_IS_REQUIRED | S.META_IS_VIRTUAL_DISK),
    ]
    if locator is not None:
        items.append((S.PARENT_LOCATOR_GUID, locator, S.META_IS_REQUIRED))
    table = S.MetadataTableHeader.build(dict(signature=S.METADATA_SIGNATURE, entry_count=len(items)))
    body = b""
    pos = S.METADATA_TABLE_SIZE
    for guid, data, flags_ in items:
        table += S.MetadataTableEntry.build(dict(item_id=guid, offset=pos + len(body), length=len(data), flags=flags_))
        body += data.ljust(_round_up(len(data), 8), b"\0")
    return table.ljust(S.METADATA_TABLE_SIZE, b"\0") + body


def write_vhdx(source: Stream, dest, *, block_size: int = 32 * S.MiB, fixed: bool = False,
               logical_sector_size: int | None = None, physical_sector_size: int | None = None,
               parent=None, parent_path: str | None = None, parent_locator: dict[str, str] | None = None,
               progress: Callable[[int, int], None] | None = None, creator: str = "rpfs",
               zero_blocks: bool = True) -> dict:
    """Write ``source`` as a VHDX file at ``dest`` (a path); returns what was written.

    With ``parent`` (an opened Disk with its chain set, or the path of a non-differencing
    VHDX) the file is a differencing child whose chain reads as ``source``: sectors equal
    to the parent's stay absent, all-zero blocks
    become ZERO (overriding the parent), others are FULLY or PARTIALLY_PRESENT with a
    sector bitmap. ``parent_path`` (the parent's file path) fills the locator's
    relative_path and absolute_win32_path unless ``parent_locator`` gives them. With
    ``zero_blocks=False`` zeroed blocks are written out as data instead of the ZERO state
    (libvhdi reads ZERO blocks of a child through to the parent, against the spec).
    """
    if isinstance(parent, (str, os.PathLike)):   # a parent file: open it (it must be a chain root)
        from streams.stream import FileStream
        from .reader import VhdxDisk
        parent_path = parent_path or os.fspath(parent)
        parent = VhdxDisk(FileStream(parent))
        if parent.kind == "differencing":
            raise UsageError(f"{parent.name} is itself differencing: pass it opened, with its parent set")
    lss = logical_sector_size or getattr(source, "logical_sector_size", None) or 512
    pss = physical_sector_size or getattr(source, "physical_sector_size", None) or 4096
    if parent is not None and fixed:
        raise UsageError("a differencing VHDX cannot be fixed")
    if parent is not None:
        lss = parent.logical_sector_size
    if lss not in (512, 4096) or pss not in (512, 4096):
        raise UsageError(f"sector sizes must be 512 or 4096, not {lss}/{pss}")
    if block_size < S.MiB or block_size > 256 * S.MiB or block_size & (block_size - 1):
        raise UsageError(f"block size {block_size} must be a power of 2 from 1 to 256 MiB")
    virtual_size = _round_up(source.size, lss)
    if virtual_size == 0:
        raise UsageError(f"{source.name} is empty: a VHDX needs a non-zero virtual size")
    if virtual_size > S.MAX_VIRTUAL_SIZE:
        raise UsageError(f"virtual size {virtual_size} is above the VHDX limit of 64 TiB")
    differencing = parent is not None
    chunk_ratio, data_blocks, bitmap_blocks, bat_entries = S.bat_layout(virtual_size, block_size, lss, differencing)
    bat_length = max(S.MiB, _round_up(bat_entries * 8, S.MiB))
    payload_start = BAT_OFFSET + bat_length
    bat = [0] * bat_entries
    data_write_guid = uuid.uuid4()
    disk_id = getattr(parent, "virtual_disk_id", None) or uuid.uuid4()
    locator = None
    if differencing:
        entries = {"parent_linkage": "{" + str(parent.identity) + "}"}
        if parent_path is not None:
            rel = os.path.relpath(os.path.abspath(parent_path), os.path.dirname(os.path.abspath(os.fspath(dest))))
            entries["relative_path"] = rel.replace("/", "\\")
            entries["absolute_win32_path"] = "\\\\?\\C:" + os.path.abspath(parent_path).replace("/", "\\")
        entries.update(parent_locator or {})
        locator = build_parent_locator(entries)
    flags = (S.FP_LEAVE_BLOCK_ALLOCATED if fixed else 0) | (S.FP_HAS_PARENT if differencing else 0)

    fd = os.open(os.fspath(dest), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o644)
    try:
        end = payload_start
        if fixed:
            end = payload_start + data_blocks * block_size
            os.ftruncate(fd, end)
        done = 0
        bitmaps: dict[int, bytearray] = {}
        # Payload is written by a thread of its own (WriteBehind) while the next is read;
        # reads that are not a stored file's chunks go into its two reused 8 MiB buffers (a
        # fresh 8 MiB per read costs more in page faults than the copy). Zero runs of 64 KiB
        # inside data are not written (holes read as zeros).
        with WriteBehind(fd, _PIECE) as out:
            for block in range(data_blocks):
                bstart = block * block_size
                blen = min(block_size, virtual_size - bstart)
                index = block + block // chunk_ratio
                if fixed:
                    offset = payload_start + block * block_size
                    _copy_block(source, out, bstart, blen, offset)
                    bat[index] = S.PAYLOAD_BLOCK_FULLY_PRESENT | offset
                elif not differencing:
                    offset = None   # allocated at the first non-zero piece, never for all-zero blocks
                    for voff, n in _data_ranges(source, bstart, blen):
                        for roff, run in _nonzero_pieces(source, out.scratch, voff, n):
                            if offset is None:
                                offset = end
                                end += block_size
                                bat[index] = S.PAYLOAD_BLOCK_FULLY_PRESENT | offset
                            out.write(run, offset + roff - bstart)
                else:
                    state, data, present = _diff_block(source, parent, bstart, blen, lss, zero_blocks)
                    if state in (S.PAYLOAD_BLOCK_FULLY_PRESENT, S.PAYLOAD_BLOCK_PARTIALLY_PRESENT):
                        offset = end
                        end += block_size
                        out.write(data, offset)
                        bat[index] = state | offset
                        if state == S.PAYLOAD_BLOCK_PARTIALLY_PRESENT:
                            chunk = block // chunk_ratio
                            bm = bitmaps.setdefault(chunk, bytearray(S.SECTOR_BITMAP_BLOCK_SIZE))
                            base = (block % chunk_ratio) * (block_size // lss) // 8
                            bm[base:base + len(present)] = present
                    else:
                        bat[index] = state
                done += blen
                if progress:
                    progress(done, virtual_size)
        for chunk, bm in sorted(bitmaps.items()):
            offset = end
            end += S.SECTOR_BITMAP_BLOCK_SIZE
            os.pwrite(fd, bytes(bm), offset)
            bat[chunk * (chunk_ratio + 1) + chunk_ratio] = S.SB_BLOCK_PRESENT | offset
        os.ftruncate(fd, end)
        # Structures last: a crash mid-way leaves no valid VHDX rather than a wrong one.
        os.pwrite(fd, b"".join(e.to_bytes(8, "little") for e in bat), BAT_OFFSET)
        os.pwrite(fd, build_metadata(block_size, flags, virtual_size, disk_id, lss, pss, locator), METADATA_OFFSET)
        table = build_region_table((BAT_OFFSET, bat_length), (METADATA_OFFSET, METADATA_LENGTH))
        os.pwrite(fd, table, S.REGION_TABLE_OFFSETS[0])
        os.pwrite(fd, table, S.REGION_TABLE_OFFSETS[1])
        file_write_guid = uuid.uuid4()
        for seq, off in enumerate(S.HEADER_OFFSETS):
            os.pwrite(fd, build_header(seq, file_write_guid, data_write_guid), off)
        os.pwrite(fd, S.FILE_SIGNATURE + creator.encode("utf-16-le")[:512], 0)
        os.fsync(fd)
    finally:
        os.close(fd)
    return {"virtual_size": virtual_size, "block_size": block_size, "identity": data_write_guid,
            "virtual_disk_id": disk_id, "file_size": end, "kind": "differencing" if differencing else
            ("fixed" if fixed else "dynamic")}


def _data_ranges(source: Stream, start: int, length: int):
    """DATA extents of the source inside [start, start+length), in pieces of at most 8 MiB."""
    limit = min(start + length, source.size)
    if start >= limit:
        return
    for e in source.extents(start, limit - start):
        if e.kind != DATA:
            continue
        pos = e.offset
        while pos < e.end:
            n = min(_PIECE, e.end - pos)
            yield pos, n
            pos += n


def _nonzero_pieces(source: Stream, piece, pos: int, n: int):
    """(offset, view) of the non-zero runs of the ``n`` bytes at ``pos``: views of the
    decoded chunks of a stored file where the layers allow (``buffers``), else read into
    ``piece`` (a buffer, or a function that gives one)."""
    for at, view in buffers(source, pos, n, piece):
        yield from nonzero_runs(view, at)


def _copy_block(source: Stream, out: WriteBehind, start: int, length: int, offset: int) -> None:
    for pos, n in _data_ranges(source, start, length):
        for roff, run in _nonzero_pieces(source, out.scratch, pos, n):
            out.write(run, offset + roff - start)


def _read_full(stream: Stream, start: int, length: int) -> bytearray:
    buf = bytearray(length)
    for pos, n in _data_ranges(stream, start, length):
        buf[pos - start:pos - start + n] = stream.read(pos, n)
    return buf


def _diff_block(source: Stream, parent: Stream, start: int, length: int, lss: int, zero_blocks: bool = True):
    """(state, data, bitmap bytes) of one child block so that the chain reads as ``source``."""
    want = _read_full(source, start, length)
    have = _read_full(parent, start, length) if start < parent.size else bytearray(length)
    if want == have:
        return S.PAYLOAD_BLOCK_NOT_PRESENT, None, None
    if zero_blocks and is_zero(want):
        return S.PAYLOAD_BLOCK_ZERO, None, None
    wv, hv = memoryview(want), memoryview(have)
    sectors = length // lss
    bits = 0
    for s in range(sectors):
        if wv[s * lss:(s + 1) * lss] != hv[s * lss:(s + 1) * lss]:
            bits |= 1 << s
    if bits == (1 << sectors) - 1:
        return S.PAYLOAD_BLOCK_FULLY_PRESENT, bytes(want), None
    return S.PAYLOAD_BLOCK_PARTIALLY_PRESENT, bytes(want), bits.to_bytes(-(-sectors // 8), "little")
