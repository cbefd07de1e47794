"""LVM2 physical volumes, volume group metadata and logical volumes as streams.

A physical volume (PV) is a partition or a whole disk with an LVM2 label in one of its
first four sectors; its metadata areas hold the volume group's (VG) metadata as text, the
newest copy pointed at by the area's header. Logical volumes (LVs) are assembled from their
segments across every PV of the VG (a VG may span several virtual disks):

- ``striped`` segments (linear = one stripe) map extents onto PVs directly;
- ``mirror`` and ``raid1`` segments are read from their first leg (the legs are copies);
- thin pools, thin volumes, snapshots, caches, RAID 4/5/6/10, VDO and integrity layers are
  named, and say "cannot be read here".

Layouts: lib/format_text/layout.h and lib/label/label.h of LVM2.
"""

from __future__ import annotations

import bisect
import re
import struct
import zlib
from dataclasses import dataclass

from formats import probes
from streams.errors import FormatError, RpfsError, UnsupportedError
from streams.stream import DATA, Extent, Stream

SECTOR = 512
LABEL_ID = probes.LVM_LABEL_ID
LABEL_TYPE = probes.LVM_LABEL_TYPE
MDA_MAGIC = b" LVM2 x[5A%r0N*>"
INITIAL_CRC = 0xF597A6CF
MAX_METADATA = 16 << 20           # VG metadata text larger than this is refused
MAX_DEPTH = 64                    # nesting in the metadata text
UNSUPPORTED_SEGMENTS = {
    "thin-pool": "a thin pool", "thin": "a thin volume", "snapshot": "a snapshot",
    "cache": "a cached volume", "cache-pool": "a cache pool", "writecache": "a writecache volume",
    "raid4": "RAID 4", "raid5": "RAID 5", "raid5_la": "RAID 5", "raid5_ls": "RAID 5",
    "raid5_ra": "RAID 5", "raid5_rs": "RAID 5", "raid5_n": "RAID 5", "raid6": "RAID 6",
    "raid6_zr": "RAID 6", "raid6_nr": "RAID 6", "raid6_nc": "RAID 6", "raid10": "RAID 10",
    "raid0": None, "raid0_meta": None, "vdo": "a VDO volume", "vdo-pool": "a VDO pool",
    "integrity": "an integrity layer", "zero": None, "error": "an error target",
}


def lvm_crc(data: bytes, crc: int = INITIAL_CRC) -> int:
    """LVM2's calc_crc: CRC-32 (zlib's polynomial) without zlib's inversions."""
    return zlib.crc32(data, crc ^ 0xFFFFFFFF) ^ 0xFFFFFFFF


# -- the label and PV header -------------------------------------------------------------


@dataclass
class PhysicalVolume:
    name: str                  # where it was found (e.g. "disk0-p2")
    stream: Stream
    uuid: str                  # 32 characters, no dashes
    device_size: int
    data_areas: list[tuple[int, int]]
    metadata_areas: list[tuple[int, int]]


_label_sector = probes.lvm_label_sector


def probe(stream: Stream) -> bool:
    """An LVM2 label in one of the first four sectors?"""
    return _label_sector(stream) is not None


def read_pv(name: str, stream: Stream) -> PhysicalVolume:
    n = _label_sector(stream)
    if n is None:
        raise FormatError("no LVM2 label", source=name, structure="LVM2 label", offset=0)
    sector = stream.read(n * SECTOR, SECTOR)
    sector_xl, crc, offset = struct.unpack_from("<QII", sector, 8)
    if lvm_crc(sector[20:]) != crc:
        raise FormatError("label checksum does not match", source=name, structure="LVM2 label",
                          offset=n * SECTOR + 16)
    if not 32 <= offset <= SECTOR - 48:
        raise FormatError(f"PV header at {offset}", source=name, structure="LVM2 label",
                          offset=n * SECTOR + 20)
    pos = offset
    uuid = sector[pos:pos + 32].decode("ascii", "replace")
    (device_size,) = struct.unpack_from("<Q", sector, pos + 32)
    pos += 40

    def locations() -> list[tuple[int, int]]:
        nonlocal pos
        out = []
        while True:
            if pos + 16 > SECTOR:
                raise FormatError("PV header runs past its sector", source=name,
                                  structure="LVM2 PV header", offset=n * SECTOR + pos)
            off, size = struct.unpack_from("<QQ", sector, pos)
            pos += 16
            if off == 0:
                return out
            out.append((off, size))

    data_areas = locations()
    metadata_areas = locations()
    return PhysicalVolume(name, stream, uuid, device_size, data_areas, metadata_areas)


