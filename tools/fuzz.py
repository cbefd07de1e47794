#!/usr/bin/env python3
"""Coverage-guided fuzzing of every rpfs parser with atheris (``pip install -e '.[fuzz]'``).

    tools/fuzz.py [--minutes N] [TARGET ...]     fuzz each target N minutes (default 1) in turn
    tools/fuzz.py --seed                         (re)cut the seed corpora from the fixture images
    tools/fuzz.py --minimize [TARGET ...]        shrink the corpora to what adds coverage
    tools/fuzz.py --list                         the targets
    tools/fuzz.py --smoke RUNS                   every target in one process: the corpora, then RUNS mutated inputs (CI)

Each target runs as its own libFuzzer process under ``nice``, with ``-rss_limit_mb`` and a
per-input ``-timeout`` (a hang or a huge allocation is a crash too), over its corpus
``tests/fuzz/corpus/<target>/`` (new coverage is added there; keep only small files). A crash
leaves ``crash-*``/``timeout-*``/``oom-*`` files in ``tests/fuzz/crashes/<target>/``: fix
the bug, then move the input into the corpus as ``regress-<what>`` so CI replays it
(``tests/test_fuzz_corpus.py``). A summary line per target (runs, coverage, crashes) is
printed and appended to ``tests/fuzz/results.log``.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CORPUS = ROOT / "tests" / "fuzz" / "corpus"
CRASHES = ROOT / "tests" / "fuzz" / "crashes"
RESULTS = ROOT / "tests" / "fuzz" / "results.log"
PY = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv").exists() else sys.executable

RSS_LIMIT_MB = 1536      # one input may not make the process bigger than this
INPUT_TIMEOUT_S = 20     # nor take longer than this (libFuzzer reports a "timeout" crash)
MAX_LEN = {"ntfs_volume": 192 << 10, "xfs_volume": 192 << 10, "btrfs_volume": 192 << 10,
           "ext4_volume": 192 << 10, "lvm": 96 << 10}   # per target; others 64 KiB
CORPUS_BUDGET = {"ntfs_volume": 1 << 20, "xfs_volume": 1 << 20, "btrfs_volume": 1 << 20,
                 "ext4_volume": 1 << 20}  # bytes of coverage inputs kept; others 256 KiB


def fuzz(target: str, seconds: int) -> dict:
    corpus = CORPUS / target
    corpus.mkdir(parents=True, exist_ok=True)
    crashes = CRASHES / target
    crashes.mkdir(parents=True, exist_ok=True)
    return _run(target, corpus, crashes, seconds, MAX_LEN.get(target, 64 << 10))


def _run(target: str, corpus: Path, crashes: Path, seconds: int, max_len: int,
         runs: int | None = None) -> dict:
    """One libFuzzer process of ``target`` over ``corpus`` (new coverage is added there):
    for ``seconds``, or, given ``runs``, until that many inputs have run (corpus included)
    however long it takes."""
    (crashes / "last-failure.log").unlink(missing_ok=True)
    limit = f"-runs={runs}" if runs is not None else f"-max_total_time={seconds}"
    cmd = ["nice", "-n", "19", PY, "-m", "tests.fuzz.atheris_main", target,
           limit, f"-rss_limit_mb={RSS_LIMIT_MB}",
           f"-timeout={INPUT_TIMEOUT_S}", f"-max_len={max_len}", "-print_final_stats=1",
           f"-artifact_prefix={crashes}/", str(corpus)]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, errors="replace")
    took = time.monotonic() - t0
    out = proc.stdout + proc.stderr
    cov = re.findall(r"cov: (\d+) ft: (\d+)", out)
    runs = re.findall(r"stat::number_of_executed_units: (\d+)", out)
    found = sorted(p.name for p in crashes.iterdir() if p.name != "last-failure.log")
    result = {"target": target, "seconds": round(took), "runs": int(runs[-1]) if runs else 0,
              "cov": int(cov[-1][0]) if cov else 0, "ft": int(cov[-1][1]) if cov else 0,
              "corpus": len(list(corpus.iterdir())), "exit": proc.returncode,
              "crashes": found}
    if proc.returncode not in (0,):
        tail = "\n".join(out.splitlines()[-40:])
        (crashes / "last-failure.log").write_text(tail)
        result["log"] = str(crashes / "last-failure.log")
    return result


def smoke(mutations: int) -> dict:
    """Every target at once (the combined target ``all``): all the committed corpora, then
    ``mutations`` inputs the fuzzer derives from them, in a scratch directory (the committed
    corpora are not touched). A count of inputs, not a time: on a slow machine it takes
    longer and does the same work. ``seeds`` in the result: the corpus inputs it started from.
    What it finds is left in ``tests/fuzz/crashes/all/`` (first byte: the target's index
    in ``tests.fuzz.targets.ALL``)."""
    import tempfile
    from tests.fuzz.targets import ALL

    crashes = CRASHES / "all"
    crashes.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rpfs-fuzz-") as tmp:
        corpus = Path(tmp)
        for i, target in enumerate(ALL):
            for p in (CORPUS / target).iterdir():
                (corpus / f"{target}-{p.name}").write_bytes(bytes([i]) + p.read_bytes())
        seeds = len(list(corpus.iterdir()))
        r = _run("all", corpus, crashes, 0, max(MAX_LEN.values()) + 1, runs=seeds + mutations)
        r["seeds"] = seeds
        return r


def minimize(target: str) -> tuple[int, int]:
    """libFuzzer's merge into a fresh directory: keeps the inputs that add coverage
    (smallest first, within the target's budget), plus every seed-* and regress-* file
    (they document where the corpus came from)."""
    import shutil
    import tempfile
    corpus = CORPUS / target
    before = len(list(corpus.iterdir()))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp, "out")
        out.mkdir()
        wrapper = Path(tmp, "fuzz-target")
        wrapper.write_text(f"#!/bin/sh\ncd {ROOT} && exec {PY} -m tests.fuzz.atheris_main "
                           f"{target} \"$@\"\n")
        wrapper.chmod(0o700)
        env = dict(os.environ, FUZZ_ARGV0=str(wrapper))
        subprocess.run(["nice", "-n", "19", PY, "-m", "tests.fuzz.atheris_main", target,
                        "-merge=1", f"-rss_limit_mb={RSS_LIMIT_MB}", f"-timeout={INPUT_TIMEOUT_S}",
                        str(out), str(corpus)], cwd=ROOT, env=env, capture_output=True, check=True)
        kept = {p.read_bytes() for p in out.iterdir()}
        if not kept:
            raise RuntimeError(f"{target}: the merge kept nothing (libFuzzer could not re-run)")
        for p in corpus.iterdir():
            if not p.name.startswith(("seed-", "regress-")):
                p.unlink()
        import hashlib
        have = {p.read_bytes() for p in corpus.iterdir()}
        room = CORPUS_BUDGET.get(target, 256 << 10)  # committed corpora stay small
        for data in sorted(kept - have, key=len):
            if len(data) > room:
                break
            room -= len(data)
            (corpus / f"cov-{hashlib.sha1(data).hexdigest()[:16]}").write_bytes(data)
        shutil.rmtree(tmp, ignore_errors=True)
    return before, len(list(corpus.iterdir()))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("targets", nargs="*")
    ap.add_argument("--minutes", type=float, default=1.0, help="per target (default 1)")
    ap.add_argument("--seed", action="store_true", help="cut seed corpora from the fixtures")
    ap.add_argument("--minimize", action="store_true", help="shrink the corpora")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--smoke", type=int, metavar="RUNS",
                    help="every target in one process: the corpora, then RUNS mutated inputs"
                         " (CI); corpora untouched")
    args = ap.parse_args()
    from tests.fuzz.targets import TARGETS
    if args.list:
        print("\n".join(TARGETS))
        return 0
    if args.seed:
        from tests.fuzz.seeds import write_seeds
        for target, n in sorted(write_seeds().items()):
            print(f"{target}: {n} seeds")
        return 0
    unknown = [t for t in args.targets if t not in TARGETS]
    if unknown:
        print(f"fuzz: unknown target(s) {' '.join(unknown)}; see --list", file=sys.stderr)
        return 2
    if args.minimize:
        for target in args.targets or list(TARGETS):
            before, after = minimize(target)
            print(f"{target}: {before} -> {after} inputs")
        return 0
    if args.smoke:
        r = smoke(args.smoke)
        print(f"{summary(r)}, seeds {r['seeds']}", flush=True)
        if r["exit"] or r["crashes"]:
            print((CRASHES / "all" / "last-failure.log").read_text(), file=sys.stderr)
            return 1
        return 0
    failed = 0
    for target in args.targets or list(TARGETS):
        r = fuzz(target, max(1, int(args.minutes * 60)))
        line = summary(r)
        print(line, flush=True)
        with open(RESULTS, "a") as f:
            f.write(line + "\n")
        failed += bool(r["crashes"]) or r["exit"] != 0
    return 1 if failed else 0


def summary(r: dict) -> str:
    return (f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {r['target']}: "
            f"{r['seconds']}s, {r['runs']} inputs, cov {r['cov']} ft {r['ft']}, "
            f"corpus {r['corpus']}, exit {r['exit']}, crashes {r['crashes'] or 'none'}")


if __name__ == "__main__":
    sys.exit(main())
