"""Change analysis: does a recovery point look like ransomware struck since the one before?

The changes come from the index (rpfs/index/diff.py, with sampled content comparison);
then a few 4 KiB blocks of each changed file are read (rpfs/sniff.py): the first block of
its old and new contents, and blocks in the middle and at the end. No file is read whole.

What ransomware leaves, and no ordinary change does, is *a document that had a structure
(a format's magic bytes, or text) replaced by bytes with no structure and high entropy*.
Compressing, archiving, photos, installers and Office all write formats with magic bytes;
encryption tools that users run on purpose write new files with headers of their own. So
every rule below looks at that, and counts files, never names:

1. ``encrypted``: files whose content changed (same identity) from a recognisable format
   to no structure; ``partial``: of those, files over 64 KiB whose sampled blocks after
   the first are unchanged (intermittent encryption: only the head is encrypted);
2. ``renamed_encrypted``: files renamed to one new extension whose content now has no
   structure, counted per new extension (the largest count);
3. ``replaced``: documents removed with as many new files of no structure added in the
   same directories (per directory the smaller of the two): encryption to new files,
   originals deleted;
4. ``notes``: one new file name (small, text) added to many directories that existed
   before, where no file of that name was removed or renamed away: a ransom note dropped
   in every folder (an installer creates its own folders; log rotation re-creates a name
   it has just renamed).

A rule fires at ``MIN_FILES`` files (5). The scenarios in docs/changes.md (built by
tools/fixtures/scenarios.py) show the benign heavy changes at 0 on every rule and the
attacks far above it; the slow attack (2% of 460 documents a day) already reaches 9 on
its first day. The verdict is ``suspicious`` when any rule fires.

Results are repository objects (``scans/<name>``, objects.py), so they survive a catalog
rebuild and are shared by every machine reading the repository.
"""

from __future__ import annotations

import posixpath
import time
from collections import Counter, defaultdict
from typing import Callable

from rpfs import sniff
from streams.errors import RpfsError
from rpfs.log import get_logger

log = get_logger(__name__)

MIN_FILES = 5                 # a rule fires at this many files
PARTIAL_HEAD = 64 << 10       # intermittent encryption: files larger than this, head only
NOTE_MAX = 64 << 10           # a ransom note is a small file
MAX_SAMPLED = 50_000          # changed files sampled at most (the counts say when cut)
EXAMPLES = 10
RULES_VERSION = 1


def _ext(path: str) -> str:
    name = path.rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[1].lower() if "." in name[1:] else ""


class _Sampler:
    """Reads the sampled blocks of changed files through diff.Contents' streams."""

    def __init__(self, contents):
        self.contents = contents
        self.files = 0

    def blocks(self, side: int, volume: str, row) -> dict[int, bytes] | None:
        from rpfs.index.diff import SAMPLE, sample_offsets
        try:
            s = self.contents.stream(side, volume, row)
            self.files += 1
            return {o: s.read(o, min(SAMPLE, s.size - o)) for o in sample_offsets(s.size)}
        except RpfsError as e:
            log.info("%s%s: not sampled: %s", volume, row.path, e)
            return None


def analyse(changes, contents) -> dict:
    """The rules over ``changes`` (diff.Change, with ``contents`` to read samples)."""
    counts: Counter = Counter({k: 0 for k in ("added", "removed", "modified", "renamed", "metadata")})
    sampler = _Sampler(contents)
    encrypted, partial, examples = [], [], []
    renamed_to: dict[str, list[str]] = defaultdict(list)
    removed_docs: dict[tuple, int] = Counter()
    new_random: dict[tuple, int] = Counter()
    note_dirs: dict[str, set] = defaultdict(set)     # folded name -> directories
    note_names: dict[str, str] = {}
    new_dirs: set = set()
    cut = False

    def budget() -> bool:
        nonlocal cut
        if sampler.files >= MAX_SAMPLED:
            cut = True
        return not cut

    changes = list(changes)
    vacated = set()          # names a directory held before: removed or renamed away
    for c in changes:
        counts[c.change] += 1
        if c.change == "added" and c.kind == "dir":
            new_dirs.add((c.volume, c.path))
        elif c.change in ("removed", "renamed"):
            vacated.add((c.volume, c.old_path or c.path))
    for c in changes:
        if c.kind != "file":
            continue
        where = (c.volume, posixpath.dirname(c.path))
        if c.change == "modified" and c.old.size and c.new.size and budget():
            old, new = sampler.blocks(0, c.volume, c.old), sampler.blocks(1, c.volume, c.new)
            if old is None or new is None:
                continue
            if sniff.structured(sniff.kind(old[0])) and sniff.kind(new[0]) == "random":
                encrypted.append(c)
                rest = [o for o in new if o >= PARTIAL_HEAD]
                if c.new.size > PARTIAL_HEAD and rest and all(old.get(o) == new[o] for o in rest):
                    partial.append(c)
        elif c.change == "renamed" and _ext(c.path) != _ext(c.old_path) and budget():
            new = sampler.blocks(1, c.volume, c.new)
            if new is not None and sniff.kind(new[0]) == "random":
                renamed_to[_ext(c.path)].append(c.path)
        elif c.change == "removed" and c.old.size and budget():
            old = sampler.blocks(0, c.volume, c.old)
            if old is not None and sniff.structured(sniff.kind(old[0])):
                removed_docs[where] += 1
        elif c.change == "added" and c.new.size and budget():
            new = sampler.blocks(1, c.volume, c.new)
            if new is None:
                continue
            k = sniff.kind(new[0])
            if k == "random":
                new_random[where] += 1
            elif (k in ("text", "rtf") and c.new.size <= NOTE_MAX and where not in new_dirs
                  and (c.volume, c.path) not in vacated):
                name = c.path.rsplit("/", 1)[-1]
                note_names.setdefault(name.lower(), name)
                note_dirs[name.lower()].add(where)
    reasons = []
    if len(encrypted) >= MIN_FILES:
        reasons.append(f"{len(encrypted)} files changed from a recognisable format to bytes with"
                       " no structure (high entropy)")
        examples += [f"{c.volume}{c.path}" for c in encrypted[:EXAMPLES]]
    if len(partial) >= MIN_FILES:
        reasons.append(f"{len(partial)} files over {PARTIAL_HEAD >> 10} KiB overwritten only in"
                       " their first blocks (intermittent encryption)")
    ext, renamed = max(renamed_to.items(), key=lambda kv: len(kv[1]), default=("", []))
    if len(renamed) >= MIN_FILES:
        reasons.append(f"{len(renamed)} files renamed to the new extension .{ext} with contents of"
                       " no structure")
        examples += [f"{p}" for p in renamed[:EXAMPLES]]
    removed = sum(removed_docs.values())
    replaced = sum(min(n, new_random[w]) for w, n in removed_docs.items())
    if replaced >= MIN_FILES:
        reasons.append(f"{removed} documents removed and {replaced} new files with no structure"
                       " added beside them")
    note, dirs = max(note_dirs.items(), key=lambda kv: len(kv[1]), default=("", set()))
    if len(dirs) >= MIN_FILES:
        note = note_names[note]
        reasons.append(f"a new file {note!r} in {len(dirs)} existing directories (a ransom note?)")
        examples += [f"{v}{d}/{note}" for v, d in sorted(dirs)[:3]]
    counts.update(encrypted=len(encrypted), partial=len(partial),
                  renamed_encrypted=len(renamed), removed_documents=removed, replaced=replaced,
                  new_random=sum(new_random.values()), notes=len(dirs),
                  sampled=sampler.files, bytes_compared=contents.bytes_read)
    if cut:
        counts["sampling_stopped_at"] = MAX_SAMPLED
    return {"verdict": "suspicious" if reasons else "clean", "reasons": reasons,
            "counts": dict(counts), "examples": list(dict.fromkeys(examples))[:EXAMPLES]}


