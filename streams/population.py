"""The population of debtors: persona and quadrant counts, and persona transitions over windows.

A worker holds only its own partitions of the state table, so it summarizes each partition
(:class:`PopulationTally`, :func:`summarize`), the summaries travel on a topic (the shell's
``agents.population``), and every worker adds up the newest summary of every partition
(:func:`merge_population`, :func:`merge_transitions`). :func:`population` and
:func:`transitions` are the same views computed from a list of states in one pass.

The transition rule (:func:`persona_at`) is kept once: each debtor remembers its previous
persona and when the current one began, so its persona at an earlier time ``since`` is the
previous one if the current one began after ``since``.

>>> from debtor_segments.streams.state import DebtorState
>>> tamara = DebtorState.new("d1")
>>> tamara.persona, tamara.previous_persona, tamara.persona_since = "tamara", "job", 50.0
>>> summary = summarize(0, 1, [tamara, DebtorState.new("d2")], published_at=0.0)
>>> summary["debtors"], summary["personas"]["tamara"], summary["personas"]["unknown"]
(2, 1, 1)
>>> merge_population({0: summary}, 1)["partitions"]
{'reported': 1, 'total': 1, 'complete': True}
"""

from __future__ import annotations

import math
import time
from array import array
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

import orjson

from debtor_segments.streams.report import ALL_PERSONAS, ALL_QUADRANTS, distribution, row_shares, transition_matrix, utc_iso
from debtor_segments.streams.state import DebtorState

__all__ = [
    "DEFAULT_WINDOW_DAYS",
    "SUMMARY_VERSION",
    "WINDOWS_DAYS",
    "PopulationTally",
    "UnknownWindow",
    "merge_population",
    "merge_transitions",
    "parse_summary",
    "persona_at",
    "population",
    "summarize",
    "transitions",
    "window_days",
]

#: The windows (days) the transition matrix is kept for; a request must name one of them.
WINDOWS_DAYS: tuple[int, ...] = (30, 90, 365)
DEFAULT_WINDOW_DAYS = 365
SUMMARY_VERSION = 1
_DAY = 86_400.0
_PERSONA_INDEX = {persona: index for index, persona in enumerate(ALL_PERSONAS)}

P = TypeVar("P")


class UnknownWindow(ValueError):
    """A transition window that is not one of :data:`WINDOWS_DAYS`; the message says which are."""


def persona_at(since: float, first_ts: float, persona_since: float, previous: P, current: P) -> P | None:
    """The persona a debtor had at ``since``, or None if it is not counted in a transition
    matrix from ``since`` (not known yet then, or no persona start recorded).

    Parameters
    ----------
    since
        Start of the window (event time, seconds).
    first_ts
        The debtor's first event time.
    persona_since
        When the debtor's current persona began (not finite: never recorded).
    previous, current
        The debtor's previous and current persona (names, or any labels of them).

    Returns
    -------
    The persona at ``since``: ``previous`` if the current one began after ``since``, else
    ``current``; None for a debtor that does not count.

    Examples
    --------
    >>> persona_at(100.0, 10.0, 150.0, "job", "tamara"), persona_at(200.0, 10.0, 150.0, "job", "tamara")
    ('job', 'tamara')
    >>> persona_at(5.0, 10.0, 150.0, "job", "tamara") is None, persona_at(100.0, 10.0, math.nan, 0, 1) is None
    (True, True)
    """
    if first_ts > since or not math.isfinite(persona_since):
        return None
    return previous if persona_since > since else current


