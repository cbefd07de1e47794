"""Commands about change between recovery points: ``diff``, ``scan``, ``last-clean``."""

from __future__ import annotations

import sys

from rpfs.cli import jsonout
from rpfs.cli.browse import SOURCE_HELP, _out, add_keys_option, load_keys, open_tree

MARKS = {"added": "+", "removed": "-", "modified": "M", "metadata": "m", "renamed": "R"}


def register(sub) -> None:
    p = sub.add_parser("diff", help="what changed between two recovery points of one VM")
    p.add_argument("source", help="a repository")
    p.add_argument("rp_a", metavar="/VM/RP_A")
    p.add_argument("rp_b", metavar="/VM/RP_B")
    p.add_argument("path", nargs="?", metavar="PATH",
                   help="only below this path inside the volumes (or volumes/<volume>/<path>)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    add_keys_option(p)
    p.set_defaults(func=cmd_diff)

    p = sub.add_parser("scan", help="look for ransomware-like change in a recovery point"
                                    " (against the one before it)")
    p.add_argument("source", help="a repository")
    p.add_argument("rp", metavar="/VM/RP")
    p.add_argument("--json", action="store_true")
    add_keys_option(p)
    p.set_defaults(func=cmd_scan)

    p = sub.add_parser("last-clean", help="the newest recovery point before the first"
                                          " suspicious one")
    p.add_argument("source", help="a repository")
    p.add_argument("vm")
    p.add_argument("--json", action="store_true")
    add_keys_option(p)
    p.set_defaults(func=cmd_last_clean)


def _notice(text: str) -> None:
    print(f"rpfs: {text}", file=sys.stderr)


def cmd_diff(args) -> int:
    from rpfs.index.background import ensure_for, vm_of
    from rpfs.index.diff import diff

    with open_tree(args) as tree:
        ensure_for(tree, vm_of(args.rp_a), notice=_notice, keys=load_keys(args))
        for c in diff(tree, args.rp_a, args.rp_b, args.path, notice=_notice):
            if args.json:
                sys.stdout.write(jsonout.dumps(c.as_dict()) + "\n")
            elif c.change == "renamed":
                _out(f"R {c.volume}{c.old_path} -> {c.path}")
            else:
                _out(f"{MARKS[c.change]} {c.volume}{c.path}")
    return 0


def cmd_scan(args) -> int:
    from rpfs.analysis import scan_and_store
    from rpfs.index.diff import parse_rp_path

    with open_tree(args) as tree:
        if tree.repo is None:
            from streams.errors import UsageError
            raise UsageError("scan works on the recovery points of a repository")
        vm, name = parse_rp_path(tree, args.rp)
        from rpfs.index.background import ensure_for
        ensure_for(tree, vm, notice=_notice, keys=load_keys(args))
        result = scan_and_store(tree.repo, vm, name, keys=load_keys(args), notice=_notice)
    if args.json:
        print(jsonout.dumps(result, indent=1))
    else:
        print(describe(result))
    return 0


def describe(result: dict) -> str:
    """A scan result as a few lines for a person."""
    c = result["counts"]
    lines = [f"{result['vm']}/{result['recovery_point']}: {result['verdict'].upper()}"
             + (f" (against {result['previous']})" if result.get("previous") else
                " (the first recovery point: nothing to compare)"),
             f"  {c.get('added', 0)} added, {c.get('removed', 0)} removed, {c.get('modified', 0)}"
             f" modified, {c.get('renamed', 0)} renamed, {c.get('metadata', 0)} metadata only;"
             f" {c.get('sampled', 0)} files sampled"]
    lines += [f"  reason: {r}" for r in result["reasons"]]
    lines += [f"  e.g. {p}" for p in result["examples"][:10]]
    return "\n".join(lines)


def cmd_last_clean(args) -> int:
    from rpfs.analysis import last_clean
    from rpfs.store import open_repository

    from streams.errors import NotFoundError

    with open_repository(args.source, args.store) as repo:
        try:
            r = last_clean(repo, args.vm, keys=load_keys(args), notice=_notice)
        except NotFoundError as e:     # no such VM: no recovery point at all
            print(f"rpfs: {e}", file=sys.stderr)
            r = {"vm": args.vm, "recovery_point": None, "first_suspicious": None,
                 "reasons": [], "examples": []}
    if args.json:
        print(jsonout.dumps(r, indent=1))
    elif r["recovery_point"] is None:
        print(f"no clean recovery point: {r['first_suspicious']} is suspicious"
              if r["first_suspicious"] else "no recovery points", file=sys.stderr)
    else:
        print(r["recovery_point"])
        if r["first_suspicious"]:
            print(f"first suspicious: {r['first_suspicious']}", file=sys.stderr)
            for reason in r["reasons"]:
                print(f"  reason: {reason}", file=sys.stderr)
    return 0 if r["recovery_point"] is not None else 1
