"""The time representations the formats and the namespace share, converted in one place.

NT times (FILETIME, NTFS, VSS, .vmcx, the metadata index's columns) are 100 ns ticks since
1601-01-01 UTC; nodes carry ns since the Unix epoch; output is ISO 8601 UTC; recovery
points and shadow copies are named by their UTC second as ``YYYY-MM-DDTHHMMSSZ`` (no
colons, so the name is a valid file name everywhere).

Pre-1970 times come out negative; far-future ticks stay plain Python ints (no overflow);
conversions to ``datetime`` answer None where datetime's range ends.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

NT_EPOCH_OFFSET = 116_444_736_000_000_000  # ticks from 1601-01-01 to 1970-01-01
NT_EPOCH = datetime(1601, 1, 1, tzinfo=timezone.utc)
UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
POINT_NAME_FORMAT = "%Y-%m-%dT%H%M%SZ"    # a recovery point's (or shadow copy's) name


def nt_to_unix_ns(ticks: int) -> int:
    """NT ticks -> ns since 1970 (exact: one tick is 100 ns)."""
    return (ticks - NT_EPOCH_OFFSET) * 100


def unix_ns_to_nt(ns: int) -> int:
    """ns since 1970 -> NT ticks (truncated to 100 ns)."""
    return ns // 100 + NT_EPOCH_OFFSET


def nt_to_datetime(ticks: int) -> datetime | None:
    """NT ticks -> an aware UTC datetime (µs), None outside datetime's range."""
    try:
        return NT_EPOCH + timedelta(microseconds=ticks // 10)
    except OverflowError:
        return None


def datetime_to_nt(t: datetime) -> int:
    """An aware datetime -> NT ticks (µs precision, like ``datetime`` itself)."""
    return (t - NT_EPOCH) // timedelta(microseconds=1) * 10


def ns_to_iso(ns: int | None) -> str | None:
    """ns since the Unix epoch -> ISO 8601 UTC with a ``Z`` (None if out of datetime's range)."""
    if ns is None:
        return None
    try:
        return (UNIX_EPOCH + timedelta(microseconds=ns // 1000)).isoformat().replace("+00:00", "Z")
    except OverflowError:
        return None


def nt_to_iso(ticks: int) -> str | None:
    """NT ticks -> ISO 8601 UTC with a ``Z`` (None if out of datetime's range)."""
    return ns_to_iso(nt_to_unix_ns(ticks))


def point_name(t: datetime) -> str:
    """The ``YYYY-MM-DDTHHMMSSZ`` name of the UTC second ``t`` falls in (naive: UTC)."""
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return t.astimezone(timezone.utc).strftime(POINT_NAME_FORMAT)


def parse_point_name(name: str) -> datetime | None:
    """A ``YYYY-MM-DDTHHMMSSZ`` name -> an aware UTC datetime, None if ``name`` is not one."""
    try:
        return datetime.strptime(name, POINT_NAME_FORMAT).replace(tzinfo=timezone.utc)
    except ValueError:
        return None


def parse_time_text(text: str) -> datetime | None:
    """ISO 8601 text (``Z`` allowed) or a point name -> an aware datetime (naive: UTC),
    None if it is neither; callers word their own error."""
    text = text.strip()
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        t = parse_point_name(text)
        if t is None:
            return None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)
