"""The metadata index on the factory's VM in two states (manifests are the ground truth):
find, history, incremental building, and the versions view in a real mount."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest

from rpfs.backup import backup
from rpfs.index import file_history, find_entries, update_index
from rpfs.index.build import ChangeSet, Ids, VolumeWriter
from rpfs.index import db as dbm
from rpfs.index.scan import FileInfo
from rpfs.store import Repository
from rpfs.source import open_source

RP1, RP2 = "2024-04-01T000000Z", "2024-04-02T000000Z"
VOL = "system-p3"


def rpfs(*args, check=True):
    r = subprocess.run([sys.executable, "-m", "rpfs", *map(str, args)], capture_output=True)
    if check and r.returncode:
        raise AssertionError(r.stderr.decode())
    return r


def _backup_both(small_fixtures, path):
    s1, s2 = small_fixtures.vm_states
    with Repository.init(path) as repo:
        backup(repo, [str(s1)], time=RP1, show_progress=False)
        backup(repo, [str(s2)], time=RP2, show_progress=False)
    return path


@pytest.fixture(scope="module")
def fx(small_fixtures):
    changes = small_fixtures.vm_changes
    root = small_fixtures.root
    vol = changes["volumes"][VOL]
    return {"vm": changes["vm"], "changes": vol,
            "m1": json.loads((root / vol["manifest_state1"]).read_text())["entries"],
            "m2": json.loads((root / vol["manifest_state2"]).read_text())["entries"]}


@pytest.fixture(scope="module")
def repo(small_fixtures, tmp_path_factory):
    """Both states backed up, then indexed by ``rpfs index``: the newest first (as
    ``rpfs backup`` would), then the older one, which redoes the newer one after it."""
    path = _backup_both(small_fixtures, tmp_path_factory.mktemp("index") / "r")
    with Repository.open(path) as r:
        first = update_index(r, only=RP2)
        rest = update_index(r)
    assert (first["indexed"], rest["indexed"]) == (1, 2)
    # data.vhdx is the same file in both states: its four volumes are not read again
    assert rest["unchanged_volumes"] == 4
    return path


def _paths(found, rp):
    return {h["path"]: h for h in found if h["recovery_point"] == rp and h["volume"] == VOL}


def _manifest_view(entries):
    kinds = {"file": "file", "dir": "dir", "symlink": "symlink", "junction": "symlink"}
    return {p: (kinds[e["type"]], e.get("size", 0) if e["type"] == "file" else 0)
            for p, e in entries.items() if p != "/"}


def test_index_holds_exactly_each_state(repo, fx):
    """Every path, kind and size of each state's manifest, and nothing else."""
    with open_source(repo) as tree:
        found = list(find_entries(tree, "**", vm=fx["vm"]))
    for rp, manifest in ((RP1, fx["m1"]), (RP2, fx["m2"])):
        got = {p: (h["type"], h["size"]) for p, h in _paths(found, rp).items()}
        assert got == _manifest_view(manifest)


def test_find_returns_the_recovery_points_holding_each_change(repo, fx):
    ch = fx["changes"]
    want = {p: {RP2} for p in ch["added"]}
    want.update({p: {RP1} for p in ch["deleted"]})
    want.update({p: {RP1, RP2} for p in ch["modified"]})
    want["/Users/alice/Documents/report.docx"] = {RP1, RP2}
    with open_source(repo) as tree:
        for path, rps in want.items():
            hits = list(find_entries(tree, path.replace("[", "[[]")))
            assert {h["recovery_point"] for h in hits if h["path"] == path} == rps, path
            name = path.rsplit("/", 1)[1]
            by_name = list(find_entries(tree, name.upper().replace("[", "[[]")))  # any case
            assert {h["recovery_point"] for h in by_name if h["path"] == path} == rps, path


