"""The rpfs command on a VM folder: one name per line, JSON, one-line errors."""

import json
import subprocess
import sys

import pytest


def rpfs(*args):
    return subprocess.run([sys.executable, "-m", "rpfs", *map(str, args)], capture_output=True)


@pytest.fixture
def vm(tmp_path):
    root = tmp_path / "web01"
    (root / "Virtual Machines").mkdir(parents=True)
    (root / "Virtual Machines" / "A.vmcx").write_bytes(b"config")
    (root / "notes.txt").write_bytes(b"hello\n")
    return root


def test_ls_plain_long_and_json(vm):
    r = rpfs("ls", vm, "/files")
    assert r.returncode == 0 and r.stdout.decode().splitlines() == ["Virtual Machines", "notes.txt"]
    r = rpfs("ls", "-l", vm, "/files")
    assert r.stdout.decode().splitlines()[1].startswith("-r--r--r--")
    items = json.loads(rpfs("ls", "--json", vm, "/files/Virtual Machines").stdout)
    assert items[0]["name"] == "A.vmcx" and items[0]["size"] == 6 and items[0]["type"] == "file"


def test_cat_and_errors(vm):
    assert rpfs("cat", vm, "/files/notes.txt").stdout == b"hello\n"
    r = rpfs("cat", vm, "/files/missing.txt")
    assert r.returncode == 2 and r.stderr.decode() == "rpfs: missing.txt: no such file or directory\n"
    r = rpfs("cat", vm, "/files")
    assert r.returncode != 0 and len(r.stderr.decode().splitlines()) == 1
    r = rpfs("ls", vm / "nope", "/")
    assert r.returncode == 2 and len(r.stderr.decode().splitlines()) == 1


def test_restore_and_export_vm(vm, tmp_path):
    r = rpfs("restore", vm, "/files/notes.txt", tmp_path / "out")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out" / "notes.txt").read_bytes() == b"hello\n"
    r = rpfs("export-vm", vm, "/", tmp_path / "copy")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "copy" / "Virtual Machines" / "A.vmcx").read_bytes() == b"config"