class PopulationTally:
    """The population summary of one table partition, built one state at a time.

    A scan of a large table keeps 18 bytes per debtor here (what the transition windows need,
    in arrays), not the decoded states: holding those cost over a kilobyte per debtor.

    Attributes
    ----------
    debtors : int
        States added.
    personas, quadrants : dict[str, int]
        Debtors per persona and per quadrant (every known label, zero included).
    cells : dict[str, dict[str, int]]
        Debtors per persona and quadrant, without the zero cells.
    latest : float or None
        The latest event time (watermark) of the states added.

    Examples
    --------
    >>> tally = PopulationTally()
    >>> state = DebtorState.new("d1")
    >>> state.persona, state.persona_since, state.watermark = "bryan", 10.0, 20.0
    >>> tally.add(state)
    >>> tally.debtors, tally.personas["bryan"], tally.cells, tally.latest
    (1, 1, {'bryan': {'unknown': 1}}, 20.0)
    >>> tally.transitions(5.0)
    {'unknown': {'bryan': 1}}
    """

    def __init__(self) -> None:
        self.debtors = 0
        self.personas = dict.fromkeys(ALL_PERSONAS, 0)
        self.quadrants = dict.fromkeys(ALL_QUADRANTS, 0)
        self.cells: dict[str, dict[str, int]] = {}
        self.latest: float | None = None
        # For the transitions: first event, start of the current persona, previous and
        # current persona (as indices into ALL_PERSONAS) of each debtor that has a persona start.
        self._first = array("d")
        self._since = array("d")
        self._before = array("b")
        self._after = array("b")

    def add(self, state: DebtorState) -> None:
        """Count one debtor's state."""
        self.debtors += 1
        self.personas[state.persona] = self.personas.get(state.persona, 0) + 1
        self.quadrants[state.quadrant] = self.quadrants.get(state.quadrant, 0) + 1
        row = self.cells.setdefault(state.persona, {})
        row[state.quadrant] = row.get(state.quadrant, 0) + 1
        if state.watermark and math.isfinite(state.watermark) and (self.latest is None or state.watermark > self.latest):
            self.latest = state.watermark
        if math.isfinite(state.persona_since):
            self._first.append(state.first_ts)
            self._since.append(state.persona_since)
            self._before.append(_PERSONA_INDEX[state.previous_persona])
            self._after.append(_PERSONA_INDEX[state.persona])

    def transitions(self, since: float) -> dict[str, dict[str, int]]:
        """Persona at ``since`` -> persona now (:func:`persona_at`), without the zero cells."""
        counts: dict[str, dict[str, int]] = {}
        for first, started, before, after in zip(self._first, self._since, self._before, self._after, strict=True):
            then = persona_at(since, first, started, before, after)
            if then is None:
                continue
            row = counts.setdefault(ALL_PERSONAS[then], {})
            row[ALL_PERSONAS[after]] = row.get(ALL_PERSONAS[after], 0) + 1
        return counts

    def summary(self, partition: int, partitions: int, *, published_at: float | None = None) -> dict[str, Any]:
        """The summary of partition ``partition`` of ``partitions`` (see :func:`summarize`);
        ``published_at`` defaults to now."""
        windows: dict[str, Any] = {}
        for days in WINDOWS_DAYS:
            since = None if self.latest is None else self.latest - days * _DAY
            windows[str(days)] = {"since": since, "counts": {} if since is None else self.transitions(since)}
        return {
            "v": SUMMARY_VERSION,
            "partition": partition,
            "partitions": partitions,
            "debtors": self.debtors,
            "personas": self.personas,
            "quadrants": self.quadrants,
            "cells": self.cells,
            "latest_event": self.latest,
            "transitions": windows,
            "published_at": time.time() if published_at is None else published_at,
        }


def summarize(partition: int, partitions: int, states: Iterable[DebtorState], *, published_at: float | None = None) -> dict[str, Any]:
    """The population summary of one table partition, as the workers publish it.

    Transition counts use the partition's own clock: ``since`` = its latest event time minus
    the window (event time, so a replayed history gives the same matrix as a live one).

    Examples
    --------
    >>> s = summarize(2, 4, [DebtorState.new("d1")], published_at=0.0)
    >>> s["partition"], s["debtors"], s["personas"]["unknown"], s["transitions"]["90"]["counts"]
    (2, 1, 1, {})
    """
    tally = PopulationTally()
    for state in states:
        tally.add(state)
    return tally.summary(partition, partitions, published_at=published_at)


