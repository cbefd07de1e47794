"""Another process writing a disk file while rpfs backs it up (tests/test_live_backup.py).

``python -m tests.helpers.disk_writer MODE PID FILE LOG``: writes 1 MiB blocks of FILE, each
block's bytes derived from (generation, block), last block first, and appends one line
``block generation`` to LOG per write, fsynced, so the test can rebuild every state the
file went through. It watches the backup process PID instead of a clock:

- ``burst``: once PID has FILE open and has read 8 MiB more since, one generation, then exit;
- ``continuous``: from then on, a generation each time PID has read 4 MiB more, until PID
  ends (every read of the backup sees a different file);
- ``timer``: a block appended every 50 ms from the start until PID ends, as Hyper-V grows a
  running AVHDX (a disk the backup is not meant to read at all).
"""

from __future__ import annotations

import os
import random
import sys
import time

MiB = 1 << 20


def block(gen: int, index: int) -> bytes:
    return random.Random(gen * 100_003 + index).randbytes(MiB)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):     # gone between open and read: ProcessLookupError
        return False


def _has_open(pid: int, path: str) -> bool:
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == path:
                    return True
            except OSError:
                continue
    except OSError:
        pass
    return False


def _rchar(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/io") as f:
            for line in f:
                if line.startswith("rchar:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def write_generation(path: str, gen: int, log) -> None:
    blocks = os.path.getsize(path) // MiB
    fd = os.open(path, os.O_WRONLY)
    try:
        for i in reversed(range(blocks)):
            os.pwrite(fd, block(gen, i), i * MiB)
            log.write(f"{i} {gen}\n")
            log.flush()
    finally:
        os.close(fd)


def main() -> None:
    mode, pid, path, logpath = sys.argv[1], int(sys.argv[2]), os.path.abspath(sys.argv[3]), sys.argv[4]
    gen = 0
    with open(logpath, "w") as log:
        if mode == "timer":
            while _alive(pid):
                gen += 1
                with open(path, "ab") as f:
                    f.write(block(gen, 0))
                log.write(f"append {gen}\n")
                log.flush()
                time.sleep(0.05)
            return
        while not _has_open(pid, path):
            if not _alive(pid):
                return
            time.sleep(0.002)
        mark = _rchar(pid)
        step = 8 * MiB if mode == "burst" else 4 * MiB
        while _alive(pid):
            if _rchar(pid) - mark >= step:
                gen += 1
                write_generation(path, gen, log)
                if mode == "burst":
                    return
                mark = _rchar(pid)
            time.sleep(0.002)


if __name__ == "__main__":
    main()