def read_metadata(pv: PhysicalVolume) -> tuple[str, dict] | None:
    """(text, parsed) of the newest VG metadata in the PV's first good metadata area, or
    None if the PV holds none (``pvcreate --metadatacopies 0``)."""
    errors = []
    for start, size in pv.metadata_areas:
        try:
            return _read_area(pv, start, size)
        except FormatError as e:
            errors.append(e)
    if errors:
        raise errors[0]
    return None


def _read_area(pv: PhysicalVolume, start: int, size: int):
    where = "LVM2 metadata area header"
    if size < SECTOR or start + SECTOR > pv.stream.size:
        raise FormatError(f"metadata area of {size} bytes at {start}", source=pv.name,
                          structure=where, offset=start)
    header = pv.stream.read(start, SECTOR)
    (crc,) = struct.unpack_from("<I", header)
    if header[4:20] != MDA_MAGIC:
        raise FormatError("bad magic", source=pv.name, structure=where, offset=start)
    if lvm_crc(header[4:]) != crc:
        raise FormatError("checksum does not match", source=pv.name, structure=where, offset=start)
    _version, _start, area_size = struct.unpack_from("<IQQ", header, 20)
    off, length, text_crc, _flags = struct.unpack_from("<QQII", header, 40)
    if off == 0 or length == 0:
        return None
    if length > MAX_METADATA or off >= area_size or area_size > size:
        raise FormatError(f"metadata text of {length} bytes at {off}", source=pv.name,
                          structure=where, offset=start + 40)
    first = min(length, area_size - off)
    text = pv.stream.read(start + off, first)
    if first < length:   # the circular buffer wrapped: the rest follows the header
        text += pv.stream.read(start + SECTOR, length - first)
    if lvm_crc(text) != text_crc:
        raise FormatError("metadata text checksum does not match", source=pv.name,
                          structure="LVM2 metadata text", offset=start + off)
    text = text.rstrip(b"\0").decode("utf-8", "replace")
    return text, parse_text(text, pv.name)


# -- the metadata text -------------------------------------------------------------------

_TOKEN = re.compile(r'\s+|#[^\n]*|"((?:[^"\\]|\\.)*)"|([A-Za-z0-9_.+\-]+)|([={}\[\],])', re.S)


