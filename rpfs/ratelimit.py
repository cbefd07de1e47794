"""``--limit-rate``: a token bucket shared by every thread (and, in the web server, every
download) of a process, so backup reads, restore and export writes and downloads over a
slow link stay under the rate an admin gives, as DPM's network throttling does.

The bucket holds at most one second of bytes (at least 64 KiB), so a pause never lets a
burst of more than that through. ``take(n)`` blocks until ``n`` bytes may pass;
``delay(n)`` only says how long to wait (for async callers). ``slept`` counts the seconds
asked to wait: what the tests check, rather than the wall clock.
"""

from __future__ import annotations

import threading
import time

from rpfs.sizes import positive_size


class RateLimit:
    def __init__(self, bytes_per_second: int, *, clock=time.monotonic, sleep=time.sleep):
        if bytes_per_second <= 0:
            raise ValueError("a rate must be positive")
        self.rate = bytes_per_second
        self.burst = max(bytes_per_second, 64 << 10)
        self._clock, self._sleep = clock, sleep
        self._tokens = float(self.burst)
        self._last = clock()
        self._lock = threading.Lock()
        self.slept = 0.0
        self.passed = 0

    def delay(self, n: int) -> float:
        """Reserve ``n`` bytes; the seconds the caller must wait before using them."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            self._tokens -= n
            self.passed += n
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
            self.slept += wait
            return wait

    def take(self, n: int) -> None:
        wait = self.delay(n)
        if wait > 0:
            self._sleep(wait)


def paced(progress, limit: "RateLimit | None"):
    """A progress callback (``progress(done, total=None)``, called with the bytes written so
    far after each write) that also holds the writer to ``limit``: restore and export are
    paced through the callback they already make, whatever writes underneath."""
    if limit is None:
        return progress
    last = [0]
    lock = threading.Lock()

    def callback(done, total=None):
        with lock:
            n, last[0] = done - last[0], max(last[0], done)
        if n > 0:
            limit.take(n)
        if progress:
            progress(done, total)
    return callback


def add_limit_option(p, what: str) -> None:
    p.add_argument("--limit-rate", type=parse_rate, metavar="RATE",
                   help=f"bound {what}, e.g. 10M (bytes per second)")


def limit_of(args) -> "RateLimit | None":
    rate = getattr(args, "limit_rate", None)
    return RateLimit(rate) if rate else None


def parse_rate(text: str) -> int:
    """``--limit-rate`` values: ``500K``, ``10M``, ``1G`` (bytes per second), as curl takes them."""
    return positive_size(text, what="rate", examples="e.g. 500K, 10M: bytes per second")
