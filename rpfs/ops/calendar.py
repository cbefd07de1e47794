"""systemd calendar events (``OnCalendar=``), so that status can tell when a group's last
run was due: the same text the timer unit gets, read the way systemd reads it.

Supported: the shorthands (minutely, hourly, daily, weekly, monthly, quarterly,
semiannually, yearly/annually), ``[DOW] [[YYYY-]MM-DD] [HH:MM[:SS]] [TZ]`` with ``*``,
lists (``,``), ranges (``..``) and repetitions (``/``) in every field, weekday names and
ranges, and a trailing ``UTC`` or IANA zone (default: this machine's local time). Not
supported (refused with a line saying so): ``~`` (days from the end of a month) and
fractional seconds. ``systemd-analyze calendar`` is the oracle in the tests.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from streams.errors import UsageError

SHORTHANDS = {
    "minutely": "*-*-* *:*:00",
    "hourly": "*-*-* *:00:00",
    "daily": "*-*-* 00:00:00",
    "weekly": "Mon *-*-* 00:00:00",
    "monthly": "*-*-01 00:00:00",
    "quarterly": "*-01,04,07,10-01 00:00:00",
    "semiannually": "*-01,07-01 00:00:00",
    "yearly": "*-01-01 00:00:00",
    "annually": "*-01-01 00:00:00",
}
DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
DAY_NAMES = {**{d: i for i, d in enumerate(DAYS)},
             **{n: i for i, n in enumerate(["monday", "tuesday", "wednesday", "thursday",
                                             "friday", "saturday", "sunday"])}}
SEARCH_DAYS = 366 * 8        # how far back or ahead an occurrence is looked for


@dataclass(frozen=True)
class Calendar:
    text: str
    years: tuple[int, ...] | None      # None: every year
    months: tuple[int, ...]
    days: tuple[int, ...]
    weekdays: frozenset[int]           # 0 = Monday
    hours: tuple[int, ...]
    minutes: tuple[int, ...]
    seconds: tuple[int, ...]
    zone: tzinfo | None                # None: local time

    def _day_matches(self, d: date) -> bool:
        return ((self.years is None or d.year in self.years) and d.month in self.months
                and d.day in self.days and d.weekday() in self.weekdays)

    def _local(self, t: datetime) -> datetime:
        return t.astimezone(self.zone) if self.zone else t.astimezone()

    def _aware(self, d: date, h: int, m: int, s: int) -> datetime:
        naive = datetime(d.year, d.month, d.day, h, m, s)
        return naive.replace(tzinfo=self.zone) if self.zone else naive.astimezone()

    def previous(self, t: datetime) -> datetime | None:
        """The last occurrence at or before ``t`` (None if none in eight years)."""
        lt = self._local(t)
        d = lt.date()
        limit = (lt.hour, lt.minute, lt.second)
        for _ in range(SEARCH_DAYS):
            if self._day_matches(d):
                hms = _last_time(self, limit)
                if hms is not None:
                    return self._aware(d, *hms)
            d -= timedelta(days=1)
            limit = (23, 59, 59)
        return None

    def next(self, t: datetime) -> datetime | None:
        """The first occurrence strictly after ``t`` (what systemd calls the next elapse)."""
        lt = self._local(t)
        d = lt.date()
        after = (lt.hour, lt.minute, lt.second)
        for _ in range(SEARCH_DAYS):
            if self._day_matches(d):
                hms = _first_time(self, after)
                if hms is not None:
                    return self._aware(d, *hms)
            d += timedelta(days=1)
            after = None
        return None


def _last_time(c: Calendar, limit: tuple[int, int, int]) -> tuple[int, int, int] | None:
    """The latest (h, m, s) of ``c`` not after ``limit``."""
    for h in reversed(c.hours[:bisect.bisect_right(c.hours, limit[0])]):
        mins = c.minutes if h < limit[0] else c.minutes[:bisect.bisect_right(c.minutes, limit[1])]
        for m in reversed(mins):
            secs = c.seconds if (h, m) < limit[:2] else c.seconds[:bisect.bisect_right(c.seconds, limit[2])]
            if secs:
                return h, m, secs[-1]
    return None


def _first_time(c: Calendar, after: tuple[int, int, int] | None) -> tuple[int, int, int] | None:
    """The earliest (h, m, s) of ``c`` strictly after ``after`` (None: any)."""
    for h in c.hours:
        if after and h < after[0]:
            continue
        for m in c.minutes:
            if after and (h, m) < after[:2]:
                continue
            for s in c.seconds:
                if after is None or (h, m, s) > after:
                    return h, m, s
    return None


def parse(text: str) -> Calendar:
    """Read one ``OnCalendar=`` expression; UsageError (one line) if it is not one."""
    if not isinstance(text, str) or not text.strip():
        raise UsageError("empty calendar expression")
    words = text.strip().split()
    zone: tzinfo | None = None
    if len(words) > 1 and not re.match(r"^[\d*]", words[-1]) and words[-1].lower() not in DAY_NAMES \
            and "," not in words[-1] and ".." not in words[-1]:
        zone = _zone(words.pop())
    rest = " ".join(words)
    expanded = SHORTHANDS.get(rest.lower())
    if expanded:
        words = expanded.split()
    weekdays = frozenset(range(7))
    if words and re.match(r"^[A-Za-z]", words[0]):
        weekdays = _weekdays(words.pop(0), text)
    date_part, time_part = "*-*-*", "00:00:00"
    for w in words:
        if ":" in w and time_part == "00:00:00" and "-" not in w.split(":")[0]:
            time_part = w
        elif "-" in w and date_part == "*-*-*":
            date_part = w
        else:
            raise UsageError(f"calendar {text!r}: cannot read {w!r}")
    if "~" in date_part:
        raise UsageError(f"calendar {text!r}: '~' (days from the end of the month) is not supported")
    dp = date_part.split("-")
    if len(dp) == 2:
        dp = ["*"] + dp
    if len(dp) != 3:
        raise UsageError(f"calendar {text!r}: the date must be YYYY-MM-DD or MM-DD")
    tp = time_part.split(":")
    if len(tp) == 2:
        tp.append("00")
    if len(tp) != 3:
        raise UsageError(f"calendar {text!r}: the time must be HH:MM or HH:MM:SS")
    years = None if dp[0] == "*" else _values(dp[0], 1970, 2199, "year", text)
    return Calendar(
        text=text, years=years,
        months=_values(dp[1], 1, 12, "month", text), days=_values(dp[2], 1, 31, "day", text),
        weekdays=weekdays,
        hours=_values(tp[0], 0, 23, "hour", text), minutes=_values(tp[1], 0, 59, "minute", text),
        seconds=_values(tp[2], 0, 59, "second", text), zone=zone)


def _zone(name: str) -> tzinfo:
    if name.upper() in ("UTC", "GMT", "Z"):
        return timezone.utc
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise UsageError(f"calendar: unknown time zone {name!r}") from None


def _weekdays(word: str, text: str) -> frozenset[int]:
    out: set[int] = set()
    for part in word.lower().split(","):
        a, sep, b = part.partition("..")
        if a not in DAY_NAMES or (sep and b not in DAY_NAMES):
            raise UsageError(f"calendar {text!r}: {part!r} is not a weekday (Mon..Sun)")
        lo, hi = DAY_NAMES[a], DAY_NAMES[b] if sep else DAY_NAMES[a]
        out.update(range(lo, hi + 1) if lo <= hi else [*range(lo, 7), *range(0, hi + 1)])
    return frozenset(out)


def _values(field: str, lo: int, hi: int, what: str, text: str) -> tuple[int, ...]:
    """``*``, ``5``, ``1,15``, ``1..5``, ``*/15``, ``0/15``, ``8..18/2`` -> sorted values."""
    out: set[int] = set()
    for part in field.split(","):
        base, _, step = part.partition("/")
        try:
            if base == "*":
                a, b = lo, hi
            elif ".." in base:
                a, b = (int(x) for x in base.split("..", 1))
            else:
                a = int(base)
                b = hi if step else a
            n = int(step) if step else 1
        except ValueError:
            raise UsageError(f"calendar {text!r}: {part!r} is not a {what}") from None
        if n < 1 or not lo <= a <= hi or not lo <= b <= hi or a > b:
            raise UsageError(f"calendar {text!r}: {what} {part!r} is out of range {lo}..{hi}")
        out.update(range(a, b + 1, n))
    return tuple(sorted(out))
