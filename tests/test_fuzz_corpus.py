"""The fuzz corpora (tests/fuzz/corpus/<target>/: seeds cut from the fixtures, inputs the
fuzzer found new coverage with, and regress-* inputs of crashes fixed) replayed through
every target: only rpfs's typed errors may escape, under a 2 GiB address-space limit and a
generous hang guard. Long coverage-guided runs are ``tools/fuzz.py --minutes N``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.fuzz.targets import TARGETS

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "fuzz" / "corpus"


def test_every_target_has_a_corpus():
    for target in TARGETS:
        assert any((CORPUS / target).glob("seed-*")), f"no seeds for {target}"


def test_corpora_replay_with_typed_errors_only():
    # the timeout is a hang guard (an input looping for ever), not a speed assertion
    r = subprocess.run([sys.executable, "-m", "tests.fuzz.replay", "--memory-mb", "2048"],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.stdout, r.stderr[-3000:]
    report = json.loads(r.stdout)
    failed = {t: v["failures"] for t, v in report.items() if v["failures"]}
    assert not failed, json.dumps(failed, indent=1)[:5000]
    assert r.returncode == 0, r.stderr[-3000:]
    assert set(report) == set(TARGETS)


def test_short_coverage_guided_run():
    """Atheris over every target at once (one process): the committed corpora, then 300
    inputs it mutates from them; only typed errors, no input past the time or memory limit.
    The amount of work is fixed (a count of inputs, not a time), so a slow machine takes
    longer and a fuzzer that stops early fails. The long runs are ``tools/fuzz.py --minutes
    N``; what this one finds is in tests/fuzz/crashes/all/."""
    mutations = 300
    # the timeout is a hang guard (a fuzzer that never ends), not a speed assertion
    r = subprocess.run([sys.executable, "tools/fuzz.py", "--smoke", str(mutations)], cwd=ROOT,
                       capture_output=True, text=True, timeout=3 * 3600)
    assert r.returncode == 0, r.stdout + r.stderr[-4000:]
    line = r.stdout.strip().splitlines()[-1]
    assert " all: " in line and "crashes none" in line, line
    runs = int(line.split(" inputs")[0].rsplit(" ", 1)[1])
    seeds = int(line.rsplit("seeds ", 1)[1])
    assert seeds > 100, line                    # it started from the corpora
    assert runs >= seeds + mutations, line      # and fuzzed past them
