"""Indexing after the backup: ``rpfs backup`` commits its recovery point, then starts an
``rpfs index`` process of its own and returns (indexing a first backup costs several times
the backup itself: docs/index.md). The index is a cache written in one transaction per
recovery point under ``index.lock``, so the indexer needs nothing from the backup but the
repository's address: a killed indexer leaves the index as it was, and whoever comes
next (``rpfs index``, or ``find``/``history``/``diff`` through ``ensure``) indexes what
is missing, waiting for a running indexer's lock first.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Callable

from rpfs import nspath
from rpfs.index import db as dbm
from rpfs.index.db import clear_pending
from rpfs.index.db import pending_dir as _pending_dir

LOG_NAME = "index.log"


def mark_pending(repo, rp_id: int, pid: int | None = None) -> None:
    """Note that recovery point ``rp_id``'s index is deferred (before the indexer starts),
    and then which process indexes it (``pid``)."""
    d = _pending_dir(repo)
    os.makedirs(d, mode=0o700, exist_ok=True)
    fd = os.open(os.path.join(d, str(int(rp_id))), os.O_WRONLY | os.O_CREAT | os.O_TRUNC
                 | os.O_CLOEXEC, 0o600)
    try:
        if pid is not None:
            os.write(fd, f"{pid}\n".encode())
    finally:
        os.close(fd)


def _indexer_alive(repo, rp_id: int) -> bool:
    """Is the process named in the mark of ``rp_id`` still an ``rpfs index`` at work?"""
    try:
        with open(os.path.join(_pending_dir(repo), str(int(rp_id)))) as f:
            pid = int(f.read().strip() or 0)
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
        with open(f"/proc/{pid}/stat", "rb") as f:
            zombie = f.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except (OSError, ValueError, IndexError):
        return False
    return pid > 0 and not zombie and b"rpfs" in argv and b"index" in argv


def pending(repo, vm: str | None = None) -> list[tuple[str, str]]:
    """(vm, recovery point) of the recovery points whose deferred index is not built yet
    (its indexer is running, queued, or was killed), oldest first. A pruned one's mark is
    dropped here."""
    try:
        marks = {int(n) for n in os.listdir(_pending_dir(repo)) if n.isdigit()}
    except FileNotFoundError:
        return []
    if not marks:
        return []
    con = dbm.connect(dbm.index_path(repo))
    try:
        indexed = {cid for (cid,) in con.execute("SELECT catalog_id FROM rps")} if con else set()
    finally:
        if con is not None:
            con.close()
    out, live = [], set()
    for v in ([vm] if vm else repo.vms()):
        for rp in repo.recovery_points(v):
            live.add(rp.id)
            if rp.id in marks and rp.id not in indexed:
                out.append((v, rp.name))
    for done in marks & indexed:         # indexed by someone else (rpfs index, an older run)
        clear_pending(repo, done)
    if vm is None:
        for gone in marks - live - indexed:
            clear_pending(repo, gone)
    return out


def indexer_running(repo) -> bool:
    """Does some process hold the index's write lock now (an indexer at work)?"""
    return dbm.WriteLock(os.path.dirname(repo.catalog_path)).held()


def start(repo, address: str, vm: str, rp: str, *, keys_file: str | None = None,
          scan: bool = True, global_args: list[str] = ()) -> dict:
    """Start ``rpfs index ADDRESS VM --only RP [--then-scan]`` detached from this process
    (its own session, output appended to ``index.log`` beside the catalog), after marking
    the recovery point pending. Returns what ``backup --json`` says about it."""
    rp_id = repo.recovery_point(vm, rp).id
    mark_pending(repo, rp_id)
    directory = os.path.dirname(repo.catalog_path)
    log = os.path.join(directory, LOG_NAME)
    argv = [sys.executable, "-m", "rpfs", "index", address, vm, "--only", rp, *global_args]
    if scan:
        argv.append("--then-scan")
    if keys_file:
        argv += ["--keys", os.path.abspath(keys_file)]
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=fd, stderr=fd,
                             start_new_session=True, close_fds=True)
    finally:
        os.close(fd)
    mark_pending(repo, rp_id, p.pid)
    return {"pid": p.pid, "log": log}


def ensure(repo, vm: str | None = None, *, notice: Callable[[str], None] | None = None,
           keys=None) -> int:
    """Index the recovery points of ``vm`` (all VMs if None) whose index the backup left to
    a background indexer and that are not indexed yet, so that a question answered from the
    index sees them; waits for a running indexer first (its lock: then there is usually
    nothing left to do). Recovery points made with ``--index=none`` are not indexed here
    (the caller walks them and says so). Returns how many were indexed here; a failure is
    one notice, and the caller's walk covers that recovery point."""
    from streams.errors import RpfsError
    from rpfs.index.build import update_index

    todo = pending(repo, vm)
    if not todo:
        return 0
    ids = {(v, rp.name): rp.id for v in {v for v, _ in todo} for rp in repo.recovery_points(v)}
    alive = [k for k in todo if _indexer_alive(repo, ids[k])]
    if alive:
        # Its indexer was started but may not hold the lock yet (indexing here first would
        # race it, and without the backup's --keys): wait until it has done its part.
        if notice:
            notice(f"waiting for the background indexer of {len(alive)} recovery point"
                   f"{'s' if len(alive) != 1 else ''}")
        while any(_indexer_alive(repo, ids[k]) and k in pending(repo, k[0]) for k in alive):
            time.sleep(0.1)
        todo = pending(repo, vm)
        if not todo:
            return 0
    if notice:
        busy = " (waiting for the running indexer first)" if indexer_running(repo) else ""
        notice(f"indexing {len(todo)} recovery point{'s' if len(todo) != 1 else ''} whose"
               f" index the backup left to the background{busy}")
    done = 0
    for v, name in todo:
        try:
            done += update_index(repo, v, only=name, keys=keys)["indexed"]
        except RpfsError as e:
            if notice:
                notice(f"index: {v}/{name}: {e}")
    return done


def ensure_for(tree, vm: str | None = None, *, notice=None, keys=None) -> None:
    """``ensure`` for a source of ``find``/``history``/``diff``/``scan`` (a repository;
    folders and images have no index)."""
    repo = tree.repo
    if repo is not None:
        if vm is not None and vm not in set(repo.vms()):
            return
        ensure(repo, vm, notice=notice, keys=keys)


def vm_of(path: str) -> str | None:
    """The VM of a ``/<vm>/...`` path of the namespace (None if it names none)."""
    return nspath.vm_of(path)