def restore_as_own_process(*args):
    """``rpfs restore ARGS`` in a process of its own, as the console script runs it, with an
    atexit handler that says whether the interpreter's teardown ran."""
    code = ("import atexit, sys\n"
            "atexit.register(lambda: sys.stderr.write('teardown ran\\n'))\n"
            f"sys.argv = ['rpfs', 'restore', *{[str(a) for a in args]!r}]\n"
            "from rpfs.cli import main\n"
            "raise SystemExit(main())\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True)


def test_a_restore_ends_its_own_process_without_the_teardown_and_says_everything(vm, tmp_path):
    """rpfs.cli.end_of_command: the restore's process ends by os._exit once its output is
    flushed (the teardown frees every module and object and writes nothing: ~2 ms), with its
    exit code, its whole JSON and its errors; in a caller's process (main with a command
    line) it returns."""
    r = restore_as_own_process("--json", vm, "/files/notes.txt", tmp_path / "out")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["files"] == 1
    assert b"teardown ran" not in r.stderr
    assert (tmp_path / "out" / "notes.txt").read_bytes() == b"hello\n"
    r = restore_as_own_process(vm, "/files/notes.txt", tmp_path / "out")   # exists: an error
    assert r.returncode == 1
    assert r.stderr.decode().splitlines()[-2:] == [
        f"rpfs: {tmp_path}/out/notes.txt: exists (use --overwrite)",
        "restored 0 files (0 B), 0 directories, 0 symlinks, 0 hard links; 1 errors"]
    from rpfs.cli import main   # a caller's own process is not ended
    assert main(["restore", str(vm), "/files/notes.txt", str(tmp_path / "again")]) == 0
    assert (tmp_path / "again" / "notes.txt").read_bytes() == b"hello\n"


def test_command_owners_table_matches_the_modules():
    """``rpfs X`` imports only COMMAND_OWNERS[X]: that module must register X, and every
    registered command must be in the table (else it would only parse as ``rpfs --help``)."""
    import argparse
    import importlib

    from rpfs import cli

    registered = {}
    for name in cli.COMMAND_MODULES:
        sub = argparse.ArgumentParser().add_subparsers()
        importlib.import_module(name).register(sub)
        registered.update({command: name for command in sub.choices})
    assert registered == cli.COMMAND_OWNERS
    parser = cli.build_parser(["-v", "restore", "R", "/a", "D"])
    args = parser.parse_args(["-v", "restore", "R", "/a", "D"])
    assert args.command == "restore" and args.verbose
    assert cli.command_of(["--help"]) is None


def _argparse_reads(argv: list[str]) -> dict | None:
    """What the full parser makes of ``argv`` (its namespace as a dict), None where it exits."""
    import contextlib
    import io

    from rpfs import cli

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            return vars(cli.build_parser(argv).parse_args(argv))
        except SystemExit:
            return None


QUICK_LINES = [
    ["restore", "R", "/vm/latest/volumes/x", "D"],
    ["restore", "R", "/p", "D", "--overwrite", "--json"],
    ["restore", "--xattrs", "--devices", "R", "/p", "D", "--dry-run"],
    ["restore", "R", "", "D d"],
    # argparse's to read: values, abbreviations, help, "--", operands missing or extra
    ["restore", "R", "/p", "D", "--limit-rate", "1M"], ["restore", "R", "/p", "D", "--keys=K"],
    ["restore", "R", "/p", "D", "--over"], ["restore", "--help"], ["restore", "R", "/p"],
    ["restore", "R", "/p", "D", "E"], ["restore", "--", "-R", "/p", "D"], ["-v", "restore", "R", "/p", "D"],
    ["restore", "R", "-", "D"], ["ls", "R", "/"], [],
]

MOUNT_LINES = [
    ["mount", "R", "M"], ["mount", "-f", "R", "M"], ["mount", "R", "M", "--foreground"],
    ["mount", "--allow-other", "R", "M", "--debug-fuse"],
    # argparse's to read
    ["mount", "R", "M", "--keys", "K"], ["mount", "R"], ["mount", "R", "M", "X"],
    ["mount", "--fore", "R", "M"], ["mount", "-fv", "R", "M"], ["mount", "R", "M", "-v"],
    ["-v", "mount", "R", "M"], ["mount", "--help"], ["mount", "R", "M", "--cache-size", "1G"],
]


@pytest.mark.parametrize("argv", MOUNT_LINES, ids=" ".join)
def test_a_simple_mount_line_is_read_as_argparse_reads_it(argv):
    """``rpfs mount SOURCE MOUNTPOINT`` with switches builds no parser either (importing and
    using argparse was ~8% of a mount's way to its first listing); anything else is
    argparse's."""
    from rpfs.cli.mount import cmd_mount
    from rpfs.cli.quick import mount_args

    quick, full = mount_args(argv), _argparse_reads(argv)
    if quick is not None:
        assert full is not None and vars(quick) == full
        assert quick.func is cmd_mount
    else:
        assert argv[:1] != ["mount"] or full is None or len(argv) != 3 or any(
            a not in ("-f", "--foreground", "--allow-other", "--debug-fuse")
            for a in argv[1:] if a.startswith("-"))
    assert (quick is not None) == (argv in MOUNT_LINES[:4])


EXPORT_LINES = [
    ["export", "R", "/vm/latest/disks/d.raw", "D"], ["export", "R", "/p", "D", "--format", "raw"],
    ["export", "--force", "R", "/p", "D", "--json", "--fixed", "--format", "vhd"],
    ["export", "R", "--format", "vhdx", "/p", "D", "--format", "raw"],
    # argparse's to read
    ["export", "R", "/p", "D", "--format", "qcow2"], ["export", "R", "/p", "D", "--format"],
    ["export", "R", "/p", "D", "--format=raw"], ["export", "R", "/p", "D", "--form", "raw"],
    ["export", "R", "/p", "D", "--block-size", "2M"], ["export", "R", "/p"],
    ["export", "R", "/p", "D", "E"], ["-v", "export", "R", "/p", "D"], ["export", "--help"],
    ["export", "R", "/p", "D", "--keys", "K"], ["export-vm", "R", "/p", "D"],
]


@pytest.mark.parametrize("argv", EXPORT_LINES, ids=" ".join)
def test_a_simple_export_line_is_read_as_argparse_reads_it(argv):
    """``rpfs export SOURCE PATH DEST`` with switches and ``--format NAME`` builds no parser
    (building it and parsing were 85 M instructions of an export's start); anything else
    is argparse's, with its usage lines and errors."""
    from rpfs.cli.export import cmd_export
    from rpfs.cli.quick import export_args

    quick, full = export_args(argv), _argparse_reads(argv)
    if quick is not None:
        assert full is not None and vars(quick) == full
        assert quick.func is cmd_export
    assert (quick is not None) == (argv in EXPORT_LINES[:4])


@pytest.mark.parametrize("argv", QUICK_LINES, ids=" ".join)
def test_a_simple_restore_line_is_read_as_argparse_reads_it(argv, monkeypatch):
    """``rpfs restore`` builds no parser for a line of operands and switches (argparse and
    its help formatter's imports were ~20 M instructions of a restore); what it reads is what
    argparse reads, and every other line is left to argparse (its usage lines and errors)."""
    from rpfs.cli.browse import cmd_restore
    from rpfs.cli.quick import restore_args

    quick, full = restore_args(argv), _argparse_reads(argv)
    if quick is not None:
        assert full is not None and vars(quick) == full
        assert quick.func is cmd_restore
    else:
        assert argv[:1] != ["restore"] or full is None or any(a.startswith("-") for a in argv) \
            or len(argv) != 4


def test_restore_builds_no_parser_for_a_simple_line(tmp_path, monkeypatch, capsys):
    """The whole command, parser not built: the same one-line error as through argparse."""
    from rpfs import cli

    line = ["restore", str(tmp_path / "nope"), "/p", str(tmp_path / "out")]
    monkeypatch.setattr("rpfs.cli.quick.restore_args", lambda argv: None)   # through argparse
    expected = cli.main(line), capsys.readouterr().err
    monkeypatch.undo()
    built = []
    real = cli.build_parser
    monkeypatch.setattr(cli, "build_parser", lambda argv=None: built.append(argv) or real(argv))
    assert (cli.main(line), capsys.readouterr().err) == expected
    assert expected[0] == 2 and expected[1].startswith("rpfs: ") and expected[1].count("\n") == 1
    assert built == []
    assert cli.main(line + ["--limit-rate", "1M"]) == 2 and len(built) == 1   # argparse's line
    import gc
    assert gc.get_freeze_count() == 0   # called by a program (this test): its gc left alone
