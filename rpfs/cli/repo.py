"""Repository commands: ``init``, ``backup``, ``list``, ``prune``, ``verify``, ``repair``."""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import sys

from rpfs.cli.browse import add_keys_option, load_keys
from rpfs.cli.index import index_after_backup, scan_line
from rpfs.progress import human
from rpfs.ratelimit import add_limit_option, limit_of
from rpfs.sizes import positive_size


def register(sub) -> None:
    p = sub.add_parser("init", help="create an empty repository (a directory, mode 0700, or s3://BUCKET/PREFIX)")
    p.add_argument("repo")
    p.add_argument("--encrypt", action=argparse.BooleanOptionalAction, default=None,
                   help="encrypt every object (default: on for s3://, off for a directory); the"
                        " passphrase comes from $RPFS_PASSWORD, $RPFS_PASSWORD_FILE or a prompt")
    p.add_argument("--chunk-size", type=positive_size, help="chunk size, e.g. 1M (default 1M)")
    p.add_argument("--zstd-level", type=int, help="zstd level (default 1)")
    p.add_argument("--pack-size", type=positive_size, help="target pack size, e.g. 32M")
    p.add_argument("--frame-size", type=lambda t: 0 if t.strip() == "0" else positive_size(t),
                   help="chunks are stored in independently compressed frames of this size, so a"
                        " small read decompresses only its frames (default 64K; 0: unframed)")
    p.add_argument("--raw-frame-size", type=lambda t: 0 if t.strip() == "0" else positive_size(t),
                   help="a chunk none of whose frames compresses is stored in raw frames of this"
                        " size, so a small read reads and hashes less of it (default 16K; 0: the"
                        " frame size)")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("backup", help="store SOURCE (a VM folder or disk files) as one recovery point")
    p.add_argument("repo")
    p.add_argument("sources", nargs="+", metavar="SOURCE")
    p.add_argument("--vm", help="VM name (default: the folder name, or the first file's stem)")
    p.add_argument("--time", help="recovery point time, ISO 8601 (default: now, UTC)")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.add_argument("--force-read", action="store_true",
                   help="read every file, even those whose size, times and inode say unchanged")
    p.add_argument("--index", choices=["background", "now", "none"], default=None,
                   help="index the new recovery point's volumes in a process started after the"
                        " backup committed (default; the change analysis follows it there), now"
                        " (before returning), or not at all (`rpfs index` does it later);"
                        " default from $RPFS_BACKUP_INDEX")
    p.add_argument("--no-index", dest="index", action="store_const", const="none",
                   help="the same as --index=none")
    p.add_argument("--frozen", action="store_true",
                   help="leave each checkpoint chain's running disk out (stores the state the"
                        " checkpoint froze)")
    add_limit_option(p, "the reads of the source")
    p.add_argument("--no-scan", action="store_true",
                   help="do not analyse what changed since the previous recovery point"
                        " (`rpfs scan` does it later)")
    p.add_argument("--wait", action="store_true",
                   help="wait for a running prune or gc instead of refusing (other backups never block)")
    add_keys_option(p)
    p.set_defaults(func=cmd_backup)

    p = sub.add_parser("list", help="list VMs, or the recovery points of one VM")
    p.add_argument("repo")
    p.add_argument("vm", nargs="?")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("prune", help="forget recovery points outside the retention range, then gc")
    p.add_argument("repo")
    p.add_argument("--vm", help="only this VM")
    for k in ("last", "hourly", "daily", "weekly", "monthly", "yearly"):
        p.add_argument(f"--keep-{k}", type=int, default=0, metavar="N")
    p.add_argument("--dry-run", action="store_true", help="say what would happen, change nothing")
    p.add_argument("--wait", action="store_true",
                   help="wait for running backups (on any machine) to commit instead of refusing")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_prune)

    p = sub.add_parser("verify", help="check the repository; exit 1 if anything is damaged")
    p.add_argument("repo")
    p.add_argument("--read-data", action="store_true", help="read and hash-check every chunk")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("repair", help="rebuild the catalog from the repository's own objects")
    p.add_argument("repo")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_repair)


@contextlib.contextmanager
def _open(args):
    """The repository of ``args.repo``, closed at the end; a full disk is named as the
    repository's."""
    from rpfs.store import open_repository
    path = args.repo
    with open_repository(path, args.store) as repo:
        try:
            yield repo
        except OSError as e:
            if e.filename is None and e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise OSError(e.errno, e.strerror, f"repository {path}") from None
            raise


