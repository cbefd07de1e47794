"""Replays fuzz corpora through their targets in a process with a memory limit:
``python -m tests.fuzz.replay [TARGET ...]``. Prints one JSON object: per target, how many
inputs ran and the failures (input name, exception); exit status 1 if any input failed.

A failure is any exception other than rpfs's typed errors, including MemoryError when an
input makes the process grow past RLIMIT_AS (``--memory-mb``, default 2048).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import traceback
from pathlib import Path

from tests.fuzz.targets import TARGETS, run_one

CORPUS = Path(__file__).resolve().parent / "corpus"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("targets", nargs="*")
    ap.add_argument("--memory-mb", type=int, default=2048)
    args = ap.parse_args()
    limit = args.memory_mb << 20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    report = {}
    for target in args.targets or list(TARGETS):
        files = sorted((CORPUS / target).glob("*"))
        failures = []
        for f in files:
            try:
                data = f.read_bytes()
            except FileNotFoundError:  # a fuzzer running on the corpus just replaced it
                continue
            try:
                run_one(target, data)
            except BaseException as e:  # noqa: B902 - every escape is the finding
                failures.append({"input": f.name, "error": f"{type(e).__name__}: {e}"[:300],
                                 "where": traceback.format_exc().splitlines()[-3][:300]})
        report[target] = {"inputs": len(files), "failures": failures}
    print(json.dumps(report))
    return 1 if any(r["failures"] for r in report.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