def test_find_filters(repo, fx):
    with open_source(repo) as tree:
        tmp = list(find_entries(tree, "update-*.tmp", type="f", size="+20009"))
        assert {h["path"] for h in tmp} == {f"/Windows/Temp/update-{i:02d}.tmp" for i in range(10, 20)}
        assert list(find_entries(tree, "update-*.tmp", until="2024-04-01T12:00:00Z")) == []
        assert list(find_entries(tree, "update-*.tmp", type="d")) == []
        legacy = list(find_entries(tree, "legacy", type="d", since=RP1, until=RP1))
        assert [h["path"] for h in legacy] == ["/Program Files (x86)/Legacy"]
        rx = list(find_entries(tree, r"^update-1[0-4]\.tmp$", regex=True))
        assert len(rx) == 5
        assert list(find_entries(tree, "notes.txt", modified_before="1990-01-01")) == []


def test_find_without_index_walks_and_says_so(small_fixtures, tmp_path, repo):
    """A repository never indexed answers the same, by walking; it says so once."""
    bare = _backup_both(small_fixtures, tmp_path / "bare")
    said = []
    with open_source(bare) as tree:
        walked = list(find_entries(tree, "*.docx", until=RP1, notice=said.append))
    with open_source(repo) as tree:
        indexed = list(find_entries(tree, "*.docx", until=RP1, notice=said.append))
    assert len(said) == 1 and "not indexed" in said[0]
    key = lambda h: (h["recovery_point"], h["volume"], h["path"])  # noqa: E731
    assert sorted(walked, key=key) == sorted(indexed, key=key) and len(indexed) > 2


def test_history_lists_the_versions_of_the_manifests(repo, fx):
    ch = fx["changes"]
    with open_source(repo) as tree:
        for path in ch["modified"] + ch["added"] + ch["deleted"] + ["/Users/alice/Documents/report.docx"]:
            kind1, kind2 = fx["m1"].get(path), fx["m2"].get(path)
            if "file" not in (kind1 or kind2)["type"]:
                continue
            for verify in (False, True):
                h = file_history(tree, f"/{fx['vm']}/latest/volumes/{VOL}{path}", verify=verify)
                want, absent = [], []
                for rp, m in ((RP1, fx["m1"]), (RP2, fx["m2"])):
                    e = m.get(path)
                    if e is None:
                        absent.append(rp)
                    elif want and want[-1][1] == e["sha256"]:
                        want[-1][0].append(rp)
                    else:
                        want.append(([rp], e["sha256"], e["size"]))
                assert h["absent"] == absent, path
                assert [(v["recovery_points"], v["size"], v["path"]) for v in h["versions"]] == \
                    [(rps, size, path) for rps, _, size in want], path


def test_second_recovery_point_costs_only_its_changes(repo, fx):
    db = dbm.connect(dbm.index_path(Repository.open(repo, register=False)))
    try:
        vid = db.execute("SELECT id FROM volumes WHERE name = ?", (VOL,)).fetchone()[0]
        first = db.execute("SELECT count(*) FROM entries WHERE volume_id = ? AND first = 1", (vid,)).fetchone()[0]
        second = db.execute("SELECT count(*) FROM entries WHERE volume_id = ? AND first = 2", (vid,)).fetchone()[0]
        blocks = db.execute("SELECT count(*) FROM blocks WHERE volume_id = ? AND first = 2", (vid,)).fetchone()[0]
    finally:
        db.close()
    ch = fx["changes"]
    assert first == len(fx["m1"]) - 1
    # new rows: the added and modified files, plus directories whose times changed
    assert len(ch["added"]) + len(ch["modified"]) <= second < 100
    # block rows: those in the ~10 of 52 one-MiB chunks of $MFT stored anew (of 3,331)
    assert blocks < 700


def _info(ref, kind, parent, name, size=0):
    return FileInfo(ref, 1, kind, ((parent, 0, name),), size, 0, 0, 0, 0, 0, 0, 0, None,
                    bytes(16))


