"""Backup: one run turns source files into one recovery point.

Pipeline (bounded, so memory stays at a few dozen MiB whatever the source size)::

    reader thread ──(queue of futures, in order)──> main thread: pack writer + catalog
        │ large sequential preads, holes skipped              ▲
        └─> worker pool: zero check, BLAKE3, dedup lookup, zstd ┘

Workers release the GIL in blake3/zstd. Zero chunks are detected by a memcmp and neither
hashed nor stored; chunks in a hole (SEEK_HOLE) are not even read. A new chunk is claimed
by exactly one worker (run-wide table under a lock), so it is compressed and stored once.

Atomicity: each pack is fsynced and renamed into place (and its directory fsynced) before
the short transaction that adds its chunk rows; the recovery point's rows are inserted in
one last transaction. A run killed at any moment leaves the previous state plus, at most,
durable chunks no recovery point references yet — the next backup reuses them (they are
found by hash like any other chunk) and gc removes those nobody ends up using.

Many backups at once (processes of this machine, and other machines on an s3://
repository) hold the repository lock shared; prune and gc take it exclusively, so they never
see a backup's packs before its recovery point is committed. Each backup publishes its own
packs, index object, chunk maps and recovery point object; catalogs merge them (sync.py). Two
backups that store the same new chunk at once both upload it: the catalog keeps the row it
has, and gc drops the other copy.
"""

from __future__ import annotations

import os
import queue
import threading
import time as _time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from streams.errors import RpfsError, UsageError
from rpfs.live import Identity, changed_ranges, frozen_selection, identity, settle
from rpfs.progress import Progress
from rpfs.ratelimit import RateLimit
from rpfs.store import catalog, objects
import rpfs.store.frames as frames
from rpfs.store.packs import FRAMED, PackWriter, compress
from rpfs.store.maintenance.sync import sync
from rpfs.store.repository import Repository
from streams.times import parse_time_text, point_name
from streams.stream import DATA, FileStream

BATCH_BYTES = 8 << 20   # one read (and one worker job) covers at least this much
RACY_NS = 2_000_000_000  # files modified this recently are never skipped next time
STABLE_TRIES = 4        # reads of a file that changes while read before the backup fails


class SourceChanged(RpfsError):
    """A disk kept changing while it was read: no stable copy, so none is stored."""


@dataclass
class BackupResult:
    vm: str
    rp: str
    files: int
    logical_bytes: int
    new_chunks: int
    new_bytes_stored: int        # compressed bytes of the new chunks
    new_bytes_logical: int       # their uncompressed size
    reused_chunks: int
    zero_chunks: int
    read_bytes: int
    seconds: float
    packs: int = 0
    unchanged_files: int = 0     # not read: size, mtime, ctime, inode, device as last time
    unchanged_bytes: int = 0
    reread_bytes: int = 0        # read again because the file changed while it was read
    warnings: list = field(default_factory=list)
    left_out: list = field(default_factory=list)   # --frozen: running disks not stored

    @property
    def dedup_ratio(self) -> float:
        """Logical bytes per byte stored by this run (inf when nothing new was stored)."""
        return self.logical_bytes / self.new_bytes_stored if self.new_bytes_stored else float("inf")

    @property
    def mb_per_s(self) -> float:
        return self.logical_bytes / 1e6 / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict:
        d = asdict(self)
        d["dedup_ratio"] = None if self.dedup_ratio == float("inf") else round(self.dedup_ratio, 3)
        d["mb_per_s"] = round(self.mb_per_s, 1)
        d["seconds"] = round(self.seconds, 3)
        return d


@dataclass
class _Source:
    rel: str
    path: str
    size: int
    ident: tuple = ()                             # (mtime_ns, ctime_ns, inode, dev) before reading
    hashes: list = field(default_factory=list)   # per chunk: hash or None (zeros)
    reuse: bytes | None = None                   # previous RP's chunk map (file unchanged)
    map_object: str | None = None                # ... and its map object
    before: Identity | None = None               # identity before this read (torn-copy check)
    size_changed: bool = False                   # the size moved before this read started


def check_vm_name(name: str) -> str:
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise UsageError(f"invalid VM name {name!r}")
    return name


