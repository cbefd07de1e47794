"""Retention (DPM's retention range) with borg/restic semantics, then garbage collection.

Recovery points of each VM are walked newest first. ``keep_last`` keeps the N newest; each
period rule (hourly, daily, weekly, monthly, yearly) keeps the newest recovery point of each
of the N most recent periods that have one. A recovery point is kept if any rule keeps it;
every reason is reported. Periods use UTC (recovery point names are UTC); weeks are ISO weeks.
What is not kept is forgotten in one step (forget.py), whenever the prune is killed.
"""

from __future__ import annotations

import time as _time
from dataclasses import dataclass, field

from streams.errors import UsageError
import rpfs.store.maintenance.forget as forget
from rpfs.store.maintenance.gc import GcResult, gc
from rpfs.store.maintenance.sync import sync
from rpfs.store.repository import RecoveryPointRecord, Repository

PERIODS = {
    "hourly": lambda t: t.strftime("%Y-%m-%d %H"),
    "daily": lambda t: t.strftime("%Y-%m-%d"),
    "weekly": lambda t: "%04d-W%02d" % t.isocalendar()[:2],
    "monthly": lambda t: t.strftime("%Y-%m"),
    "yearly": lambda t: t.strftime("%Y"),
}


@dataclass
class Policy:
    last: int = 0
    hourly: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0
    yearly: int = 0

    def empty(self) -> bool:
        return not any(vars(self).values())

    def validate(self) -> "Policy":
        for k, v in vars(self).items():
            if not isinstance(v, int) or v < 0:
                raise UsageError(f"--keep-{k} must be a non-negative number")
        return self


@dataclass
class Decision:
    rp: RecoveryPointRecord
    keep: bool
    reasons: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"vm": self.rp.vm, "rp": self.rp.name, "keep": self.keep, "reasons": self.reasons}


def decide(rps: list[RecoveryPointRecord], policy: Policy) -> list[Decision]:
    """Newest first: which to keep and why."""
    ordered = sorted(rps, key=lambda r: (r.time, r.name), reverse=True)
    out = [Decision(rp, False) for rp in ordered]
    for i, d in enumerate(out):
        if i < policy.last:
            d.reasons.append(f"last {i + 1}/{policy.last}")
    for period, key in PERIODS.items():
        n = getattr(policy, period)
        seen: list[str] = []
        for d in out:
            if len(seen) >= n:
                break
            k = key(d.rp.time)
            if k not in seen:
                seen.append(k)
                d.reasons.append(f"{period} {len(seen)}/{n} ({k})")
    for d in out:
        d.keep = bool(d.reasons)
    return out


@dataclass
class PruneResult:
    decisions: list[Decision]
    gc: GcResult | None
    seconds: float = 0.0
    dry_run: bool = False
    finished: list[str] = field(default_factory=list)   # vm/rp an interrupted prune forgot, removed now

    @property
    def removed(self) -> list[RecoveryPointRecord]:
        return [d.rp for d in self.decisions if not d.keep]

    def as_dict(self) -> dict:
        return {"dry_run": self.dry_run, "seconds": round(self.seconds, 3),
                "recovery_points": [d.as_dict() for d in self.decisions],
                "removed": len(self.removed), "kept": len(self.decisions) - len(self.removed),
                "finished": self.finished, "gc": self.gc.as_dict() if self.gc else None}


def prune(repo: Repository, policy: Policy, *, vm: str | None = None,
          dry_run: bool = False, collect: bool = True, wait: bool = False) -> PruneResult:
    """Forget the recovery points ``policy`` does not keep, then gc. An empty policy
    forgets nothing (gc only) rather than everything. Holds the repository lock exclusively:
    a running backup (on any machine) makes it refuse in one line, or, with ``wait``, wait
    until every running backup has committed, so nothing a backup references is deleted."""
    t0 = _time.monotonic()
    policy.validate()
    finished: list[str] = []
    with repo.lock("prune", exclusive=True, wait=wait):
        if not dry_run:   # what a killed prune decided (a dry run's sync hides it)
            finished = sorted(f"{v}/{rp}" for i in forget.finish_all(repo) for v, rp in i.rps)
        sync(repo)   # what backups (here or on other machines) committed before we got the lock
        decisions: list[Decision] = []
        if not policy.empty():
            vms = [vm] if vm else repo.vms()
            for v in vms:
                decisions.extend(decide(repo.recovery_points(v), policy))
        if repo.remote and any(not d.keep for d in decisions):
            # a reader on another machine has files of these open: they stay until it is gone
            held = repo.backend.live_holds()
            for d in decisions:
                who = held.get(f"{d.rp.vm}/{d.rp.name}")
                if who and not d.keep:
                    d.keep = True
                    d.reasons.append(f"open by a reader ({who})")
        gone = [d.rp.id for d in decisions if not d.keep]
        if gone and not dry_run:
            # one put decides (forget.py): killed before it nothing is forgotten, after it
            # all of them are, and the next prune finishes what this one began
            forget.finish(repo, forget.begin(repo, [(d.rp.vm, d.rp.name) for d in decisions if not d.keep]))
        g = gc(repo, dry_run=dry_run, exclude=set(gone) if dry_run else set()) if collect else None
    return PruneResult(decisions, g, _time.monotonic() - t0, dry_run, finished)
