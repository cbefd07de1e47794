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
