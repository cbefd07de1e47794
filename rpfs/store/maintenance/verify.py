"""``rpfs verify``: is every recovery point fully readable, and if not, what is damaged?

Without ``read_data``: catalog integrity (``PRAGMA integrity_check``), every chunk map
decodes, every referenced chunk has a row, every live pack exists with its recorded size,
every chunk lies inside its pack. With ``read_data``: every chunk is also read, decompressed
and hash-checked (packs in parallel) and each pack's own index is compared with the catalog.
Damage is then traced to every VM / recovery point / file / byte range that uses it.
Recovery points an interrupted prune decided to forget (forget.py) are gone: left out, noted.
"""

from __future__ import annotations

import os
import threading
import time as _time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from streams.errors import FormatError, IntegrityError, RpfsError
from rpfs.progress import Progress
import rpfs.store.catalog as catalog
import rpfs.store.maintenance.forget as forget
import rpfs.store.objects as objects
from rpfs.store.packs import CODECS, read_entry_table
from rpfs.store.repository import ChunkLoc, Repository


@dataclass
class Damage:
    vm: str
    rp: str
    file: str
    ranges: list[tuple[int, int]]   # [start, end) byte ranges
    reasons: list[str]

    def as_dict(self) -> dict:
        return {"vm": self.vm, "rp": self.rp, "file": self.file,
                "ranges": [list(r) for r in self.ranges], "reasons": self.reasons}

    def line(self) -> str:
        rs = ", ".join(f"{s:#x}-{e:#x}" for s, e in self.ranges[:8])
        if len(self.ranges) > 8:
            rs += f", ... ({len(self.ranges)} ranges)"
        return f"damaged: {self.vm}/{self.rp}/files/{self.file} bytes {rs}: {'; '.join(self.reasons[:3])}"


@dataclass
class VerifyResult:
    problems: list[str] = field(default_factory=list)     # repository-level findings
    damage: list[Damage] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)        # harmless (orphans, pending deletes)
    recovery_points: int = 0
    files: int = 0
    chunks: int = 0
    chunks_read: int = 0
    bytes_read: int = 0
    seconds: float = 0.0
    read_data: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems and not self.damage

    def as_dict(self) -> dict:
        return {"ok": self.ok, "read_data": self.read_data, "problems": self.problems,
                "damage": [d.as_dict() for d in self.damage], "notes": self.notes,
                "recovery_points": self.recovery_points, "files": self.files,
                "chunks": self.chunks, "chunks_read": self.chunks_read,
                "bytes_read": self.bytes_read, "seconds": round(self.seconds, 3)}


def verify(repo: Repository, *, read_data: bool = False, workers: int | None = None,
           show_progress: bool = True) -> VerifyResult:
    t0 = _time.monotonic()
    res = VerifyResult(read_data=read_data)
    db = catalog.connect(repo.catalog_path)   # this thread's own short read transactions
    try:
        _verify(repo, db, res, read_data, workers or max(1, len(os.sched_getaffinity(0))),
                show_progress)
    finally:
        db.close()
    res.seconds = _time.monotonic() - t0
    return res


