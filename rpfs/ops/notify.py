"""The group's notify command: run with one JSON document on its standard input when a job
failed, a VM is overdue, or a recovery point is suspicious, so mail, a chat webhook or a
ticket is one line of shell (``jq -r .summary | mail -s rpfs admin``).

The document: ``event`` ("failed" | "overdue" | "suspicious"), ``group``, ``repository``,
``host``, ``time`` (ISO 8601 UTC), ``job`` (the job record's name, or null), ``summary`` (one
line), ``vms`` (per VM: ``vm`` and what status says of it: ``last_success``, ``overdue``,
``last_result``, ``error``, ``recovery_point``, ``verdict``, ``reasons``). The command gets
60 s; its failure is a warning, never the job's.
"""

from __future__ import annotations

import json
import socket
import subprocess
from datetime import datetime, timezone

from rpfs.log import get_logger

log = get_logger("rpfs.notify")
TIMEOUT = 60


def notify(argv: list[str] | None, event: str, *, group: str, repository: str,
           vms: list[dict], summary: str, job: str | None = None,
           now: datetime | None = None) -> str | None:
    """Run ``argv`` with the event on stdin; returns a warning line, or None if it went well."""
    if not argv:
        return None
    doc = {"event": event, "group": group, "repository": repository, "host": socket.gethostname(),
           "time": (now or datetime.now(timezone.utc)).astimezone(timezone.utc).isoformat(),
           "job": job, "summary": summary, "vms": vms}
    try:
        r = subprocess.run(argv, input=json.dumps(doc, indent=1).encode() + b"\n",
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as e:
        msg = f"notify {argv[0]}: {getattr(e, 'strerror', None) or e}"
    else:
        if r.returncode == 0:
            return None
        err = r.stderr.decode(errors="replace").strip().splitlines()
        msg = f"notify {argv[0]} exited {r.returncode}" + (f": {err[-1]}" if err else "")
    log.warning("%s", msg)
    return msg
