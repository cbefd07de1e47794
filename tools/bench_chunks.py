"""Choose the chunk size by measurement (docs/store.md "Chunk size").

For each candidate chunk size: back up the fixture VM's state 1 then state 2 (the guest
changed a few files; the VHDX was updated in place), and report backup throughput, bytes the
incremental stored, catalog size, and random 4 KiB read latency through the store with the
chunk cache off (every read fetches, decompresses and hash-checks one chunk) and warm.

    .venv/bin/python -m tools.bench_chunks [--sizes 64K,256K,1M,4M,16M] [--reads 300] [--json]
    .venv/bin/python -m tools.bench_chunks --catalog 1000000     # catalog cost per row / lookup

Uses ``tools.fixtures.build("small")`` when available, else the store tests' VM states.
Data is read from the page cache after the first pass (conditions are printed).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rpfs.backup import backup  # noqa: E402
from rpfs.store import Repository, StoreOptions  # noqa: E402


def states() -> tuple[Path, Path, str]:
    try:
        from tools.fixtures import build
        s = build("small")
        return s.vm_states[0], s.vm_states[1], "tools.fixtures small (TestVM)"
    except Exception as e:  # the factory is optional here
        from tests.helpers.store_fixtures import vm_states
        a, b = vm_states()
        return a, b, f"tests/helpers/store_fixtures ({type(e).__name__} from tools.fixtures)"


def parse_size(t: str) -> int:
    t = t.strip().upper()
    m = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(t[-1], 1)
    return int(t[:-1] if t[-1] in "KMG" else t) * m


def largest_file(repo: Repository, rp) -> str:
    files = repo.files(rp)
    return max(files, key=files.get)


def read_latency(path: Path, vm: str, reads: int, cache_mb: int) -> dict:
    with Repository.open(path, StoreOptions(chunk_cache_bytes=cache_mb << 20)) as repo:
        rp = repo.recovery_points(vm)[-1]
        name = largest_file(repo, rp)
        f = repo.open_file(rp, name)
        rnd = random.Random(1)
        # only offsets inside data chunks (zero chunks cost nothing at any size)
        data_ext = [e for e in f.extents() if e.kind == "data"]
        offs = []
        for _ in range(reads):
            e = rnd.choice(data_ext)
            offs.append(e.offset + rnd.randrange(max(1, e.length - 4096)) // 4096 * 4096)
        lat = []
        for o in offs:
            t = time.perf_counter()
            f.read(o, 4096)
            lat.append((time.perf_counter() - t) * 1e6)
        if cache_mb:
            lat = []
            for o in offs:   # second pass: warm
                t = time.perf_counter()
                f.read(o, 4096)
                lat.append((time.perf_counter() - t) * 1e6)
        lat.sort()
        return {"median_us": round(statistics.median(lat)),
                "p95_us": round(lat[int(len(lat) * 0.95) - 1])}


def run(size: int, s1: Path, s2: Path, tmp: Path, reads: int) -> dict:
    path = tmp / f"repo-{size}"
    shutil.rmtree(path, ignore_errors=True)
    with Repository.init(path, chunk_size=size) as repo:
        r1 = backup(repo, [str(s1)], vm="vm", time="2024-01-01T00:00:00Z", show_progress=False)
        r2 = backup(repo, [str(s2)], vm="vm", time="2024-01-02T00:00:00Z", show_progress=False)
        repo.writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        chunks = repo.query("SELECT count(*) FROM chunks")[0][0]
        maps = repo.query("SELECT sum(length(chunk_map)) FROM files")[0][0]
    cat = os.path.getsize(path / "catalog.sqlite")
    out = {
        "chunk_size": size,
        "full_MBps": round(r1.mb_per_s), "full_stored": r1.new_bytes_stored,
        "incr_MBps": round(r2.mb_per_s),
        "incr_new_chunks": r2.new_chunks, "incr_new_bytes": r2.new_bytes_logical,
        "incr_stored": r2.new_bytes_stored,
        "chunks": chunks, "catalog_bytes": cat, "map_bytes": maps,
        "read4k_cold": read_latency(path, "vm", reads, 0),
        "read4k_warm": read_latency(path, "vm", reads, 256),
    }
    shutil.rmtree(path, ignore_errors=True)
    return out


def catalog_scale(rows: int) -> dict:
    """Bytes per chunk row (with the hash index), hash lookup cost, chunk-map sizes: the
    inputs of docs/store.md "Catalog at scale"."""
    from rpfs.store import catalog
    d = Path(tempfile.mkdtemp(dir=ROOT / ".cache" / "bench"))
    try:
        p = str(d / "c.sqlite")
        catalog.create(p)
        db = catalog.connect(p, write=True)
        rnd = random.Random(1)
        db.execute("BEGIN")
        db.execute("INSERT INTO packs (name, size, chunk_count, created) VALUES ('x', 1, 1, 0)")
        db.executemany("INSERT INTO chunks (hash, pack_id, offset, csize, usize, codec) VALUES (?,?,?,?,?,?)",
                       ((rnd.randbytes(32), 1, rnd.randrange(1 << 25), rnd.randrange(1 << 20), 1 << 20, 1)
                        for _ in range(rows)))
        db.execute("COMMIT")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        per_row = os.path.getsize(p) / rows
        hs = [r[0] for r in db.execute("SELECT hash FROM chunks ORDER BY random() LIMIT 20000")]
        rd = catalog.connect(p)
        t = time.perf_counter()
        for h in hs:
            rd.execute("SELECT id FROM chunks WHERE hash = ?", (h,)).fetchone()
        hit = (time.perf_counter() - t) / len(hs) * 1e6
        plan = rd.execute("EXPLAIN QUERY PLAN SELECT id FROM chunks WHERE hash = ?", (b"",)).fetchall()
        n = 102400                      # a 100 GiB disk at 1 MiB chunks
        first = list(range(1_000_000, 1_000_000 + n))
        for i in range(0, n, 7):
            if i % 3:
                first[i] = 0            # some zero chunks
        incr = list(first)
        nxt = 5_000_000
        for i in rnd.sample(range(n), n // 50):   # 2% of chunks changed
            incr[i] = nxt
            nxt += 1
        m1, m2 = catalog.encode_map(first), catalog.encode_map(incr)
        t = time.perf_counter()
        catalog.decode_map(m2, n)
        dec = (time.perf_counter() - t) * 1e3
        rd.close()
        db.close()
        return {"rows": rows, "bytes_per_chunk_row": round(per_row, 1), "hash_lookup_us": round(hit, 1),
                "plan": plan[0][-1], "map_100GiB_first": len(m1), "map_100GiB_2pct_changed": len(m2),
                "map_raw": n * 8, "map_decode_ms": round(dec, 1)}
    finally:
        shutil.rmtree(d, ignore_errors=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="64K,256K,1M,4M,16M")
    ap.add_argument("--reads", type=int, default=300)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--catalog", type=int, metavar="ROWS",
                    help="instead: measure catalog cost with ROWS synthetic chunk rows")
    a = ap.parse_args(argv)
    if a.catalog:
        (ROOT / ".cache" / "bench").mkdir(parents=True, exist_ok=True)
        print(json.dumps(catalog_scale(a.catalog), indent=1))
        return 0
    s1, s2, what = states()
    logical = sum(p.stat().st_size for p in s1.rglob("*") if p.is_file())
    (ROOT / ".cache" / "bench").mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=ROOT / ".cache" / "bench"))
    results = []
    try:
        for s in a.sizes.split(","):
            results.append(run(parse_size(s), s1, s2, tmp, a.reads))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if a.json:
        print(json.dumps({"source": what, "logical_bytes": logical, "results": results}, indent=1))
        return 0
    print(f"source: {what}, {logical / 2**20:.0f} MiB per state; cpus={len(os.sched_getaffinity(0))},"
          f" load={os.getloadavg()[0]:.1f}; data in page cache")
    hdr = ["chunk", "full MB/s", "incr MB/s", "incr chunks", "incr new MiB", "incr stored MiB",
           "chunks", "catalog KiB", "4K cold p50/p95 us", "4K warm p50/p95 us"]
    rows = [hdr]
    for r in results:
        rows.append([f"{r['chunk_size'] // 1024}K", str(r["full_MBps"]), str(r["incr_MBps"]),
                     str(r["incr_new_chunks"]), f"{r['incr_new_bytes'] / 2**20:.2f}",
                     f"{r['incr_stored'] / 2**20:.2f}", str(r["chunks"]),
                     f"{r['catalog_bytes'] / 1024:.0f}",
                     f"{r['read4k_cold']['median_us']}/{r['read4k_cold']['p95_us']}",
                     f"{r['read4k_warm']['median_us']}/{r['read4k_warm']['p95_us']}"])
    w = [max(len(r[i]) for r in rows) for i in range(len(hdr))]
    for r in rows:
        print("  ".join(c.rjust(x) for c, x in zip(r, w)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
