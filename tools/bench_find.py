"""Benchmark of the metadata index (not a timed test): ``rpfs find``/``history`` from the
index against the walking find and sleuthkit's ``fls -r``, the index's size per recovery
point, and what indexing adds to ``rpfs backup``.

    python -m tools.bench_find [--sample-rps 100] [--synthetic-files 1000000]
                               [--synthetic-rps 30] [--workdir DIR] [--skip-sample]
                               [--skip-synthetic]

Two parts:

* sample: the fixture VM backed up ``--sample-rps`` times (states 1 and 2 alternating, so
  every recovery point differs from the one before), each ``rpfs backup`` indexing its
  recovery point; then ``rpfs find`` over all of them, the walking find over one recovery
  point (the figure per recovery point, times the count, is what the walk would cost), and
  ``fls -r`` over the same NTFS volume as a raw image. The cost of indexing is backup with
  and without ``--no-index`` of both states.
* synthetic: a catalog of ``--synthetic-rps`` recovery points of one VM whose index holds a
  volume of ``--synthetic-files`` files (100 x 100 directories), 1% of them changed (new
  size, time and data) in each recovery point after the first, written through the same
  VolumeWriter as a real volume; then ``find`` and ``history`` and the size per recovery
  point.

Times are wall-clock medians of a few runs; run it on a quiet machine, or compare the
ratios it prints (each pair runs side by side).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RPFS = [sys.executable, "-m", "rpfs"]


def timed(fn, runs: int = 3) -> tuple[float, object]:
    times, out = [], None
    for _ in range(runs):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def run(*args) -> subprocess.CompletedProcess:
    return subprocess.run(RPFS + [str(a) for a in args], capture_output=True, text=True,
                          check=True, cwd=ROOT)


def rp_time(i: int) -> str:
    day = 1 + i
    return f"2024-{1 + (day - 1) // 28:02d}-{1 + (day - 1) % 28:02d}T02:00:00Z"


# -- the sample VM -----------------------------------------------------------------------


def bench_sample(work: Path, n_rps: int) -> dict:
    from rpfs.index import find_entries
    from rpfs.source import open_source
    from tools.fixtures import build

    fx = build("small")
    s1, s2 = fx.vm_states
    out: dict = {}

    # what indexing adds to a backup (both states, each pair side by side)
    overhead = []
    for state in (s1, s2):
        pair = {}
        for flag in ("--no-index", "--index=now"):
            times = []
            for k in range(3):
                repo = work / f"ovh-{len(overhead)}-{flag}-{k}"
                run("init", repo)
                if state is s2:
                    run("backup", repo, s1, "--time", rp_time(0), "--no-index")
                    if flag == "--index=now":
                        run("index", repo)
                t = time.perf_counter()
                run("backup", repo, state, "--time", rp_time(1), flag)
                times.append(time.perf_counter() - t)
                shutil.rmtree(repo)
            pair["without" if flag == "--no-index" else "with"] = statistics.median(times)
        pair["overhead"] = pair["with"] / pair["without"] - 1
        overhead.append(pair)
    out["backup_index_overhead"] = {"state1 (first, full index)": overhead[0],
                                    "state2 (next, incremental)": overhead[1]}

    repo = work / "sample"
    run("init", repo)
    t = time.perf_counter()
    for i in range(n_rps):
        run("backup", repo, (s1, s2)[i % 2], "--time", rp_time(i), "--index=now")
    out["backups_seconds"] = time.perf_counter() - t
    idx = repo / "index.sqlite"
    out["index_bytes"] = idx.stat().st_size
    out["catalog_bytes"] = (repo / "catalog.sqlite").stat().st_size

    def cli_find(pattern):
        return run("find", repo, pattern).stdout.count("\n")

    for pattern in ("notes.txt", "*.docx", "update-1?.tmp", "**/Users/*/Documents/*"):
        secs, hits = timed(lambda: cli_find(pattern))
        out.setdefault("find_cli", {})[pattern] = {"seconds": secs, "lines": hits}
    with open_source(repo) as tree:
        secs, hits = timed(lambda: sum(1 for _ in find_entries(tree, "*.docx")))
        out["find_api_docx"] = {"seconds": secs, "hits": hits}
        vm = fx.vm_changes["vm"]
        from rpfs.index import file_history
        p = f"/{vm}/latest/volumes/system-p3/Users/alice/Documents/notes.txt"
        secs, h = timed(lambda: file_history(tree, p))
        out["history_api"] = {"seconds": secs, "versions": len(h["versions"])}
    secs, _ = timed(lambda: run("history", repo, p), runs=3)
    out["history_cli_seconds"] = secs

    # the walking find, one recovery point of the same repository without an index
    bare = work / "bare"
    run("init", bare)
    run("backup", bare, s1, "--time", rp_time(0), "--no-index")
    with open_source(bare) as tree:
        secs, hits = timed(lambda: sum(1 for _ in find_entries(tree, "*.docx", notice=lambda t: None)),
                           runs=1)
    out["walk_find_one_rp"] = {"seconds": secs, "hits": hits,
                               "estimated_for_all_rps": secs * n_rps}
    img = fx.volumes["system-p3"].image
    if shutil.which("fls"):
        secs, lines = timed(lambda: subprocess.run(["fls", "-r", "-p", str(img)],
                                                   capture_output=True, check=True).stdout.count(b"\n"),
                            runs=3)
        out["fls_r_one_volume"] = {"seconds": secs, "lines": lines}
    return out


# -- the synthetic catalog ---------------------------------------------------------------

WORDS = ["report", "invoice", "photo", "notes", "setup", "budget", "letter", "draft",
         "scan", "backup", "log", "data"]
EXTS = ["docx", "xlsx", "pdf", "txt", "jpg", "dll", "log", "bin"]
FIRST_FILE = 20_000


class SyntheticVolume:
    """The MftScan interface over generated records: 100 top directories of 100
    directories of ``files // 10_000`` files each (record numbers from FIRST_FILE)."""

    record_size = 1024

    def __init__(self, files: int, state: dict, changed: set | None, hashes: dict):
        self.files, self.state, self.hashes = files, state, hashes
        self.changed = changed if changed is not None else (
            set(self._dir_refs()) | set(range(FIRST_FILE, FIRST_FILE + files)))
        self.full = changed is None
        self.dirs = {n: self.info(n) for n in self._dir_refs()} if self.full else {}

    @staticmethod
    def _dir_refs():
        return range(16, 16 + 100 + 10_000)

    def info(self, n: int):
        from rpfs.index.scan import FileInfo

        if n < 16 + 100:
            return FileInfo(n, 1, "dir", ((5, 5, f"area-{n - 16:02d}"),), 0, 0, 0, 0, 0, 0,
                            0x10, 0, None, bytes(16))
        if n < 16 + 100 + 10_000:
            k = n - 116
            return FileInfo(n, 1, "dir", ((16 + k // 100, 1, f"folder-{k:04d}"),), 0, 0, 0,
                            0, 0, 0, 0x10, 0, None, bytes(16))
        i = n - FIRST_FILE
        per = max(1, self.files // 10_000)
        version = self.state.get(n, 0)
        name = f"{WORDS[i % len(WORDS)]}-{i:07d}.{EXTS[(i // 7) % len(EXTS)]}"
        size = 1000 + (i * 37) % 100_000 + version
        t = 133_000_000_000_000_000 + i * 10_000_000 + version * 864_000_000_000
        fp = hashlib.blake2b(f"{i}:{version}".encode(), digest_size=16).digest()
        return FileInfo(n, 1, "file", ((116 + i // per, 1, name),), size, size, t, t, t, t,
                        0x20, 0, None, fp)

    def records(self):
        for n in sorted(self.changed):
            yield n, self.info(n)


def bench_synthetic(work: Path, files: int, n_rps: int) -> dict:
    from rpfs.index import db as dbm
    from rpfs.index import file_history, find_entries
    from rpfs.index.build import Ids, VolumeWriter
    from rpfs.backup import backup
    from rpfs.store import Repository
    from rpfs.source import open_source

    repo_path = work / "synthetic"
    src = work / "synthetic-src"
    src.mkdir()
    (src / "vm.vmcx").write_bytes(b"synthetic")
    vm = "synth"
    with Repository.init(repo_path) as repo:
        for i in range(n_rps):
            backup(repo, [str(src)], vm=vm, time=rp_time(i), show_progress=False)
        rps = repo.recovery_points(vm)
    db = dbm.connect(str(repo_path / dbm.INDEX_NAME), write=True)
    vid = db.execute("INSERT INTO volumes (vm, name) VALUES (?, 'synth-p1')", (vm,)).lastrowid
    rnd = random.Random(1)
    state: dict[int, int] = {}
    hashes: dict[int, bytes] = {}
    sizes, build_secs = [], []
    per_block = 16
    for seq, rp in enumerate(rps, 1):
        t = time.perf_counter()
        db.execute("BEGIN")
        if seq == 1:
            changed = None
            for b in range((FIRST_FILE + files) // per_block + 1):
                hashes[b] = bytes(16)
        else:
            changed = set(rnd.sample(range(FIRST_FILE, FIRST_FILE + files), files // 100))
            for n in changed:
                state[n] = state.get(n, 0) + 1
                hashes[n // per_block] = hashlib.blake2b(f"{seq}:{n}".encode(), digest_size=16).digest()
        w = VolumeWriter(db, Ids(db), vid, seq)
        old = w.old_hashes()
        w.apply(SyntheticVolume(files, state, changed, {b: (h, None) for b, h in hashes.items()}), old)
        db.execute("INSERT INTO volume_rps (volume_id, seq, rp_id, entries) VALUES (?, ?, ?, ?)",
                   (vid, seq, seq, w.count))
        db.execute("INSERT INTO rps (id, vm, name, time, catalog_id, seq) VALUES (?,?,?,?,?,?)",
                   (seq, vm, rp.name, int(rp.time.timestamp()), rp.id, seq))
        db.execute("COMMIT")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        build_secs.append(time.perf_counter() - t)
        sizes.append(os.path.getsize(repo_path / dbm.INDEX_NAME))
        print(f"  synthetic rp {seq}/{n_rps}: {build_secs[-1]:.1f}s, index {sizes[-1] / 1e6:.1f} MB",
              file=sys.stderr)
    db.close()
    growth = [b - a for a, b in zip(sizes, sizes[1:])]
    out = {"files": files, "recovery_points": n_rps, "index_bytes": sizes[-1],
           "first_rp_bytes": sizes[0], "median_next_rp_bytes": statistics.median(growth),
           "next_rp_vs_first": statistics.median(growth) / sizes[0],
           "build_first_seconds": build_secs[0],
           "build_next_median_seconds": statistics.median(build_secs[1:])}
    often = max(state, key=state.get)
    with open_source(repo_path) as tree:
        for pattern in ("invoice-000012*", "*-0123456.*", "report-00001??.docx",
                        "**/folder-0042/*.pdf"):
            secs, hits = timed(lambda: sum(1 for _ in find_entries(tree, pattern)))
            out.setdefault("find", {})[pattern] = {"seconds": secs, "hits": hits}
        info = SyntheticVolume(files, state, set(), {}).info(often)
        area = (info.links[0][0] - 116) // 100
        path = (f"/{vm}/latest/volumes/synth-p1/area-{area:02d}/"
                f"folder-{info.links[0][0] - 116:04d}/{info.links[0][2]}")
        secs, h = timed(lambda: file_history(tree, path))
        out["history"] = {"path": path, "seconds": secs, "versions": len(h["versions"]),
                          "expected_versions": state[often] + 1}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sample-rps", type=int, default=100)
    p.add_argument("--synthetic-files", type=int, default=1_000_000)
    p.add_argument("--synthetic-rps", type=int, default=30)
    p.add_argument("--workdir")
    p.add_argument("--skip-sample", action="store_true")
    p.add_argument("--skip-synthetic", action="store_true")
    args = p.parse_args(argv)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="rpfs-bench-find-"))
    work.mkdir(parents=True, exist_ok=True)
    result = {"load_average_at_start": os.getloadavg(), "cpus": os.cpu_count()}
    try:
        if not args.skip_sample:
            result["sample"] = bench_sample(work, args.sample_rps)
            print(json.dumps(result["sample"], indent=1), file=sys.stderr)
        if not args.skip_synthetic:
            result["synthetic"] = bench_synthetic(work, args.synthetic_files, args.synthetic_rps)
        result["max_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        result["load_average_at_end"] = os.getloadavg()
        print(json.dumps(result, indent=1))
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
