"""Local time of a debtor: zones, hour masks, the earliest allowed instant, local days (DST edges)."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from debtor_segments.streams.local_time import HourMask, local_datetime, local_iso, next_allowed, start_of_local_day, zone
from tests.streams.conftest import ZONES

AMSTERDAM = ZoneInfo("Europe/Amsterdam")
NEW_YORK = ZoneInfo("America/New_York")
HAVANA = ZoneInfo("America/Havana")  # changes its clocks at midnight
LORD_HOWE = ZoneInfo("Australia/Lord_Howe")  # a 30-minute DST shift
HOUR = 3600.0


def _utc(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


# The 2026 transitions, checked against the zone database so a changed database fails loudly here.
AMS_SPRING = _utc("2026-03-29T01:00:00")  # 02:00 CET -> 03:00 CEST
AMS_FALL = _utc("2026-10-25T01:00:00")  # 03:00 CEST -> 02:00 CET (02:00-03:00 twice)
NY_SPRING = _utc("2026-03-08T07:00:00")  # 02:00 EST -> 03:00 EDT
NY_FALL = _utc("2026-11-01T06:00:00")  # 02:00 EDT -> 01:00 EST (01:00-02:00 twice)


def test_the_transitions_used_here_are_the_databases() -> None:
    for instant, tz, before, after in (
        (AMS_SPRING, AMSTERDAM, 1, 2),
        (AMS_FALL, AMSTERDAM, 2, 1),
        (NY_SPRING, NEW_YORK, -5, -4),
        (NY_FALL, NEW_YORK, -4, -5),
    ):
        assert local_datetime(instant - 1, tz).utcoffset() == timedelta(hours=before)
        assert local_datetime(instant, tz).utcoffset() == timedelta(hours=after)


def test_zone_names() -> None:
    assert zone("Europe/Amsterdam") == AMSTERDAM
    assert zone("Asia/Kathmandu") is not None
    for bad in ("Mars/Olympus", "../etc/passwd", "", "Europe/", "/etc/localtime", "europe/amsterdam/x"):
        assert zone(bad) is None, bad


def test_local_iso_keeps_the_offset_and_drops_fractions() -> None:
    assert local_iso(_utc("2026-01-01T10:00:00") + 0.75, NEW_YORK) == "2026-01-01T05:00:00-05:00"
    assert local_iso(_utc("2026-01-01T10:00:00"), ZoneInfo("Asia/Kathmandu")) == "2026-01-01T15:45:00+05:45"
    assert local_iso(AMS_FALL - 1, AMSTERDAM) == "2026-10-25T02:59:59+02:00"
    assert local_iso(AMS_FALL, AMSTERDAM) == "2026-10-25T02:00:00+01:00"


# -- HourMask -----------------------------------------------------------------------------------


def test_between_and_windows() -> None:
    assert HourMask.between(8, 21).windows() == ((8, 21),)
    assert HourMask.between(0, 24).windows() == ((0, 24),)
    assert HourMask.between(23, 24).windows() == ((23, 24),)
    assert HourMask.between(8, 8).windows() == ()
    assert not HourMask.between(8, 8).any()
    assert HourMask.between(8, 9).any()


def test_without_wraps_around_midnight() -> None:
    day = HourMask.between(0, 24)
    assert day.without([(22, 6)]).windows() == ((6, 22),)
    assert day.without([(23, 1)]).windows() == ((1, 23),)
    assert day.without([(20, 0)]).windows() == ((0, 20),)  # to_hour 0: up to midnight
    assert day.without([(0, 24)]).windows() == ()
    assert day.without([(23, 24)]).windows() == ((0, 23),)
    assert day.without([(5, 5)]).windows() == ((0, 24),)  # equal ends: empty span
    assert HourMask.between(8, 21).without([(20, 9)]).windows() == ((9, 20),)
    assert HourMask.between(8, 21).without([(12, 14), (17, 18)]).windows() == ((8, 12), (14, 17), (18, 21))
    assert HourMask.between(8, 21).without([(21, 8)]).windows() == ((8, 21),)  # only hours already outside
    assert HourMask.between(8, 21).without([(14, 10)]).windows() == ((10, 14),)
    assert not HourMask.between(8, 21).without([(8, 12), (12, 21)]).any()


@given(
    st.integers(0, 23).flatmap(lambda e: st.tuples(st.just(e), st.integers(e + 1, 24))),
    st.lists(st.tuples(st.integers(0, 23), st.integers(0, 24)), max_size=5),
)
def test_without_removes_exactly_the_spans(bounds: tuple[int, int], spans: list[tuple[int, int]]) -> None:
    mask = HourMask.between(*bounds).without(spans)

    def inconvenient(hour: int) -> bool:
        for start, end in spans:
            if start <= end and start <= hour < end:
                return True
            if start > end and (hour >= start or hour < end):
                return True
        return False

    for hour in range(24):
        assert mask.allowed[hour] == (bounds[0] <= hour < bounds[1] and not inconvenient(hour)), hour
    covered = [hour for start, end in mask.windows() for hour in range(start, end)]
    assert covered == [hour for hour in range(24) if mask.allowed[hour]]


# -- next_allowed -------------------------------------------------------------------------------


def test_next_allowed_is_none_for_an_empty_mask() -> None:
    for mask in (HourMask.between(8, 8), HourMask.between(8, 21).without([(0, 24)]), HourMask(tuple([False] * 24))):
        for name in ZONES:
            assert next_allowed(AMS_SPRING, mask, ZoneInfo(name)) is None


def test_next_allowed_keeps_an_allowed_instant() -> None:
    ts = _utc("2026-03-02T10:17:23") + 0.5
    assert next_allowed(ts, HourMask.between(8, 21), AMSTERDAM) == ts


def test_spring_forward_gap_in_amsterdam() -> None:
    # 2026-03-29 has no 02:00-03:00 in Amsterdam: an hour only allowed then comes a day later.
    only_two = HourMask.between(2, 3)
    midnight = start_of_local_day(AMS_SPRING, AMSTERDAM)
    assert local_iso(next_allowed(midnight, only_two, AMSTERDAM), AMSTERDAM) == "2026-03-30T02:00:00+02:00"
    # From 01:30 CET, hours 2..20: the first instant is 03:00 CEST, right at the end of the gap.
    assert next_allowed(AMS_SPRING - 1800, HourMask.between(2, 21), AMSTERDAM) == AMS_SPRING
    assert next_allowed(AMS_SPRING - 1800, HourMask.between(3, 21), AMSTERDAM) == AMS_SPRING
    # 08:00 on the short day is 06:00 UTC (not 07:00 UTC, which a fixed +1 would give).
    first = next_allowed(midnight, HourMask.between(8, 21), AMSTERDAM)
    assert first == _utc("2026-03-29T06:00:00")
    assert local_iso(first, AMSTERDAM) == "2026-03-29T08:00:00+02:00"


def test_fall_back_repeated_hour_in_amsterdam() -> None:
    only_two = HourMask.between(2, 3)
    midnight = start_of_local_day(AMS_FALL, AMSTERDAM)
    assert next_allowed(midnight, only_two, AMSTERDAM) == AMS_FALL - HOUR  # the first 02:00 (CEST)
    assert next_allowed(AMS_FALL - 60, only_two, AMSTERDAM) == AMS_FALL - 60  # 02:59 CEST
    assert next_allowed(AMS_FALL + 1800, only_two, AMSTERDAM) == AMS_FALL + 1800  # 02:30 CET, the repeat
    after = next_allowed(AMS_FALL + HOUR, only_two, AMSTERDAM)  # from 03:00 CET: the next day's 02:00
    assert local_iso(after, AMSTERDAM) == "2026-10-26T02:00:00+01:00"
    # Hour 3 first starts after both 02:00s: 02:00 UTC, two hours after the first 02:00.
    assert next_allowed(midnight, HourMask.between(3, 21), AMSTERDAM) == AMS_FALL + HOUR
    # 08:00 on the long day is 07:00 UTC.
    assert local_iso(next_allowed(midnight, HourMask.between(8, 21), AMSTERDAM), AMSTERDAM) == "2026-10-25T08:00:00+01:00"
    assert next_allowed(midnight, HourMask.between(8, 21), AMSTERDAM) == _utc("2026-10-25T07:00:00")


def test_spring_forward_gap_in_new_york() -> None:
    midnight = start_of_local_day(NY_SPRING, NEW_YORK)
    assert local_iso(next_allowed(midnight, HourMask.between(2, 3), NEW_YORK), NEW_YORK) == "2026-03-09T02:00:00-04:00"
    assert next_allowed(NY_SPRING - 60, HourMask.between(2, 24), NEW_YORK) == NY_SPRING  # 01:59 EST -> 03:00 EDT
    first = next_allowed(midnight, HourMask.between(8, 21), NEW_YORK)
    assert first == _utc("2026-03-08T12:00:00")
    # Late on the evening before: 21:30 EST is blocked, the next morning's 08:00 is EDT.
    evening = _utc("2026-03-08T02:30:00")  # 2026-03-07T21:30-05:00
    assert local_iso(next_allowed(evening, HourMask.between(8, 21), NEW_YORK), NEW_YORK) == "2026-03-08T08:00:00-04:00"


def test_fall_back_repeated_hour_in_new_york() -> None:
    only_one = HourMask.between(1, 2)
    midnight = start_of_local_day(NY_FALL, NEW_YORK)
    assert next_allowed(midnight, only_one, NEW_YORK) == NY_FALL - HOUR  # 01:00 EDT
    assert next_allowed(NY_FALL, only_one, NEW_YORK) == NY_FALL  # 01:00 EST, the repeat
    assert local_iso(next_allowed(NY_FALL + HOUR, only_one, NEW_YORK), NEW_YORK) == "2026-11-02T01:00:00-05:00"
    assert next_allowed(midnight, HourMask.between(2, 21), NEW_YORK) == NY_FALL + HOUR  # 02:00 EST
    assert next_allowed(midnight, HourMask.between(8, 21), NEW_YORK) == _utc("2026-11-01T13:00:00")


def test_half_hour_shift_and_odd_offsets() -> None:
    # Lord Howe goes forward 30 minutes on 2026-10-04 (02:00 -> 02:30): hour 2 starts at 02:30.
    spring = start_of_local_day(_utc("2026-10-03T20:00:00"), LORD_HOWE)
    assert local_iso(next_allowed(spring, HourMask.between(2, 21), LORD_HOWE), LORD_HOWE) == "2026-10-04T02:30:00+11:00"
    # ... and back 30 minutes on 2026-04-05 (02:00 -> 01:30): hour 1 lasts 90 minutes, 2 starts after.
    fall = start_of_local_day(_utc("2026-04-04T20:00:00"), LORD_HOWE)
    assert local_iso(next_allowed(fall, HourMask.between(2, 21), LORD_HOWE), LORD_HOWE) == "2026-04-05T02:00:00+10:30"
    assert next_allowed(fall, HourMask.between(2, 21), LORD_HOWE) - next_allowed(fall, HourMask.between(1, 21), LORD_HOWE) == 5400.0
    kathmandu = ZoneInfo("Asia/Kathmandu")
    assert local_iso(next_allowed(_utc("2026-03-01T00:00:00"), HourMask.between(8, 21), kathmandu), kathmandu) == "2026-03-01T08:00:00+05:45"
    chatham = ZoneInfo("Pacific/Chatham")
    assert local_iso(next_allowed(_utc("2026-03-01T00:00:00"), HourMask.between(20, 21), chatham), chatham) == "2026-03-01T20:00:00+13:45"


def _written_hour(ts: float, tz: ZoneInfo) -> int:
    """The local hour of ``ts`` as it is written: RFC 3339 truncated to the second (gmtime)."""
    return datetime.fromtimestamp(math.floor(ts), tz).hour


def test_a_fractional_start_steps_to_the_exact_hour() -> None:
    # Found by the property below: stepping from microseconds rounded off a float came out a
    # fraction before 08:00 (1767250799.9999998), which is written 06:59:59Z, 07:59:59 local.
    found = next_allowed(1767225600.123456789, HourMask.between(8, 21), AMSTERDAM)
    assert found == _utc("2026-01-01T07:00:00")
    assert time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(found)) == "2026-01-01T07:00:00Z"
    # and not a hair after it either (it was 1767304800.0000005 from this one)
    assert next_allowed(1767225600.2890625, HourMask.between(23, 24), AMSTERDAM) == _utc("2026-01-01T22:00:00")
    # An instant a fraction before an hour is judged by the second it is written as.
    assert next_allowed(_utc("2026-01-01T06:59:59") + 0.9999997, HourMask.between(8, 21), AMSTERDAM) == _utc("2026-01-01T07:00:00")


@settings(max_examples=150, deadline=None)
@given(
    st.floats(_utc("2026-01-01T00:00:00"), _utc("2027-01-01T00:00:00")),
    st.lists(st.booleans(), min_size=24, max_size=24),
    st.sampled_from(ZONES),
)
def test_next_allowed_is_the_earliest_allowed_instant(ts: float, hours: list[bool], name: str) -> None:
    tz = ZoneInfo(name)
    mask = HourMask(tuple(hours))
    found = next_allowed(ts, mask, tz)
    if not any(hours):
        assert found is None
        return
    # Every hour of the day occurs within 8 days, in every zone (a gap skips it one day at most).
    assert found is not None
    assert ts <= found < ts + 3 * 86_400.0
    assert hours[_written_hour(found, tz)]
    if found != ts:
        # A moved instant is a whole second that starts an allowed stretch ...
        assert found == math.floor(found)
        assert not hours[_written_hour(ts, tz)]
        assert found - 1 < ts or not hours[_written_hour(found - 1, tz)]
        # ... and nothing before it is allowed: every local hour starts on a UTC quarter hour
        # (all offsets and transitions are whole quarter hours), so check each in between.
        quarter = (math.floor(ts) // 900 + 1) * 900
        while quarter < found:
            assert not hours[_written_hour(quarter, tz)], (quarter, found)
            quarter += 900


# -- start_of_local_day -------------------------------------------------------------------------


def test_local_days_are_calendar_days() -> None:
    ny = NEW_YORK
    short = start_of_local_day(NY_SPRING, ny)
    assert start_of_local_day(NY_SPRING, ny, 1) - short == 23 * HOUR
    long = start_of_local_day(NY_FALL, ny)
    assert start_of_local_day(NY_FALL, ny, 1) - long == 25 * HOUR
    assert local_iso(start_of_local_day(AMS_SPRING, AMSTERDAM, 7), AMSTERDAM) == "2026-04-05T00:00:00+02:00"
    assert local_iso(start_of_local_day(AMS_SPRING - 1, AMSTERDAM, 0), AMSTERDAM) == "2026-03-29T00:00:00+01:00"
    assert start_of_local_day(AMS_SPRING, AMSTERDAM, -1) == start_of_local_day(AMS_SPRING, AMSTERDAM) - 24 * HOUR


def test_a_day_without_midnight_starts_when_the_clocks_jump() -> None:
    # Havana goes from 00:00 straight to 01:00 on 2026-03-08: that day starts at 01:00 local.
    jump = _utc("2026-03-08T05:00:00")
    start = start_of_local_day(jump + 10 * HOUR, HAVANA)
    assert start == jump
    assert local_iso(start, HAVANA) == "2026-03-08T01:00:00-04:00"
    assert local_datetime(start - 1, HAVANA).date().isoformat() == "2026-03-07"
    # and on 2026-11-01 it has midnight twice: the day starts at the first.
    twice = start_of_local_day(_utc("2026-11-01T15:00:00"), HAVANA)
    assert local_iso(twice, HAVANA) == "2026-11-01T00:00:00-04:00"
    assert local_datetime(twice - 1, HAVANA).date().isoformat() == "2026-10-31"


@settings(max_examples=150, deadline=None)
@given(st.floats(_utc("2026-01-01T00:00:00"), _utc("2027-01-01T00:00:00")), st.sampled_from(ZONES), st.integers(-3, 60))
def test_start_of_local_day_is_the_first_instant_of_that_date(ts: float, name: str, days: int) -> None:
    tz = ZoneInfo(name)
    start = start_of_local_day(ts, tz, days)
    expected = datetime.fromtimestamp(ts, tz).date() + timedelta(days=days)
    assert datetime.fromtimestamp(start, tz).date() == expected
    assert datetime.fromtimestamp(start - 1, tz).date() < expected


@pytest.mark.parametrize("name", ZONES)
def test_next_allowed_with_the_default_hours_is_inside_them(name: str) -> None:
    tz = ZoneInfo(name)
    ts = _utc("2026-03-01T00:00:00")
    mask = HourMask.between(8, 21)
    for _ in range(80):  # every few hours over about five weeks, across the spring transitions
        found = next_allowed(ts, mask, tz)
        assert found is not None and 8 <= local_datetime(found, tz).hour < 21
        ts += 10.5 * HOUR