def parse_text(text: str, source: str = "<lvm>") -> dict:
    """LVM2's config syntax: ``name = value``, ``name { ... }``, lists ``[a, b]``,
    strings, integers; comments start with ``#``."""
    tokens: list[tuple[str, object]] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise FormatError(f"unexpected {text[pos:pos + 10]!r}", source=source,
                              structure="LVM2 metadata text", offset=pos)
        pos = m.end()
        if m.group(1) is not None:
            tokens.append(("str", re.sub(r"\\(.)", r"\1", m.group(1))))
        elif m.group(2) is not None:
            word = m.group(2)
            try:
                tokens.append(("val", int(word)))
            except ValueError:
                tokens.append(("word", word))
        elif m.group(3) is not None:
            tokens.append(("op", m.group(3)))
    i = 0

    def bad(msg: str) -> FormatError:
        return FormatError(msg, source=source, structure="LVM2 metadata text")

    def section(depth: int, closing: bool) -> dict:
        nonlocal i
        if depth > MAX_DEPTH:
            raise bad("nested too deep")
        out: dict = {}
        while i < len(tokens):
            kind, value = tokens[i]
            if closing and (kind, value) == ("op", "}"):
                i += 1
                return out
            if kind not in ("word", "str", "val"):
                raise bad(f"expected a name, found {value!r}")
            name = str(value)
            i += 1
            if i >= len(tokens):
                raise bad(f"{name}: nothing follows")
            kind, value = tokens[i]
            i += 1
            if (kind, value) == ("op", "{"):
                out[name] = section(depth + 1, True)
            elif (kind, value) == ("op", "="):
                out[name] = scalar_or_list()
            else:
                raise bad(f"{name}: expected = or {{")
        if closing:
            raise bad("a section is not closed")
        return out

    def scalar_or_list():
        nonlocal i
        if i >= len(tokens):
            raise bad("a value is missing")
        kind, value = tokens[i]
        i += 1
        if (kind, value) != ("op", "["):
            if kind == "op":
                raise bad(f"unexpected {value!r}")
            return value
        items = []
        while i < len(tokens):
            kind, value = tokens[i]
            i += 1
            if (kind, value) == ("op", "]"):
                return items
            if (kind, value) == ("op", ","):
                continue
            if kind == "op":
                raise bad(f"unexpected {value!r} in a list")
            items.append(value)
        raise bad("a list is not closed")

    return section(0, False)


# -- assembling logical volumes ----------------------------------------------------------


class LogicalVolume(Stream):
    """An LV's bytes: segments found by bisect; each stripe maps to a PV's extents."""

    def __init__(self, vg: str, lv: str, segments: list[tuple[int, int, list, int]],
                 size: int, layout: dict):
        self.name = f"lvm-{vg}-{lv}"
        self.size = size
        self.segments = segments        # (start byte, length, [(pv stream, byte offset)], stripe bytes)
        self.starts = [s[0] for s in segments]
        self.layout = layout

    def _pieces(self, offset: int, end: int):
        """(stream, offset in it, length) pieces covering [offset, end)."""
        pos = offset
        while pos < end:
            i = bisect.bisect_right(self.starts, pos) - 1
            start, length, areas, stripe = self.segments[i]
            within = pos - start
            seg_end = min(end, start + length)
            if len(areas) == 1:
                stream, base = areas[0]
                yield stream, base + within, seg_end - pos
                pos = seg_end
                continue
            n = len(areas)
            chunk, inside = divmod(within, stripe)
            row, col = divmod(chunk, n)
            take = min(seg_end - pos, stripe - inside)
            stream, base = areas[col]
            yield stream, base + row * stripe + inside, take
            pos += take

    def _readinto(self, offset: int, view: memoryview) -> None:
        done = 0
        for stream, off, n in self._pieces(offset, offset + len(view)):
            got = stream.readinto(off, view[done:done + n])
            if got != n:
                raise FormatError(f"the physical volume ends at {stream.size}", source=self.name,
                                  structure="LVM2 logical volume", offset=offset + done)
            done += n

    def _extents(self, offset: int, end: int):
        pos = offset
        for stream, off, n in self._pieces(offset, end):
            for ext in stream.extents(off, n):
                yield Extent(pos + ext.offset - off, ext.length, ext.kind)
            pos += n

    def describe(self) -> dict:
        return {"lvm": self.layout}


def _dict(section, key: str) -> dict:
    """``section[key]`` if it is a section, else an empty one (hostile text may put a
    number or a list where a section belongs)."""
    v = section.get(key) if isinstance(section, dict) else None
    return v if isinstance(v, dict) else {}


def _list(section, key: str) -> list:
    v = section.get(key) if isinstance(section, dict) else None
    return v if isinstance(v, list) else []


def _int(section, key: str, default: int = 0) -> int:
    v = section.get(key, default) if isinstance(section, dict) else default
    return v if isinstance(v, int) else default


def _pv_id(text: str) -> str:
    return text.replace("-", "")


