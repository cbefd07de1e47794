"""How the store grows: a synthetic directory repository generated directly (packs, index,
chunk-map and recovery-point objects, the catalog, and metadata index rows, not by backing
up terabytes), then the time and peak memory of the commands a user runs on it.

    nice -n 19 .venv/bin/python tools/bench_scale.py --scale 1 10 [--out DIR] [--json F]
        [--generate-only] [--keep] [--steps list,find,backup,prune,repair]

Scale s: 10*s VMs, 10 recovery points each (100*s), 10,000 chunks per VM (100,000*s
chunks): each VM's disk file has 9,190 chunks of 4 KiB, of which 90 are new in each
recovery point (1% change per night). Chunk payloads are tiny (a counter and zeros, zstd),
so the packs stay small while every row, map entry and index entry is real. Each VM also
has one indexed NTFS volume, as rows written straight into ``index.sqlite`` (a synthetic
disk has no volume for ``rpfs index`` to read): 1,000 documents under ten user folders with
the same names on every VM, one note of its own, and 10 documents rewritten every night.

Measured, each as a separate ``rpfs`` process (wall and CPU seconds and peak RSS from
``/usr/bin/time``, the load average around it): ``list`` (every VM), ``ls /`` and
``ls /<vm>`` (what a mount's start and first listing do), ``find`` of one VM's note and of
a name every VM has, a backup with ``--force-read`` of a 10 GiB sparse disk whose 65,536
data chunks are all in the repository already (the dedup lookups; holes are not read),
``prune --keep-last 9`` (one recovery point of every VM, then gc), ``repair`` of a deleted
catalog from the objects, and ``verify`` after it.
"""

from __future__ import annotations

import argparse
from datetime import datetime, timezone
import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rpfs.index import db as index_db  # noqa: E402
from rpfs.store import Repository, catalog, objects  # noqa: E402
from rpfs.store.packs import PackWriter, compress  # noqa: E402
from streams.times import point_name  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PY = str(ROOT / ".venv" / "bin" / "python")
CS = 4096
BASE, NEW, RPS = 9_100, 90, 10       # per VM: shared chunks, new ones per recovery point, RPs
FILES, CHANGED = 1_000, 10           # per VM: files indexed on its volume, rewritten every night
DISK_BYTES = 10 << 30                # the backup's disk: 10 GiB, its data chunks all stored
NT_EPOCH_2025 = 133_801_632_000_000_000   # 2025-01-01 in NT ticks


def chunk(n: int) -> bytes:
    return n.to_bytes(8, "little") + bytes(CS - 8)


@contextlib.contextmanager
def no_fsync():
    """A generator, not the product: no fsync per pack, object and commit (at 100x that
    is ~50,000 of them); the repository is measured from the page cache either way."""
    real = os.fsync
    os.fsync = lambda fd: None
    try:
        yield
    finally:
        os.fsync = real