def cmd_init(args) -> int:
    from rpfs.store import Repository
    kw = {}
    if args.chunk_size:
        kw["chunk_size"] = args.chunk_size
    if args.zstd_level is not None:
        kw["zstd_level"] = args.zstd_level
    if args.pack_size:
        kw["pack_size"] = args.pack_size
    if args.frame_size is not None:
        kw["frame_size"] = args.frame_size
    if args.raw_frame_size is not None:
        kw["raw_frame_size"] = args.raw_frame_size
    repo = Repository.init(args.repo, args.store, encrypt=args.encrypt, **kw)
    enc = "encrypted" if repo.crypto.encrypted else "not encrypted"
    repo.close()
    print(f"created repository {args.repo} ({enc})", file=sys.stderr)
    return 0


def cmd_backup(args) -> int:
    from rpfs.backup import backup
    with _open(args) as repo:
        r = backup(repo, args.sources, vm=args.vm, time=args.time, force_read=args.force_read,
                   frozen=args.frozen, limit=limit_of(args), wait=args.wait)
        if not args.json:
            for w in r.warnings:
                print(f"{r.vm}/{r.rp}: {w}", file=sys.stderr)
        note = scan = indexer = None
        mode = _index_mode(args, repo)
        if mode == "background":
            from rpfs.index.background import start
            indexer = start(repo, args.repo, r.vm, r.rp, keys_file=getattr(args, "keys", None),
                            scan=not args.no_scan, global_args=_global_args(args))
            note = "pending"
            if not args.no_scan:
                scan = "pending"
            if not args.json:
                print(f"{r.vm}/{r.rp}: indexing{' and change analysis' if scan else ''} in the"
                      f" background (pid {indexer['pid']}, log {indexer['log']})", file=sys.stderr)
        elif mode == "now":
            note = index_after_backup(repo, r.vm, r.rp, load_keys(args))
            if not args.json:
                print(f"{r.vm}/{r.rp}: {note}", file=sys.stderr)
        if not args.no_scan and mode != "background":
            from rpfs.analysis import after_backup
            scan = after_backup(repo, r.vm, r.rp, keys=load_keys(args), notice=lambda text: print(
                f"rpfs: scan: {text}", file=sys.stderr))
            if not args.json:
                print(f"{r.vm}/{r.rp}: {scan_line(scan)}", file=sys.stderr)
    if args.json:
        out = {**r.as_dict(), "index": note, "scan": scan}
        if indexer:
            out["indexer"] = indexer
        print(json.dumps(out))
    else:
        ratio = "no new data" if r.new_bytes_stored == 0 else f"{r.dedup_ratio:.1f}x"
        print(f"{r.vm}/{r.rp}: {r.files} files, {human(r.logical_bytes)} in {r.seconds:.1f}s"
              f" ({r.mb_per_s:.0f} MB/s); new {r.new_chunks} chunks, {human(r.new_bytes_logical)}"
              f" stored as {human(r.new_bytes_stored)}; dedup {ratio}"
              + (f"; {r.unchanged_files} unchanged files not read" if r.unchanged_files else ""))
    return 0


def _index_mode(args, repo) -> str:
    """--index, else $RPFS_BACKUP_INDEX, else background; background needs a passphrase the
    indexer can read too (an encrypted repository whose passphrase was typed is indexed now)."""
    import os
    from streams.errors import UsageError
    mode = args.index or os.environ.get("RPFS_BACKUP_INDEX") or "background"
    if mode not in ("background", "now", "none"):
        raise UsageError(f"RPFS_BACKUP_INDEX={mode!r}: not background, now or none")
    if mode == "background" and repo.crypto.encrypted and args.store.passphrase.prompt_needed():
        return "now"
    return mode


def _global_args(args) -> list[str]:
    """The repository options of this command, for the indexer it starts."""
    out = []
    for opt, attr in (("--s3-endpoint", "s3_endpoint"), ("--cache-dir", "cache_dir")):
        if getattr(args, attr, None):
            out += [opt, str(getattr(args, attr))]
    if getattr(args, "cache_size", None):
        out += ["--cache-size", str(args.cache_size)]
    return out


# `rpfs list VM`: the change analysis of each recovery point (`-`: not analysed)
VERDICT_MARKS = {"clean": "clean", "suspicious": "SUSPICIOUS", None: "-"}


def _table(rows: list[list[str]], right: set[int]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.rjust(w) if i in right else c.ljust(w)
                               for i, (c, w) in enumerate(zip(r, widths))).rstrip() for r in rows)