def test_renamed_directory_moves_what_is_below_it(tmp_path):
    """Only the renamed directory's record changes; the rows below it get new paths."""
    db = dbm.connect(str(tmp_path / "index.sqlite"), write=True)
    db.execute("INSERT INTO volumes (vm, name) VALUES ('vm', 'v')")
    states = [
        {20: _info(20, "dir", 5, "a"), 21: _info(21, "dir", 20, "b"), 22: _info(22, "file", 21, "f", 7)},
        {20: _info(20, "dir", 5, "z")},
        {21: None, 22: None},
    ]
    for seq, changed in enumerate(states, 1):
        w = VolumeWriter(db, Ids(db), 1, seq)
        db.execute("BEGIN")
        w.apply(ChangeSet({0: bytes([seq])}, changed), w.old_hashes())
        db.execute("INSERT INTO volume_rps (volume_id, seq, rp_id, entries, orphans)"
                       " VALUES (1, ?, ?, ?, ?)", (seq, seq, w.count, w.orphans))
        db.execute("COMMIT")
    rows = db.execute("SELECT d.path || '/' || n.name, e.first, e.last FROM entries e"
                      " JOIN dirs d ON d.id = e.dir_id JOIN names n ON n.id = e.name_id"
                      " ORDER BY e.first, 1").fetchall()
    assert rows == [("/a", 1, 1), ("/a/b", 1, 1), ("/a/b/f", 1, 1),
                    ("/z", 2, dbm.OPEN), ("/z/b", 2, 2), ("/z/b/f", 2, 2)]
    db.close()


def test_cli_find_history_index(small_fixtures, tmp_path, fx):
    """``rpfs backup`` indexes (unless --no-index); ``rpfs index`` catches up."""
    s1, s2 = small_fixtures.vm_states
    r = tmp_path / "r"
    rpfs("init", r)
    rpfs("backup", r, s1, "--time", RP1, "--no-index")
    out = rpfs("backup", r, s2, "--time", RP2, "--json")
    assert json.loads(out.stdout)["index"].startswith("indexed 6 volumes")
    path = "/Users/alice/Documents/notes.txt"
    h = rpfs("history", r, f"/{fx['vm']}/latest/volumes/{VOL}{path}")
    assert "1 of 2 recovery points are not indexed" in h.stderr.decode()
    rpfs("index", r)
    found = rpfs("find", r, "NOTES.TXT", "--json")
    assert found.stderr == b""
    hits = [json.loads(line) for line in found.stdout.decode().splitlines()]
    assert {h["recovery_point"] for h in hits if h["path"] == path} == {RP1, RP2}
    assert set(hits[0]) == {"vm", "recovery_point", "volume", "path", "size", "modified", "type"}
    text = rpfs("find", r, "notes.txt").stdout.decode().splitlines()
    assert f"/{fx['vm']}/{RP1}/volumes/{VOL}{path}" in text
    h = json.loads(rpfs("history", r, f"/{fx['vm']}/latest/volumes/{VOL}{path}", "--json").stdout)
    assert [v["recovery_points"] for v in h] == [[RP1], [RP2]]
    bad = rpfs("history", r, "/nope", check=False)
    assert bad.returncode == 2 and bad.stderr.decode().count("\n") == 1


@pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no /dev/fuse")
def test_versions_view_in_a_mount(repo, fx, tmp_path):
    mp = tmp_path / "mnt"
    mp.mkdir()
    rpfs("mount", repo, mp)
    try:
        vm = mp / fx["vm"]
        assert ".versions" in os.listdir(vm)
        assert VOL in os.listdir(vm / ".versions")
        ch = fx["changes"]
        for path in ch["modified"] + ch["added"][:2] + ["/Users/bob/Downloads/setup.exe"]:
            d = vm / ".versions" / VOL / path.lstrip("/")
            want = {}
            for rp, m in ((RP1, fx["m1"]), (RP2, fx["m2"])):
                e = m.get(path)
                if e and e["sha256"] not in want.values():
                    want[rp] = e["sha256"]
            assert sorted(os.listdir(d)) == sorted(want), path
            for rp, sha in want.items():
                assert hashlib.sha256((d / rp).read_bytes()).hexdigest() == sha, (path, rp)
        assert "Legacy" in os.listdir(vm / ".versions" / VOL / "Program Files (x86)")
    finally:
        rpfs("umount", mp, check=False)


