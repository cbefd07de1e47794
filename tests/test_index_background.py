"""Indexing after the backup, in a process of its own (``rpfs backup --index=background``,
the default outside the test suite): the index it builds answers like one built before
the backup returned, and a recovery point whose indexer was killed is indexed on demand by
the next question (or ``rpfs index``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from rpfs.index import db as dbm

RP1, RP2 = "2026-11-01T02:00:00Z", "2026-11-02T02:00:00Z"


def rpfs(*args, check=True):
    r = subprocess.run([sys.executable, "-m", "rpfs", *map(str, args)], capture_output=True)
    if check and r.returncode:
        raise AssertionError(r.stderr.decode())
    return r


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def _wait_gone(pid: int) -> None:
    """Until the indexer process has ended (a hang is ended by pytest-timeout, the suite's
    guard: no clock here)."""
    while _alive(pid):
        time.sleep(0.1)


def _find(repo, *extra):
    r = rpfs("find", repo, "*", "--json", *extra, check=False)
    return sorted(r.stdout.decode().splitlines()), r.stderr.decode()


def _inline(small_fixtures, path):
    s1, s2 = small_fixtures.vm_states
    rpfs("init", path)
    for s, t in ((s1, RP1), (s2, RP2)):
        rpfs("backup", path, s, "--vm", "web01", "--time", t, "--index=now", "--no-scan")
    return _find(path)[0]


def test_background_index_answers_like_inline(small_fixtures, tmp_path):
    want = _inline(small_fixtures, tmp_path / "now")
    assert len(want) > 1000
    r = tmp_path / "bg"
    rpfs("init", r)
    s1, s2 = small_fixtures.vm_states
    pids = []
    for s, t in ((s1, RP1), (s2, RP2)):
        out = json.loads(rpfs("backup", r, s, "--vm", "web01", "--time", t, "--json",
                              "--index=background").stdout)
        assert out["index"] == "pending" and out["scan"] == "pending"
        assert out["indexer"]["log"] == str(r / "index.log")
        pids.append(out["indexer"]["pid"])
    # asked at once: find waits for the indexers (or indexes what they have not reached)
    got, err = _find(r)
    assert got == want
    assert "not indexed" not in err and err.count("\n") <= 1, err
    for pid in pids:
        _wait_gone(pid)
    log = (r / "index.log").read_text()
    assert log.count("change analysis: clean") == 2, log
    assert os.listdir(r / "index.pending") == []
    got, err = _find(r)
    assert err == ""                     # nothing left to index, nothing walked
    assert got == want
    listed = rpfs("list", r, "web01").stdout.decode()
    assert listed.count("clean") == 2     # the background run stored both analyses


def test_killed_indexer_is_made_good_on_demand(small_fixtures, tmp_path):
    """The indexer is held on the index lock (as behind a long-running indexer), killed,
    and the next find indexes that recovery point itself, then answers like inline."""
    want = _inline(small_fixtures, tmp_path / "now")
    r = tmp_path / "bg"
    rpfs("init", r)
    s1, s2 = small_fixtures.vm_states
    rpfs("backup", r, s1, "--vm", "web01", "--time", RP1, "--index=now", "--no-scan")
    with dbm.WriteLock(str(r)):
        out = json.loads(rpfs("backup", r, s2, "--vm", "web01", "--time", RP2, "--json",
                              "--index=background", "--no-scan").stdout)
        assert out["index"] == "pending" and out["scan"] is None
        os.kill(out["indexer"]["pid"], signal.SIGKILL)
        _wait_gone(out["indexer"]["pid"])
    assert len(os.listdir(r / "index.pending")) == 1
    conf = tmp_path / "c.toml"
    (tmp_path / "vms" / "web01").mkdir(parents=True)
    conf.write_text(f'[repositories.r]\npath = "{r}"\n\n[groups.g]\nrepository = "r"\n'
                    f'vms = ["{tmp_path}/vms/*"]\nschedule = "daily"\nkeep = {{ last = 1 }}\n')
    status = rpfs("status", "--config", conf, "--json", check=False)
    [vm] = [v for v in json.loads(status.stdout)["vms"] if v["vm"] == "web01"]
    assert vm["index_pending"] == [RP2.replace(":", "")]
    assert "web01: index pending for 1 recovery point" in rpfs(
        "status", "--config", conf, check=False).stdout.decode()
    got, err = _find(r)
    assert err.startswith("rpfs: indexing 1 recovery point whose index the backup left to"
                          " the background") and err.count("\n") == 1, err
    assert got == want
    assert os.listdir(r / "index.pending") == []
    assert _find(r) == (want, "")


def test_index_catches_up_after_a_killed_indexer(small_fixtures, tmp_path):
    """`rpfs index` indexes what a killed background indexer left (and clears the mark)."""
    r = tmp_path / "bg"
    rpfs("init", r)
    s1 = small_fixtures.vm_states[0]
    with dbm.WriteLock(str(r)):
        out = json.loads(rpfs("backup", r, s1, "--vm", "web01", "--time", RP1, "--json",
                              "--no-scan", "--index=background").stdout)
        os.kill(out["indexer"]["pid"], signal.SIGKILL)
        _wait_gone(out["indexer"]["pid"])
    done = json.loads(rpfs("index", r, "--json").stdout)
    assert done["indexed"] == 1 and done["volumes"] == 6
    assert os.listdir(r / "index.pending") == []
