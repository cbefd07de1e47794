"""Differencing chains: linking by relative path, file name and identity; branches; errors."""

from __future__ import annotations

import os
import random
import uuid
from pathlib import Path

import pytest

from formats import open_image, open_path, resolve_chains
from formats.chain import resolve_all
from formats.vhd_writer import write_vhd
from streams.errors import ChainError, FormatError
from streams.stream import BytesStream, FileStream

SIZE = 4 << 20
BLOCK = 512 << 10


def _content(seed: int, base: bytes | None = None, edits: int = 8) -> bytes:
    rnd = random.Random(seed)
    data = bytearray(base if base is not None else bytes(SIZE))
    for _ in range(edits):
        at = rnd.randrange(0, SIZE - 30000)
        n = rnd.randrange(1, 30000)
        data[at : at + n] = rnd.randbytes(n)
    return bytes(data)


def _vhd(path: Path, content: bytes, parent: Path | None = None, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_vhd(BytesStream(content), path, parent=parent, block_size=BLOCK, **kw)
    return path


def _files(root: Path) -> dict[str, FileStream]:
    out = {}
    for dirpath, _, names in os.walk(root):
        for n in names:
            full = Path(dirpath) / n
            out[full.relative_to(root).as_posix()] = FileStream(full)
    return out


@pytest.fixture
def linear(tmp_path):
    """base.vhd <- snap1.avhd <- snap2.avhd, with the contents each level reads as."""
    c0 = _content(1)
    c1 = _content(2, c0)
    c2 = _content(3, c1)
    _vhd(tmp_path / "base.vhd", c0)
    _vhd(tmp_path / "snap1.avhd", c1, tmp_path / "base.vhd")
    _vhd(tmp_path / "snap2.avhd", c2, tmp_path / "snap1.avhd")
    (tmp_path / "base.vhd.mrt").write_bytes(b"not a disk")
    (tmp_path / "base.vhd.rct").write_bytes(b"not a disk")
    (tmp_path / "config.xml").write_text("<vm/>")
    return tmp_path, (c0, c1, c2)


def test_linear_chain_keyed_by_base_stem(linear):
    root, (c0, c1, c2) = linear
    disks = resolve_chains(_files(root))
    assert list(disks) == ["base"]
    leaf = disks["base"]
    assert leaf.read(0, SIZE) == c2
    assert [d.read(0, SIZE) for d in leaf.chain] == [c2, c1, c0]
    assert open_path(root)["base"].read(0, SIZE) == c2
    # one file: that file's own view, keyed by its base
    assert {k: v.read(0, SIZE) for k, v in open_path(root / "snap1.avhd").items()} == \
        {"base": c1}


def test_parent_in_other_folder_by_relative_path_case_insensitive(tmp_path):
    c0, c1 = _content(1), _content(2, _content(1))
    _vhd(tmp_path / "Virtual Hard Disks" / "Base.vhd", c0)
    _vhd(tmp_path / "Snapshots" / "child.avhd", c1, tmp_path / "Virtual Hard Disks" / "Base.vhd",
         parent_locators=[("W2ku", "C:\\Hyper-V\\VM\\Virtual Hard Disks\\Base.vhd"),
                          ("W2ru", "..\\VIRTUAL HARD DISKS\\BASE.VHD")])
    # a decoy with the same name elsewhere: the relative path must win over the name
    _vhd(tmp_path / "Other" / "Base.vhd", c0)
    res = resolve_all(_files(tmp_path))
    child = res.opened["Snapshots/child.avhd"]
    assert res.paths[id(child.parent)] == "Virtual Hard Disks/Base.vhd"
    assert child.read(0, SIZE) == c1
    # both bases share the stem "Base": keys stay unique and say which is which
    assert sorted(res.disks) == ["Other_Base.vhd", "Virtual Hard Disks_Base.vhd"]
    # a file opened directly finds its parent along the relative locator
    assert open_path(tmp_path / "Snapshots" / "child.avhd")["Base"].read(0, SIZE) == c1


def test_parent_by_file_name_then_identity(tmp_path):
    c0, c1 = _content(1), _content(2, _content(1))
    _vhd(tmp_path / "disk.vhd", c0)
    _vhd(tmp_path / "kid.avhd", c1, tmp_path / "disk.vhd",
         parent_locators=[("W2ku", "D:\\gone\\disk.vhd"), ("W2ru", ".\\nowhere\\disk.vhd")])
    disks = resolve_chains(_files(tmp_path))
    assert disks["disk"].read(0, SIZE) == c1
    # renamed parent: neither path nor name fits, the identity does
    os.rename(tmp_path / "disk.vhd", tmp_path / "renamed.vhd")
    disks = resolve_chains(_files(tmp_path))
    assert list(disks) == ["renamed"] and disks["renamed"].read(0, SIZE) == c1


def test_mismatched_parent_names_both_files(tmp_path):
    c0, c1 = _content(1), _content(2, _content(1))
    _vhd(tmp_path / "disk.vhd", c0)
    _vhd(tmp_path / "kid.avhd", c1, tmp_path / "disk.vhd")
    _vhd(tmp_path / "disk.vhd", c0)  # rebuilt: same name, new unique id
    with pytest.raises(ChainError) as e:
        resolve_chains(_files(tmp_path))
    assert "kid.avhd" in str(e.value) and "disk.vhd" in str(e.value)
    assert "identity" in str(e.value)


def test_missing_parent(tmp_path):
    c0, c1 = _content(1), _content(2, _content(1))
    _vhd(tmp_path / "disk.vhd", c0)
    _vhd(tmp_path / "kid.avhd", c1, tmp_path / "disk.vhd")
    os.unlink(tmp_path / "disk.vhd")
    with pytest.raises(ChainError, match="kid.avhd.*not found"):
        resolve_chains(_files(tmp_path))
    res = resolve_all(_files(tmp_path))
    assert set(res.errors) == {"kid.avhd"} and not res.disks


def test_branched_checkpoints_pick_deepest(tmp_path):
    c0 = _content(1)
    a1 = _content(2, c0)
    a2 = _content(3, a1)
    b1 = _content(4, c0)
    _vhd(tmp_path / "base.vhd", c0)
    _vhd(tmp_path / "a1.avhd", a1, tmp_path / "base.vhd")
    _vhd(tmp_path / "a2.avhd", a2, tmp_path / "a1.avhd")
    _vhd(tmp_path / "z1.avhd", b1, tmp_path / "base.vhd")
    res = resolve_all(_files(tmp_path))
    assert res.disks["base"].read(0, SIZE) == a2
    assert sorted(res.paths[id(d)] for d in res.leaves["base"]) == ["a2.avhd", "z1.avhd"]
    assert res.leaves["base"][0] is res.disks["base"]


def test_cycle_is_a_chain_error(tmp_path):
    c0 = _content(1)
    _vhd(tmp_path / "x.vhd", c0)
    ida, idb = uuid.uuid4(), uuid.uuid4()
    _vhd(tmp_path / "a.avhd", _content(2, c0), tmp_path / "x.vhd", unique_id=ida)
    _vhd(tmp_path / "b.avhd", _content(3, c0), tmp_path / "a.avhd", unique_id=idb)
    # rewrite a as a child of b, keeping its identity: a -> b -> a
    _vhd(tmp_path / "a2.avhd", _content(2, c0), tmp_path / "b.avhd", unique_id=ida)
    os.replace(tmp_path / "a2.avhd", tmp_path / "a.avhd")
    os.unlink(tmp_path / "x.vhd")
    with pytest.raises(ChainError, match="loops"):
        resolve_chains(_files(tmp_path))


def test_damaged_file_does_not_hide_the_others(linear):
    root, (c0, c1, c2) = linear
    (root / "broken.vhdx").write_bytes(b"vhdxfile" + bytes(100))
    (root / "other.vhd").write_bytes(b"garbage" * 100 + b"conectix" + bytes(504))
    res = resolve_all(_files(root))
    assert set(res.errors) == {"broken.vhdx", "other.vhd"}
    assert all(isinstance(e, FormatError) for e in res.errors.values())
    assert res.disks["base"].read(0, SIZE) == c2
    with pytest.raises(FormatError):
        resolve_chains(_files(root))


def test_raw_images_and_in_memory_streams():
    files = {"vm/disk0.raw": BytesStream(b"\1" * 4096), "vm/disk1.img": BytesStream(bytes(512)),
             "vm/notes.txt": BytesStream(b"hi")}
    disks = resolve_chains(files)
    assert sorted(disks) == ["disk0", "disk1"]
    assert disks["disk0"].format == "raw" and disks["disk0"].read(0, 2) == b"\1\1"


def test_vhdx_chain_resolves(tmp_path):
    from formats import vhdx
    c0 = _content(1)
    c1 = _content(2, c0)
    c2 = _content(3, c1)
    vhdx.write_vhdx(BytesStream(c0), tmp_path / "disk.vhdx", block_size=1 << 20)
    parent = open_image(FileStream(tmp_path / "disk.vhdx"))
    vhdx.write_vhdx(BytesStream(c1), tmp_path / "disk_1.avhdx", block_size=1 << 20,
                    parent=parent, parent_path=str(tmp_path / "disk.vhdx"))
    (mid,) = open_path(tmp_path / "disk_1.avhdx").values()
    vhdx.write_vhdx(BytesStream(c2), tmp_path / "disk_2.avhdx", block_size=1 << 20,
                    parent=mid, parent_path=str(tmp_path / "disk_1.avhdx"))
    disks = resolve_chains(_files(tmp_path))
    assert list(disks) == ["disk"]
    assert [d.format for d in disks["disk"].chain] == ["vhdx"] * 3
    assert disks["disk"].read(0, SIZE) == c2
    # renamed middle file: found by identity (DataWriteGuid)
    os.rename(tmp_path / "disk_1.avhdx", tmp_path / "renamed.avhdx")
    assert resolve_chains(_files(tmp_path))["disk"].read(0, SIZE) == c2


def test_no_locators_parent_found_by_unicode_name(tmp_path):
    c0, c1 = _content(1), _content(2, _content(1))
    _vhd(tmp_path / "Dísk ü.vhd", c0)
    _vhd(tmp_path / "kid.avhd", c1, tmp_path / "Dísk ü.vhd", parent_locators=[])
    kid = open_image(FileStream(tmp_path / "kid.avhd"))
    assert kid.parent_ref.paths == ("Dísk ü.vhd",)
    assert resolve_chains(_files(tmp_path))["Dísk ü"].read(0, SIZE) == c1


def test_errors_dict_keeps_good_chains_and_keys_broken_ones(linear):
    root, (c0, c1, c2) = linear
    # an orphaned Hyper-V style checkpoint of a base that is not in the set
    orphan_base = root / "elsewhere" / "web.vhd"
    _vhd(orphan_base, c0)
    _vhd(root / "web_0A1B2C3D-0000-4000-8000-00000000000A.avhd", c1, orphan_base)
    os.unlink(orphan_base)
    (root / "bad.vhd").write_bytes(b"junk" * 200 + b"conectix" + bytes(504))
    errors = {}
    disks = resolve_chains(_files(root), errors=errors)
    assert disks["base"].read(0, SIZE) == c2
    assert sorted(errors) == ["bad", "web"]
    assert isinstance(errors["web"], ChainError) and isinstance(errors["bad"], FormatError)


from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

_LOCATOR_TEXT = st.one_of(
    st.text(max_size=80),
    st.sampled_from(["..", "../..", "\\\\?\\C:\\x.vhd", "C:", "\\\\server\\share\\", "/",
                     ".\\", "..\\..\\..\\..\\etc\\passwd", "a/../../b.vhd", "\0\0", "x.vhd\0y"]))


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(locators=st.lists(st.tuples(st.sampled_from(["W2ru", "W2ku", "Wi2r", "MacX", "zzzz"]),
                                   _LOCATOR_TEXT), max_size=4))
def test_hostile_locators_give_chain_errors_or_a_parent(tmp_path_factory, locators):
    root = tmp_path_factory.mktemp("loc")
    c0 = bytes(1 << 20)
    _vhd(root / "p.vhd", c0)
    _vhd(root / "k.avhd", b"\1" + c0[1:], root / "p.vhd", parent_locators=locators)
    try:
        disks = resolve_chains(_files(root))
    except ChainError:
        return
    # found by a path, the name or the identity: it must be the real parent
    assert disks["p"].read(0, 2) == b"\1\0"


def test_bases_sharing_a_stem_get_distinct_keys(tmp_path):
    c0 = _content(1)
    _vhd(tmp_path / "disk.vhd", c0)
    files = _files(tmp_path)
    files["disk.raw"] = BytesStream(b"\2" * 4096)
    disks = resolve_chains(files)
    assert sorted(disks) == ["disk.raw", "disk.vhd"]
    assert disks["disk.vhd"].read(0, SIZE) == c0
