"""streams.builds: an extension built before its .c file last changed is named once, on
stderr; an installed one (site-packages) costs no system call."""

import os
import types

import pytest

from streams import builds


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    monkeypatch.setattr(builds, "_warned", False)


def _module(tmp_path, where="pkg", age=0):
    d = tmp_path / where
    d.mkdir(parents=True)
    so = d / "_thing.cpython-311-x86_64-linux-gnu.so"
    so.write_bytes(b"")
    (d / "_thing.c").write_text("/* */")
    os.utime(so, (1_700_000_000 + age, 1_700_000_000 + age))
    os.utime(d / "_thing.c", (1_700_000_000, 1_700_000_000))
    return types.SimpleNamespace(__name__="pkg._thing", __file__=str(so))


def test_an_old_build_is_named_once(tmp_path, capsys):
    m = _module(tmp_path, age=-60)
    assert builds.check(m) is True
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "_thing.c is newer than its build" in err
    assert "tools/setup.sh" in err
    assert builds.check(_module(tmp_path, "other", age=-60)) is False   # once per process
    assert capsys.readouterr().err == ""


def test_a_fresh_build_says_nothing(tmp_path, capsys):
    assert builds.check(_module(tmp_path, age=60)) is False
    assert capsys.readouterr().err == ""


def test_an_installed_module_costs_no_system_call(tmp_path, capsys, monkeypatch):
    m = _module(tmp_path, "lib/python3.11/site-packages/pkg", age=-60)
    calls = []
    monkeypatch.setattr(builds.os, "stat", lambda *a, **k: calls.append(a))
    assert builds.check(m) is False and calls == []
    assert capsys.readouterr().err == ""


def test_no_source_beside_it_is_not_a_checkout(tmp_path, capsys):
    m = _module(tmp_path, age=-60)
    os.unlink(os.path.join(os.path.dirname(m.__file__), "_thing.c"))
    assert builds.check(m) is False
    assert capsys.readouterr().err == ""


def test_every_optional_extension_is_checked_where_it_is_imported(monkeypatch):
    """Each import site hands its extension to check (a site without it would fall back
    silently again)."""
    import importlib
    import sys
    seen = []
    monkeypatch.setattr(builds, "check", lambda m: seen.append(m.__name__) or False)
    names = ["ntfs_reader.lznt1", "ntfs_reader.xpress", "streams.crc32c",
             "formats.bitlocker.fvecrypt", "rpfs.restore", "rpfs.store.zstd"]
    saved = {n: sys.modules.pop(n) for n in names if n in sys.modules}
    try:
        for n in names:
            importlib.import_module(n)
        import ntfs_reader
        from ntfs_reader import native
        native.load(ntfs_reader.record.Attribute, ntfs_reader.MftRecord,
                    ntfs_reader.IndexEntry, ntfs_reader.FileName, ntfs_reader.Times)
    finally:
        for n in names:
            sys.modules.pop(n, None)
        sys.modules.update(saved)
    assert set(seen) == set(["ntfs_reader._lznt1", "ntfs_reader._wofdecomp",
                                   "streams._crc32c", "formats.bitlocker._fvecrypt",
                                   "rpfs._writeout", "ntfs_reader._ntfsparse",
                                   "rpfs.store._zstd"]), seen
