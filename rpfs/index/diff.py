"""What changed between two recovery points of one VM, volume by volume, from the index.

Two indexed recovery points differ only in the rows whose ``[first, last]`` interval holds
one ordinal and not the other (db.py), so a diff reads those rows and nothing else; a
recovery point (or a volume) that is not indexed is walked instead, and the caller is told.

A file is identified by its MFT reference (record number and sequence): the same identity
under another name is ``renamed``; a new one is ``added``, a vanished one ``removed``.
For an identity present in both:

- ``modified``: the content changed (size, or the data itself);
- ``metadata``: only the creation or modification time, the attributes, the reparse tag or
  the names of alternate streams changed (directories: their times change whenever names
  are added or removed inside, which the diff lists anyway, so only their creation time,
  attributes and reparse tag count). Access and MFT-change times never count.

The index fingerprints a file's data by its resident bytes or its data runs, so a
non-resident file rewritten in place (same runs, new modification time) or the same bytes
written elsewhere (new runs, same size) cannot be told from metadata alone: ``Contents``
then compares the data (``exact``: first the stored chunks the two ranges come from, then
the bytes of the 64 KiB blocks whose chunks differ; otherwise a few 4 KiB samples).

A directory renamed or moved is listed once: entries below it whose own name and parent
did not change are not listed as renamed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator

from streams.errors import NotFoundError, RpfsError, UsageError
from rpfs import nspath
from rpfs.index import db as dbm
from rpfs.index.provenance import pieces, split
from rpfs.tree import RepoRecoveryPoint, is_posix_volume, open_filesystem
from rpfs.log import get_logger

log = get_logger(__name__)

COMPARE_BLOCK = 64 << 10      # exact comparison: unit whose stored chunks are compared
WINDOW = 16 << 20             # ... looked up this much at a time
SAMPLE = 4096


@dataclass(frozen=True, slots=True)
class Row:
    """One name of one file in one recovery point (an index row, or a walked entry)."""

    ref: int
    rseq: int
    path: str
    parent: int                # parent record number | parent sequence << 48
    kind: str
    size: int
    allocated: int
    created: int
    modified: int
    changed: int
    attributes: int
    reparse_tag: int
    ads: str | None
    fingerprint: bytes

    @property
    def identity(self) -> tuple[int, int]:
        return self.ref, self.rseq

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    def metadata_key(self) -> tuple:
        if self.kind == "dir":
            return (self.created, self.attributes, self.reparse_tag, self.ads)
        return (self.created, self.modified, self.attributes, self.reparse_tag,
                _ads_names(self.ads))


def _ads_names(ads: str | None) -> tuple:
    return tuple(sorted(a.rsplit(":", 1)[0] for a in ads.split("/"))) if ads else ()


@dataclass
class Change:
    change: str                # added | removed | modified | metadata | renamed
    volume: str
    path: str
    old_path: str | None = None
    size: int | None = None
    old_size: int | None = None
    kind: str = "file"
    old: Row | None = field(default=None, repr=False)   # the row in A (None: added)
    new: Row | None = field(default=None, repr=False)   # the row in B (None: removed)

    def as_dict(self) -> dict:
        d = {"change": self.change, "volume": self.volume, "path": self.path}
        if self.change == "renamed":
            d["old_path"] = self.old_path
        d.update(type=self.kind, size=self.size, old_size=self.old_size)
        return d


# -- the rows of two states ------------------------------------------------------------

_COLS = ("e.ref, e.rseq, d.path, n.name, e.parent, e.kind, e.size, e.allocated, e.created,"
         " e.modified, e.changed, e.attributes, e.reparse_tag, e.ads, e.fingerprint")
_FROM = (" FROM entries e JOIN dirs d ON d.id = e.dir_id JOIN names n ON n.id = e.name_id"
         " WHERE e.volume_id = ?")


def _row(r) -> Row:
    return Row(r[0], r[1], dbm.from_text(f"{r[2]}/{r[3]}"), r[4] & ((1 << 64) - 1), r[5], r[6],
               r[7], r[8], r[9], r[10], r[11], r[12], r[13], bytes(r[14]))


def _indexed_delta(db, vid: int, a: int, b: int) -> tuple[list[Row], list[Row]]:
    """The rows present at ordinal ``a`` and not ``b``, and the other way round."""
    lo, hi = min(a, b), max(a, b)
    at_lo, at_hi = [], []
    for r in db.execute(f"SELECT {_COLS}, e.first, e.last" + _FROM +
                        " AND ((e.first <= ?2 AND e.last >= ?2 AND e.last < ?3)"
                        " OR (e.first > ?2 AND e.first <= ?3 AND e.last >= ?3))",
                        (vid, lo, hi)):
        (at_lo if r[-2] <= lo else at_hi).append(_row(r))
    return (at_lo, at_hi) if a <= b else (at_hi, at_lo)


def _indexed_state(db, vid: int, seq: int) -> list[Row]:
    return [_row(r) for r in db.execute(f"SELECT {_COLS}" + _FROM +
                                        " AND e.first <= ? AND e.last >= ?", (vid, seq, seq))]


def walk_state(vol) -> list[Row]:
    """Every name of a volume read from the volume itself (no index)."""
    from rpfs.index import scan  # the NTFS reader: only when a volume is walked

    out = []
    for path, e in vol.walk():
        try:
            fa = vol.file(e.ref)
            info = scan.file_info(vol, fa.record, fa.attrs)
        except RpfsError as err:
            log.warning("%s: %s", path, err)
            continue
        if info is None:
            continue
        name = path.rsplit("/", 1)[-1]
        link = next((lk for lk in info.links if lk[2] == name), info.links[0])
        out.append(Row(info.ref, info.seq, path, link[0] | (link[1] << 48), info.kind, info.size,
                       info.allocated, info.created, info.modified, info.changed,
                       info.attributes, info.reparse_tag, info.ads, info.fingerprint))
    return out


# -- comparing -----------------------------------------------------------------------


class Contents:
    """Did a file's data change between the two recovery points? (see the module doc)"""

    def __init__(self, rp_a, rp_b, exact: bool):
        self.rps = (rp_a, rp_b)        # rpfs.tree RecoveryPoints
        self.exact = exact
        self.bytes_read = 0
        self._volumes: dict = {}

    def volume(self, side: int, name: str):
        """That volume of that side, opening only it (not every volume of the recovery
        point) unless they are open already."""
        rp = self.rps[side]
        key = (side, name)
        if key not in self._volumes:
            if "volumes" in rp.__dict__:
                vol = rp.volumes.get(name)
            else:
                stream = rp.volume_streams.get(name)
                vol = stream if stream is None or isinstance(stream, Exception) else open_filesystem(stream)
            self._volumes[key] = vol
        vol = self._volumes[key]
        if vol is None or isinstance(vol, Exception):
            raise NotFoundError(f"{name}: not readable in this recovery point")
        return vol

    def stream(self, side: int, volume: str, row: Row):
        return self.volume(side, volume).entry(row.ref | (row.rseq << 48)).open()

    def same(self, volume: str, old: Row, new: Row) -> bool:
        try:
            a, b = self.stream(0, volume, old), self.stream(1, volume, new)
        except RpfsError as e:
            log.info("%s%s: data not compared: %s", volume, new.path, e)
            return False
        if a.size != b.size:
            return False
        if not self.exact:
            return all(self._read(a, o, SAMPLE) == self._read(b, o, SAMPLE)
                       for o in sample_offsets(a.size))
        for start in range(0, a.size, WINDOW):       # pieces are bounded: a window at a time
            n = min(WINDOW, a.size - start)
            pa, pb = pieces(a, start, n), pieces(b, start, n)
            if pa is not None and pa == pb:
                continue
            ba = split(pa, COMPARE_BLOCK) if pa is not None else []
            bb = split(pb, COMPARE_BLOCK) if pb is not None else []
            for i, off in enumerate(range(start, start + n, COMPARE_BLOCK)):
                if i < len(ba) and i < len(bb) and ba[i] == bb[i]:
                    continue
                k = min(COMPARE_BLOCK, start + n - off)
                if self._read(a, off, k) != self._read(b, off, k):
                    return False
        return True

    def _read(self, s, off: int, n: int) -> bytes:
        n = max(0, min(n, s.size - off))
        self.bytes_read += n
        return s.read(off, n)


