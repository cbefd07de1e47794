"""Nightly operation: ``config check``, ``run``, ``schedule``, ``status`` (rpfs/ops/)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import datetime, timezone

from streams.errors import UsageError
from rpfs.ratelimit import parse_rate

CONFIG_HELP = "configuration file (default: $RPFS_CONFIG, else /etc/rpfs/rpfs.toml)"


def register(sub) -> None:
    p = sub.add_parser("config", help="check the configuration file (repositories, protection groups)")
    csub = p.add_subparsers(dest="config_command", metavar="check", required=True)
    c = csub.add_parser("check", help="every problem, one line each with file, line and key")
    c.add_argument("--config", metavar="FILE", help=CONFIG_HELP)
    c.set_defaults(func=cmd_config_check)

    p = sub.add_parser("run", help="back up, prune and verify protection groups (what the timers run)")
    p.add_argument("groups", nargs="*", metavar="GROUP", help="default: every group")
    p.add_argument("--config", metavar="FILE", help=CONFIG_HELP)
    p.add_argument("--dry-run", action="store_true", help="say what would be backed up and pruned")
    p.add_argument("--time", help="the recovery points' time, ISO 8601 (default: now)")
    p.add_argument("--frozen", action="store_true", default=None,
                   help="leave each checkpoint chain's running disk out (stores the checkpoint's state)")
    p.add_argument("--limit-rate", type=parse_rate, metavar="RATE",
                   help="bound backup reads, e.g. 50M (bytes per second)")
    p.add_argument("--json", action="store_true", help="print the job records")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("schedule", help="systemd timers that run each protection group")
    p.add_argument("action", choices=["install", "remove", "list"])
    p.add_argument("--config", metavar="FILE", help=CONFIG_HELP)
    p.add_argument("--dir", metavar="DIR", help="where the units go (default /etc/systemd/system,"
                                                " then systemctl enables them)")
    p.set_defaults(func=cmd_schedule)

    p = sub.add_parser("status", help="each VM's last backup, overdue or failed; exit 1 if any")
    p.add_argument("groups", nargs="*", metavar="GROUP", help="default: every group")
    p.add_argument("--config", metavar="FILE", help=CONFIG_HELP)
    p.add_argument("--json", action="store_true")
    p.add_argument("--prometheus", metavar="FILE", help="also write node_exporter's textfile format")
    p.add_argument("--notify", action="store_true",
                   help="run each group's notify command for its overdue VMs")
    p.add_argument("--quiet", action="store_true", help="print nothing (with --notify in a timer)")
    p.add_argument("--time", help="judge as of this time, ISO 8601 (default: now)")
    p.set_defaults(func=cmd_status)


def _time(text: str | None) -> datetime | None:
    if text is None:
        return None
    from rpfs.backup import parse_time
    return parse_time(text)


def cmd_config_check(args) -> int:
    from rpfs.ops.config import check, config_path
    cfg, problems = check(args.config)
    for line in problems:
        print(line)
    if problems:
        print(f"{len(problems)} problem(s) in {config_path(args.config)}", file=sys.stderr)
        return 1
    print(f"{cfg.path}: ok: {len(cfg.repositories)} repositories, {len(cfg.groups)} groups"
          f" ({', '.join(cfg.groups)})", file=sys.stderr)
    return 0


def cmd_run(args) -> int:
    from rpfs.ops.config import load
    from rpfs.ops.run import RunOptions, run_group
    cfg = load(args.config)
    names = cfg.group_names(args.groups)
    opts = RunOptions(time=_time(args.time), dry_run=args.dry_run, frozen=args.frozen,
                      limit_rate=args.limit_rate, store=args.store)
    say = (lambda s: print(s, file=sys.stderr)) if args.json else print
    records, failed = [], 0
    for name in names:
        say(f"group {name}:")
        try:
            rec = run_group(cfg, name, opts, say=lambda s: say(f"  {s}"))
        except UsageError:
            raise
        except Exception as e:   # the group's repository cannot be opened: the next group runs
            from streams.errors import RpfsError
            if not isinstance(e, (RpfsError, OSError)):
                raise
            say(f"  failed: {e}")
            failed += 1
            _notify_unreachable(cfg, name, e)
            continue
        records.append(rec)
        if rec["result"] != "ok":
            failed += 1
        if not args.dry_run:
            say(f"  {rec['result']}: job {rec['job']}" + (f": {rec['error']}" if rec["error"] else ""))
    if args.json:
        print(json.dumps(records, indent=1))
    return 1 if failed else 0


def _notify_unreachable(cfg, name: str, e: Exception) -> None:
    from rpfs.ops.notify import notify
    g = cfg.groups[name]
    notify(g.notify, "failed", group=name, repository=g.repository, vms=[],
           summary=f"rpfs: group {name}: repository {g.repository}: {e}")


def cmd_status(args) -> int:
    from rpfs.ops.config import load
    from rpfs.ops.run import open_repository
    from rpfs.ops.status import collect, notify_overdue, write_textfile
    cfg = load(args.config)
    names = cfg.group_names(args.groups)
    now = _time(args.time) or datetime.now(timezone.utc)
    status = collect(cfg, names, now, open_repository)
    if args.prometheus:
        write_textfile(status, args.prometheus)
    if args.notify:
        notify_overdue(cfg, status, now)
    if args.quiet:
        pass
    elif args.json:
        print(json.dumps(status, indent=1))
    else:
        print(format_status(status))
    return 0 if status["ok"] else 1


def format_status(status: dict) -> str:
    from rpfs.progress import human
    rows = [["GROUP", "VM", "LAST SUCCESS", "AGE", "STATE", "RPS", "SIZE", "STORED", "NEW"]]
    for v in status["vms"]:
        state = ("OVERDUE" if v["overdue"] else "") + (
            (" FAILED" if v["overdue"] else "FAILED") if v["last_result"] == "failed" else "")
        if v["verdict"] == "suspicious":
            state = (state + " SUSPICIOUS").strip()
        rows.append([v["group"], v["vm"], v["recovery_point"] or "never", _age(v["age_seconds"]),
                     state.strip() or "ok", str(v["recovery_points"]), human(v["logical_size"]),
                     human(v["stored_size"]), human(v["new_data"])])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    for v in status["vms"]:
        if v["error"] and v["last_result"] == "failed":
            lines.append(f"{v['group']}/{v['vm']}: {v['error']}")
        if v["reasons"]:
            lines.append(f"{v['group']}/{v['vm']}: {v['verdict']}: {'; '.join(v['reasons'])}")
        if v.get("index_pending"):
            n = len(v["index_pending"])
            lines.append(f"{v['group']}/{v['vm']}: index pending for {n} recovery point"
                         f"{'s' if n != 1 else ''} ({', '.join(v['index_pending'][-3:])}):"
                         " being built in the background, or by the next `rpfs index`")
    for g in status["groups"]:
        j = g.get("last_job")
        if g.get("error"):
            lines.append(f"group {g['group']}: {g['error']}")
        elif j and j["result"] == "failed":
            lines.append(f"group {g['group']}: last job {j['job']} failed: {j['error']}")
        elif not j:
            lines.append(f"group {g['group']}: no job has run yet")
    return "\n".join(lines)


def _age(seconds: int | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86400 * 2:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def cmd_schedule(args) -> int:
    from rpfs.ops import units
    from rpfs.ops.calendar import parse
    directory = args.dir or units.DEFAULT_DIR
    system = args.dir is None and shutil.which("systemctl") is not None
    if args.action == "list":
        names = units.installed(directory)
        if not names:
            print(f"no rpfs units in {directory}", file=sys.stderr)
            return 0
        now = datetime.now(timezone.utc)
        for n in names:
            cal = units.timer_calendar(directory, n) if n.endswith(".timer") else None
            nxt = parse(cal).next(now) if cal else None
            print(f"{n}" + (f"  OnCalendar={cal}  next {nxt.isoformat()}" if nxt else ""))
        return 0
    if args.action == "remove":
        if system:
            timers = [n for n in units.installed(directory) if n.endswith(".timer")]
            if timers:
                subprocess.run(["systemctl", "disable", "--now", *timers], check=False)
        gone = units.remove(directory)
        for n in gone:
            print(f"removed {directory}/{n}")
        if system:
            subprocess.run(["systemctl", "daemon-reload"], check=False)
        return 0
    from rpfs.ops.config import load
    cfg = load(args.config)
    written, stale = units.write(cfg, directory)
    for n in written:
        print(f"wrote {directory}/{n}")
    for n in stale:
        print(f"removed {directory}/{n} (no such group any more)")
    timers = [n for n in written if n.endswith(".timer")]
    if system:
        for cmd in (["systemctl", "daemon-reload"], ["systemctl", "enable", "--now", *timers]):
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode:
                why = (r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[-1]
                raise UsageError(f"units written, but `{' '.join(cmd)}` failed: {why}")
        print(f"enabled {', '.join(timers)}")
    else:
        print(f"to start them: systemctl daemon-reload && systemctl enable --now {' '.join(timers)}",
              file=sys.stderr)
    return 0
