"""What every VM of every protection group looks like now: the one view behind
``rpfs status``, its Prometheus text, ``/metrics`` and the dashboard.

A VM is **overdue** when its newest recovery point is older than the last time its group's
schedule was due, counting the group's ``grace`` (how long a run may take): at 03:00 with
``02:00`` and grace 4h, yesterday's backup is still fine; at 06:01 it is not. The last
result and error come from the newest job record of the group that names the VM (job
records live in the repository: rpfs/ops/jobs.py). The VMs of a group are those its folders
hold now plus those its last job named, so a share that vanished does not hide its VMs.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from rpfs.ops import jobs
from rpfs.ops.config import Config, GroupConfig, resolve_vms
from rpfs.log import get_logger

log = get_logger("rpfs.status")
SLACK = timedelta(seconds=60)   # a timer fires up to its accuracy late, never early


def group_status(repo, group: GroupConfig, now: datetime, records: list[dict] | None = None) -> dict:
    """``{"group", "repository", "schedule", "last_job": {...} | None, "vms": [...]}``."""
    records = jobs.recent_jobs(repo) if records is None else records
    mine = [r for r in records if r.get("group") == group.name and not r.get("dry_run")]
    last_job = mine[0] if mine else None
    vms, _ = resolve_vms(group)
    names = [v.name for v in vms]
    if last_job:
        names += [r["vm"] for r in last_job["vms"] if r["vm"] not in names and not r.get("gone")]
        names += [r["vm"] for r in last_job["vms"] if r["vm"] not in names]
    due_at = group.schedule.previous(now - timedelta(seconds=group.grace))
    out = []
    for vm in names:
        out.append(_vm_status(repo, group.name, group.repository, vm, now, due_at, mine))
    job = None
    if last_job:
        job = {k: last_job.get(k) for k in ("job", "start", "end", "result", "error")}
    return {"group": group.name, "repository": group.repository, "schedule": group.schedule.text,
            "due_at": due_at.astimezone(timezone.utc).isoformat() if due_at else None,
            "last_job": job, "vms": out}


def unscheduled_status(repo, now: datetime, records: list[dict], skip: set[str]) -> list[dict]:
    """VMs of the repository that no configured group names (manual backups, or no
    configuration at hand): what the repository and the job records say, never overdue."""
    out = []
    for vm in repo.vms():
        if vm in skip:
            continue
        mine = [r for r in records if not r.get("dry_run") and any(v["vm"] == vm for v in r["vms"])]
        out.append(_vm_status(repo, "", "", vm, now, None, mine))
    return out


def _vm_status(repo, group: str, repository: str, vm: str, now: datetime, due_at,
               mine: list[dict]) -> dict:
    rps = repo.recovery_points(vm) if vm in set(repo.vms()) else []
    newest = rps[-1] if rps else None
    last = None
    for rec in mine:
        for r in rec["vms"]:
            if r["vm"] == vm:
                last = (rec, r)
                break
        if last:
            break
    overdue = due_at is not None and (newest is None or newest.time < due_at - SLACK)
    d = {
        "vm": vm, "group": group, "repository": repository,
        "last_success": newest.time.isoformat() if newest else None,
        "recovery_point": newest.name if newest else None,
        "age_seconds": int((now - newest.time).total_seconds()) if newest else None,
        "overdue": overdue,
        "last_result": last[1]["result"] if last else None,
        "error": last[1].get("error") if last else None,
        "last_job": last[0]["job"] if last else None,
        "warnings": last[1].get("warnings", []) if last else [],
        "recovery_points": len(rps),
        "logical_size": newest.logical_size if newest else 0,
        "stored_size": sum(r.stored_size for r in rps),
        "new_data": newest.stored_size if newest else 0,
        "verdict": None, "reasons": [],
    }
    if newest:
        d.update(verdict_of(repo, vm, newest.name))
    d["index_pending"] = _index_pending(repo, vm) if rps else []
    d["ok"] = not overdue and d["last_result"] != "failed" and d["verdict"] != "suspicious"
    return d


def _index_pending(repo, vm: str) -> list[str]:
    """The recovery points whose index a backup left to a background indexer that has not
    built it yet (running, or killed: the next `rpfs index` or find builds it)."""
    try:
        from rpfs.index.background import pending
        return [name for _, name in pending(repo, vm)]
    except Exception as e:   # the index is a cache: never a failed status
        log.warning("%s: index state unreadable: %s", vm, e)
        return []


def verdict_of(repo, vm: str, rp: str) -> dict:
    """The change-analysis verdict of a recovery point where there is one (its ``scans/``
    object, written by change analysis after a backup or by ``rpfs scan``)."""
    from rpfs.store import objects
    get = getattr(objects, "get_scan", None)   # absent where change analysis is not built
    if get is None:
        return {}
    try:
        v = get(repo, vm, rp)
    except Exception as e:   # an analysis that cannot be read is no verdict, never a failed status
        log.warning("%s/%s: change analysis unreadable: %s", vm, rp, e)
        return {}
    if not v:
        return {}
    return {"verdict": v.get("verdict"), "reasons": list(v.get("reasons", []))}


def collect(cfg: Config, groups: list[str], now: datetime, open_repo) -> dict:
    """Status of ``groups``; ``open_repo(RepositoryConfig)`` is a context manager."""
    out = {"time": now.astimezone(timezone.utc).isoformat(), "groups": [], "vms": []}
    by_repo: dict[str, list[str]] = {}
    for g in groups:
        by_repo.setdefault(cfg.groups[g].repository, []).append(g)
    for rname, gs in by_repo.items():
        try:
            with open_repo(cfg.repositories[rname]) as repo:
                records = jobs.recent_jobs(repo)
                for g in gs:
                    s = group_status(repo, cfg.groups[g], now, records)
                    out["vms"].extend(s.pop("vms"))
                    out["groups"].append(s)
        except Exception as e:   # one unreachable repository: its groups are reported failed
            from streams.errors import RpfsError
            if not isinstance(e, (RpfsError, OSError)):
                raise
            for g in gs:
                out["groups"].append({"group": g, "repository": rname, "schedule": cfg.groups[g].schedule.text,
                                      "due_at": None, "last_job": None,
                                      "error": f"repository {rname}: {e}"})
    out["ok"] = all(v["ok"] for v in out["vms"]) and not any(
        g.get("error") or (g["last_job"] and g["last_job"]["result"] == "failed") for g in out["groups"])
    return out


# -- Prometheus ---------------------------------------------------------------------------


def registry(status: dict):
    """The status as Prometheus metrics (prometheus_client), one gauge family each."""
    from prometheus_client import CollectorRegistry, Gauge
    reg = CollectorRegistry()
    labels = ["group", "vm", "repository"]

    def gauge(name, doc, lab=labels):
        return Gauge(name, doc, lab, registry=reg)

    last = gauge("rpfs_vm_last_success_timestamp_seconds", "Time of the VM's newest recovery point")
    overdue = gauge("rpfs_vm_overdue", "1 if the VM's backup is overdue against its schedule")
    ok = gauge("rpfs_vm_last_result_ok", "1 if the VM's last backup in a job succeeded, 0 if it failed")
    rps = gauge("rpfs_vm_recovery_points", "Recovery points kept")
    logical = gauge("rpfs_vm_logical_size_bytes", "Size of the VM's newest recovery point")
    stored = gauge("rpfs_vm_stored_size_bytes", "New data stored by the VM's kept recovery points")
    new = gauge("rpfs_vm_last_new_bytes", "New data stored by the VM's newest recovery point")
    susp = gauge("rpfs_vm_suspicious", "1 if change analysis found the newest recovery point suspicious")
    job_ok = gauge("rpfs_group_last_job_ok", "1 if the group's last job succeeded", ["group", "repository"])
    job_t = gauge("rpfs_group_last_job_timestamp_seconds", "Start of the group's last job", ["group", "repository"])
    job_d = gauge("rpfs_group_last_job_duration_seconds", "Duration of the group's last job", ["group", "repository"])
    for v in status["vms"]:
        lv = (v["group"], v["vm"], v["repository"])
        if v["last_success"]:
            last.labels(*lv).set(datetime.fromisoformat(v["last_success"]).timestamp())
        overdue.labels(*lv).set(1 if v["overdue"] else 0)
        if v["last_result"]:
            ok.labels(*lv).set(1 if v["last_result"] == "ok" else 0)
        rps.labels(*lv).set(v["recovery_points"])
        logical.labels(*lv).set(v["logical_size"])
        stored.labels(*lv).set(v["stored_size"])
        new.labels(*lv).set(v["new_data"])
        if v["verdict"]:
            susp.labels(*lv).set(1 if v["verdict"] == "suspicious" else 0)
    for g in status["groups"]:
        j = g.get("last_job")
        if not j:
            continue
        lg = (g["group"], g["repository"])
        job_ok.labels(*lg).set(1 if j["result"] == "ok" else 0)
        s = datetime.fromisoformat(j["start"])
        job_t.labels(*lg).set(s.timestamp())
        if j.get("end"):
            job_d.labels(*lg).set((datetime.fromisoformat(j["end"]) - s).total_seconds())
    return reg


def write_textfile(status: dict, path: str) -> None:
    """node_exporter's textfile collector format, written atomically."""
    from prometheus_client import write_to_textfile
    write_to_textfile(path, registry(status))