def sample_offsets(size: int) -> list[int]:
    """Where the analysis samples a file of ``size`` bytes: its first 4 KiB block, one in
    the middle and its last (fewer for a small file)."""
    last = max(0, (size - 1) // SAMPLE * SAMPLE)
    return sorted({0, size // 2 // SAMPLE * SAMPLE, last})


def _maybe_same_data(old: Row, new: Row) -> bool | None:
    """True/False when the index decides whether the data changed; None: look at it."""
    if old.kind != new.kind or old.size != new.size:
        return False
    if new.kind != "file" or new.size == 0:
        return old.fingerprint == new.fingerprint
    resident = new.allocated == 0 and old.allocated == 0
    if old.fingerprint == new.fingerprint and (resident or (
            old.modified == new.modified and old.changed == new.changed)):
        return True
    if resident:
        return False
    return None


def compare(volume: str, old_rows: list[Row], new_rows: list[Row],
            contents: Contents | None, prefix: str | None = None) -> list[Change]:
    """The changes between two sets of rows of one volume (all the rows of each state, or
    only those that differ: rows in both are unchanged by construction)."""
    by_a: dict[tuple, dict[str, Row]] = {}
    by_b: dict[tuple, dict[str, Row]] = {}
    for rows, by in ((old_rows, by_a), (new_rows, by_b)):
        for r in rows:
            by.setdefault(r.identity, {})[r.path] = r
    out: list[Change] = []

    def content(old: Row, new: Row) -> list[Change]:
        same = _maybe_same_data(old, new)
        if same is None:
            same = contents.same(volume, old, new) if contents is not None else False
        if not same:
            return [Change("modified", volume, new.path, size=new.size, old_size=old.size,
                           kind=new.kind, old=old, new=new)]
        if old.metadata_key() != new.metadata_key():
            return [Change("metadata", volume, new.path, size=new.size, old_size=old.size,
                           kind=new.kind, old=old, new=new)]
        return []

    for ident in by_a.keys() | by_b.keys():
        pa, pb = by_a.get(ident, {}), by_b.get(ident, {})
        for p in pa.keys() & pb.keys():
            out += content(pa[p], pb[p])
        only_a = sorted(set(pa) - set(pb))
        only_b = sorted(set(pb) - set(pa))
        for pold, pnew in zip(only_a, only_b):
            o, n = pa[pold], pb[pnew]
            out.append(Change("renamed", volume, pnew, old_path=pold, size=n.size,
                              old_size=o.size, kind=n.kind, old=o, new=n))
            out += content(o, n)
        for p in only_a[len(only_b):]:
            r = pa[p]
            out.append(Change("removed", volume, p, old_size=r.size, kind=r.kind, old=r))
        for p in only_b[len(only_a):]:
            r = pb[p]
            out.append(Change("added", volume, p, size=r.size, kind=r.kind, new=r))
    # a file replaced by another under the same name (saved through a temporary file)
    gone = {c.path: c for c in out if c.change == "removed" and c.kind == "file"}
    came = {c.path: c for c in out if c.change == "added" and c.kind == "file"}
    both = gone.keys() & came.keys()
    if both:
        out = [c for c in out if c.change not in ("removed", "added") or c.path not in both
               or c.kind != "file"]
        for p in sorted(both):
            out += content(gone[p].old, came[p].new)
    # a directory's move carries everything below it: those are not listed as renamed
    moved = {c.new.identity for c in out if c.change == "renamed" and c.kind == "dir"}
    out = [c for c in out if not (c.change == "renamed" and c.old.name == c.new.name
                                  and c.old.parent == c.new.parent
                                  and _parent_ident(c.new) in moved)]
    if prefix:
        out = [c for c in out if _under(c.path, prefix) or (c.old_path and _under(c.old_path, prefix))]
    order = {"removed": 0, "added": 1, "renamed": 2, "modified": 3, "metadata": 4}
    out.sort(key=lambda c: (c.path, order[c.change]))
    return out


def _parent_ident(r: Row) -> tuple[int, int]:
    return r.parent & ((1 << 48) - 1), (r.parent >> 48) & 0xFFFF


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix.rstrip("/") + "/")


# -- recovery points -------------------------------------------------------------------


def changes(repo, rp_a, rp_b, *, keys=None, exact: bool = True, prefix: str | None = None,
            volume: str | None = None, contents: Contents | None = None,
            notice: Callable[[str], None] | None = None) -> Iterator[Change]:
    """The changes from catalog recovery point ``rp_a`` to ``rp_b`` (same VM), volume by
    volume; from the index where both are indexed, else by walking (``notice`` says so)."""

    if rp_a.vm != rp_b.vm:
        raise UsageError(f"{rp_a.vm}/{rp_a.name} and {rp_b.vm}/{rp_b.name}: not the same VM")
    say = notice or (lambda text: log.warning("%s", text))
    if contents is None:
        contents = Contents(RepoRecoveryPoint(repo, rp_a, keys), RepoRecoveryPoint(repo, rp_b, keys),
                            exact)
    ta, tb = contents.rps
    db = dbm.connect(dbm.index_path(repo))
    try:
        seqs = {}
        vols: dict[str, int] = {}
        if db is not None:
            for cid, seq in db.execute("SELECT catalog_id, seq FROM rps WHERE vm = ?", (rp_a.vm,)):
                seqs[cid] = seq
            vols = dict(db.execute("SELECT name, id FROM volumes WHERE vm = ?", (rp_a.vm,)))
        sa, sb = seqs.get(rp_a.id), seqs.get(rp_b.id)
        walked = [rp.name for rp, s in ((rp_a, sa), (rp_b, sb)) if s is None]
        if walked:
            say(f"{', '.join(walked)}: not indexed: walking its volumes (slow; `rpfs index REPO`"
                " builds the index)")
        present = {}
        if db is not None and sa is not None and sb is not None:
            for vid in vols.values():
                present[vid] = {s for (s,) in db.execute(
                    "SELECT seq FROM volume_rps WHERE volume_id = ? AND seq IN (?, ?)", (vid, sa, sb))}
        names = set(vols) if not walked else set(ta.volumes) | set(tb.volumes)
        for name in sorted(names):
            if volume is not None and name != volume:
                continue
            vid = vols.get(name)
            have = present.get(vid, set())
            if not walked and not have:
                continue            # in neither recovery point
            if vid is not None and sa in have and sb in have:
                old, new = _indexed_delta(db, vid, sa, sb)
            else:
                sides = []
                for t, s in ((ta, sa), (tb, sb)):
                    if vid is not None and s is not None and s in have:
                        sides.append(_indexed_state(db, vid, s))
                        continue
                    vol = t.volumes.get(name)
                    if isinstance(vol, Exception):
                        say(f"{name}: {vol}")
                        sides = None
                        break
                    if vol is None:
                        sides.append([])
                        continue
                    if is_posix_volume(vol):
                        say(f"{name}: a {vol.fs_type} volume: not compared until the index"
                            " holds Linux file systems")
                        sides = None
                        break
                    if not walked:
                        say(f"{name}: not indexed in {t.rp.name}: walking it")
                    sides.append(walk_state(vol))
                if sides is None:
                    continue
                old, new = sides
            yield from compare(name, old, new, contents, prefix)
    finally:
        if db is not None:
            db.close()


def parse_rp_path(tree, path: str) -> tuple[str, str]:
    """``/<vm>/<rp>`` -> (vm, recovery point name); ``latest`` is the newest."""
    vm, name = nspath.recovery_point(path)
    if name == "latest":
        name = tree.repo.recovery_points(vm)[-1].name
    return vm, name


def diff(tree, path_a: str, path_b: str, inner: str | None = None, *, exact: bool = True,
         notice: Callable[[str], None] | None = None) -> Iterator[Change]:
    """``rpfs diff``: the changes from ``/<vm>/<rpA>`` to ``/<vm>/<rpB>``, optionally only
    below ``inner``: a path inside every volume (``/Users/alice``) or inside one
    (``volumes/<volume>/Users/alice``)."""
    repo = tree.repo
    if repo is None:
        raise UsageError("diff compares recovery points of a repository")
    va, na = parse_rp_path(tree, path_a)
    vb, nb = parse_rp_path(tree, path_b)
    if va != vb:
        raise UsageError(f"{path_a} and {path_b}: not the same VM")
    volume = None
    prefix = None
    if inner:
        parts = nspath.parts(inner)
        if parts[:1] == ["volumes"] and len(parts) >= 2:
            volume, parts = parts[1], parts[2:]
        prefix = "/" + "/".join(parts) if parts else None
    rp_a, rp_b = repo.recovery_point(va, na), repo.recovery_point(vb, nb)
    yield from changes(repo, rp_a, rp_b, keys=tree.keys, exact=exact,
                       prefix=prefix, volume=volume, notice=notice)


# -- versions: one meaning everywhere (history, the .versions view, the web page) ---------


def row_of(info, path: str) -> Row:
    """A Row from a FileInfo (scan.py) found at ``path``."""
    name = path.rsplit("/", 1)[-1]
    link = next((lk for lk in info.links if lk[2] == name), info.links[0])
    return Row(info.ref, info.seq, path, link[0] | (link[1] << 48), info.kind, info.size,
               info.allocated, info.created, info.modified, info.changed, info.attributes,
               info.reparse_tag, info.ads, info.fingerprint)


def group_versions(items: list[tuple], volume: str, opener) -> list[list[int]]:
    """Versions of one file: ``items`` are (recovery point key, Row) oldest first;
    ``opener(key)`` gives that recovery point (rpfs.tree) when contents must be compared.
    Returns one list of item indices per distinct content (a new version only where the
    content changed; a content that comes back joins its old version)."""
    groups: list[list[int]] = []
    opened: dict = {}

    def rp(key):
        if key not in opened:
            opened[key] = opener(key)
        return opened[key]

    for i, (key, row) in enumerate(items):
        for g in reversed(groups):
            k0, r0 = items[g[0]]
            same = _maybe_same_data(r0, row)
            if same is None:
                try:
                    same = Contents(rp(k0), rp(key), exact=True).same(volume, r0, row)
                except RpfsError as e:
                    log.info("%s%s: versions not compared: %s", volume, row.path, e)
                    same = False
            if same:
                g.append(i)
                break
        else:
            groups.append([i])
    return groups
