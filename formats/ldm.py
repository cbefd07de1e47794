"""Windows dynamic disks (LDM): the disk group database and its volumes as streams.

A dynamic disk holds a copy of its disk group's database: on an MBR disk (one partition of
type 0x42) the PRIVHEAD is in sector 6; on a GPT disk it is the last sector of the "LDM
metadata" partition. The PRIVHEAD says where the disk's data area and the database (the
"config") are; the database's TOCBLOCK points at the VMDB, which is followed by fixed-size
VBLK records: the disk group, its disks, partitions (extents on one disk), components
(plexes) and volumes. A record larger than one VBLK is split over several with the same
record id. Everything is big-endian; sizes and offsets count 512-byte sectors.

Volumes are assembled as Windows does:

- simple and spanned: one concatenated component, partitions in volume-offset order;
- striped: one component whose partitions are columns of ``chunk`` bytes;
- mirrored: two (or more) components holding the same bytes: read from the first plex
  whose disks are present, the next one when a read fails;
- RAID-5: one component, columns with rotating parity in the left-symmetric order (the
  layout libldm hands to the kernel's dm-raid, ``raid5_ls``; confirmed on RAID-5 volumes
  Windows Server 2003 R2 and 2008 R2 made, tests/test_ldm.py); with one column missing its
  bytes are the XOR of the others in the same stripe.

The format is described by libldm (src/ldm.c) and the Linux kernel's block/partitions/ldm.c
(both read, not copied). Names: ``volumes/ldm-<volume name>``.
"""

from __future__ import annotations

import bisect
import struct
import uuid
from dataclasses import dataclass, field

from formats import probes
from streams.errors import FormatError, RpfsError, UnsupportedError
from streams.stream import DATA, Extent, SliceStream, Stream

SECTOR = 512
GPT_LDM_METADATA = probes.LDM_GPT_METADATA
MBR_LDM = probes.LDM_MBR_TYPE
MAX_CONFIG = 16 << 20          # a database larger than this is refused (Windows: 1 MiB)
MAX_VBLK_PARTS = 64            # pieces of one multi-part record
MAX_OBJECTS = 100_000          # records in one database

VOL_GEN, VOL_RAID5 = 3, 4
COMP_STRIPED, COMP_SPANNED, COMP_RAID = 1, 2, 3


# -- records -------------------------------------------------------------------------------


@dataclass
class DiskRec:
    id: int
    name: str
    guid: str


@dataclass
class PartRec:
    id: int
    name: str
    start: int                 # sectors into the disk's data area
    vol_offset: int            # sectors into its component
    size: int                  # sectors
    parent: int                # component id
    disk: int                  # disk id
    index: int = 0             # column of a striped / RAID-5 component


@dataclass
class CompRec:
    id: int
    name: str
    type: int
    n_parts: int
    parent: int                # volume id
    chunk: int = 0             # sectors
    columns: int = 0


@dataclass
class VolRec:
    id: int
    name: str
    kind: str                  # "gen" / "raid5"
    int_type: int
    n_comps: int
    size: int                  # sectors
    part_type: int
    guid: str
    hint: str = ""             # drive letter Windows last gave it


@dataclass
class Database:
    group_name: str
    group_guid: str
    sequence: int
    group_id: int = 0
    disks: dict[int, DiskRec] = field(default_factory=dict)
    parts: dict[int, PartRec] = field(default_factory=dict)
    comps: dict[int, CompRec] = field(default_factory=dict)
    vols: dict[int, VolRec] = field(default_factory=dict)


@dataclass
class Member:
    """One dynamic disk of this recovery point: where its data area is and its database."""

    name: str                  # the disk's stem
    disk: Stream
    disk_guid: str
    group_guid: str
    group_name: str
    data_start: int            # bytes
    data_size: int             # bytes
    db: Database


# -- finding and reading the database ------------------------------------------------------


privhead_offset = probes.ldm_privhead_offset   # None if the disk is not a dynamic disk


def probe(disk: Stream) -> bool:
    return privhead_offset(disk) is not None


def _bad(msg: str, source: str, structure: str, offset: int | None = None) -> FormatError:
    return FormatError(msg, source=source, structure=structure, offset=offset)


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("ascii", "replace")


