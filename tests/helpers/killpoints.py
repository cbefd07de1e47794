"""Run an ``rpfs`` command that SIGKILLs itself just before its Nth step, so a crash test can
kill it at every point where the repository changes instead of at random moments.

A step is what changes a repository for good: a file linked, renamed or unlinked (objects,
packs, temp files), a catalog ``COMMIT``; on s3://, a PUT or DELETE request. Each is logged
(``<n> <what> <last two path components or key parts>``) before it happens, and the process
kills itself there when ``n`` is the one asked for, as ``kill -9`` landing just then would.
The hooks sit where the process meets the operating system, SQLite and botocore; rpfs's
own code runs unchanged.

    python -m tests.helpers.killpoints LOG N rpfs-arguments...

``N = 0`` runs to the end (the log then lists every step of the run).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import sys


def _tail(path) -> str:
    parts = os.fsdecode(path).rstrip("/").split("/")
    return "/".join(parts[-2:])


def install(log_path: str, kill_at: int) -> None:
    log = open(log_path, "a", buffering=1)
    count = 0

    def step(what: str) -> None:
        nonlocal count
        count += 1
        log.write(f"{count} {what}\n")
        if count == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    for name, arg in (("link", 1), ("rename", 1), ("replace", 1), ("unlink", 0), ("remove", 0)):
        real = getattr(os, name)

        def wrapped(*a, _real=real, _name=name, _arg=arg, **kw):
            step(f"{_name} {_tail(a[_arg])}")
            return _real(*a, **kw)
        setattr(os, name, wrapped)

    real_connect = sqlite3.connect

    def connect(*a, **kw):
        db = real_connect(*a, **kw)
        db.set_trace_callback(lambda sql: step("commit") if sql.strip().upper() == "COMMIT" else None)
        return db
    sqlite3.connect = connect

    import boto3.session
    real_client = boto3.session.Session.client

    def client(self, *a, **kw):
        c = real_client(self, *a, **kw)
        for op, word in (("PutObject", "put"), ("DeleteObject", "delete"),
                         ("CompleteMultipartUpload", "put")):
            c.meta.events.register(f"before-parameter-build.s3.{op}",
                                   lambda params, _w=word, **_: step(f"{_w} {_tail(params['Key'])}"))
        return c
    boto3.session.Session.client = client


def main() -> None:
    log_path, kill_at = sys.argv[1], int(sys.argv[2])
    install(log_path, kill_at)
    sys.argv = ["rpfs", *sys.argv[3:]]
    from rpfs.cli import main as rpfs_main
    raise SystemExit(rpfs_main())


if __name__ == "__main__":
    main()