def scan(repo, vm: str, name: str, *, keys=None,
         notice: Callable[[str], None] | None = None) -> dict:
    """The analysis of recovery point ``name`` of ``vm`` against the one before it."""
    from rpfs.index.diff import changes

    t0 = time.monotonic()
    rps = repo.recovery_points(vm)
    i = next((k for k, rp in enumerate(rps) if rp.name == name), None)
    if i is None:
        repo.recovery_point(vm, name)     # raises NotFoundError
    rp = rps[i]
    out = {"vm": vm, "recovery_point": name, "previous": None, "rules": RULES_VERSION}
    if i == 0:
        out.update(verdict="clean", reasons=[], counts={}, examples=[])
    else:
        prev = rps[i - 1]
        out["previous"] = prev.name
        from rpfs.index.diff import Contents
        from rpfs.tree import RepoRecoveryPoint
        contents = Contents(RepoRecoveryPoint(repo, prev, keys), RepoRecoveryPoint(repo, rp, keys),
                            exact=False)
        out.update(analyse(changes(repo, prev, rp, contents=contents, notice=notice), contents))
    out["seconds"] = round(time.monotonic() - t0, 3)
    return out


def scan_and_store(repo, vm: str, name: str, *, keys=None, notice=None) -> dict:
    """``scan``, kept as the recovery point's ``scans/`` object (replacing an older one)."""
    from rpfs.store import objects

    result = scan(repo, vm, name, keys=keys, notice=notice)
    objects.put_scan(repo, vm, name, result)
    return result


def after_backup(repo, vm: str, name: str, *, keys=None, notice=None) -> dict:
    """What a backup reports: the verdict, reasons, counts, examples and seconds of the new
    recovery point's analysis (stored), or ``verdict: None`` and the error that stopped
    it (the recovery point is stored all the same; ``rpfs scan`` can do it later)."""
    try:
        r = scan_and_store(repo, vm, name, keys=keys, notice=notice)
    except RpfsError as e:
        return {"verdict": None, "error": f"{e}; `rpfs scan` will retry"}
    except Exception as e:   # a bug in the analysis must not turn a stored backup into a failure
        log.exception("change analysis of %s/%s", vm, name)
        return {"verdict": None, "error": f"internal error: {type(e).__name__}: {e};"
                                          " `rpfs scan` will retry"}
    return {k: r[k] for k in ("verdict", "reasons", "counts", "examples", "seconds")}


def stored(repo, vm: str, name: str) -> dict | None:
    """The stored analysis of a recovery point, or None (never scanned, or unreadable)."""
    from rpfs.store import objects
    try:
        return objects.get_scan(repo, vm, name)
    except RpfsError as e:
        log.warning("%s/%s: analysis unreadable: %s", vm, name, e)
        return None


def last_clean(repo, vm: str, *, keys=None, notice=None) -> dict:
    """The newest recovery point before the first suspicious one (scanning, and storing,
    those never scanned). ``recovery_point`` is None when the first is suspicious."""
    rps = repo.recovery_points(vm)
    prev = None
    for rp in rps:
        r = stored(repo, vm, rp.name)
        if r is None:
            r = scan_and_store(repo, vm, rp.name, keys=keys, notice=notice)
        if r["verdict"] == "suspicious":
            return {"vm": vm, "recovery_point": prev, "first_suspicious": rp.name,
                    "reasons": r["reasons"], "examples": r["examples"]}
        prev = rp.name
    return {"vm": vm, "recovery_point": prev, "first_suspicious": None, "reasons": [],
            "examples": []}
