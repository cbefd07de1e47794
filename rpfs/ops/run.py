"""``rpfs run``: one run of a protection group: back up every VM (several at once), prune by
the group's retention, read back a sample, keep a job record, and tell the notify command.

One VM failing never stops the others: its error becomes one line in the job record.
Backups of one repository run at once (they share the repository lock); one that finds it
held exclusively (a prune or gc) waits for it, up to the group's ``lock_wait``.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time as _time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from streams.errors import RpfsError
from rpfs.ops import jobs
from rpfs.ops.config import Config, GroupConfig, RepositoryConfig, Vm, resolve_vms
from rpfs.ops.notify import notify
from rpfs.cli.options import Passphrase, store_options
from rpfs.ratelimit import RateLimit
from rpfs.store import StoreOptions
from rpfs.store import open_repository as open_store
from rpfs.store.maintenance.prune import Policy, prune
from rpfs.store.repository import RepositoryBusy
from rpfs.log import get_logger

log = get_logger("rpfs.run")


@contextlib.contextmanager
def open_repository(rc: RepositoryConfig, *, crypto=None, store: StoreOptions | None = None):
    """The group's repository, with the passphrase file, cache and endpoint of its
    configuration over ``store`` (the CLI's options); ``crypto``: keys already unlocked."""
    options = store or store_options()
    if rc.passphrase_file:
        options = options.with_(passphrase=Passphrase({"RPFS_PASSWORD_FILE": rc.passphrase_file}))
    options = options.with_(cache_dir=rc.cache or options.cache_dir,
                            endpoint=rc.s3_endpoint or options.endpoint)
    repo = open_store(rc.path, options, _crypto=crypto)
    try:
        yield repo
    finally:
        repo.close()


@dataclass
class RunOptions:
    time: datetime | None = None       # the recovery points' time (default: now)
    dry_run: bool = False
    frozen: bool | None = None         # overrides the group's
    limit_rate: int | None = None      # overrides the group's
    notify: bool = True
    store: StoreOptions | None = None  # how repositories are opened (the CLI's options)


def run_group(cfg: Config, name: str, opts: RunOptions, say=print) -> dict:
    """Run group ``name``; returns its job record (stored unless a dry run)."""
    group = cfg.groups[name]
    rc = cfg.repositories[group.repository]
    t0 = _time.monotonic()
    start = (opts.time or datetime.now(timezone.utc)).astimezone(timezone.utc).replace(microsecond=0)
    record = {"job": jobs.job_name(start), "group": name, "repository": group.repository,
              "address": rc.path, "start": start.isoformat(), "end": None,
              "dry_run": opts.dry_run, "result": "ok", "error": None, "warnings": [],
              "vms": [], "prune": None, "verify": None, "totals": None}
    vms, errors = resolve_vms(group)
    with open_repository(rc, store=opts.store) as repo:
        previous = _last_job(repo, name)
        record["vms"] = _gone(previous, vms)
        if errors:
            record["error"] = errors[0] + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else "")
            record["warnings"].extend(errors)
        if opts.dry_run:
            for vm in vms:
                say(f"would back up {vm.name} from {vm.folder}")
            say(f"would prune by {_policy_text(group.keep)}" if not group.keep.empty() else "no retention: nothing pruned")
            decisions = prune(repo, group.keep, dry_run=True, collect=False).decisions if not group.keep.empty() else []
            mine = {v.name for v in vms}
            for d in decisions:
                if d.rp.vm in mine and not d.keep:
                    say(f"would remove {d.rp.vm}/{d.rp.name}")
            record["end"] = start.isoformat()
            return record
        limit_rate = opts.limit_rate or group.limit_rate
        limit = RateLimit(limit_rate) if limit_rate else None
        frozen = group.frozen if opts.frozen is None else opts.frozen
        keys = _keys(group)
        index_lock = threading.Lock()
        results: dict[str, dict] = {}

        def one(vm: Vm) -> None:
            results[vm.name] = _backup_vm(rc, repo.crypto, group, vm, start, frozen, limit, keys,
                                          index_lock, opts.store)

        with ThreadPoolExecutor(group.parallel, thread_name_prefix="rpfs-run") as pool:
            for f in [pool.submit(one, vm) for vm in vms]:
                f.result()
        for vm in vms:
            r = results[vm.name]
            record["vms"].append(r)
            say(_vm_line(r))
        made = [(r["vm"], r["recovery_point"]) for r in record["vms"] if r["result"] == "ok"]
        try:   # the job record is kept whatever happens here
            if not group.keep.empty():
                record["prune"] = _prune(repo, group, [v.name for v in vms], say)
            if group.verify_bytes and made:
                record["verify"] = verify_sample(repo, made, group.verify_bytes, start)
                say(_verify_line(record["verify"]))
            record["totals"] = totals(repo)
        except (RpfsError, OSError) as e:
            record["error"] = f"after the backups: {e}"
            say(f"failed {record['error']}")
        failed = [r for r in record["vms"] if r["result"] == "failed"]
        if failed or record["error"] or (record["verify"] and not record["verify"]["ok"]):
            record["result"] = "failed"
            if not record["error"]:
                record["error"] = (failed[0]["error"] if failed else record["verify"]["damage"][0])
        record["end"] = (start + timedelta(seconds=round(_time.monotonic() - t0, 3))).isoformat()
        jobs.put_job(repo, record)
    if opts.notify:
        _notify(group, record, start)
        _notify_suspicious(cfg, group, record, start)
    return record