def read_member(name: str, disk: Stream) -> Member:
    at = privhead_offset(disk)
    if at is None:
        raise _bad("no LDM partition (MBR type 0x42 or GPT LDM metadata)", name, "LDM PRIVHEAD")
    ph = disk.read(at, SECTOR)
    if len(ph) < 363 or ph[:8] != b"PRIVHEAD":
        raise _bad("no PRIVHEAD signature", name, "LDM PRIVHEAD", at)
    disk_guid = _text(ph[48:112]).lower()
    group_guid = _text(ph[176:240]).lower()
    group_name = _text(ph[240:272])
    data_start, data_size, cfg_start, cfg_size = struct.unpack_from(">QQQQ", ph, 283)
    for what, value in (("disk", disk_guid), ("disk group", group_guid)):
        try:
            uuid.UUID(value)
        except ValueError:
            raise _bad(f"{what} GUID {value!r} is not a GUID", name, "LDM PRIVHEAD", at) from None
    end = disk.size
    if cfg_size * SECTOR > MAX_CONFIG or cfg_size < 4 or (cfg_start + cfg_size) * SECTOR > end:
        raise _bad(f"database at sector {cfg_start} of {cfg_size} sectors lies outside the "
                   f"disk ({end} bytes) or is too large", name, "LDM PRIVHEAD", at + 299)
    if (data_start + data_size) * SECTOR > end:
        raise _bad(f"data area at sector {data_start} of {data_size} sectors runs past the "
                   "end of the disk", name, "LDM PRIVHEAD", at + 283)
    config = disk.read(cfg_start * SECTOR, cfg_size * SECTOR)
    db = parse_config(config, name, cfg_start * SECTOR)
    if db.group_guid and db.group_guid != group_guid:
        raise _bad(f"database of disk group {db.group_guid}, PRIVHEAD says {group_guid}", name,
                   "LDM VMDB")
    return Member(name, disk, disk_guid, group_guid, group_name or db.group_name,
                  data_start * SECTOR, data_size * SECTOR, db)


def parse_config(config: bytes, source: str = "<ldm>", base: int = 0) -> Database:
    """The database (TOCBLOCK at sector 1 or 2 of the config, then the VMDB and VBLKs)."""
    toc = None
    for sector in (2, 1):
        raw = config[sector * SECTOR:(sector + 1) * SECTOR]
        if len(raw) == SECTOR and raw[:8] == b"TOCBLOCK":
            toc = raw
            break
    if toc is None:
        raise _bad("no TOCBLOCK in sector 1 or 2 of the database", source, "LDM TOCBLOCK",
                   base + SECTOR)
    vmdb_at = None
    for slot in (36, 70):
        name = toc[slot:slot + 8].split(b"\0", 1)[0]
        (start,) = struct.unpack_from(">Q", toc, slot + 10)
        if name == b"config":
            vmdb_at = start * SECTOR
    if vmdb_at is None or vmdb_at + SECTOR > len(config):
        raise _bad(f"TOCBLOCK has no usable config bitmap (VMDB at {vmdb_at})", source,
                   "LDM TOCBLOCK", base + 2 * SECTOR)
    vmdb = config[vmdb_at:vmdb_at + SECTOR]
    if vmdb[:4] != b"VMDB":
        raise _bad("no VMDB signature", source, "LDM VMDB", base + vmdb_at)
    _last, vblk_size, first = struct.unpack_from(">III", vmdb, 4)
    if not 32 <= vblk_size <= 64 << 10 or first < 16 or vblk_size % 16:
        raise _bad(f"VBLK size {vblk_size}, first VBLK at {first}", source, "LDM VMDB",
                   base + vmdb_at + 8)
    db = Database(_text(vmdb[22:53]), _text(vmdb[53:117]).lower(),
                  struct.unpack_from(">Q", vmdb, 117)[0])
    counts = struct.unpack_from(">IIII", vmdb, 133)     # volumes, components, partitions, disks
    pieces: dict[int, dict[int, bytes]] = {}
    totals: dict[int, tuple[int, int]] = {}
    pos = vmdb_at + first
    data = vblk_size - 16
    while pos + vblk_size <= len(config):
        blk = config[pos:pos + vblk_size]
        if blk[:4] != b"VBLK":
            break
        _seq, rec_id, entry, total = struct.unpack_from(">IIHH", blk, 4)
        if total > 1:
            if total > MAX_VBLK_PARTS or entry >= total:
                raise _bad(f"record {rec_id}: part {entry} of {total}", source, "LDM VBLK",
                           base + pos)
            got = pieces.setdefault(rec_id, {})
            if entry in got or totals.get(rec_id, (total, pos))[0] != total:
                raise _bad(f"record {rec_id}: part {entry} twice or totals differ", source,
                           "LDM VBLK", base + pos)
            totals.setdefault(rec_id, (total, pos))
            got[entry] = blk[16:]
            if len(pieces) > MAX_OBJECTS:
                raise _bad("too many records", source, "LDM VBLK", base + pos)
        elif any(blk[16:24]):
            _record(db, blk[16:], source, base + pos)
        pos += vblk_size
    for rec_id, got in sorted(pieces.items()):
        total, at = totals[rec_id]
        if len(got) != total:
            raise _bad(f"record {rec_id}: {len(got)} of its {total} parts found", source,
                       "LDM VBLK", base + at)
        _record(db, b"".join(got[i] for i in range(total)), source, base + at)
    found = (len(db.vols), len(db.comps), len(db.parts), len(db.disks))
    if found != counts:
        raise _bad(f"VMDB counts {counts} (volumes, components, partitions, disks), records "
                   f"found {found}", source, "LDM VMDB", base + vmdb_at + 133)
    return db


