"""An image served by the real mount code (rpfs.fuse.mount over open_source), with every
NTFS node the mount makes counted, for tests/test_fuse_ops.py:
``python -m tests.helpers.countmount IMAGE MOUNTPOINT REPORT``.

When the mount ends (unmounted) REPORT gets JSON: ``{"ntfs_nodes": made, "ntfs_opens":
streams opened by ``NtfsNode.open``, "worker_jobs": hand-offs to a worker thread,
"answers": requests that went through the adapter's general dispatch (``_answer``),
"bottom_walks": ranges followed down the layers (``streams.stream.bottom``, and
``_walk`` for a window ``Spans`` learns), "vhdx_spans": times the VHDX layer was asked
where a range lies (``VhdxDisk._span``), "binding":
{opcode: [received, handed to Python]}}`` (``_fusell.counts()``). ``counted_mount`` runs
it around a test's block. IMAGE may be anything ``open_source`` opens (a repository too).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import streams.stream
from formats.vhdx.reader import VhdxDisk
from rpfs import _fusell, fuse, fuse_loop
from rpfs.ntfs_nodes import NtfsNode
from rpfs.source import open_source


@contextlib.contextmanager
def counted_mount(image, tmp_path: Path):
    """``with counted_mount(image, tmp_path) as (mp, report):`` the image mounted at
    ``mp`` by a counting server; on leaving, unmounted, the server ended cleanly, and its
    JSON report written to ``report``."""
    mp, report, log_path = tmp_path / "mnt", tmp_path / "report.json", tmp_path / "mount.log"
    mp.mkdir()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "tests.helpers.countmount", str(image),
                                 str(mp), str(report)], stdout=subprocess.PIPE, stderr=log)
        try:
            assert proc.stdout.readline() == b"ready\n", log_path.read_text()
            for _ in range(100):
                if os.path.ismount(mp):
                    break
                time.sleep(0.05)
            yield mp, report
        finally:
            subprocess.run(["fusermount3", "-u", str(mp)], check=False, capture_output=True)
            code = proc.wait(timeout=60)
            proc.stdout.close()
    assert code == 0, log_path.read_text()


def main(image: str, mountpoint: str, report: str) -> None:
    made, opened, jobs, walks, answers, vhdx = [0], [0], [0], [0], [0], [0]
    real, real_open = NtfsNode.__init__, NtfsNode.open
    real_submit, real_bottom = fuse_loop.Workers.submit, streams.stream.bottom
    real_walk, real_vhdx_span = streams.stream._walk, VhdxDisk._span
    real_answer = fuse.Operations._answer

    def counted(self, *args, **kw):
        made[0] += 1
        real(self, *args, **kw)

    def counted_open(self):
        opened[0] += 1
        return real_open(self)

    def counted_submit(self, coro, job):
        jobs[0] += 1
        return real_submit(self, coro, job)

    def counted_bottom(*args):
        walks[0] += 1
        return real_bottom(*args)

    def counted_walk(*args):
        walks[0] += 1
        return real_walk(*args)

    def counted_vhdx_span(self, *args):
        vhdx[0] += 1
        return real_vhdx_span(self, *args)

    def counted_answer(self, *args):
        answers[0] += 1
        return real_answer(self, *args)

    NtfsNode.__init__ = counted
    fuse.Operations._answer = counted_answer
    NtfsNode.open = counted_open
    fuse_loop.Workers.submit = counted_submit
    streams.stream.bottom = counted_bottom
    streams.stream._walk = counted_walk
    VhdxDisk._span = counted_vhdx_span
    try:
        fuse.mount(open_source(image), mountpoint, ready=lambda: print("ready", flush=True))
    finally:
        with open(report, "w") as f:
            json.dump({"ntfs_nodes": made[0], "ntfs_opens": opened[0], "worker_jobs": jobs[0],
                       "bottom_walks": walks[0], "answers": answers[0], "vhdx_spans": vhdx[0],
                       "binding": _fusell.counts()}, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3])