def _notify_suspicious(cfg: Config, group: GroupConfig, record: dict, now: datetime) -> None:
    """Recovery points this run made that change analysis calls suspicious."""
    from rpfs.ops.status import notify_suspicious, verdict_of
    made = [r for r in record["vms"] if r["result"] == "ok"]
    if not made or not group.notify:
        return
    odd = []
    with open_repository(cfg.repositories[group.repository]) as repo:
        for r in made:
            v = verdict_of(repo, r["vm"], r["recovery_point"])
            if v.get("verdict") == "suspicious":
                odd.append({"vm": r["vm"], "last_success": now.isoformat(), "overdue": False,
                            "recovery_point": r["recovery_point"], "last_result": "ok",
                            "error": None, **v})
    if odd:
        notify_suspicious(group, odd, now, job=record["job"])


def _keys(group: GroupConfig):
    if not group.keys:
        return None
    from formats.bitlocker import KeyRing
    return KeyRing.load(group.keys)


def _last_job(repo, group: str) -> dict | None:
    for name in reversed(jobs.job_names(repo)):
        d = jobs.get_job(repo, name)
        if d and d.get("group") == group and not d.get("dry_run"):
            return d
    return None


def _gone(previous: dict | None, vms: list[Vm]) -> list[dict]:
    """VMs the group's last run backed up whose folder is gone now: failed once (a VM taken
    out of service drops out of the next record; a lost share keeps failing the job)."""
    if not previous:
        return []
    here = {v.name for v in vms}
    out = []
    for r in previous.get("vms", []):
        if r.get("vm") in here or r.get("gone"):
            continue
        out.append({"vm": r["vm"], "folder": r.get("folder"), "result": "failed", "gone": True,
                    "error": f"{r['vm']}: its folder {r.get('folder')} is gone (if the VM was"
                             " retired, the next run forgets it)",
                    "recovery_point": None, "warnings": []})
    return out


def _backup_vm(rc, crypto, group: GroupConfig, vm: Vm, start: datetime, frozen: bool,
               limit, keys, index_lock, store=None) -> dict:
    from rpfs.backup import backup
    t0 = _time.monotonic()
    r = {"vm": vm.name, "folder": vm.folder, "result": "failed", "error": None,
         "recovery_point": None, "bytes_read": 0, "bytes_new": 0, "bytes_stored": 0,
         "logical_size": 0, "seconds": 0.0, "warnings": [], "left_out": []}
    try:
        with open_repository(rc, crypto=crypto, store=store) as repo:
            deadline = _time.monotonic() + group.lock_wait
            while True:
                try:
                    b = backup(repo, [vm.folder], vm=vm.name, time=start, show_progress=False,
                               frozen=frozen, limit=limit)
                    break
                except RepositoryBusy:
                    if _time.monotonic() >= deadline:
                        raise
                    _time.sleep(0.2 + random.random() * 0.3)
            r.update(result="ok", recovery_point=b.rp, bytes_read=b.read_bytes,
                     bytes_new=b.new_bytes_logical, bytes_stored=b.new_bytes_stored,
                     logical_size=b.logical_bytes, warnings=list(b.warnings), left_out=b.left_out)
            with index_lock:
                r["index"] = _index(repo, b.vm, b.rp, keys)
                from rpfs.analysis import after_backup
                r["scan"] = after_backup(repo, b.vm, b.rp, keys=keys)
    except RpfsError as e:
        r["error"] = f"{vm.name}: {e}" if not str(e).startswith(f"{vm.name}:") else str(e)
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        r["error"] = f"{vm.name}: {where}{e.strerror or e}"
    except Exception as e:   # a bug: this VM fails, the others go on
        log.exception("backup of %s", vm.name)
        r["error"] = f"{vm.name}: internal error: {type(e).__name__}: {e}"
    r["seconds"] = round(_time.monotonic() - t0, 3)
    return r