class _Cursor:
    """Reads a record's fields; running past its end is a FormatError, never an IndexError."""

    def __init__(self, data: bytes, source: str, where: str, offset: int):
        self.data, self.pos = data, 0
        self.source, self.where, self.offset = source, where, offset

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise _bad(f"field runs past the record's end ({len(self.data)} bytes)",
                       self.source, self.where, self.offset)
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def skip(self, n: int) -> None:
        self.take(n)

    def byte(self) -> int:
        return self.take(1)[0]

    def be64(self) -> int:
        return struct.unpack(">Q", self.take(8))[0]

    def num(self, limit: int = 8) -> int:
        n = self.byte()
        if n > limit:
            raise _bad(f"{n}-byte number", self.source, self.where, self.offset)
        return int.from_bytes(self.take(n), "big")

    def string(self) -> str:
        return self.take(self.byte()).decode("latin-1")


def _record(db: Database, rec: bytes, source: str, at: int) -> None:
    """One whole record (status, flags, type, size, then its fields) into ``db``."""
    flags, kind = rec[2], rec[3]
    rtype, revision = kind & 0x0F, kind >> 4
    (size,) = struct.unpack_from(">I", rec, 4)
    body = rec[8:8 + size] if 0 < size <= len(rec) - 8 else rec[8:]
    names = {1: "volume", 2: "component", 3: "partition", 4: "disk", 5: "disk group"}
    where = f"LDM {names.get(rtype, 'unknown')} VBLK"
    c = _Cursor(body, source, where, at)
    if sum(map(len, (db.vols, db.comps, db.parts, db.disks))) > MAX_OBJECTS:
        raise _bad("too many records", source, where, at)

    def check(rev_ok: bool) -> None:
        if not rev_ok:
            raise UnsupportedError(f"revision {revision} of a {names[rtype]} record", source=source,
                                   structure=where, offset=at)

    def add(table: dict, rec_obj) -> None:
        if rec_obj.id in table:
            raise _bad(f"object id {rec_obj.id} appears twice", source, where, at)
        table[rec_obj.id] = rec_obj

    if rtype == 0:
        return
    if rtype == 1:
        check(revision == 5)
        vid, name, vkind = c.num(), c.string(), c.string()
        c.string()                       # a flag as text ("8000000000000000" or empty)
        c.skip(14)                       # state
        int_type = c.byte()
        c.skip(6)                        # unknown, volume number, zeros, flags
        n_comps = c.num()
        c.skip(16)                       # commit id, id
        vsize = c.num()
        c.skip(4)
        part_type = c.byte()
        guid = str(uuid.UUID(bytes=c.take(16)))
        hint = ""
        if flags & 0x08:
            c.string()
        if flags & 0x20:
            c.string()
        if flags & 0x80:
            c.num()
        if flags & 0x02:
            hint = c.string()
        add(db.vols, VolRec(vid, name, vkind, int_type, n_comps, vsize, part_type, guid, hint))
    elif rtype == 2:
        check(revision == 3)
        cid, name = c.num(), c.string()
        c.string()                       # state
        ctype = c.byte()
        c.skip(4)
        n_parts = c.num()
        c.skip(16)
        parent = c.num()
        c.skip(1)
        chunk = columns = 0
        if flags & 0x10:
            chunk, columns = c.num(), c.num()
        add(db.comps, CompRec(cid, name, ctype, n_parts, parent, chunk, columns))
    elif rtype == 3:
        check(revision == 3)
        pid, name = c.num(), c.string()
        c.skip(12)
        start, vol_offset = c.be64(), c.be64()
        psize, parent, disk = c.num(), c.num(), c.num()
        index = c.num() if flags & 0x08 else 0
        add(db.parts, PartRec(pid, name, start, vol_offset, psize, parent, disk, index))
    elif rtype == 4:
        did, name = c.num(), c.string()
        if revision == 3:
            guid = c.string().lower()
            try:
                guid = str(uuid.UUID(guid))
            except ValueError:
                raise _bad(f"disk {name}: GUID {guid!r}", source, where, at) from None
        elif revision == 4:
            guid = str(uuid.UUID(bytes=c.take(16)))
        else:
            check(False)
        add(db.disks, DiskRec(did, name, guid))
    elif rtype == 5:
        check(revision in (3, 4))
        db.group_id = c.num()
        db.group_name = c.string() or db.group_name
    else:
        raise UnsupportedError(f"record type {rtype}", source=source, structure=where, offset=at)


