"""Commands of the metadata index: ``find``, ``history``, ``index``."""

from __future__ import annotations

import json
import sys

from rpfs.cli import jsonout
from rpfs.cli.browse import SOURCE_HELP, _out, add_keys_option, load_keys, open_tree


def register(sub) -> None:
    p = sub.add_parser("find", help="find files by name in every recovery point (from the index)")
    p.add_argument("source", help=SOURCE_HELP)
    p.add_argument("pattern", help="shell pattern, case-insensitive like Windows, matched against"
                                   " names (against the path inside the volume if it has a '/';"
                                   " '*' stays within a component, '**' does not)")
    p.add_argument("--regex", action="store_true", help="PATTERN is a regular expression"
                                                        " (searched in the name, or the path if it has a '/')")
    p.add_argument("--vm", help="only this VM")
    p.add_argument("--since", help="only recovery points at or after this time (ISO 8601)")
    p.add_argument("--until", help="only recovery points at or before this time (ISO 8601)")
    p.add_argument("--size", help="+N larger than, -N smaller than, N exactly (K, M, G: binary)")
    p.add_argument("--modified-after", metavar="TIME", help="modified at or after (ISO 8601)")
    p.add_argument("--modified-before", metavar="TIME", help="modified at or before (ISO 8601)")
    p.add_argument("--type", choices=["f", "d", "l"], help="files, directories or symlinks")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    add_keys_option(p)
    p.set_defaults(func=cmd_find)

    p = sub.add_parser("history", help="every version (distinct content) of one file across"
                                       " recovery points")
    p.add_argument("source", help=SOURCE_HELP)
    p.add_argument("path", help="/<vm>/<recovery point>/volumes/<volume>/<path>")
    p.add_argument("--verify", action="store_true",
                   help="also hash the contents (splits versions the metadata cannot tell apart)")
    p.add_argument("--json", action="store_true")
    add_keys_option(p)
    p.set_defaults(func=cmd_history)

    p = sub.add_parser("index", help="index the recovery points that are not indexed yet")
    p.add_argument("repo")
    p.add_argument("vm", nargs="?")
    p.add_argument("--only", metavar="RP", help="just this recovery point of VM")
    p.add_argument("--then-scan", action="store_true",
                   help="then run the change analysis of --only's recovery point (what the"
                        " indexer `rpfs backup` starts in the background does)")
    p.add_argument("--json", action="store_true")
    add_keys_option(p)
    p.set_defaults(func=cmd_index)


def _notice(text: str) -> None:
    print(f"rpfs: {text}", file=sys.stderr)


def cmd_find(args) -> int:
    from rpfs.index import find_entries

    from rpfs.index.background import ensure_for

    found = 0
    with open_tree(args) as tree:
        ensure_for(tree, args.vm, notice=_notice, keys=load_keys(args))
        for hit in find_entries(tree, args.pattern, regex=args.regex, vm=args.vm,
                                since=args.since, until=args.until, size=args.size,
                                modified_after=args.modified_after,
                                modified_before=args.modified_before, type=args.type,
                                notice=_notice):
            found += 1
            if args.json:
                sys.stdout.write(jsonout.dumps(hit) + "\n")
            else:
                prefix = f"/{hit['vm']}/{hit['recovery_point']}" if hit["vm"] else ""
                _out(f"{prefix}/volumes/{hit['volume']}{hit['path']}")
    return 0 if found else 1


def cmd_history(args) -> int:
    from rpfs.index import file_history

    from rpfs.index.background import ensure_for, vm_of

    with open_tree(args) as tree:
        ensure_for(tree, vm_of(args.path), notice=_notice, keys=load_keys(args))
        h = file_history(tree, args.path, verify=args.verify, notice=_notice)
    if args.json:
        sys.stdout.write(jsonout.dumps(h["versions"], indent=1))
        sys.stdout.write("\n")
    else:
        for v in h["versions"]:
            rps = v["recovery_points"]
            span = rps[0] if len(rps) == 1 else f"{rps[0]} .. {rps[-1]} ({len(rps)} recovery points)"
            _out(f"{v['modified'] or '?':<32} {v['size']:>14}  {v['path']}  in {span}")
            for m in v.get("metadata", []):
                _out(f"{'':<32} {'':>14}  times or attributes changed in {m['recovery_point']}"
                     f" (modified {m['modified'] or '?'}), same content")
        if h["absent"]:
            _out(f"absent in: {', '.join(str(a) for a in h['absent'])}")
    return 0 if h["versions"] else 1


def cmd_index(args) -> int:
    from rpfs.index import update_index
    from rpfs.progress import Progress
    from rpfs.store import open_repository

    bar = None

    class Counted(Progress):
        def line(self, now=None) -> str:
            return f"{self.label}: {self.done}/{self.total} recovery points"

    def progress(what: str, done: int, total: int) -> None:
        nonlocal bar
        if bar is None and not args.json:
            bar = Counted(total, "index")
        if bar is not None:
            bar.label = f"index {what}"
            bar.total = total
            bar.update(done)

    if args.only and not args.vm:
        from streams.errors import UsageError
        raise UsageError("--only needs the VM")
    scan = None
    with open_repository(args.repo, args.store) as repo:
        from rpfs.index.background import indexer_running
        if not args.json and indexer_running(repo):
            print("rpfs: waiting for the running indexer", file=sys.stderr)
        r = update_index(repo, args.vm, only=args.only, progress=progress, keys=load_keys(args))
        if args.then_scan and args.only:
            from rpfs.analysis import after_backup
            scan = after_backup(repo, args.vm, args.only, keys=load_keys(args))
            r["scan"] = scan
    if bar is not None:
        bar.close()
    if args.json:
        print(json.dumps(r, indent=1))
    else:
        for e in r["errors"]:
            print(f"rpfs: {e}", file=sys.stderr)
        print(f"indexed {r['indexed']} recovery points ({r['volumes']} volumes,"
              f" {r['changed_records']} changed MFT records or inodes read)"
              f" in {r['seconds']:.1f}s", file=sys.stderr)
        if scan is not None:
            print(f"{args.vm}/{args.only}: {scan_line(scan)}", file=sys.stderr)
    return 1 if r["errors"] else 0


def scan_line(scan: dict) -> str:
    """One line on a change analysis (after a backup or `rpfs index --then-scan`)."""
    if scan.get("verdict") is None:
        return f"not scanned ({scan['error']})"
    if scan["verdict"] == "clean":
        return f"change analysis: clean ({scan['seconds']:.1f}s)"
    return "change analysis: SUSPICIOUS: " + "; ".join(scan["reasons"])


def index_after_backup(repo, vm: str, rp: str, keys=None) -> str:
    """What ``rpfs backup`` prints after indexing the recovery point it made."""
    from streams.errors import RpfsError
    from rpfs.index import update_index

    try:
        r = update_index(repo, vm, only=rp, keys=keys)
    except RpfsError as e:   # the recovery point is stored all the same
        return f"not indexed ({e}); `rpfs index` will retry"
    for e in r["errors"]:
        print(f"rpfs: index: {e}", file=sys.stderr)
    return (f"indexed {r['volumes']} volumes ({r['changed_records']} changed MFT records or"
            f" inodes read) in {r['seconds']:.1f}s")