def _verify(repo, db, res: VerifyResult, read_data: bool, workers: int, show_progress: bool) -> None:
    rows = db.execute("PRAGMA integrity_check").fetchall()
    if [r[0] for r in rows] != ["ok"]:
        res.problems.extend(f"catalog: {r[0]}" for r in rows[:20])

    packs = {pid: (name, size, retired) for pid, name, size, retired in
             db.execute("SELECT id, name, size, retired_epoch FROM packs")}
    stored = dict(repo.backend.list())
    known = {v[0] for v in packs.values()}
    orphans = [n for n in stored if n not in known]
    if orphans:
        res.notes.append(f"{len(orphans)} pack(s) not in the catalog (left by an interrupted "
                         "backup; the next prune removes them)")
    pending = sum(1 for v in packs.values() if v[2] is not None)
    if pending:
        res.notes.append(f"{pending} retired pack(s) pending delete")

    bad: dict[int, str] = {}          # chunk id -> reason
    bad_pack: dict[int, str] = {}
    for pid, (name, size, retired) in packs.items():
        if retired is not None:
            continue
        have = stored.get(name)
        if name == catalog.LOST_PACK:
            bad_pack[pid] = "chunks found in no pack when the catalog was rebuilt"
        elif have is None:
            bad_pack[pid] = f"pack {name} is missing"
        elif have != size:
            bad_pack[pid] = f"pack {name} has {have} bytes, catalog says {size}"
    for pid, r in bad_pack.items():
        if packs[pid][0] != catalog.LOST_PACK:   # those chunks are named as damage below
            res.problems.append(r)

    # One byte per chunk id (present or not), not a row object per chunk: at 10 M chunks a
    # dict of rows held 3.3 GB (docs/scale.md); --read-data reads one pack's rows at a time.
    (top,) = db.execute("SELECT coalesce(max(id), 0) FROM chunks").fetchone()
    present = bytearray(top + 1)
    for cid, pid, off, csize in db.execute("SELECT id, pack_id, offset, csize FROM chunks"):
        present[cid] = 1
        res.chunks += 1
        p = packs.get(pid)
        if p is None:
            bad[cid] = f"chunk {cid} points to unknown pack {pid}"
        elif p[2] is not None:
            bad[cid] = f"chunk {cid} points to retired pack {p[0]}"
        elif pid in bad_pack:
            bad[cid] = bad_pack[pid]
        elif off < 0 or csize < 0 or off + csize > p[1]:
            bad[cid] = f"chunk {cid} lies outside pack {p[0]}"

    if read_data:
        to_read = [pid for pid, (_, _, retired) in packs.items()
                   if retired is None and pid not in bad_pack]
        wanted = set(to_read)
        total = sum(size for pid, size in db.execute(
            "SELECT pack_id, sum(csize) FROM chunks GROUP BY pack_id") if pid in wanted)
        prog = Progress(total, "verify", enabled=None if show_progress else False)
        lock = threading.Lock()

        def check_pack(pid: int) -> None:
            name = packs[pid][0]
            with lock:   # the catalog connection is shared by the worker threads
                items = sorted((off, cid, csize, usize, codec, h) for cid, off, csize, usize, codec, h
                               in db.execute("SELECT id, offset, csize, usize, codec, hash FROM chunks"
                                             " WHERE pack_id = ?", (pid,)) if cid not in bad)
            local_bad, n, nbytes = {}, 0, 0
            try:
                idx = {e.offset: e for e in read_entry_table(repo.backend, name, packs[pid][1])}
            except (FormatError, IntegrityError) as e:
                idx = None
                with lock:
                    res.problems.append(f"pack {name}: own index unusable: {e}")
            for off, cid, csize, usize, codec, h in items:
                try:
                    repo.fetch_chunk(ChunkLoc(name, off, csize, usize, codec, h), thorough=True)
                except (IntegrityError, OSError) as e:
                    local_bad[cid] = f"chunk {h.hex()[:16]} in pack {name} at {off:#x}: {e}"
                else:
                    if idx is not None:
                        ie = idx.get(off)
                        if ie is None or ie.hash != h or ie.csize != csize:
                            with lock:
                                res.problems.append(f"pack {name}: index disagrees with catalog at {off:#x}")
                n += 1
                nbytes += csize
                prog.update(advance=csize)
            with lock:
                bad.update(local_bad)
                res.chunks_read += n
                res.bytes_read += nbytes

        try:
            with ThreadPoolExecutor(workers, thread_name_prefix="rpfs-verify") as pool:
                list(pool.map(check_pack, to_read))
        finally:
            prog.close()

    # trace damage (and dangling references) to recovery points and files; those a prune
    # has decided to forget are gone, whatever of them is left (forget.py)
    gone = _forgotten(repo, res)
    rps = {rid: (vm, name) for rid, vm, name in db.execute(
        "SELECT r.id, v.name, r.name FROM recovery_points r JOIN vms v ON v.id = r.vm_id")
        if (vm, name) not in gone}
    res.recovery_points = len(rps)
    for rid, vm, name, want_n, want_size, n, size in db.execute(
            "SELECT r.id, v.name, r.name, r.file_count, r.logical_size, count(f.id), coalesce(sum(f.size), 0)"
            " FROM recovery_points r JOIN vms v ON v.id = r.vm_id LEFT JOIN files f ON f.rp_id = r.id"
            " GROUP BY r.id"):
        if rid in rps and (want_n, want_size) != (n, size):
            res.problems.append(f"{vm}/{name}: catalog says {want_n} files, {want_size} bytes;"
                                f" {n} files, {size} bytes are stored")
    for (n,) in db.execute("SELECT count(*) FROM chunks WHERE offset < 0 OR csize < 0 OR usize < 0"
                           f" OR usize > ? OR codec NOT IN {CODECS}", (64 << 20,)):
        if n:
            res.problems.append(f"{n} chunk row(s) with impossible offsets, sizes or codecs")
    referenced_bad: set[int] = set()
    for rp_id, path, size, blob, cs in db.execute(
            "SELECT f.rp_id, f.path, f.size, f.chunk_map, r.chunk_size FROM files f"
            " JOIN recovery_points r ON r.id = f.rp_id ORDER BY f.rp_id, f.path"):
        if rp_id not in rps:
            continue
        res.files += 1
        vm, rpn = rps[rp_id]
        try:
            ids = catalog.decode_map(blob, (size + cs - 1) // cs, f"{vm}/{rpn}/files/{path}")
        except FormatError as e:
            res.damage.append(Damage(vm, rpn, path, [(0, size)], [f"chunk map: {e.message}"]))
            continue
        ranges: list[tuple[int, int]] = []
        reasons: list[str] = []
        for i, cid in enumerate(ids):
            if cid == 0:
                continue
            why = bad.get(cid)
            if why is None and (cid >= len(present) or not present[cid]):
                why = f"chunk {cid} missing from the catalog"
            if why is None:
                continue
            s, e = i * cs, min(size, (i + 1) * cs)
            if ranges and ranges[-1][1] == s:
                ranges[-1] = (ranges[-1][0], e)
            else:
                ranges.append((s, e))
            if why not in reasons:
                reasons.append(why)
        if ranges:
            res.damage.append(Damage(vm, rpn, path, ranges, reasons))
            referenced_bad.update(c for c in ids if c in bad)
    _verify_objects(repo, db, rps, res, read_data)
    unreferenced = len(set(bad) - referenced_bad)
    if unreferenced:
        res.notes.append(f"{unreferenced} damaged chunk(s) no recovery point uses (the next prune drops them)")


def _forgotten(repo, res: VerifyResult) -> set[tuple[str, str]]:
    """(VM, name) of the recovery points outstanding forget intents name: a prune killed
    after deciding (noted: the next prune finishes it); an unreadable intent is a problem."""
    intents = forget.outstanding(repo)
    gone = forget.named(intents)
    if gone:
        shown = ", ".join(f"{vm}/{rp}" for vm, rp in sorted(gone)[:5])
        more = f" and {len(gone) - 5} more" if len(gone) > 5 else ""
        res.notes.append(f"{len(gone)} recovery point(s) forgotten by an interrupted prune ({shown}{more}):"
                         " left out here; the next prune or repair finishes removing them")
    for i in intents:
        if i.error is not None:
            res.problems.append(f"forget intent {i.key} is unreadable ({i.error}): the recovery"
                                " points an interrupted prune meant to forget are kept (delete the"
                                " object to keep them for good)")
    return gone


def _verify_objects(repo, db, rps: dict, res: VerifyResult, read_data: bool) -> None:
    """The repository's own record of every recovery point (what rebuilds the catalog):
    its object and its files' map objects exist (and, with ``read_data``, open)."""
    rp_objects = set(repo.backend.list_objects(objects.RPS))
    maps = set(repo.backend.list_objects(objects.MAPS))
    legacy = {rid for (rid,) in db.execute("SELECT DISTINCT rp_id FROM files WHERE map_object IS NULL")
              if rid in rps}
    if legacy:
        res.notes.append(f"{len(legacy)} recovery point(s) stored before rpfs kept them as objects:"
                         " `rpfs repair` writes their objects")
    for rid, (vm, name) in rps.items():
        if rid in legacy:
            continue
        n = objects.rp_object_name(repo.crypto, vm, name)
        if n not in rp_objects:
            res.problems.append(f"{vm}/{name}: its object rps/{n} is missing (`rpfs repair` writes it again)")
        elif read_data:
            try:
                objects.get_recovery_point(repo, n)
            except (RpfsError, OSError) as e:
                res.problems.append(f"{vm}/{name}: its object rps/{n} is unreadable: {e}")
    seen: set[str] = set()
    for rid, path, mo in db.execute("SELECT rp_id, path, map_object FROM files WHERE map_object IS NOT NULL"):
        if rid not in rps:
            continue
        vm, name = rps[rid]
        why = None
        if mo not in maps:
            why = "is missing"
        elif read_data and mo not in seen:
            try:
                objects.get_map(repo, mo)
                seen.add(mo)
            except (RpfsError, OSError) as e:
                why = f"is unreadable: {e}"
        if why:
            res.problems.append(f"{vm}/{name}/files/{path}: its chunk map object maps/{mo} {why}"
                                " (`rpfs repair` writes it again)")