def _counts(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and type(n) is int and n >= 0 for k, n in value.items())


def _matrix(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and _counts(row) for k, row in value.items())


def parse_summary(value: bytes | None, partitions: int) -> dict[str, Any] | None:
    """A summary as read from the wire, or None if it is not a valid one for a table of
    ``partitions`` partitions (another version, another partition count, garbage).

    Examples
    --------
    >>> parse_summary(orjson.dumps(summarize(1, 4, [], published_at=1.0)), 4)["partition"]
    1
    >>> parse_summary(orjson.dumps(summarize(1, 4, [], published_at=1.0)), 8) is None
    True
    """
    try:
        summary = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None
    if not isinstance(summary, dict) or summary.get("v") != SUMMARY_VERSION or summary.get("partitions") != partitions:
        return None
    partition = summary.get("partition")
    if type(partition) is not int or not 0 <= partition < partitions or type(summary.get("debtors")) is not int:
        return None
    if not (_counts(summary.get("personas")) and _counts(summary.get("quadrants")) and _matrix(summary.get("cells"))):
        return None
    windows = summary.get("transitions")
    if not isinstance(windows, dict):
        return None
    for days in WINDOWS_DAYS:
        window = windows.get(str(days))
        if not isinstance(window, dict) or not _matrix(window.get("counts")):
            return None
        if window.get("since") is not None and not isinstance(window["since"], int | float):
            return None
    if not isinstance(summary.get("published_at"), int | float):
        return None
    latest = summary.get("latest_event")
    if latest is not None and not isinstance(latest, int | float):
        return None
    return summary


def _coverage(summaries: Mapping[int, Mapping[str, Any]], partitions: int) -> tuple[list[Mapping[str, Any]], dict[str, Any]]:
    present = [summaries[p] for p in range(partitions) if p in summaries]
    published = [s["published_at"] for s in present]
    latest = [s["latest_event"] for s in present if s.get("latest_event") is not None]
    meta = {
        "partitions": {"reported": len(present), "total": partitions, "complete": len(present) == partitions},
        "as_of": utc_iso(min(published)) if published else None,
        "latest_event": utc_iso(max(latest)) if latest else None,
    }
    return present, meta


def merge_population(summaries: Mapping[int, Mapping[str, Any]], partitions: int) -> dict[str, Any]:
    """The population (``GET /personas``): the sum of the newest summary of every partition.

    Examples
    --------
    >>> parts = {p: summarize(p, 2, [DebtorState.new(f"d{p}")], published_at=1.0) for p in (0, 1)}
    >>> body = merge_population(parts, 2)
    >>> body["debtors"], body["personas"]["unknown"], body["partitions"]["complete"]
    (2, 2, True)
    """
    present, meta = _coverage(summaries, partitions)
    personas = dict.fromkeys(ALL_PERSONAS, 0)
    quadrants = dict.fromkeys(ALL_QUADRANTS, 0)
    both = {persona: dict.fromkeys(ALL_QUADRANTS, 0) for persona in ALL_PERSONAS}
    for summary in present:
        for persona, n in summary["personas"].items():
            personas[persona] = personas.get(persona, 0) + n
        for quadrant, n in summary["quadrants"].items():
            quadrants[quadrant] = quadrants.get(quadrant, 0) + n
        for persona, row in summary["cells"].items():
            target = both.setdefault(persona, dict.fromkeys(ALL_QUADRANTS, 0))
            for quadrant, n in row.items():
                target[quadrant] = target.get(quadrant, 0) + n
    return {
        "debtors": sum(s["debtors"] for s in present),
        "personas": personas,
        "quadrants": quadrants,
        "persona_quadrant": both,
        **meta,
    }