def assemble(pvs: dict[str, Stream]) -> dict[tuple[str, str], object]:
    """(vg, lv) -> LogicalVolume, or the error saying why that LV cannot be read, for every
    visible LV of every VG whose metadata one of ``pvs`` (name -> stream) holds."""
    found: dict[str, PhysicalVolume] = {}
    out: dict[tuple[str, str], object] = {}
    metas: dict[str, tuple[int, str, dict]] = {}     # vg name -> (seqno, vg name, section)
    for name, stream in pvs.items():
        try:
            pv = read_pv(name, stream)
            found[pv.uuid] = pv
            meta = read_metadata(pv)
        except RpfsError as e:
            out[("unknown", name)] = e
            continue
        if meta is None:
            continue
        for vg_name, section in meta[1].items():
            if not isinstance(section, dict) or "physical_volumes" not in section:
                continue
            seq = _int(section, "seqno")
            if vg_name not in metas or metas[vg_name][0] < seq:
                metas[vg_name] = (seq, vg_name, section)
    for vg_name, (_seq, _n, vg) in sorted(metas.items()):
        try:
            lvs = _vg_lvs(vg_name, vg, found)
        except RpfsError as e:
            out[(vg_name, "metadata")] = e
            continue
        out.update({(vg_name, lv): value for lv, value in lvs.items()})
    return out


