"""Simple ``rpfs restore`` command lines read without argparse.

Building the restore command's parser and parsing with it cost about 20 M instructions
(argparse's help formatter imports shutil with bz2, lzma and locale), a few per cent of
restoring 4,000 small files. A command line made only of the command, its three operands
and its on/off switches is read here into the same attributes argparse would give; any other
(an option with a value, an abbreviation, ``--help``, ``--``, a missing or extra operand, an
operand that starts with ``-``) returns None and goes to argparse, so every usage line and
error stays argparse's own. tests/test_cli.py checks both against each other.
"""

from __future__ import annotations

from types import SimpleNamespace

# restore's switches (rpfs/cli/browse.py) -> attribute
RESTORE_SWITCHES = {"--xattrs": "xattrs", "--devices": "devices", "--overwrite": "overwrite",
                    "--dry-run": "dry_run", "--json": "json"}
# the options with a value every command has, left at their defaults here
RESTORE_DEFAULTS = {"keys": None, "limit_rate": None, "s3_endpoint": None, "cache_dir": None,
                    "cache_size": None, "verbose": False}


def restore_args(argv: list[str]) -> SimpleNamespace | None:
    """The parsed ``rpfs restore SOURCE PATH DEST [switches]``, or None: argparse's to read."""
    if not argv or argv[0] != "restore":
        return None
    args = SimpleNamespace(command="restore", **dict.fromkeys(RESTORE_SWITCHES.values(), False),
                           **RESTORE_DEFAULTS)
    operands = []
    for a in argv[1:]:
        if a.startswith("-"):
            name = RESTORE_SWITCHES.get(a)
            if name is None:
                return None
            setattr(args, name, True)
        else:
            operands.append(a)
    if len(operands) != 3:
        return None
    args.source, args.path, args.dest = operands
    from rpfs.cli.browse import cmd_restore

    args.func = cmd_restore
    return args
