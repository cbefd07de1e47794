"""``rpfs serve`` as a user starts it, and the resident memory of a process over time."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path


def start_server(source, *extra, log: Path, listen: str = "127.0.0.1:0"):
    """``rpfs serve`` on a free port; returns (process, base URL)."""
    with open(log, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "rpfs", "serve", str(source),
                                 "--listen", listen, *map(str, extra)],
                                stdout=subprocess.DEVNULL, stderr=err)
    for _ in range(600):  # the first line names the address; give up after a minute
        text = log.read_text(errors="replace")
        if " at http" in text:
            return proc, text.split(" at ", 1)[1].split("/ ", 1)[0]
        if proc.poll() is not None:
            raise AssertionError(f"rpfs serve exited: {text}")
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("rpfs serve did not start")


def rss(pid: int) -> int:
    """Resident bytes of ``pid`` now (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class PeakRss:
    """``with PeakRss(pid) as p: ...`` samples ``pid``'s RSS every 20 ms; ``p.peak``."""

    def __init__(self, pid: int):
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss(self.pid))
            self._stop.wait(0.02)

    def __enter__(self) -> "PeakRss":
        self.peak = rss(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss(self.pid))