def collect_sources(sources: list[str], vm: str | None) -> tuple[str, list[_Source]]:
    """VM folder -> its files by relative path (name = folder name); disk files -> by file
    name (VM name = --vm, else the first file's stem). Several folders: each under its name."""
    if not sources:
        raise UsageError("nothing to back up")
    out: dict[str, _Source] = {}
    single_dir = len(sources) == 1 and os.path.isdir(sources[0])
    for src in sources:
        src = os.path.abspath(src)
        if os.path.isdir(src):
            prefix = "" if single_dir else os.path.basename(src.rstrip("/")) + "/"
            for root, dirs, names in os.walk(src):
                dirs.sort()
                for n in sorted(names):
                    p = os.path.join(root, n)
                    if os.path.islink(p) or not os.path.isfile(p):
                        continue
                    rel = prefix + os.path.relpath(p, src).replace(os.sep, "/")
                    _add(out, rel, p)
        elif os.path.isfile(src):
            _add(out, os.path.basename(src), src)
        else:
            raise UsageError(f"{src}: no such file or directory")
    if not out:
        raise UsageError(f"no files to back up in {', '.join(sources)}")
    if vm is None:
        first = os.path.abspath(sources[0]).rstrip("/")
        vm = os.path.basename(first) if os.path.isdir(first) else Path(first).stem
    settled = settle({f.path: f.before for f in out.values()})
    for f in out.values():
        f.before = settled[f.path]
        f.size = f.before.size
    return check_vm_name(vm), list(out.values())


def _add(out: dict, rel: str, path: str) -> None:
    if rel in out:
        raise UsageError(f"two sources would be stored as {rel!r}")
    before = identity(path)
    ident = (before.mtime_ns, before.ctime_ns, before.inode, before.dev)
    if _time.time_ns() - max(before.mtime_ns, before.ctime_ns) < RACY_NS:
        # changed moments ago: a write in the same clock tick after our read would leave the
        # times as they are, so never let the next backup skip this file on its stat alone
        ident = (None, None, None, None)
    out[rel] = _Source(rel, path, before.size, ident, before=before)


def parse_time(text: str | None) -> datetime:
    if text is None:
        return datetime.now(timezone.utc).replace(microsecond=0)
    t = parse_time_text(text)
    if t is None:
        raise UsageError(f"--time {text!r} is not an ISO 8601 time")
    return t.astimezone(timezone.utc).replace(microsecond=0)


_PENDING = -1