def _index(repo, vm: str, rp: str, keys) -> str:
    """Index the new recovery point; its failure is a note, the backup stands."""
    from rpfs.index import update_index
    try:
        x = update_index(repo, vm, only=rp, keys=keys)
    except RpfsError as e:
        return f"not indexed ({e}); `rpfs index` will retry"
    except Exception as e:   # a bug in indexing must not turn a stored backup into a failure
        log.exception("indexing %s/%s", vm, rp)
        return f"not indexed (internal error: {type(e).__name__}: {e}); `rpfs index` will retry"
    return f"indexed {x['volumes']} volumes"


def _prune(repo, group: GroupConfig, vms: list[str], say) -> dict:
    """The group's retention, applied to its own VMs only, then one gc."""
    removed, kept = [], 0
    present = set(repo.vms())
    for vm in vms:
        if vm not in present:      # never backed up (yet): nothing to keep or remove
            continue
        r = _locked(group, lambda: prune(repo, group.keep, vm=vm, collect=False))
        for d in r.decisions:
            if d.keep:
                kept += 1
            else:
                removed.append(f"{d.rp.vm}/{d.rp.name}")
                say(f"removed {d.rp.vm}/{d.rp.name} (no rule of {_policy_text(group.keep)} keeps it)")
    g = _locked(group, lambda: prune(repo, Policy())).gc if removed else None
    return {"removed": removed, "kept": kept,
            "reclaimed": max(0, g.bytes_reclaimed) if g else 0}


def _locked(group: GroupConfig, fn):
    deadline = _time.monotonic() + group.lock_wait
    while True:
        try:
            return fn()
        except RepositoryBusy:
            if _time.monotonic() >= deadline:
                raise
            _time.sleep(0.2 + random.random() * 0.3)


def verify_sample(repo, made: list[tuple[str, str]], budget: int, seed_time: datetime) -> dict:
    """Read back up to ``budget`` bytes of what this run stored: random chunk-sized pieces of
    the new recovery points' files, through the same checked path every read takes."""
    rng = random.Random(seed_time.timestamp())
    pieces = []
    for vm, name in made:
        rp = repo.recovery_point(vm, name)
        for path, size in repo.files(rp).items():
            for off in range(0, size, repo.chunk_size):
                pieces.append((rp, path, off, min(repo.chunk_size, size - off)))
    rng.shuffle(pieces)
    read, damage, n = 0, [], 0
    for rp, path, off, length in pieces:
        if read + length > budget and read:
            break
        try:
            f = repo.open_file(rp, path)
            f.read(off, length)
        except RpfsError as e:
            damage.append(f"{rp.vm}/{rp.name}/files/{path} at {off:#x}: {e}")
        read += length
        n += 1
    return {"ok": not damage, "bytes_read": read, "pieces": n, "damage": damage[:20]}


def totals(repo) -> dict:
    """The repository's logical size (every kept recovery point) and stored size (packs)."""
    logical = sum(r.logical_size for r in repo.all_recovery_points())
    stored = repo.query("SELECT COALESCE(SUM(size), 0) FROM packs WHERE retired_epoch IS NULL")[0][0]
    return {"logical": logical, "stored": stored,
            "recovery_points": len(repo.all_recovery_points())}


def _policy_text(p: Policy) -> str:
    return ", ".join(f"{k} {v}" for k, v in vars(p).items() if v) or "none"


def _vm_line(r: dict) -> str:
    from rpfs.progress import human
    if r["result"] != "ok":
        return f"failed {r['error']}"
    extra = "".join(f"; {w}" for w in r["warnings"])
    return (f"ok     {r['vm']}/{r['recovery_point']}: {human(r['logical_size'])}, read"
            f" {human(r['bytes_read'])}, new {human(r['bytes_new'])} stored as"
            f" {human(r['bytes_stored'])} in {r['seconds']:.1f}s{extra}")


def _verify_line(v: dict) -> str:
    from rpfs.progress import human
    if v["ok"]:
        return f"verify: read back {human(v['bytes_read'])} ({v['pieces']} pieces): ok"
    return f"verify: DAMAGE: {v['damage'][0]} ({len(v['damage'])} pieces)"


def _notify(group: GroupConfig, record: dict, now: datetime) -> None:
    bad = [r for r in record["vms"] if r["result"] == "failed"]
    if record["result"] == "failed":
        summary = f"rpfs: group {group.name}: " + (
            f"{len(bad)} of {len(record['vms'])} VMs failed: {bad[0]['error']}" if bad else record["error"])
        w = notify(group.notify, "failed", group=group.name, repository=group.repository,
                   vms=[{"vm": r["vm"], "last_result": "failed", "error": r["error"]} for r in bad],
                   summary=summary, job=record["job"], now=now)
        if w:
            record["warnings"].append(w)
