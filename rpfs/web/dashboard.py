"""The dashboard (``/dashboard``) and ``/metrics`` of ``rpfs serve``: the protection groups of
the configuration that back up into the served repository, each VM's health at a glance,
the job history with durations, and the repository's logical vs stored size over time (from
the totals each job record keeps), as a server-drawn SVG (the page runs no script for it).
``/metrics`` is the same status in the Prometheus exposition format (prometheus_client).
Without a configuration the page shows the repository's job records and VMs only.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone

from starlette.requests import Request
from starlette.responses import Response

from rpfs.ops import jobs
from rpfs.ops.status import exposition, group_status, unscheduled_status
from rpfs.web.nodes import in_thread
from rpfs.web.pages import page

HISTORY = 60          # job records on the page
CHART_W, CHART_H = 640, 180


def _same_address(a: str, b: str) -> bool:
    if a.startswith("s3://") or b.startswith("s3://"):
        return a.rstrip("/") == b.rstrip("/")
    return os.path.realpath(a) == os.path.realpath(b)


def collect(tree, cfg, now: datetime) -> dict:
    """Status of the served repository's groups, its job history and its size over time."""
    repo = tree.repo
    if repo is None:
        return {"groups": [], "vms": [], "jobs": [], "sizes": [], "repository": False}
    records = jobs.recent_jobs(repo)
    groups, vms = [], []
    if cfg is not None:
        for g in cfg.groups.values():
            if _same_address(cfg.repositories[g.repository].path, repo.path):
                s = group_status(repo, g, now, records)
                vms.extend(s.pop("vms"))
                groups.append(s)
    others = unscheduled_status(repo, now, records, {v["vm"] for v in vms})
    if others:
        vms.extend(others)
        groups.append({"group": "", "repository": "", "schedule": "not in a configured group",
                       "due_at": None, "last_job": None})
    history = []
    for r in records[:HISTORY]:
        start = datetime.fromisoformat(r["start"])
        end = datetime.fromisoformat(r["end"]) if r.get("end") else start
        history.append({"job": r["job"], "group": r["group"], "start": r["start"],
                        "seconds": round((end - start).total_seconds(), 1), "result": r["result"],
                        "error": r.get("error"), "vms": len(r["vms"]),
                        "failed": sum(1 for v in r["vms"] if v["result"] == "failed")})
    sizes = [(datetime.fromisoformat(r["start"]), r["totals"]["logical"], r["totals"]["stored"])
             for r in reversed(records) if r.get("totals")]
    return {"groups": groups, "vms": vms, "jobs": history, "sizes": sizes, "repository": True}


def chart(sizes: list) -> dict | None:
    """Polylines (SVG coordinates) of logical and stored size over time, with axis labels."""
    if len(sizes) < 2:
        return None
    t0, t1 = sizes[0][0].timestamp(), sizes[-1][0].timestamp()
    top = max(max(s[1], s[2]) for s in sizes) or 1
    span = (t1 - t0) or 1

    def pts(i: int) -> str:
        return " ".join(f"{40 + (s[0].timestamp() - t0) / span * (CHART_W - 50):.1f},"
                        f"{CHART_H - 20 - s[i] / top * (CHART_H - 30):.1f}" for s in sizes)
    from rpfs.progress import human
    return {"logical": pts(1), "stored": pts(2), "top": human(top), "w": CHART_W, "h": CHART_H,
            "first": sizes[0][0].strftime("%Y-%m-%d"), "last": sizes[-1][0].strftime("%Y-%m-%d"),
            "logical_now": human(sizes[-1][1]), "stored_now": human(sizes[-1][2])}


async def dashboard(request: Request):
    st = await in_thread(collect, request.app.state.tree, request.app.state.ops_config,
                         datetime.now(timezone.utc))
    return page(request, "dashboard.html", title="dashboard — rpfs", st=st, chart=chart(st["sizes"]),
                config_error=request.app.state.ops_config_error)


async def metrics(request: Request):
    st = await in_thread(collect, request.app.state.tree, request.app.state.ops_config,
                         datetime.now(timezone.utc))
    return Response(exposition(st), media_type="text/plain; version=0.0.4; charset=utf-8")
