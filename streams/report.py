"""Summaries of a population of debtors: distributions and the persona transition matrix.

>>> before = {"a": "tamara", "b": "tamara", "c": "job"}
>>> after = {"a": "tamara", "b": "bryan", "c": "job"}
>>> matrix = transition_matrix(before, after)
>>> matrix["tamara"]["bryan"], matrix["job"]["job"]
(1, 1)
>>> row_shares(matrix)["tamara"]["tamara"]
0.5
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

from debtor_segments.streams.personas import PERSONAS, UNKNOWN
from debtor_segments.streams.quadrants import QUADRANTS

__all__ = ["ALL_PERSONAS", "ALL_QUADRANTS", "distribution", "format_table", "row_shares", "transition_matrix", "utc_iso"]

ALL_PERSONAS: tuple[str, ...] = (*PERSONAS, UNKNOWN)
ALL_QUADRANTS: tuple[str, ...] = (*QUADRANTS, UNKNOWN)


def distribution(values: Iterable[str], labels: tuple[str, ...]) -> dict[str, int]:
    """Count of each label (zero for labels not seen)."""
    counts = Counter(values)
    return {label: counts[label] for label in labels}


def transition_matrix(before: Mapping[str, str], after: Mapping[str, str]) -> dict[str, dict[str, int]]:
    """Counts of persona ``before`` -> ``after`` for debtors present in both mappings."""
    matrix = {row: dict.fromkeys(ALL_PERSONAS, 0) for row in ALL_PERSONAS}
    for debtor_id, previous in before.items():
        current = after.get(debtor_id)
        if current is not None:
            matrix[previous][current] += 1
    return matrix


def row_shares(matrix: Mapping[str, Mapping[str, int]]) -> dict[str, dict[str, float]]:
    """Each row of a transition matrix as shares of its total ("once a Tamara, always a Tamara?")."""
    shares = {}
    for row, cells in matrix.items():
        total = sum(cells.values())
        shares[row] = {col: (count / total if total else 0.0) for col, count in cells.items()}
    return shares


def format_table(header: list[str], rows: list[list[str]]) -> str:
    """A plain-text table with aligned columns."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = ["  ".join(str(cell).rjust(width) for cell, width in zip(row, widths, strict=True)) for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def utc_iso(ts: float | None, *, before_epoch: bool = False) -> str | None:
    """``ts`` (Unix seconds) as an ISO 8601 UTC time, or None for no time.

    A time from event data (a summary, a state written before the decoder bounded event
    times) must never make a view fail: None, 0, not finite, or out of datetime's range is
    None, and so is a time before 1970 unless ``before_epoch``.

    Examples
    --------
    >>> utc_iso(0.5), utc_iso(0.0), utc_iso(None), utc_iso(float("nan")), utc_iso(253_402_304_399.0)
    ('1970-01-01T00:00:00.500000+00:00', None, None, None, None)
    >>> utc_iso(-86_400.0), utc_iso(-86_400.0, before_epoch=True)
    (None, '1969-12-31T00:00:00+00:00')
    """
    if ts is None or not math.isfinite(ts) or ts == 0 or (ts < 0 and not before_epoch):
        return None
    try:
        return datetime.fromtimestamp(ts, UTC).isoformat()
    except (OverflowError, ValueError, OSError):
        return None
