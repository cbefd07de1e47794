"""streams.times: the one conversion between NT ticks, Unix ns, ISO 8601 and point names,
checked against values computed independently (datetime arithmetic written out here)."""

from datetime import datetime, timedelta, timezone

from streams import times

UTC = timezone.utc
# 2020-01-01T00:00:00Z as a FILETIME, the figure Windows itself reports for that time
FILETIME_2020 = 132_223_104_000_000_000


def test_nt_ticks_and_unix_ns_round_trip_exactly():
    assert times.nt_to_unix_ns(FILETIME_2020) == 1_577_836_800 * 10**9
    assert times.unix_ns_to_nt(1_577_836_800 * 10**9) == FILETIME_2020
    assert times.nt_to_unix_ns(0) == -11_644_473_600 * 10**9          # 1601: negative, exact
    assert times.unix_ns_to_nt(times.nt_to_unix_ns(FILETIME_2020 + 7)) == FILETIME_2020 + 7
    assert times.nt_to_unix_ns(2**64 - 1) > 0                           # far future: no overflow


def test_datetimes_and_iso_text():
    assert times.nt_to_datetime(FILETIME_2020) == datetime(2020, 1, 1, tzinfo=UTC)
    assert times.nt_to_datetime(0) == datetime(1601, 1, 1, tzinfo=UTC)
    assert times.nt_to_datetime(2**64 - 1) is None                      # past year 9999
    t = datetime(2021, 6, 5, 4, 3, 2, 123456, tzinfo=UTC)
    assert times.datetime_to_nt(t) == FILETIME_2020 + (t - datetime(2020, 1, 1, tzinfo=UTC)) \
        // timedelta(microseconds=1) * 10
    assert times.nt_to_datetime(times.datetime_to_nt(t)) == t
    assert times.nt_to_iso(FILETIME_2020 + 15) == "2020-01-01T00:00:00.000001Z"
    assert times.ns_to_iso(0) == "1970-01-01T00:00:00Z"
    assert times.ns_to_iso(None) is None and times.ns_to_iso(2**80) is None


def test_point_names():
    t = datetime(2026, 12, 7, 4, 35, 9, 999999, tzinfo=UTC)
    assert times.point_name(t) == "2026-12-07T043509Z"
    assert times.point_name(t.astimezone(timezone(timedelta(hours=2)))) == "2026-12-07T043509Z"
    assert times.parse_point_name("2026-12-07T043509Z") == t.replace(microsecond=0)
    for bad in ("2026-12-07T04:35:09Z", "latest", "", "2026-13-07T043509Z"):
        assert times.parse_point_name(bad) is None


def test_time_text_is_iso_or_a_point_name():
    want = datetime(2026, 12, 7, 4, 35, 9, tzinfo=UTC)
    for text in ("2026-12-07T04:35:09Z", "2026-12-07T04:35:09+00:00", "2026-12-07T04:35:09",
                 " 2026-12-07T043509Z ", "2026-12-07T06:35:09+02:00"):
        assert times.parse_time_text(text) == want, text
    assert times.parse_time_text("2026-12-07") == datetime(2026, 12, 7, tzinfo=UTC)
    assert times.parse_time_text("yesterday") is None