# -- volumes -------------------------------------------------------------------------------


class _Missing(Stream):
    """A partition whose disk is not among this recovery point's disks: reading it fails."""

    def __init__(self, size: int, why: str, name: str):
        self.size, self.why, self.name = size, why, name

    def _readinto(self, offset, view):
        raise FormatError(self.why, source=self.name, structure="LDM partition", offset=offset)


class _Plex(Stream):
    """One component's bytes: concatenated, striped or RAID-5 columns."""

    def __init__(self, name: str, kind: int, columns: list[Stream], chunk: int, size: int,
                 starts: list[int] | None = None):
        self.name, self.kind, self.columns, self.chunk, self.size = name, kind, columns, chunk, size
        self.starts = starts or []
        self.missing = [i for i, s in enumerate(columns) if isinstance(s, _Missing)]

    def _pieces(self, offset: int, end: int):
        """(column, offset in it, length, row) covering [offset, end)."""
        pos = offset
        n = len(self.columns)
        while pos < end:
            if self.kind == COMP_SPANNED:
                i = bisect.bisect_right(self.starts, pos) - 1
                col = self.columns[i]
                take = min(end, self.starts[i] + col.size) - pos
                yield i, pos - self.starts[i], take, 0
                pos += take
                continue
            data_cols = n - 1 if self.kind == COMP_RAID else n
            chunk_no, inside = divmod(pos, self.chunk)
            row, k = divmod(chunk_no, data_cols)
            if self.kind == COMP_RAID:
                parity = (n - 1) - row % n
                col = (parity + 1 + k) % n
            else:
                col = k
            take = min(end - pos, self.chunk - inside)
            yield col, row * self.chunk + inside, take, row
            pos += take

    def _readinto(self, offset: int, view: memoryview) -> None:
        done = 0
        for col, off, n, _row in self._pieces(offset, offset + len(view)):
            part = view[done:done + n]
            stream = self.columns[col]
            if self.kind == COMP_RAID and isinstance(stream, _Missing):
                self._rebuild(col, off, part)
            else:
                got = stream.readinto(off, part)
                if got != n:
                    raise FormatError(f"{stream.name} ends at {stream.size}", source=self.name,
                                      structure="LDM volume", offset=offset + done)
            done += n

    def _rebuild(self, col: int, off: int, out: memoryview) -> None:
        """A missing RAID-5 column's bytes: the XOR of the same range on every other column."""
        acc = 0
        for i, s in enumerate(self.columns):
            if i == col:
                continue
            acc ^= int.from_bytes(s.read(off, len(out)), "little")
        out[:] = acc.to_bytes(len(out), "little")

    def _extents(self, offset: int, end: int):
        if self.missing and self.kind == COMP_RAID:
            yield Extent(offset, end - offset, DATA)
            return
        pos = offset
        for col, off, n, _row in self._pieces(offset, end):
            for ext in self.columns[col].extents(off, n):
                yield Extent(pos + ext.offset - off, ext.length, ext.kind)
            pos += n