def generate(path: Path, scale: int) -> dict:
    t0 = time.monotonic()
    vms = 10 * scale
    with no_fsync(), Repository.init(str(path), chunk_size=CS, pack_size=8 << 20) as repo:
        db = repo.writer
        db.execute("PRAGMA synchronous = OFF")
        db.execute("PRAGMA cache_size = -524288")   # 512 MiB: random inserts into the hash index
        rp_ids = []
        next_id = 1
        for v in range(vms):
            vm = f"vm{v:04d}"
            w = PackWriter(repo.backend)
            hashes = []
            for k in range(BASE + NEW * RPS):
                data = chunk(v * 1_000_000 + k)
                h = repo.crypto.chunk_id(data)
                codec, payload = compress(data, 1)
                w.add(h, codec, payload, CS)
                hashes.append(h)
            size = w.finish()
            objects.put_pack_manifest(repo, [(w.name, size, w.entries)])
            ids = list(range(next_id, next_id + len(hashes)))
            next_id += len(hashes)
            with catalog.transaction(db):
                pid = db.execute("INSERT INTO packs (name, size, chunk_count, created) VALUES (?,?,?,?)",
                                 (w.name, size, len(w.entries), time.time())).lastrowid
                db.executemany("INSERT INTO chunks (id, hash, pack_id, offset, csize, usize, codec)"
                               " VALUES (?,?,?,?,?,?,?)",
                               [(i, e.hash, pid, e.offset, e.csize, e.usize, e.codec)
                                for i, e in zip(ids, w.entries)])
                db.execute("INSERT INTO vms (name) VALUES (?)", (vm,))
                vm_id = db.execute("SELECT id FROM vms WHERE name = ?", (vm,)).fetchone()[0]
                for r in range(RPS):
                    when = 1_764_547_200 + r * 86_400
                    name = point_name(datetime.fromtimestamp(when, timezone.utc))
                    sel = list(range(BASE)) + list(range(BASE + r * NEW, BASE + (r + 1) * NEW))
                    m = objects.put_map(repo, [hashes[i] for i in sel])
                    fsize = len(sel) * CS
                    info = {"vm": vm, "name": name, "time": when, "logical_size": fsize,
                            "stored_size": NEW * 64, "file_count": 1, "new_chunks": NEW,
                            "chunk_size": CS, "created": float(when)}
                    objects.put_recovery_point(repo, info, [
                        {"path": "disk0.vhdx", "size": fsize, "map": m, "mtime_ns": None,
                         "ctime_ns": None, "inode": None, "dev": None}])
                    rp_id = db.execute(
                        "INSERT INTO recovery_points (vm_id, name, time, logical_size, stored_size,"
                        " file_count, new_chunks, chunk_size, created) VALUES (?,?,?,?,?,?,?,?,?)",
                        (vm_id, name, when, fsize, NEW * 64, 1, NEW, CS, float(when))).lastrowid
                    rp_ids.append((vm, r, rp_id, name, when))
                    db.execute("INSERT INTO files (rp_id, path, size, chunk_map, map_object)"
                               " VALUES (?,?,?,?,?)", (rp_id, "disk0.vhdx", fsize,
                                                       catalog.encode_map([ids[i] for i in sel]), m))
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        entries = generate_index(repo, rp_ids)
    return {"vms": vms, "recovery_points": vms * RPS, "chunks": next_id - 1,
            "index_entries": entries, "generate_s": round(time.monotonic() - t0, 1),
            "catalog_mib": round(os.path.getsize(path / "catalog.sqlite") / 2**20, 1),
            "index_mib": round(os.path.getsize(path / "index.sqlite") / 2**20, 1)}


def index_rows(v: int) -> list[tuple[str, str]]:
    """(directory, name) of the files of VM ``v``'s one volume: FILES documents under ten
    user folders (the same names on every VM, as on real fleets) and one note of its own."""
    rows = [(f"/Users/u{k % 10}/Documents", f"doc{k:04d}.docx") for k in range(FILES)]
    return rows + [("/Users/u0", f"vm{v:04d}-notes.txt")]


