"""``rpfs diff``, the change analysis (``rpfs scan``, after each backup, ``rpfs list``, the web
calendar), ``rpfs last-clean`` and one meaning of "version", on the factory's change
scenarios (tools/fixtures/scenarios.py: a user profile on real NTFS, nine scenarios, and the
factory's own list of what each state changed), all through the CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import httpx
import pytest

from rpfs import sniff
from tests.helpers.cli import rpfs

VOL = "profile-p0"


@pytest.fixture(scope="module")
def scenarios():
    from tools.fixtures import scenarios
    if not shutil.which("mkntfs") or not shutil.which("ntfs-3g") or not os.path.exists("/dev/fuse"):
        pytest.skip("needs mkntfs and ntfs-3g (FUSE)")
    return scenarios.build()


def _rp_name(state: dict) -> str:
    return state["time"]


def _iso(name: str) -> str:
    return f"{name[:13]}:{name[13:15]}:{name[15:17]}Z"


@pytest.fixture(scope="module")
def repo(scenarios, tmp_path_factory):
    """One repository, one VM per scenario, one recovery point per state (each backup
    indexes and analyses what it stored, as `rpfs backup` does by default)."""
    path = tmp_path_factory.mktemp("changes") / "repo"
    rpfs("init", path)
    for name, sc in scenarios.index["scenarios"].items():
        for state in sc["states"]:
            r = rpfs("backup", path, scenarios.image(state), "--vm", name, "--time",
                     _iso(state["time"]), "--json")
            out = json.loads(r.stdout)
            assert out["scan"]["verdict"] in ("clean", "suspicious"), out
    return path


def _diff(repo, vm, a, b, *extra):
    r = rpfs("diff", repo, f"/{vm}/{a}", f"/{vm}/{b}", *extra, "--json")
    return [json.loads(line) for line in r.stdout.decode().splitlines()], r.stderr.decode()


def _as_set(changes) -> set:
    return {(c["change"], c["path"], c.get("old_path")) for c in changes}


ALL = ["encrypt-in-place", "encrypt-rename", "intermittent", "slow", "software-update",
       "photos", "log-rotation", "metadata", "office-resave"]


@pytest.mark.parametrize("name", ALL)
def test_diff_is_the_factorys_change_list(scenarios, repo, name):
    """Every state against the one before: exactly what the factory did, nothing else."""
    states = scenarios.scenario(name)["states"]
    for before, after in zip(states, states[1:]):
        got, err = _diff(repo, name, before["time"], after["time"])
        assert "not indexed" not in err
        assert {c["volume"] for c in got} <= {VOL}
        want = _as_set(after["changes"])
        assert _as_set(got) == want, (after["dir"], sorted(_as_set(got) ^ want)[:20])
        for c in got:
            if c["change"] == "renamed":
                assert c["old_path"]


@pytest.mark.parametrize("name", ALL)
def test_verdicts_and_last_clean(scenarios, repo, name):
    """Attacks are suspicious from their first recovery point on (the slow one at the
    latest when 5% of the documents are hit); benign heavy change never; last-clean names
    the recovery point before the attack."""
    sc = scenarios.scenario(name)
    listed = json.loads(rpfs("list", repo, name, "--json").stdout)
    verdicts = [r["verdict"] for r in listed]
    first = sc["first_attack"]
    if not sc["attack"]:
        assert verdicts == ["clean"] * len(verdicts)
        r = rpfs("last-clean", repo, name, "--json")
        assert json.loads(r.stdout)["recovery_point"] == sc["states"][-1]["time"]
        return
    assert verdicts[:first] == ["clean"] * first
    if name == "slow":   # 2% a day: flagged by the day 5% are hit (here: the first day)
        days = [i for i in range(first, len(verdicts)) if verdicts[i] == "suspicious"]
        assert days and days[0] - first + 1 <= 3, verdicts
        assert days[0] == first
    else:
        assert verdicts[first] == "suspicious", listed[first]
    assert listed[first]["reasons"]
    r = rpfs("last-clean", repo, name, "--json", check=False)
    assert r.returncode == 0
    out = json.loads(r.stdout)
    assert out["recovery_point"] == sc["states"][first - 1]["time"]
    assert out["first_suspicious"] == sc["states"][first]["time"]
    assert out["reasons"] == listed[first]["reasons"]
    text = rpfs("list", repo, name).stdout.decode()
    assert "SUSPICIOUS" in text and "clean" in text


def test_reasons_name_what_the_attack_did(repo):
    def reasons(vm):
        rows = json.loads(rpfs("list", repo, vm, "--json").stdout)
        return " ".join(r for row in rows for r in row["reasons"])
    assert "no structure" in reasons("encrypt-in-place")
    assert "intermittent" in reasons("intermittent")
    rename = reasons("encrypt-rename")
    assert ".kraken" in rename and "documents removed" in rename and "RESTORE-FILES.txt" in rename.replace("'", "")


def test_scan_on_demand_and_no_scan(scenarios, repo, tmp_path):
    """--no-scan leaves no analysis (list shows '-'); `rpfs scan` makes and keeps it."""
    path = tmp_path / "r"
    rpfs("init", path)
    states = scenarios.scenario("intermittent")["states"]
    for st in states:
        rpfs("backup", path, scenarios.image(st), "--vm", "pc", "--time", _iso(st["time"]),
             "--no-scan")
    assert [r["verdict"] for r in json.loads(rpfs("list", path, "pc", "--json").stdout)] == \
        [None] * len(states)
    assert "  -" in rpfs("list", path, "pc").stdout.decode()
    r = json.loads(rpfs("scan", path, f"/pc/{states[-1]['time']}", "--json").stdout)
    assert r["verdict"] == "suspicious" and r["previous"] == states[-2]["time"]
    assert r["counts"]["encrypted"] == r["counts"]["modified"] > 0
    assert r["counts"]["partial"] > 0
    # never whole files: at most a few 4 KiB blocks of each file on each side
    assert r["counts"]["sampled"] <= 2 * (r["counts"]["modified"] + r["counts"]["added"]
                                          + r["counts"]["removed"] + r["counts"]["renamed"])
    # last-clean scans (and stores) what was never scanned
    out = json.loads(rpfs("last-clean", path, "pc", "--json").stdout)
    assert out["recovery_point"] == states[-2]["time"]
    assert [r["verdict"] for r in json.loads(rpfs("list", path, "pc", "--json").stdout)] == \
        ["clean"] * (len(states) - 1) + ["suspicious"]


def test_analysis_survives_a_catalog_rebuild(scenarios, tmp_path):
    path = tmp_path / "r"
    rpfs("init", path)
    for st in scenarios.scenario("encrypt-in-place")["states"]:
        rpfs("backup", path, scenarios.image(st), "--vm", "pc", "--time", _iso(st["time"]))
    before = json.loads(rpfs("list", path, "pc", "--json").stdout)
    os.unlink(path / "catalog.sqlite")
    for extra in ("catalog.sqlite-wal", "catalog.sqlite-shm"):
        if (path / extra).exists():
            os.unlink(path / extra)
    rpfs("repair", path)
    after = json.loads(rpfs("list", path, "pc", "--json").stdout)
    assert [(r["rp"], r["verdict"], r["reasons"]) for r in after] == \
        [(r["rp"], r["verdict"], r["reasons"]) for r in before]
    assert after[-1]["verdict"] == "suspicious"


def test_prune_drops_the_analysis_with_its_recovery_point(scenarios, tmp_path):
    path = tmp_path / "r"
    rpfs("init", path)
    for st in scenarios.scenario("encrypt-in-place")["states"]:
        rpfs("backup", path, scenarios.image(st), "--vm", "pc", "--time", _iso(st["time"]))
    assert len(os.listdir(path / "scans")) == 3
    rpfs("prune", path, "--keep-last", "1")
    assert len(os.listdir(path / "scans")) == 1


def test_diff_walks_recovery_points_not_indexed(scenarios, repo, tmp_path):
    """Without the index the same changes come from walking both volumes (and it says so)."""
    path = tmp_path / "r"
    rpfs("init", path)
    states = scenarios.scenario("log-rotation")["states"][1:]
    for st in states:
        rpfs("backup", path, scenarios.image(st), "--vm", "pc", "--time", _iso(st["time"]),
             "--no-index", "--no-scan")
    got, err = _diff(path, "pc", states[0]["time"], states[1]["time"])
    assert "not indexed" in err
    assert _as_set(got) == _as_set(states[1]["changes"])
    # below a path, and inside one volume
    below, _ = _diff(repo, "log-rotation", states[0]["time"], states[1]["time"],
                     f"volumes/{VOL}/ProgramData/Contoso/Logs/service03")
    assert _as_set(below) == {c for c in _as_set(states[1]["changes"]) if "/service03/" in c[1]}
    other, _ = _diff(repo, "log-rotation", states[0]["time"], states[1]["time"], "volumes/nothing-p9")
    assert other == []


def test_diff_text_and_errors(scenarios, repo):
    states = scenarios.scenario("encrypt-rename")["states"]
    r = rpfs("diff", repo, f"/encrypt-rename/{states[1]['time']}", f"/encrypt-rename/{states[2]['time']}")
    lines = r.stdout.decode().splitlines()
    assert any(ln.startswith("R profile-p0/") and " -> " in ln for ln in lines)
    assert any(ln.startswith("- profile-p0/") for ln in lines)
    assert any(ln.startswith("+ profile-p0/") for ln in lines)
    # nothing changed: no output, exit 0
    same = rpfs("diff", repo, f"/photos/{states[0]['time']}", f"/photos/{states[0]['time']}")
    assert same.stdout == b"" and same.returncode == 0
    bad = rpfs("diff", repo, "/photos/latest", "/slow/latest", check=False)
    assert bad.returncode != 0 and b"not the same VM" in bad.stderr and b"Traceback" not in bad.stderr
    gone = rpfs("last-clean", repo, "no-such-vm", "--json", check=False)
    assert gone.returncode == 1 and json.loads(gone.stdout)["recovery_point"] is None
    assert b"Traceback" not in gone.stderr


def test_one_meaning_of_version(scenarios, repo):
    """history and .versions count contents: a time-only change stays in its version; an
    in-place overwrite (same clusters, so the same data runs) is a new version."""
    meta = scenarios.scenario("metadata")["states"]
    touched = next(c["path"] for c in meta[-1]["changes"] if c["change"] == "metadata")
    h = json.loads(rpfs("history", repo, f"/metadata/latest/volumes/{VOL}{touched}", "--json").stdout)
    assert len(h) == 1 and h[0]["recovery_points"] == [s["time"] for s in meta]
    assert [m["recovery_point"] for m in h[0]["metadata"]] == [meta[-1]["time"]]
    enc = scenarios.scenario("encrypt-in-place")["states"]
    hit = next(c["path"] for c in enc[-1]["changes"]
               if c["change"] == "modified" and c["path"].endswith(".pdf"))
    h = json.loads(rpfs("history", repo, f"/encrypt-in-place/latest/volumes/{VOL}{hit}", "--json").stdout)
    assert [v["recovery_points"] for v in h] == [[enc[0]["time"], enc[1]["time"]], [enc[2]["time"]]]
    v = json.loads(rpfs("history", repo, f"/encrypt-in-place/latest/volumes/{VOL}{hit}", "--json",
                        "--verify").stdout)
    assert [x["recovery_points"] for x in v] == [x["recovery_points"] for x in h]
    # the .versions view of the same files, through the tree every front end uses
    from rpfs.source import open_source
    with open_source(repo) as tree:
        node = tree.resolve(f"/metadata/.versions/{VOL}{touched}")
        assert [n.name for n in node.iterdir()] == [meta[0]["time"]]
        node = tree.resolve(f"/encrypt-in-place/.versions/{VOL}{hit}")
        assert [n.name for n in node.iterdir()] == [enc[0]["time"], enc[2]["time"]]


def _serve(source, log):
    with open(log, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "rpfs", "serve", str(source),
                                 "--listen", "127.0.0.1:0"], stdout=subprocess.DEVNULL, stderr=err)
    for _ in range(600):
        text = log.read_text(errors="replace")
        if " at http://" in text:
            return proc, text.split(" at ", 1)[1].split("/ ", 1)[0]
        if proc.poll() is not None:
            raise AssertionError(f"rpfs serve exited: {text}")
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("rpfs serve did not start")


def test_web_calendar_marks_the_suspicious_day(scenarios, repo, tmp_path):
    states = scenarios.scenario("encrypt-rename")["states"]
    proc, base = _serve(repo, tmp_path / "serve.log")
    try:
        day = lambda s: s[:10]
        page = httpx.get(base + "/vm/encrypt-rename", params={"day": day(states[2]["time"])},
                         timeout=60).text
        assert 'class=" has selected suspicious"' in page or "has selected suspicious" in page
        assert "suspicious change:" in page and "badge suspicious" in page
        assert "RESTORE-FILES.txt" in page
        clean = httpx.get(base + "/vm/encrypt-rename", params={"day": day(states[1]["time"])},
                          timeout=60).text
        assert "badge clean" in clean
        assert clean.count("suspicious change:") == 1      # the other day of the month
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_sniff_tells_formats_from_encrypted_bytes():
    from tools.fixtures import documents as docs
    from tools.fixtures.content import Content
    for data in (docs.docx(1), docs.xlsx(2), docs.pptx(3), docs.pdf(4), docs.jpeg(5),
                 docs.png(6), docs.zip_archive(7), docs.tar_gz(8), docs.executable(9, 9000),
                 docs.cabinet(10, 9000), docs.text(11, 5000), docs.csv(12), docs.rtf(13)):
        assert sniff.structured(sniff.kind(data[:4096])), data[:8]
    for n in (300, 1000, 4096):
        assert sniff.kind(Content("random", n, 1).bytes()) == "random"
    assert sniff.kind(bytes(4096)) == "binary"
    assert sniff.kind(b"") == "empty"