class LdmVolume(Stream):
    """A dynamic volume: one plex, or a mirror of several (read from the first that works)."""

    def __init__(self, name: str, plexes: list[_Plex], size: int, layout: dict):
        self.name, self.plexes, self.size, self.layout = name, plexes, size, layout
        self.usable = [p for p in plexes if not p.missing or p.kind == COMP_RAID]

    def _readinto(self, offset: int, view: memoryview) -> None:
        errors = []
        for plex in self.usable:
            try:
                plex.readinto(offset, view)
                return
            except RpfsError as e:      # a damaged plex: the next copy
                errors.append(e)
        raise errors[0] if errors else FormatError("no readable plex", source=self.name,
                                                   structure="LDM volume", offset=offset)

    def _extents(self, offset: int, end: int):
        return self.usable[0].extents(offset, end - offset)

    def describe(self) -> dict:
        return {"ldm": self.layout}


def _plex(db: Database, comp: CompRec, disks: dict[int, Member], vol: VolRec,
          source: str) -> tuple[_Plex, list[dict]]:
    def bad(msg):
        return _bad(f"{vol.name}: {msg}", source, "LDM component")

    parts = sorted((p for p in db.parts.values() if p.parent == comp.id),
                   key=lambda p: (p.index, p.vol_offset) if comp.type != COMP_SPANNED
                   else (p.vol_offset, p.index))
    if len(parts) != comp.n_parts or not parts:
        raise bad(f"component {comp.name} lists {comp.n_parts} partitions, {len(parts)} found")
    members, streams = [], []
    for p in parts:
        drec = db.disks.get(p.disk)
        if drec is None:
            raise bad(f"partition {p.name} is on unknown disk {p.disk}")
        m = disks.get(p.disk)
        length = p.size * SECTOR
        info = {"partition": p.name, "disk": drec.name, "start": p.start * SECTOR,
                "size": length}
        if m is None:
            why = f"disk {drec.name} ({drec.guid}) is missing (not on any disk of this VM)"
            streams.append(_Missing(length, why, f"ldm-{vol.name}"))
            info["state"] = "missing"
        else:
            if p.start * SECTOR + length > m.data_size:
                raise bad(f"partition {p.name} ({p.start}+{p.size} sectors) lies past the data "
                          f"area of {drec.name} ({m.data_size // SECTOR} sectors)")
            streams.append(SliceStream(m.disk, m.data_start + p.start * SECTOR, length,
                                       name=f"{m.name}:{p.name}"))
            info["on"] = m.name
            info["state"] = "present"
        members.append(info)
    name = f"ldm-{vol.name}"
    if comp.type == COMP_SPANNED:
        starts, pos = [], 0
        for p, s in zip(parts, streams):
            if p.vol_offset * SECTOR != pos:
                raise bad(f"partition {p.name} starts at sector {p.vol_offset}, the previous "
                          f"ends at {pos // SECTOR}")
            starts.append(pos)
            pos += s.size
        return _Plex(name, comp.type, streams, 0, pos, starts), members
    if comp.type not in (COMP_STRIPED, COMP_RAID):
        raise UnsupportedError(f"component type {comp.type}", source=source,
                               structure="LDM component")
    n = len(streams)
    chunk = comp.chunk * SECTOR
    if chunk <= 0 or chunk > 1 << 30 or (comp.columns and comp.columns != n):
        raise bad(f"component {comp.name}: chunk {comp.chunk} sectors, {comp.columns} columns "
                  f"for {n} partitions")
    if comp.type == COMP_RAID and n < 3:
        raise bad(f"RAID-5 with {n} columns")
    if [p.index for p in parts] != list(range(n)):
        raise bad(f"column indexes {[p.index for p in parts]}")
    column = min(s.size for s in streams) // chunk * chunk
    data_cols = n - 1 if comp.type == COMP_RAID else n
    return _Plex(name, comp.type, streams, chunk, column * data_cols), members


