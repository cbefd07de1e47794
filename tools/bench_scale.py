"""How the store grows: a synthetic directory repository generated directly (packs, index,
chunk-map and recovery-point objects and the catalog, through the store's own writers, not
by backing up terabytes), then the time and peak memory of the commands a user runs on it.

    nice -n 19 .venv/bin/python tools/bench_scale.py --scale 1 10 [--out DIR] [--json F]

Scale s: 10*s VMs, 10 recovery points each (100*s), 10,000 chunks per VM (100,000*s
chunks): each VM's disk file has 9,190 chunks of 4 KiB, of which 90 are new in each
recovery point (1% change per night). Chunk payloads are tiny (a counter and zeros, zstd),
so the packs stay small while every row, map entry and index entry is real.

Measured, each as a separate ``rpfs`` process (wall seconds, peak RSS from
``/usr/bin/time``): ``list`` (every VM), ``ls /`` and ``ls /<vm>`` (what a mount's start and
first listing do), a backup of an unchanged 64 MiB disk with ``--force-read`` (every chunk
hashed and looked up in the catalog), ``prune --keep-last 9`` (one recovery point of every
VM, then gc), ``repair`` of a deleted catalog from the objects, and ``verify`` after them.
"""

from __future__ import annotations

import argparse
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

from rpfs.store import Repository, catalog, objects  # noqa: E402
from rpfs.store.packs import PackWriter, compress  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PY = str(ROOT / ".venv" / "bin" / "python")
CS = 4096
BASE, NEW, RPS = 9_100, 90, 10       # per VM: shared chunks, new ones per recovery point, RPs


def chunk(n: int) -> bytes:
    return n.to_bytes(8, "little") + bytes(CS - 8)


def generate(path: Path, scale: int) -> dict:
    t0 = time.monotonic()
    vms = 10 * scale
    with Repository.init(str(path), chunk_size=CS, pack_size=8 << 20) as repo:
        db = repo.writer
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
            objects.put_index(repo, [(w.name, size, w.entries)])
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
                    name = time.strftime("%Y-%m-%dT%H%M%SZ", time.gmtime(when))
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
                    db.execute("INSERT INTO files (rp_id, path, size, chunk_map, map_object)"
                               " VALUES (?,?,?,?,?)", (rp_id, "disk0.vhdx", fsize,
                                                       catalog.encode_map([ids[i] for i in sel]), m))
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return {"vms": vms, "recovery_points": vms * RPS, "chunks": next_id - 1,
            "generate_s": round(time.monotonic() - t0, 1),
            "catalog_mib": round(os.path.getsize(path / "catalog.sqlite") / 2**20, 1)}


def measure(*args) -> dict:
    r = subprocess.run(["/usr/bin/time", "-f", "TIME %e %M", PY, "-m", "rpfs", *map(str, args)],
                       capture_output=True, text=True, cwd=ROOT)
    line = [x for x in r.stderr.splitlines() if x.startswith("TIME ")][-1].split()
    if r.returncode not in (0, 1):
        raise RuntimeError(f"rpfs {' '.join(map(str, args))}: {r.stderr[-2000:]}")
    return {"s": float(line[1]), "rss_mib": round(int(line[2]) / 1024), "out": r.stdout}


def run(scale: int, base: Path) -> dict:
    path = base / f"scale-{scale}"
    shutil.rmtree(path, ignore_errors=True)
    out = {"scale": scale, **generate(path, scale)}
    print(f"scale {scale}: generated {out}", flush=True)
    src = base / "src" / "vm-new"
    if not src.exists():
        src.mkdir(parents=True)
        (src / "disk0.vhdx").write_bytes(random.Random(1).randbytes(64 << 20))
    out["list"] = measure("list", path)
    out["ls_root"] = measure("ls", path, "/")
    out["ls_vm"] = measure("ls", path, "/vm0000")
    for k in ("list", "ls_root", "ls_vm"):
        out[k].pop("out")
    measure("backup", path, src, "--time", "2026-12-30T00:00:00Z", "--no-index")
    out["backup_unchanged_64mib"] = measure("backup", path, src, "--time", "2026-12-31T00:00:00Z",
                                            "--no-index", "--force-read")
    out["backup_unchanged_64mib"].pop("out")
    out["prune_gc"] = measure("prune", path, "--keep-last", "9", "--json")
    gc = json.loads(out["prune_gc"].pop("out"))
    out["prune_gc"].update(removed=gc["removed"], chunks_deleted=gc["gc"]["chunks_deleted"],
                           chunks_live=gc["gc"]["chunks_live"])
    os.unlink(path / "catalog.sqlite")
    out["repair"] = measure("repair", path, "--json")
    rep = json.loads(out["repair"].pop("out"))
    out["repair"].update(imported=rep["imported"], lost=len(rep["lost"]))
    out["verify"] = measure("verify", path, "--json")
    out["verify"]["ok"] = json.loads(out["verify"].pop("out"))["ok"]
    print(f"scale {scale}: {json.dumps(out)}", flush=True)
    shutil.rmtree(path, ignore_errors=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", type=int, nargs="+", default=[1, 10])
    ap.add_argument("--out", help="where to build the repositories (default: a temp dir)")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    base = Path(args.out or tempfile.mkdtemp(prefix="rpfs-scale-"))
    results = [run(s, base) for s in args.scale]
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
