"""The kernel's read-ahead window for a FUSE mount of ours, raised from 128 KiB to 1 MiB.

The kernel reads ahead of a sequential reader of a FUSE file at most ``read_ahead_kb`` of
the mount's backing device info (128 KiB unless changed, and the FUSE handshake can only
lower it), so ``cat`` of a large file costs one FUSE request per 128 KiB. With 1 MiB (the
largest request libfuse 3 accepts) each request carries 8x the data and the daemon spends
about half the CPU per byte (docs/benchmarks.md, "Mounts against the C tools"). Only root
may write the setting; for anyone else the mount keeps the kernel's default.
"""

from __future__ import annotations

import logging
import os
import threading

log = logging.getLogger(__name__)

READ_AHEAD_KB = 1024


def raise_read_ahead(mountpoint: str, kb: int = READ_AHEAD_KB) -> bool:
    """Set the mount's read-ahead window; False (and a debug line) where not permitted.

    Call it once the mount serves: the stat waits for the FUSE handshake, which would
    otherwise lower the window again."""
    try:
        st = os.stat(mountpoint)
        with open(f"/sys/class/bdi/{os.major(st.st_dev)}:{os.minor(st.st_dev)}/read_ahead_kb", "w") as f:
            f.write(f"{kb}\n")
        return True
    except OSError as e:
        log.debug("read-ahead of %s left at the kernel's default: %s", mountpoint, e)
        return False


def raise_read_ahead_when_served(mountpoint: str) -> None:
    """From a thread of the mount's own daemon, which is about to start serving."""
    threading.Thread(target=raise_read_ahead, args=(mountpoint,), daemon=True,
                     name="rpfs-read-ahead-kb").start()