def _volume(db: Database, vol: VolRec, disks: dict[int, Member], source: str):
    comps = [c for c in db.comps.values() if c.parent == vol.id]
    if len(comps) != vol.n_comps or not comps:
        raise _bad(f"{vol.name}: {vol.n_comps} components listed, {len(comps)} found", source,
                   "LDM volume")
    types = {c.type for c in comps}
    if vol.int_type == VOL_RAID5:
        if types != {COMP_RAID} or len(comps) != 1:
            raise _bad(f"{vol.name}: a RAID-5 volume needs one RAID component", source,
                       "LDM volume")
        kind = "raid5"
    elif COMP_RAID in types:
        raise _bad(f"{vol.name}: a RAID component under a volume of type {vol.int_type}",
                   source, "LDM volume")
    elif len(comps) > 1:
        kind = "mirrored"
    elif types == {COMP_STRIPED}:
        kind = "striped"
    else:
        kind = "spanned" if comps[0].n_parts > 1 else "simple"
    plexes, members = [], []
    for comp in sorted(comps, key=lambda c: c.id):
        plex, m = _plex(db, comp, disks, vol, source)
        plexes.append(plex)
        members.append({"component": comp.name, "partitions": m})
    size = vol.size * SECTOR
    state, why = "healthy", ""
    missing = [p for p in plexes if p.missing]
    if kind == "raid5" and missing and len(plexes[0].missing) > 1:
        state, why = "unreadable", f"{len(plexes[0].missing)} RAID-5 columns missing"
    elif kind == "raid5" and missing:
        state, why = "degraded", "one column missing: its bytes rebuilt from parity"
    elif kind == "mirrored" and len(missing) == len(plexes):
        state, why = "unreadable", "every plex has a missing disk"
    elif kind == "mirrored" and missing:
        state, why = "degraded", f"{len(missing)} of {len(plexes)} plexes have a missing disk"
    elif missing:
        state = "unreadable"
        why = next(s.why for p in plexes for s in p.columns if isinstance(s, _Missing))
    layout = {"disk_group": db.group_name, "disk_group_guid": db.group_guid, "volume": vol.name,
              "type": kind, "size": size, "guid": vol.guid, "state": state,
              "components": members}
    if why:
        layout["reason"] = why
    if plexes[0].chunk:
        layout["chunk_size"] = plexes[0].chunk
    if state == "unreadable":
        raise FormatError(f"{kind} volume {vol.name} is unreadable: {why}", source=f"ldm-{vol.name}",
                          structure="LDM volume")
    for p in plexes:
        if p.size < size and not (kind == "mirrored" and p.missing):
            raise _bad(f"{vol.name}: a plex holds {p.size} bytes, the volume {size}", source,
                       "LDM volume")
    return LdmVolume(f"ldm-{vol.name}", plexes, size, layout)


def assemble(disks: dict[str, Stream]) -> dict[str, object]:
    """``ldm-<volume>`` -> LdmVolume, or the error saying why it cannot be read, for every
    volume of every disk group found on ``disks`` (stem -> disk). A disk whose database
    cannot be read is ``ldm-<stem>`` -> its error."""
    members: list[Member] = []
    out: dict[str, object] = {}
    for stem, disk in sorted(disks.items()):
        if not probe(disk):
            continue
        try:
            members.append(read_member(stem, disk))
        except RpfsError as e:
            out[f"ldm-{stem}"] = e
    groups: dict[str, list[Member]] = {}
    for m in members:
        groups.setdefault(m.group_guid, []).append(m)
    for guid, ms in sorted(groups.items()):
        newest = max(ms, key=lambda m: m.db.sequence)
        db = newest.db
        by_guid = {m.disk_guid: m for m in ms}
        present = {d.id: by_guid[d.guid] for d in db.disks.values() if d.guid in by_guid}
        for vol in sorted(db.vols.values(), key=lambda v: v.name):
            name = f"ldm-{vol.name}"
            if name in out:
                name = f"ldm-{db.group_name}-{vol.name}"
            try:
                out[name] = _volume(db, vol, present, f"disk group {db.group_name}")
            except RpfsError as e:
                out[name] = e
    return out


def describe_disk(disk: Stream, name: str = "<disk>") -> dict:
    """What ``rpfs info`` says of a dynamic disk: its group and the volumes it holds parts of."""
    m = read_member(name, disk)
    mine = next((d for d in m.db.disks.values() if d.guid == m.disk_guid), None)
    parts = [p for p in m.db.parts.values() if mine and p.disk == mine.id]
    vols = set()
    for p in parts:
        comp = m.db.comps.get(p.parent)
        vol = m.db.vols.get(comp.parent) if comp else None
        if vol:
            vols.add(vol.name)
    return {"disk_group": m.group_name, "disk_group_guid": m.group_guid,
            "disk": mine.name if mine else None, "disk_guid": m.disk_guid,
            "sequence": m.db.sequence, "volumes": sorted(f"ldm-{v}" for v in vols)}