def _days_message() -> str:
    return f"days must be one of {', '.join(map(str, WINDOWS_DAYS))} (default {DEFAULT_WINDOW_DAYS})"


def window_days(raw: str | None) -> int:
    """The transition window a request names: one of :data:`WINDOWS_DAYS`, default
    :data:`DEFAULT_WINDOW_DAYS`; raises :class:`UnknownWindow` for anything else.

    Examples
    --------
    >>> window_days(None), window_days(" 90 ")
    (365, 90)
    >>> window_days("60")
    Traceback (most recent call last):
    ...
    debtor_segments.streams.population.UnknownWindow: days must be one of 30, 90, 365 (default 365)
    """
    if raw is None:
        return DEFAULT_WINDOW_DAYS
    try:
        days = int(raw.strip())
    except ValueError:
        raise UnknownWindow(_days_message()) from None
    if days not in WINDOWS_DAYS:
        raise UnknownWindow(_days_message())
    return days


def merge_transitions(summaries: Mapping[int, Mapping[str, Any]], partitions: int, days: int) -> dict[str, Any]:
    """The transition matrix (``GET /personas/transitions``): summed counts of the ``days``
    window, and row shares; raises :class:`UnknownWindow` unless ``days`` is in :data:`WINDOWS_DAYS`.

    Examples
    --------
    >>> parts = {0: summarize(0, 1, [DebtorState.new("d")], published_at=1.0)}
    >>> body = merge_transitions(parts, 1, 90)
    >>> body["days"], body["debtors"], body["row_shares"]["tamara"]["tamara"]
    (90, 0, 0.0)
    """
    if days not in WINDOWS_DAYS:
        raise UnknownWindow(_days_message())
    present, meta = _coverage(summaries, partitions)
    counts = {row: dict.fromkeys(ALL_PERSONAS, 0) for row in ALL_PERSONAS}
    starts = []
    for summary in present:
        window = summary["transitions"][str(days)]
        if window.get("since") is not None:
            starts.append(window["since"])
        for row, cells in window["counts"].items():
            target = counts.setdefault(row, dict.fromkeys(ALL_PERSONAS, 0))
            for col, n in cells.items():
                target[col] = target.get(col, 0) + n
    shares = {row: {col: round(share, 4) for col, share in cells.items()} for row, cells in row_shares(counts).items()}
    return {
        "days": days,
        "since": utc_iso(min(starts)) if starts else None,
        "debtors": sum(sum(cells.values()) for cells in counts.values()),
        "counts": counts,
        "row_shares": shares,
        **meta,
    }


def population(states: Iterable[DebtorState]) -> dict[str, Any]:
    """Debtors by persona and by quadrant, of a list of states.

    Examples
    --------
    >>> population([DebtorState.new("d1")])["personas"]["unknown"]
    1
    """
    states = list(states)
    return {
        "debtors": len(states),
        "personas": distribution((s.persona for s in states), ALL_PERSONAS),
        "quadrants": distribution((s.quadrant for s in states), ALL_QUADRANTS),
    }


def transitions(states: Iterable[DebtorState], since_ts: float) -> dict[str, Any]:
    """Persona at ``since_ts`` (:func:`persona_at`) -> persona now, counts and row shares.

    A debtor that changed more than once since ``since_ts`` counts from its previous persona.

    Examples
    --------
    >>> state = DebtorState.new("d1")
    >>> state.persona, state.previous_persona, state.persona_since = "job", "tamara", 100.0
    >>> transitions([state], 50.0)["counts"]["tamara"]["job"]
    1
    """
    before, after = {}, {}
    for state in states:
        then = persona_at(since_ts, state.first_ts, state.persona_since, state.previous_persona, state.persona)
        if then is None:
            continue
        before[state.debtor_id] = then
        after[state.debtor_id] = state.persona
    matrix = transition_matrix(before, after)
    return {"since": utc_iso(since_ts, before_epoch=True), "counts": matrix, "row_shares": row_shares(matrix)}