class _Run:
    """State shared by the stages of one backup run."""

    def __init__(self, repo: Repository, workers: int, limit: RateLimit | None = None):
        self.repo = repo
        self.limit = limit
        self.writer: PackWriter | None = None
        self.cs = repo.chunk_size
        self.level = repo.config.zstd_level
        self.frame_size = repo.config.frame_size    # 0: unframed chunks (a format-1 repository)
        self.raw_frame_size = repo.config.raw_frame_size
        self.zero = bytes(self.cs)
        self.known: dict[bytes, int] = {}        # hash -> chunk id, or _PENDING while in a pack
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="rpfs-backup")
        self.q: queue.Queue = queue.Queue(maxsize=workers * 2 + 2)
        # full packs are fsynced, published and committed here, off the main thread, so
        # an fsync (or an upload) does not stall the pipeline; a backend says how many
        # publish at once (a disk: 1; object storage: a few, each a network round trip)
        self.publishers = repo.backend.parallel_puts
        self.finisher = ThreadPoolExecutor(self.publishers, thread_name_prefix="rpfs-pack")
        self.finishing: list[Future] = []
        self.commit_lock = threading.Lock()     # one catalog transaction at a time
        self.published: list = []               # (pack, size, entries) for the index object
        self.readers: list[threading.Thread] = []

    def finish(self, writer: PackWriter) -> None:
        while len(self.finishing) >= self.publishers + 1:
            self.finishing.pop(0).result()
        self.finishing.append(self.finisher.submit(_commit_pack, self.repo, self, writer))

    def drain(self) -> None:
        while self.finishing:
            self.finishing.pop(0).result()

    # worker: one batch of consecutive chunks of one file
    def work(self, data: bytes, n: int) -> list:
        cs, out = self.cs, []
        mv = memoryview(data)
        for k in range(n):
            s = k * cs
            e = min(s + cs, len(data))
            if data.startswith(self.zero if e - s == cs else bytes(e - s), s):
                out.append(None)
                continue
            chunk = mv[s:e]
            h = self.repo.crypto.chunk_id(chunk)
            with self.lock:
                known = h in self.known
            if not known:
                row = self.repo.db.execute(
                    "SELECT c.id FROM chunks c JOIN packs p ON p.id = c.pack_id WHERE c.hash = ?"
                    " AND p.name != ?", (h, catalog.LOST_PACK)).fetchone()
                with self.lock:
                    if h in self.known:
                        known = True
                    elif row:
                        self.known[h] = row[0]
                        known = True
                    else:
                        self.known[h] = _PENDING   # ours to store
            if known:
                out.append((h, None, None, e - s))
            elif self.frame_size:
                payload = frames.encode(self.repo.crypto, chunk, h, self.level, self.frame_size,
                                        self.raw_frame_size)
                out.append((h, FRAMED, payload, e - s))
            else:
                codec, payload = compress(chunk, self.level)
                out.append((h, codec, self.repo.crypto.seal_chunk(payload, h), e - s))
        return out

    # reader thread
    def read_all(self, sources: list[_Source]) -> None:
        try:
            for fi, src in enumerate(sources):
                if src.reuse is None:
                    self._read_file(fi, src)
            self._put(None)
        except BaseException as e:  # handed to the main thread
            self._put(e)

    def _put(self, item) -> None:
        while not self.stop.is_set():
            try:
                self.q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _read_file(self, fi: int, src: _Source) -> None:
        cs = self.cs
        nchunks = (src.size + cs - 1) // cs
        if nchunks == 0:
            return
        fs = FileStream(src.path, name=src.rel)
        try:
            if fs.size != src.size:   # changed since its identity was taken: read it again
                src.size_changed = True
                return
            try:
                os.posix_fadvise(fs._fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
            except (AttributeError, OSError):
                pass
            data_ranges = [(x.offset, x.end) for x in fs.extents() if x.kind == DATA]
            per_batch = max(1, BATCH_BYTES // cs)
            di = 0

            def has_data(k: int) -> bool:
                """Does chunk k overlap a DATA extent? (k only grows, so di only advances)"""
                nonlocal di
                s = k * cs
                while di < len(data_ranges) and data_ranges[di][1] <= s:
                    di += 1
                return di < len(data_ranges) and data_ranges[di][0] < min(s + cs, src.size)

            i = 0
            while i < nchunks:
                if self.stop.is_set():
                    return
                if not has_data(i):   # a run of chunks inside a hole: never read
                    nxt = data_ranges[di][0] // cs if di < len(data_ranges) else nchunks
                    j = max(i + 1, min(nxt, nchunks))
                    self._put((fi, i, j - i, None))
                    i = j
                    continue
                j = i + 1
                while j < nchunks and j - i < per_batch and has_data(j):
                    j += 1
                off = i * cs
                if self.limit:
                    self.limit.take(min(j * cs, src.size) - off)
                data = fs.read(off, min(j * cs, src.size) - off)
                self._put((fi, i, j - i, self.pool.submit(self.work, data, j - i)))
                i = j
        finally:
            fs.close()


def backup(repo: Repository, sources: list[str], *, vm: str | None = None,
           time: datetime | str | None = None, workers: int | None = None,
           progress: Progress | None = None, show_progress: bool = True,
           force_read: bool = False, frozen: bool = False, limit: RateLimit | None = None,
           stable_tries: int = STABLE_TRIES, wait: bool = False) -> BackupResult:
    """Back up ``sources`` as one new recovery point of ``vm``; returns what it did.

    A file whose size, mtime, ctime, inode and device equal those recorded (before reading)
    in the VM's newest recovery point reuses that chunk map unread, like restic and borg;
    ``force_read`` reads everything. (A parent VHDX frozen by a checkpoint is the common
    case: large and unchanged.)

    A file that changed while it was read (rpfs/live.py) is read again until two reads agree
    (chunks already stored are only hashed again; the changed ranges are stored), at most
    ``stable_tries`` reads, else ``SourceChanged``: a torn copy is never stored. ``frozen``
    leaves the running disk of each checkpoint chain out; ``limit`` bounds the read rate.
    ``wait``: wait for a running prune or gc instead of refusing."""
    t0 = _time.monotonic()
    vm, files = collect_sources(sources, vm)
    left_out, notes = [], []
    if frozen:
        leave, notes = frozen_selection({f.rel: f.path for f in files})
        left_out = [f.rel for f in files if f.rel in leave]
        files = [f for f in files if f.rel not in leave]
    when = time if isinstance(time, datetime) else parse_time(time)
    when = when.astimezone(timezone.utc).replace(microsecond=0)
    name = point_name(when)
    if workers is None:
        workers = max(1, len(os.sched_getaffinity(0)))
    total = sum(f.size for f in files)
    with repo.lock("backup", exclusive=False, wait=wait):
        synced = sync(repo)   # recovery points other backups committed, or a killed run left as an object only
        if f"{vm}/{name}" in synced.forgotten:
            # its old object is deleted when the prune is finished: this one's would go with it
            raise UsageError(f"VM {vm!r}'s recovery point {name} is being forgotten by an interrupted"
                             " prune: run `rpfs prune REPO` first, which finishes it")
        if repo.writer.execute("SELECT 1 FROM recovery_points r JOIN vms v ON v.id = r.vm_id"
                               " WHERE v.name = ? AND r.name = ?", (vm, name)).fetchone():
            raise UsageError(f"VM {vm!r} already has a recovery point named {name}")
        own_progress = progress is None and show_progress
        if own_progress:
            progress = Progress(total, f"backup {vm}/{name}")
        run = _Run(repo, workers, limit)
        res = BackupResult(vm, name, len(files), total, 0, 0, 0, 0, 0, 0, 0.0)
        res.warnings.extend(notes)
        res.left_out = left_out
        if not force_read:
            _find_unchanged(repo, vm, files, run.cs, res)
        try:
            _read_pass(run, [f for f in files if f.reuse is None], res, progress, res.unchanged_bytes)
            _settle(run, vm, [f for f in files if f.reuse is None], res, stable_tries)
            if run.writer is not None:
                run.finish(run.writer)
                res.packs += 1
                run.writer = None
            run.drain()
            res.logical_bytes = sum(f.size for f in files)
            res.seconds = _time.monotonic() - t0
            _commit_rp(repo, run, vm, name, when, files, res)
        finally:
            # threads first: a pack commit must not outlive the catalog connection it uses
            # (the caller closes the repository next)
            run.stop.set()
            run.pool.shutdown(wait=True, cancel_futures=True)
            run.finisher.shutdown(wait=True)
            for t in run.readers:
                t.join()
            if run.writer is not None:
                run.writer.abort()
            if own_progress and progress:
                progress.close()
    res.seconds = _time.monotonic() - t0
    return res


def _read_pass(run: _Run, files: list[_Source], res: BackupResult, progress, done: int) -> None:
    """Read ``files`` once through the pipeline: their ``hashes`` are filled, new chunks
    go into packs."""
    reader = threading.Thread(target=run.read_all, args=(files,), name="rpfs-backup-reader",
                              daemon=True)
    run.readers.append(reader)
    reader.start()
    repo = run.repo
    while True:
        item = run.q.get()
        if item is None:
            break
        if isinstance(item, BaseException):
            raise item
        fi, first, n, fut = item
        src = files[fi]
        if fut is None:
            src.hashes.extend([None] * n)
            res.zero_chunks += n
        else:
            for r in fut.result():
                if r is None:
                    src.hashes.append(None)
                    res.zero_chunks += 1
                    continue
                h, codec, payload, usize = r
                src.hashes.append(h)
                if payload is None:
                    res.reused_chunks += 1
                    continue
                if run.writer is None:
                    run.writer = PackWriter(repo.backend)
                run.writer.add(h, codec, payload, usize,
                               frames.stored_table(payload) if codec == FRAMED else None)
                res.new_chunks += 1
                res.new_bytes_stored += len(payload)
                res.new_bytes_logical += usize
                if run.writer.size >= repo.config.pack_size:
                    run.finish(run.writer)
                    res.packs += 1
                    run.writer = None
            res.read_bytes += min(n * run.cs, src.size - first * run.cs)
        done += min(n * run.cs, src.size - first * run.cs)
        if progress:
            progress.update(done, new=res.new_bytes_logical, stored=res.new_bytes_stored)
    reader.join()


def _settle(run: _Run, vm: str, files: list[_Source], res: BackupResult, tries: int) -> None:
    """Read again every file that changed while it was read, until a read is a copy of one
    moment: one during which the file provably did not change, or one equal to the read
    before it (each chunk then held the same bytes before and after the moment between the
    two reads). Raises SourceChanged after ``tries`` reads."""
    unsettled = [f for f in files if _moved(f)]
    attempt = 1
    while unsettled:
        if attempt >= tries:
            f = unsettled[0]
            raise SourceChanged(
                f"{vm}: {f.rel} changed while it was read, {attempt} reads in a row"
                f" (nothing was stored for this VM): take a checkpoint, or export the VM,"
                f" and back up with --frozen, or back it up while it is off")
        attempt += 1
        previous = {}
        for f in unsettled:
            previous[f.rel] = f.hashes
            f.before = identity(f.path)
            f.size, f.hashes, f.size_changed = f.before.size, [], False
        n0 = res.read_bytes
        _read_pass(run, unsettled, res, None, 0)
        res.reread_bytes += res.read_bytes - n0
        still = []
        for f in unsettled:
            ranges = changed_ranges(previous[f.rel], f.hashes, run.cs)
            if f.size_changed:
                still.append(f)
            elif not ranges or not _moved(f):
                f.ident = (None, None, None, None)   # never skipped on its stat next time
                res.warnings.append(
                    f"{f.rel} changed while it was read: read {attempt} times; stored "
                    + ("the copy the last two reads agree on" if not ranges else
                       f"read {attempt}, during which it did not change ({len(ranges)}"
                       f" range{'s' if len(ranges) != 1 else ''} differed from the read before)"))
            else:
                still.append(f)
        unsettled = still


def _moved(f: _Source) -> bool:
    """Did ``f`` change during the read that just ended (or can that not be ruled out)?"""
    if f.size_changed or f.before is None or f.before.racy:
        return True
    try:
        after = identity(f.path)
    except OSError:
        return True
    return not f.before.same(after)


def _find_unchanged(repo: Repository, vm: str, files: list[_Source], cs: int,
                    res: BackupResult) -> None:
    """Mark files identical (by stat) to their copy in the VM's newest recovery point."""
    db = repo.writer
    row = db.execute("SELECT r.id, r.chunk_size FROM recovery_points r JOIN vms v ON v.id = r.vm_id"
                     " WHERE v.name = ? ORDER BY r.time DESC, r.name DESC LIMIT 1", (vm,)).fetchone()
    if not row or row[1] != cs:
        return
    prev = {p: (size, (m, c, i, d), blob, mo) for p, size, blob, m, c, i, d, mo in db.execute(
        "SELECT path, size, chunk_map, mtime_ns, ctime_ns, inode, dev, map_object FROM files"
        " WHERE rp_id = ?", (row[0],))}
    for f in files:
        p = prev.get(f.rel)
        if p and p[0] == f.size and None not in p[1] and p[1] == f.ident:
            f.reuse, f.map_object = p[2], p[3]
            res.unchanged_files += 1
            res.unchanged_bytes += f.size


def _commit_pack(repo: Repository, run: _Run, writer: PackWriter) -> None:
    """Pack durable first, then its chunk rows (one short transaction)."""
    size = writer.finish()
    db = repo.writer
    ids = []
    with run.commit_lock, catalog.transaction(db):
        # a conflict: a catch-up of this catalog (another process's sync) imported the pack
        # from the repository already
        pid = db.execute("INSERT INTO packs (name, size, chunk_count, created) VALUES (?,?,?,?)"
                         " ON CONFLICT (name) DO UPDATE SET size = excluded.size RETURNING id",
                         (writer.name, size, len(writer.entries), _time.time())).fetchone()[0]
        lost = db.execute("SELECT id FROM packs WHERE name = ?", (catalog.LOST_PACK,)).fetchone()
        for e in writer.entries:
            # a conflict is a chunk a repair found in no pack (from now on it is in this one),
            # or one a concurrent backup stored too (its row is kept; gc drops our copy)
            row = db.execute(
                "INSERT INTO chunks (hash, pack_id, offset, csize, usize, codec, frames)"
                " VALUES (?,?,?,?,?,?,?)"
                " ON CONFLICT (hash) DO UPDATE SET pack_id = excluded.pack_id, offset = excluded.offset,"
                " csize = excluded.csize, usize = excluded.usize, codec = excluded.codec,"
                " frames = excluded.frames WHERE chunks.pack_id = ? RETURNING id",
                (e.hash, pid, e.offset, e.csize, e.usize, e.codec, writer.tables.get(e.hash),
                 lost[0] if lost else -1)).fetchone()
            if row is None:
                row = db.execute("SELECT id FROM chunks WHERE hash = ?", (e.hash,)).fetchone()
            ids.append(row[0])
    with run.lock:
        for e, i in zip(writer.entries, ids):
            run.known[e.hash] = i
        run.published.append((writer.name, size, writer.entries))


def _map_hashes(repo: Repository, f: _Source) -> list:
    """The chunk ids (hashes) of an unchanged file whose map has no object yet."""
    db = repo.writer
    ids = catalog.decode_map(f.reuse, (f.size + repo.chunk_size - 1) // repo.chunk_size, f.rel)
    by_id = dict(db.execute("SELECT id, hash FROM chunks WHERE id IN (SELECT value FROM json_each(?))",
                            (f"[{','.join(map(str, set(ids) - {0}))}]",)).fetchall())
    return [by_id[i] if i else None for i in ids]


def _commit_rp(repo: Repository, run: _Run, vm: str, name: str, when: datetime,
               files: list[_Source], res: BackupResult) -> None:
    """The index of this run's packs, chunk maps and the recovery point object first (the
    repository's truth), then the catalog rows in one transaction."""
    if run.published:
        objects.put_pack_manifest(repo, run.published)
    maps = []
    for f in files:
        if f.reuse is not None and f.map_object:
            maps.append(f.map_object)
        elif f.reuse is not None:
            maps.append(objects.put_map(repo, _map_hashes(repo, f)))
        else:
            maps.append(objects.put_map(repo, f.hashes))
    created = _time.time()
    info = {"vm": vm, "name": name, "time": int(when.timestamp()), "logical_size": res.logical_bytes,
            "stored_size": res.new_bytes_stored, "file_count": len(files),
            "new_chunks": res.new_chunks, "chunk_size": run.cs, "created": created}
    objects.put_recovery_point(repo, info, [
        {"path": f.rel, "size": f.size, "map": m, "mtime_ns": f.ident[0], "ctime_ns": f.ident[1],
         "inode": f.ident[2], "dev": f.ident[3]} for f, m in zip(files, maps)])
    db = repo.writer
    with catalog.transaction(db):
        db.execute("INSERT OR IGNORE INTO vms (name) VALUES (?)", (vm,))
        vm_id = db.execute("SELECT id FROM vms WHERE name = ?", (vm,)).fetchone()[0]
        had = db.execute("SELECT created FROM recovery_points WHERE vm_id = ? AND name = ?",
                         (vm_id, name)).fetchone()
        if had is not None:
            if had[0] == created:
                return   # another process's catch-up imported it from our object meanwhile
            raise UsageError(f"VM {vm!r} already has a recovery point named {name}")
        cur = db.execute(
            "INSERT INTO recovery_points (vm_id, name, time, logical_size, stored_size, file_count,"
            " new_chunks, chunk_size, created) VALUES (?,?,?,?,?,?,?,?,?)",
            (vm_id, name, int(when.timestamp()), res.logical_bytes, res.new_bytes_stored,
             len(files), res.new_chunks, run.cs, created))
        rp_id = cur.lastrowid
        for f, m in zip(files, maps):
            if f.reuse is not None:
                blob = f.reuse
            else:
                ids = [0 if h is None else run.known[h] for h in f.hashes]
                if any(i == _PENDING for i in ids):
                    raise RuntimeError("chunk without a committed pack")
                blob = catalog.encode_map(ids)
            db.execute("INSERT INTO files (rp_id, path, size, chunk_map, mtime_ns, ctime_ns, inode, dev,"
                       " map_object) VALUES (?,?,?,?,?,?,?,?,?)", (rp_id, f.rel, f.size, blob, *f.ident, m))
