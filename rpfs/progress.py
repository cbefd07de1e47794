"""One self-rewriting status line on a terminal (bytes, rate, ETA, new vs stored).

Silent unless stderr is a terminal, so scripts, pipes and tests see nothing. Redraws at
most a few times a second; thread-safe so pipeline stages may report from anywhere.
"""

from __future__ import annotations

import os
import sys
import threading
import time


def human(n: float, suffix: str = "B") -> str:
    """1536 -> '1.5 KiB' (binary units; the table and progress line share it)."""
    n = float(n)
    for unit in ("", "Ki", "Mi", "Gi", "Ti", "Pi"):
        if abs(n) < 1024 or unit == "Pi":
            return f"{n:.0f} {unit}{suffix}" if unit == "" else f"{n:.1f} {unit}{suffix}"
        n /= 1024
    return f"{n:.1f} Pi{suffix}"


def duration(s: float) -> str:
    s = int(max(0, s))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class Progress:
    """``update(done=, new=, stored=)``; ``close()`` clears the line."""

    def __init__(self, total: int, label: str, *, stream=None, enabled: bool | None = None,
                 interval: float = 0.2):
        self.total = total
        self.label = label
        self.stream = stream or sys.stderr
        if enabled is None:
            try:
                enabled = self.stream.isatty() and os.environ.get("TERM") != "dumb"
            except (AttributeError, ValueError):
                enabled = False
        self.enabled = enabled
        self.interval = interval
        self.done = self.new = self.stored = 0
        self.start = time.monotonic()
        self._last = 0.0
        self._lock = threading.Lock()
        self._width = 0

    def update(self, done: int | None = None, *, new: int | None = None,
               stored: int | None = None, advance: int = 0) -> None:
        with self._lock:
            if done is not None:
                self.done = done
            self.done += advance
            if new is not None:
                self.new = new
            if stored is not None:
                self.stored = stored
            if not self.enabled:
                return
            now = time.monotonic()
            if now - self._last < self.interval and self.done < self.total:
                return
            self._last = now
            self._draw(now)

    def line(self, now: float | None = None) -> str:
        el = (now or time.monotonic()) - self.start
        rate = self.done / el if el > 0 else 0
        pct = 100.0 * self.done / self.total if self.total else 100.0
        eta = (self.total - self.done) / rate if rate > 0 else 0
        s = f"{self.label} {pct:5.1f}% {human(self.done)}/{human(self.total)} {human(rate)}/s ETA {duration(eta)}"
        if self.new or self.stored:
            s += f" new {human(self.new)} stored {human(self.stored)}"
        return s

    def _draw(self, now: float) -> None:
        s = self.line(now)
        try:
            cols = os.get_terminal_size(self.stream.fileno()).columns
        except (OSError, ValueError, AttributeError):
            cols = 0
        if cols <= 0:   # a pty with no size set
            cols = 100
        s = s[: max(10, cols - 1)]
        pad = max(0, self._width - len(s))
        self._width = len(s)
        try:
            self.stream.write("\r" + s + " " * pad)
            self.stream.flush()
        except (OSError, ValueError):
            self.enabled = False

    def close(self) -> None:
        with self._lock:
            if self.enabled and self._width:
                try:
                    self.stream.write("\r" + " " * self._width + "\r")
                    self.stream.flush()
                except (OSError, ValueError):
                    pass
            self.enabled = False

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