def exposition(status: dict) -> bytes:
    from prometheus_client import generate_latest
    return generate_latest(registry(status))


# -- notices ------------------------------------------------------------------------------


def _brief(v: dict) -> dict:
    return {k: v[k] for k in ("vm", "last_success", "recovery_point", "overdue", "last_result",
                              "error", "verdict", "reasons")}


def notify_overdue(cfg: Config, status: dict, now: datetime) -> list[str]:
    """Each group's notify command, once per kind: its overdue VMs, its suspicious ones.
    Returns the warnings of commands that failed."""
    from rpfs.ops.notify import notify
    warnings = []
    for g in status["groups"]:
        group = cfg.groups[g["group"]]
        vms = [v for v in status["vms"] if v["group"] == g["group"]]
        late = [v for v in vms if v["overdue"]]
        if late:
            summary = (f"rpfs: group {group.name}: {len(late)} VM(s) overdue (due {g['due_at']}): "
                       + ", ".join(f"{v['vm']} (last {v['last_success'] or 'never'})" for v in late))
            warnings.append(notify(group.notify, "overdue", group=group.name,
                                   repository=group.repository, vms=[_brief(v) for v in late],
                                   summary=summary, job=(g.get("last_job") or {}).get("job"), now=now))
        odd = [v for v in vms if v["verdict"] == "suspicious"]
        if odd:
            warnings.append(notify_suspicious(group, odd, now))
    return [w for w in warnings if w]


def notify_suspicious(group: GroupConfig, odd: list[dict], now: datetime, job: str | None = None):
    from rpfs.ops.notify import notify
    summary = (f"rpfs: group {group.name}: suspicious change in "
               + ", ".join(f"{v['vm']}/{v['recovery_point']} ({'; '.join(v['reasons'][:2])})" for v in odd))
    return notify(group.notify, "suspicious", group=group.name, repository=group.repository,
                  vms=[_brief(v) for v in odd], summary=summary, job=job, now=now)