def cmd_list(args) -> int:
    with _open(args) as repo:
        if args.vm:
            from rpfs.analysis import stored
            rps = repo.recovery_points(args.vm)
            scans = {r.name: stored(repo, r.vm, r.name) or {} for r in rps}
            if args.json:
                print(json.dumps([{"vm": r.vm, "rp": r.name, "time": r.time.isoformat(),
                                   "logical_size": r.logical_size, "stored_size": r.stored_size,
                                   "file_count": r.file_count, "new_chunks": r.new_chunks,
                                   "verdict": scans[r.name].get("verdict"),
                                   "reasons": scans[r.name].get("reasons", [])}
                                  for r in rps], indent=1))
                return 0
            rows = [["RECOVERY POINT", "SIZE", "NEW STORED", "FILES", "CHANGE"]]
            rows += [[r.name, human(r.logical_size), human(r.stored_size), str(r.file_count),
                      VERDICT_MARKS[scans[r.name].get("verdict")]] for r in rps]
            print(_table(rows, {1, 2, 3}))
            return 0
        out = []
        for vm in repo.vms():
            rps = repo.recovery_points(vm)
            out.append({"vm": vm, "recovery_points": len(rps), "newest": rps[-1].name,
                        "oldest": rps[0].name, "stored_size": sum(r.stored_size for r in rps),
                        "logical_size": rps[-1].logical_size})
        if args.json:
            print(json.dumps(out, indent=1))
            return 0
        if not out:
            print("no recovery points", file=sys.stderr)
            return 0
        rows = [["VM", "RPS", "NEWEST", "OLDEST", "SIZE", "STORED"]]
        rows += [[o["vm"], str(o["recovery_points"]), o["newest"], o["oldest"],
                  human(o["logical_size"]), human(o["stored_size"])] for o in out]
        print(_table(rows, {1, 4, 5}))
    return 0


def cmd_prune(args) -> int:
    from rpfs.store.maintenance.prune import Policy, prune
    pol = Policy(last=args.keep_last, hourly=args.keep_hourly, daily=args.keep_daily,
                 weekly=args.keep_weekly, monthly=args.keep_monthly, yearly=args.keep_yearly)
    with _open(args) as repo:
        r = prune(repo, pol, vm=args.vm, dry_run=args.dry_run, wait=args.wait)
    if args.json:
        print(json.dumps(r.as_dict(), indent=1))
        return 0
    verb = "would " if args.dry_run else ""
    for name in r.finished:
        print(f"remove  {name}  forgotten by an interrupted prune")
    for d in r.decisions:
        what = "keep  " if d.keep else f"{verb}remove"
        why = ", ".join(d.reasons) if d.keep else "no rule keeps it"
        print(f"{what}  {d.rp.vm}/{d.rp.name}  {why}")
    g = r.gc
    if g:
        print(f"gc: {g.chunks_deleted} unused chunks, {g.packs_repacked} packs repacked,"
              f" {g.packs_deleted} deleted, {g.packs_pending} pending delete (readers active),"
              f" {verb}reclaimed {human(max(0, g.bytes_reclaimed))}" if not args.dry_run else
              f"gc: would drop {g.chunks_deleted} unused chunks and retire or repack {g.packs_retired} packs")
    return 0


def cmd_verify(args) -> int:
    from rpfs.store.maintenance.verify import verify
    with _open(args) as repo:
        r = verify(repo, read_data=args.read_data)
    if args.json:
        print(json.dumps(r.as_dict(), indent=1))
    else:
        for p in r.problems:
            print(f"problem: {p}")
        for d in r.damage:
            print(d.line())
        for n in r.notes:
            print(f"note: {n}", file=sys.stderr)
        state = "ok" if r.ok else "DAMAGED"
        print(f"{state}: {r.recovery_points} recovery points, {r.files} files, {r.chunks} chunks"
              + (f", {r.chunks_read} read ({human(r.bytes_read)})" if r.read_data else "")
              + f" in {r.seconds:.1f}s")
    return 0 if r.ok else 1


def cmd_repair(args) -> int:
    from rpfs.store.maintenance.repair import repair
    r = repair(args.repo, args.store)
    if args.json:
        print(json.dumps(r.as_dict(), indent=1))
    else:
        if r.catalog_moved_to:
            print(f"the damaged catalog was moved to {r.catalog_moved_to}", file=sys.stderr)
        for line in r.lost:
            print(f"could not recover: {line}")
        print(f"{'incomplete' if r.lost else 'ok'}: {r.recovery_points} recovery point objects,"
              f" {r.imported} imported, {r.files} files, {r.indexes_read} index objects and"
              f" {r.packs_read} pack tails read,"
              f" {r.objects_written} objects written, {r.frame_tables} frame tables copied"
              f" into the catalog, in {r.seconds:.1f}s")
    return 1 if r.lost else 0