def _index_states(path, images):
    """Index the volume images as consecutive states of one volume; the open rows."""
    from ntfs_reader import Volume
    from streams.errors import RpfsError
    from rpfs.index.build import _index_volume
    from streams.stream import BytesStream

    db = dbm.connect(str(path), write=True)
    db.execute("INSERT INTO volumes (vm, name) VALUES ('vm', 'v')")
    for seq, data in enumerate(images, 1):
        db.execute("BEGIN")
        try:
            w, _ = _index_volume(db, Ids(db), 1, seq, Volume(BytesStream(data)))
        except RpfsError:
            db.execute("ROLLBACK")
            continue
        db.execute("INSERT INTO volume_rps VALUES (1, ?, ?, ?, ?)", (seq, seq, w.count, w.orphans))
        db.execute("COMMIT")
    rows = db.execute("SELECT d.path || '/' || n.name, e.size, e.kind FROM entries e"
                      " JOIN dirs d ON d.id = e.dir_id JOIN names n ON n.id = e.name_id"
                      " WHERE e.last = ? ORDER BY 1", (dbm.OPEN,)).fetchall()
    db.close()
    return rows


def test_damaged_mft_is_skipped_record_by_record(small_fixtures, tmp_path):
    """Random bytes in $MFT: records that do not parse are left out, nothing else fails,
    and the next (undamaged) state is indexed right on top of the damaged one."""
    import random

    from ntfs_reader import Volume
    from streams.stream import BytesStream

    img = small_fixtures.volumes["bare-p0"].image.read_bytes()
    vol = Volume(BytesStream(img))
    mft = vol.boot.mft_lcn * vol.cluster_size
    want = _index_states(tmp_path / "good.sqlite", [img])
    assert len(want) == len(small_fixtures.volumes["bare-p0"].manifest["entries"]) - 1
    # a directory whose record is unreadable: everything below it has no path (and no
    # row) until it is readable again, though their own blocks never change
    at = mft + vol.lookup("/docs").ref * vol.record_size
    bad = bytearray(img)
    bad[at:at + 4] = b"XXXX"
    got = _index_states(tmp_path / "dir.sqlite", [bytes(bad), img])
    assert got == want
    for seed in range(8):
        r = random.Random(seed)
        bad = bytearray(img)
        for _ in range(r.randint(1, 60)):
            bad[mft + r.randrange(64 << 10)] = r.randrange(256)
        assert _index_states(tmp_path / f"{seed}.sqlite", [bytes(bad), img]) == want, seed


def test_pruned_recovery_points_leave_the_index(small_fixtures, tmp_path, fx):
    """After a prune, `rpfs index` drops rows only pruned recovery points used; the next
    recovery point is still indexed incrementally and answers like the manifest."""
    from rpfs.store.maintenance.prune import Policy, prune

    s1, s2 = small_fixtures.vm_states
    times = ["2024-05-01T00:00:00Z", "2024-05-02T00:00:00Z", "2024-05-03T00:00:00Z"]
    with Repository.init(tmp_path / "r") as repo:
        for state, t in zip((s1, s2, s1), times):
            backup(repo, [str(state)], time=t, show_progress=False)
        update_index(repo)
        prune(repo, Policy(last=1))
        update_index(repo)
        backup(repo, [str(s2)], time="2024-05-04T00:00:00Z", show_progress=False)
        r = update_index(repo)
        assert r["indexed"] == 1 and r["changed_records"] < 1000
        # only the 1 MiB pieces of system-p3's $MFT stored in new chunks are read (of 52 MiB)
        assert 0 < r["mft_bytes_read"] <= 12 << 20
    with open_source(tmp_path / "r") as tree:
        found = list(find_entries(tree, "**"))
        assert {h["recovery_point"] for h in found} == {"2024-05-03T000000Z", "2024-05-04T000000Z"}
        got = {p: (h["type"], h["size"]) for p, h in _paths(found, "2024-05-04T000000Z").items()}
        assert got == _manifest_view(fx["m2"])
        h = file_history(tree, f"/{fx['vm']}/latest/volumes/{VOL}/Users/bob/Downloads/setup.exe")
        assert [v["recovery_points"] for v in h["versions"]] == [["2024-05-03T000000Z"]]
        assert h["absent"] == ["2024-05-04T000000Z"]
    db = dbm.connect(str(tmp_path / "r" / dbm.INDEX_NAME))
    try:
        assert db.execute("SELECT count(*) FROM rps").fetchone()[0] == 2
        # rows only the pruned first two had are gone (the deleted files of state 2 are
        # in the third, state 1 again)
        assert db.execute("SELECT count(*) FROM entries WHERE last < 3").fetchone()[0] == 0
    finally:
        db.close()
