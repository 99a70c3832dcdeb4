"""A debtor's local time: which hours a contact may go out, and the earliest instant that may.

Contact rules speak of the debtor's wall clock (no contact before 08:00 or after 21:00 local
time, none in the hours the debtor called inconvenient), so the guard converts every instant
with the IANA time zone database (:mod:`zoneinfo`). Hours are whole local hours: an
:class:`HourMask` says for each of the 24 which are allowed. Stepping from one local hour to
the next is done in absolute time, so the clocks going forward or back (DST) neither skip an
allowed hour nor allow a forbidden one.

>>> mask = HourMask.between(8, 21).without([(12, 14)])
>>> mask.windows()
((8, 12), (14, 21))
>>> amsterdam = zone("Europe/Amsterdam")
>>> late = 1774818000.0  # 2026-03-29T21:00:00Z, 23:00 in Amsterdam (just after the clocks went forward)
>>> local_iso(next_allowed(late, mask, amsterdam), amsterdam)
'2026-03-30T08:00:00+02:00'
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["HourMask", "local_datetime", "local_iso", "next_allowed", "start_of_local_day", "zone"]

#: How far ahead :func:`next_allowed` looks before it says "never" (a mask with no hour).
_HORIZON_S = 8 * 86_400.0


# Bounded: the names come from inbound events, and a producer sending a new name in every
# event must not grow the cache without end.
@lru_cache(maxsize=1024)
def zone(name: str) -> ZoneInfo | None:
    """The time zone named ``name``, or ``None`` if the database has no such zone.

    >>> zone("Europe/Amsterdam").key, zone("Mars/Olympus"), zone("../etc/passwd")
    ('Europe/Amsterdam', None, None)
    """
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def local_datetime(ts: float, tz: ZoneInfo) -> datetime:
    """The wall-clock time at ``ts`` (seconds since the epoch) in ``tz``."""
    return datetime.fromtimestamp(ts, tz)


def local_iso(ts: float, tz: ZoneInfo) -> str:
    """``ts`` as RFC 3339 local time with its offset, to the second.

    >>> local_iso(1767261600.0, zone("America/New_York"))
    '2026-01-01T05:00:00-05:00'
    """
    return local_datetime(ts, tz).replace(microsecond=0).isoformat()


def start_of_local_day(ts: float, tz: ZoneInfo, days_later: int = 0) -> float:
    """The first instant of the local day ``days_later`` days after the one ``ts`` falls on.

    Calendar days, not 24-hour periods: across a DST change a local day has 23 or 25 hours.

    >>> ny = zone("America/New_York")
    >>> local_iso(start_of_local_day(1773000000.0, ny, 1), ny)  # 2026-03-08, the day clocks go forward
    '2026-03-09T00:00:00-04:00'
    """
    day = local_datetime(ts, tz).date() + timedelta(days=days_later)
    midnight = datetime(day.year, day.month, day.day, tzinfo=tz)
    # A zone that changes its clocks at midnight has no 00:00 that day: fold=0 maps the
    # missing wall time to the instant just after the gap, still the start of that day.
    return midnight.timestamp()


@dataclass(frozen=True, slots=True)
class HourMask:
    """The local hours (0-23) in which a contact may go out."""

    allowed: tuple[bool, ...]

    @classmethod
    def between(cls, earliest_hour: int, latest_hour: int) -> HourMask:
        """Hours from ``earliest_hour`` up to (not including) ``latest_hour``.

        >>> HourMask.between(8, 21).windows()
        ((8, 21),)
        """
        return cls(tuple(earliest_hour <= hour < latest_hour for hour in range(24)))

    @staticmethod
    @lru_cache(maxsize=1024)
    def allowed_by(earliest_hour: int, latest_hour: int, spans: tuple[tuple[int, int], ...]) -> HourMask:
        """``between(earliest_hour, latest_hour).without(spans)``, computed once per setting
        (decided for every step: the rules' hours and a debtor's inconvenient spans recur).

        >>> HourMask.allowed_by(8, 21, ((12, 14),)) == HourMask.between(8, 21).without([(12, 14)])
        True
        """
        return HourMask.between(earliest_hour, latest_hour).without(spans)

    def without(self, spans: Iterable[tuple[int, int]]) -> HourMask:
        """This mask minus local spans ``[from_hour, to_hour)``; a span with ``from_hour >
        to_hour`` runs over midnight, and one with equal ends is empty.

        >>> HourMask.between(8, 21).without([(20, 9)]).windows()
        ((9, 20),)
        """
        allowed = list(self.allowed)
        for start, end in spans:
            hours = range(start, end) if start <= end else (*range(start, 24), *range(0, end))
            for hour in hours:
                allowed[hour % 24] = False
        return HourMask(tuple(allowed))

    def windows(self) -> tuple[tuple[int, int], ...]:
        """The allowed hours as ``(from_hour, to_hour)`` runs within one day."""
        runs: list[tuple[int, int]] = []
        start: int | None = None
        for hour, ok in enumerate((*self.allowed, False)):
            if ok and start is None:
                start = hour
            elif not ok and start is not None:
                runs.append((start, hour))
                start = None
        return tuple(runs)

    def any(self) -> bool:
        """Whether any hour is allowed at all."""
        return any(self.allowed)


def next_allowed(ts: float, mask: HourMask, tz: ZoneInfo) -> float | None:
    """The earliest instant at or after ``ts`` whose local hour ``mask`` allows; ``None`` if
    no hour of the next eight days is allowed.

    Steps from one local hour's start to the next in absolute time (the offset to the local
    hour is whole minutes in every zone in use), checking each hour as it is on the clock
    then, so a DST gap or repeated hour is judged as the debtor lives it.

    >>> ny = zone("America/New_York")
    >>> local_iso(next_allowed(1767229200.0, HourMask.between(8, 21), ny), ny)  # 20:00 local
    '2025-12-31T20:00:00-05:00'
    >>> next_allowed(1767229200.0, HourMask.between(8, 8), ny) is None
    True
    """
    if not mask.any():
        return None
    candidate = ts
    limit = ts + _HORIZON_S
    while candidate <= limit:
        # Judge and step from the whole second, as times are written (RFC 3339, truncated to
        # the second). Stepping from the microseconds fromtimestamp rounds a float to could
        # land a hair before the next hour's start, still in the forbidden hour: from
        # 1767225600.123456789 (01:00 in Amsterdam) 08:00 came out as 07:59:59.9999998, which
        # is written 06:59:59Z, a contact at 07:59:59 local.
        whole = math.floor(candidate)
        local = local_datetime(whole, tz)
        if mask.allowed[local.hour]:
            return candidate
        candidate = float(whole - local.minute * 60 - local.second + 3600)
    return None