def generate_index(repo, rp_ids) -> int:
    """Metadata index rows (rpfs/index/db.py) for every recovery point, written directly:
    a synthetic disk has no NTFS volume for ``rpfs index`` to read. Each VM has one volume
    ``disk0-p1`` whose files are present in all its recovery points (one row each, open)
    plus CHANGED documents rewritten in each recovery point (a row per version)."""
    ix = index_db.connect(index_db.index_path(repo), write=True)
    ix.execute("PRAGMA synchronous = OFF")
    dirs, names, count = {}, {}, 0

    def intern(table, cache, text):
        if text not in cache:
            cache[text] = ix.execute(f"INSERT INTO {table} (id, {'path' if table == 'dirs' else 'name'},"
                                     " fold) VALUES (?,?,?)", (len(cache) + 1, text, text.lower())).lastrowid
        return cache[text]
    ix.execute("BEGIN")
    by_vm: dict[str, list] = {}
    for vm, seq, rp_id, name, when in rp_ids:
        by_vm.setdefault(vm, []).append((seq, rp_id, name, when))
    for v, (vm, rps) in enumerate(sorted(by_vm.items())):
        vol = ix.execute("INSERT INTO volumes (vm, name, state_seq) VALUES (?,?,?)",
                         (vm, "disk0-p1", len(rps) - 1)).lastrowid
        files = index_rows(v)
        for seq, rp_id, name, when in rps:
            ix_rp = ix.execute("INSERT INTO rps (vm, name, time, catalog_id, seq) VALUES (?,?,?,?,?)",
                               (vm, name, when, rp_id, seq)).lastrowid
            ix.execute("INSERT INTO volume_rps (volume_id, seq, rp_id, entries) VALUES (?,?,?,?)",
                       (vol, seq, ix_rp, len(files)))
        rows = []
        for ref, (d, n) in enumerate(files, start=64):
            t = NT_EPOCH_2025 + ref
            spans = [(0, index_db.OPEN)]
            if ref - 64 < CHANGED:    # rewritten every night: one row per recovery point
                spans = [(q, q if q < len(rps) - 1 else index_db.OPEN) for q in range(len(rps))]
            for first, last in spans:
                rows.append((vol, first, last, intern("dirs", dirs, d), intern("names", names, n),
                             ref, 1, 5, "file", 4096 * (ref + first), 4096 * (ref + first + 1),
                             t, t + first, t + first, t + first, 0x20, 0, None, bytes(16)))
        ix.executemany("INSERT INTO entries (volume_id, first, last, dir_id, name_id, ref, rseq,"
                       " parent, kind, size, allocated, created, modified, changed, accessed,"
                       " attributes, reparse_tag, ads, fingerprint) VALUES"
                       " (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
        count += len(rows)
    ix.execute("INSERT INTO names_fts (names_fts) VALUES ('rebuild')")
    ix.execute("COMMIT")
    ix.close()
    return count


def sparse_disk(path: Path) -> int:
    """A 10 GiB disk file whose every chunk is already in the repository (any scale): runs of
    16 chunks of the first eight VMs' disks (chunk() of theirs: 65,536 distinct chunks,
    256 MiB), one run every 2.5 MiB, holes between them (which a backup does not read).
    Returns its data chunks."""
    runs, n = DISK_BYTES // (2560 << 10), 0
    with open(path, "wb") as f:
        f.truncate(DISK_BYTES)
        for r in range(runs):
            f.seek(r * (2560 << 10))
            f.write(b"".join(chunk((n + i) // 8192 * 1_000_000 + (n + i) % 8192) for i in range(16)))
            n += 16
    return n


def measure(*args) -> dict:
    """One ``rpfs`` process: wall and CPU (user + system) seconds, peak RSS, the load
    average before and after. On a shared machine the CPU seconds are the steadier figure."""
    load = os.getloadavg()[0]
    r = subprocess.run(["/usr/bin/time", "-f", "TIME %e %M %U %S", PY, "-m", "rpfs", *map(str, args)],
                       capture_output=True, text=True, cwd=ROOT)
    line = [x for x in r.stderr.splitlines() if x.startswith("TIME ")][-1].split()
    if r.returncode not in (0, 1):
        raise RuntimeError(f"rpfs {' '.join(map(str, args))}: {r.stderr[-2000:]}")
    out = {"s": float(line[1]), "cpu_s": round(float(line[3]) + float(line[4]), 1),
           "rss_mib": round(int(line[2]) / 1024),
           "load": [round(load, 1), round(os.getloadavg()[0], 1)], "out": r.stdout}
    print(f"  rpfs {' '.join(map(str, args[:1]))}: {out['s']} s ({out['cpu_s']} s CPU), {out['rss_mib']} MiB,"
          f" load {out['load']}", flush=True)
    return out


STEPS = ("list", "find", "backup", "prune", "repair")


def run(scale: int, base: Path, keep: bool = False, steps=STEPS) -> dict:
    path = base / f"scale-{scale}"
    if (path / "done-generating").exists():
        out = json.loads((path / "done-generating").read_text())
    else:
        shutil.rmtree(path, ignore_errors=True)
        out = {"scale": scale, **generate(path, scale)}
        (path / "done-generating").write_text(json.dumps(out))
    out["commit"] = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT,
                                   capture_output=True, text=True).stdout.strip()
    print(f"scale {scale}: generated {out}", flush=True)
    disk_dir = base / "src" / "vm-disk"
    if not (disk_dir / "disk0.vhdx").exists():
        disk_dir.mkdir(parents=True, exist_ok=True)
        sparse_disk(disk_dir / "disk0.vhdx")
    for k, args in (("list", ("list", path)), ("ls_root", ("ls", path, "/")),
                    ("ls_vm", ("ls", path, "/vm0000"))):
        if "list" in steps:
            out[k] = measure(*args)
            out[k].pop("out")
    # find over the generated index rows: one VM's own note (10 hits at every scale), then
    # a name every VM has (10 hits per VM: the output grows with the fleet)
    for k, pattern in (("find_one_vm", "vm0007-notes.txt"), ("find_every_vm", "doc0042.docx")):
        if "find" in steps:
            out[k] = measure("find", path, pattern)
            out[k]["hits"] = len(out[k].pop("out").splitlines())
    if "backup" in steps:
        backup(out, path, disk_dir)
    if "prune" in steps:
        prune(out, path)
    if "repair" in steps:
        repair(out, path)
    print(f"scale {scale}: {json.dumps(out)}", flush=True)
    if not keep:
        shutil.rmtree(path, ignore_errors=True)
    return out


def backup(out: dict, path: Path, disk_dir: Path) -> None:
    out["backup_10gib"] = measure("backup", path, disk_dir, "--time", "2026-12-31T00:00:00Z",
                                  "--no-index", "--force-read", "--json")
    b = json.loads(out["backup_10gib"].pop("out"))
    out["backup_10gib"].update({k: b.get(k) for k in ("chunks", "new_chunks", "zero_chunks",
                                                      "bytes_read", "logical_size") if k in b})


def prune(out: dict, path: Path) -> None:
    out["prune_gc"] = measure("prune", path, "--keep-last", "9", "--json")
    gc = json.loads(out["prune_gc"].pop("out"))
    out["prune_gc"].update(removed=gc["removed"], chunks_deleted=gc["gc"]["chunks_deleted"],
                           chunks_live=gc["gc"]["chunks_live"])


def repair(out: dict, path: Path) -> None:
    """The catalog deleted, rebuilt from the objects, then verified."""
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path / f"catalog.sqlite{suffix}")
    out["repair"] = measure("repair", path, "--json")
    rep = json.loads(out["repair"].pop("out"))
    out["repair"].update(imported=rep["imported"], lost=len(rep["lost"]))
    out["verify"] = measure("verify", path, "--json")
    out["verify"]["ok"] = json.loads(out["verify"].pop("out"))["ok"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", type=int, nargs="+", default=[1, 10])
    ap.add_argument("--out", help="where to build the repositories (default: a temp dir)")
    ap.add_argument("--json", help="write the results here (merged by scale into what is there)")
    ap.add_argument("--generate-only", action="store_true",
                    help="generate the repositories and stop (a later run measures them)")
    ap.add_argument("--keep", action="store_true", help="leave the repositories (default: deleted)")
    ap.add_argument("--steps", default=",".join(STEPS),
                    help=f"which to measure, in this order: {','.join(STEPS)} (default: all)")
    args = ap.parse_args()
    base = Path(args.out or tempfile.mkdtemp(prefix="rpfs-scale-"))
    for s in args.scale:
        if args.generate_only:
            path = base / f"scale-{s}"
            shutil.rmtree(path, ignore_errors=True)
            info = {"scale": s, **generate(path, s)}
            (path / "done-generating").write_text(json.dumps(info))
            print(f"scale {s}: generated {info}", flush=True)
            continue
        res = run(s, base, args.keep, args.steps.split(","))
        if args.json:
            old = json.loads(Path(args.json).read_text()) if Path(args.json).exists() else []
            res = {**next((r for r in old if r.get("scale") == s), {}), **res}
            merged = [r for r in old if r.get("scale") != s] + [res]
            Path(args.json).write_text(json.dumps(sorted(merged, key=lambda r: r["scale"]),
                                                  indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
