"""Job records: one repository object per run of a protection group, ``jobs/<name>``.

Kept as repository objects (sealed like recovery point objects: encrypted or digest-checked,
see store/objects.py), not catalog rows, so the history survives ``rpfs repair`` and is seen
by every machine that opens an s3:// repository. The name starts with the job's start time
(``20261207t020000z-<random>``), so a listing is in time order and status reads only the
newest records it needs.

A record (JSON): ``job``, ``group``, ``repository``, ``start``/``end`` (ISO 8601 UTC),
``dry_run``, ``result`` ("ok" | "failed"), ``error`` (one line or null), ``warnings``, and
``vms``: per VM ``vm``, ``folder``, ``result`` ("ok" | "failed"), ``error``,
``recovery_point``, ``bytes_read``, ``bytes_new`` (new data, uncompressed),
``bytes_stored`` (compressed), ``logical_size``, ``seconds``, ``warnings``; then ``prune``
(removed recovery points) and ``verify`` (bytes read back, damage lines).
"""

from __future__ import annotations

import json
import secrets
from datetime import datetime, timezone

from streams.errors import FormatError, RpfsError
from rpfs.store import objects

JOBS = "jobs"


def job_name(start: datetime) -> str:
    return start.astimezone(timezone.utc).strftime("%Y%m%dt%H%M%Sz") + "-" + secrets.token_hex(4)


def put_job(repo, record: dict) -> str:
    """Store ``record`` (its ``job`` key names it); returns the name."""
    name = record["job"]
    key = f"{JOBS}/{name}"
    body = json.dumps({"version": 1, **record}, separators=(",", ":")).encode()
    if not repo.backend.put_object(key, objects.encode(repo.crypto, key, body)):
        raise FormatError("a job record of that name exists", source=key, structure="job record")
    return name


def job_names(repo) -> list[str]:
    """Every job record's name, oldest first."""
    return sorted(repo.backend.list_objects(JOBS))


def get_job(repo, name: str) -> dict | None:
    """The record, or None if it is gone or unreadable (a damaged record is not history)."""
    key = f"{JOBS}/{name}"
    raw = repo.backend.get_object(key)
    if raw is None:
        return None
    try:
        d = json.loads(objects.decode(repo.crypto, key, raw))
    except (RpfsError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(d, dict) or not isinstance(d.get("vms"), list) or not isinstance(d.get("group"), str):
        return None
    return d


def recent_jobs(repo, *, limit: int | None = None) -> list[dict]:
    """The newest ``limit`` records (all when None), newest first."""
    names = job_names(repo)
    names.reverse()
    out = []
    for n in names[:limit] if limit else names:
        d = get_job(repo, n)
        if d is not None:
            out.append(d)
    return out