def _vg_lvs(vg_name: str, vg: dict, found: dict[str, PhysicalVolume]) -> dict[str, object]:
    def bad(msg: str) -> FormatError:
        return FormatError(msg, source=f"volume group {vg_name}", structure="LVM2 metadata")

    extent_size = vg.get("extent_size")
    if not isinstance(extent_size, int) or extent_size <= 0:
        raise bad(f"extent_size {extent_size!r}")
    extent_bytes = extent_size * SECTOR
    pvs: dict[str, tuple[Stream, int, int] | str] = {}
    for key, pv in _dict(vg, "physical_volumes").items():
        if not isinstance(pv, dict):
            continue
        ident = _pv_id(str(pv.get("id", "")))
        pe_start = pv.get("pe_start", 0)
        pe_count = pv.get("pe_count", 0)
        if not isinstance(pe_start, int) or not isinstance(pe_count, int):
            raise bad(f"{key}: pe_start/pe_count not numbers")
        hit = found.get(ident)
        pvs[key] = (hit.stream, pe_start * SECTOR, pe_count) if hit else f"{key} ({pv.get('id')})"
    lvs = _dict(vg, "logical_volumes")
    out: dict[str, object] = {}
    # An old-style snapshot: a hidden LV of segment type "snapshot" names the visible LV
    # that holds its copy-on-write store; that LV is the snapshot the user sees.
    cow_of: dict[str, str] = {}
    for lv in lvs.values():
        for key, seg in (lv.items() if isinstance(lv, dict) else ()):
            if key.startswith("segment") and isinstance(seg, dict) and seg.get("type") == "snapshot":
                cow_of[str(seg.get("cow_store"))] = str(seg.get("origin"))

    def build(lv_name: str, depth: int = 0) -> LogicalVolume:
        if depth > 8:
            raise bad(f"{lv_name}: sub-volumes nested too deep")
        lv = lvs.get(lv_name)
        if not isinstance(lv, dict):
            raise bad(f"{lv_name}: no such logical volume")
        segs = []
        layout = []
        total = 0
        count = lv.get("segment_count", 0)
        if not isinstance(count, int) or count > 100_000:
            raise bad(f"{lv_name}: segment_count {count!r}")
        for k in range(1, count + 1):
            seg = lv.get(f"segment{k}")
            if not isinstance(seg, dict):
                raise bad(f"{lv_name}: segment{k} missing")
            start, extents, kind = seg.get("start_extent"), seg.get("extent_count"), seg.get("type")
            if not isinstance(start, int) or not isinstance(extents, int) or extents <= 0:
                raise bad(f"{lv_name}: segment{k} has no extents")
            if start * extent_bytes != total:
                raise bad(f"{lv_name}: segment{k} starts at extent {start}, not where the last "
                          "one ended")
            length = extents * extent_bytes
            if kind == "striped":
                stripes = _list(seg, "stripes")
                n = _int(seg, "stripe_count", 1)
                if not isinstance(n, int) or n < 1 or len(stripes) != 2 * n:
                    raise bad(f"{lv_name}: segment{k}: {n} stripes, {len(stripes) // 2} listed")
                stripe = _int(seg, "stripe_size") * SECTOR if n > 1 else length
                if n > 1 and (stripe <= 0 or extents % n):
                    raise bad(f"{lv_name}: segment{k}: stripe size {stripe}")
                areas = []
                for j in range(n):
                    pv_key, pv_extent = stripes[2 * j], stripes[2 * j + 1]
                    where = pvs.get(pv_key)
                    if where is None:
                        raise bad(f"{lv_name}: segment{k}: unknown physical volume {pv_key}")
                    if isinstance(where, str):
                        raise FormatError(f"physical volume {where} is missing (not on any disk "
                                          "of this VM)", source=f"lvm-{vg_name}-{lv_name}",
                                          structure="LVM2 logical volume")
                    stream, pe_start, pe_count = where
                    per_stripe = extents // n
                    if not isinstance(pv_extent, int) or pv_extent + per_stripe > pe_count:
                        raise bad(f"{lv_name}: segment{k}: extents past the end of {pv_key}")
                    areas.append((stream, pe_start + pv_extent * extent_bytes))
                segs.append((total, length, areas, stripe))
                layout.append({"extents": extents, "type": "linear" if n == 1 else "striped",
                               "stripes": [f"{stripes[2 * j]}:{stripes[2 * j + 1]}" for j in range(n)]})
            elif kind in ("mirror", "raid1"):
                legs = _list(seg, "mirrors" if kind == "mirror" else "raids")
                names = [x for x in legs if isinstance(x, str)]
                if kind == "raid1":
                    names = [x for x in names if "_rimage_" in x]
                if not names:
                    raise bad(f"{lv_name}: segment{k}: {kind} without legs")
                leg = build(names[0], depth + 1)
                if leg.size < length:
                    raise bad(f"{lv_name}: segment{k}: leg {names[0]} is shorter")
                segs.append((total, length, [(leg, 0)], length))
                layout.append({"extents": extents, "type": kind, "read_from": names[0],
                               "legs": names})
            else:
                what = UNSUPPORTED_SEGMENTS.get(str(kind), f"segment type {kind!r}")
                raise UnsupportedError(f"{what or kind} cannot be read here",
                                       source=f"lvm-{vg_name}-{lv_name}",
                                       structure="LVM2 logical volume")
            total += length
        return LogicalVolume(vg_name, lv_name, segs, total,
                             {"vg": vg_name, "lv": lv_name, "extent_size": extent_bytes,
                              "segments": layout})

    for lv_name, lv in sorted(lvs.items()):
        if not isinstance(lv, dict):
            continue
        status = _list(lv, "status")
        if lv_name in cow_of:      # LVM writes a snapshot's COW LV without VISIBLE
            out[lv_name] = UnsupportedError(
                f"a snapshot (of {cow_of[lv_name]}) cannot be read here",
                source=f"lvm-{vg_name}-{lv_name}", structure="LVM2 logical volume")
            continue
        if "VISIBLE" not in status:
            continue
        try:
            out[lv_name] = build(lv_name)
        except RpfsError as e:
            out[lv_name] = e
    return out


def describe_pv(stream: Stream, name: str = "<pv>") -> dict:
    """What ``rpfs info`` says of a partition that is an LVM2 physical volume."""
    pv = read_pv(name, stream)
    out = {"pv_uuid": pv.uuid, "device_size": pv.device_size}
    meta = read_metadata(pv)
    if meta is not None:
        for vg_name, section in meta[1].items():
            if isinstance(section, dict) and "physical_volumes" in section:
                out["vg"] = vg_name
                out["lvs"] = sorted(k for k, v in _dict(section, "logical_volumes").items()
                                    if "VISIBLE" in _list(v, "status"))
    return out
