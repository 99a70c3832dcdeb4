"""The population views of the core: one transition rule, the same counts from a partition's
tally (the arrays the worker keeps) and from the states themselves."""

from __future__ import annotations

import math

import orjson
import pytest

from debtor_segments.streams.engine import Engine
from debtor_segments.streams.events import DecodeError, decode_event
from debtor_segments.streams.population import (
    WINDOWS_DAYS,
    PopulationTally,
    UnknownWindow,
    merge_population,
    merge_transitions,
    parse_summary,
    persona_at,
    population,
    summarize,
    transitions,
    window_days,
)
from debtor_segments.streams.report import ALL_PERSONAS
from debtor_segments.streams.simulation import simulate
from debtor_segments.streams.state import DebtorState

DAY = 86_400.0


@pytest.fixture(scope="module")
def states() -> list[DebtorState]:
    engine = Engine()
    for line in simulate(debtors=60, months=8, seed=7).lines:
        try:
            engine.handle(decode_event(line))
        except DecodeError:
            pass
    return list(engine.states.values())


def test_the_rule() -> None:
    # Known at `since` and a persona start: the previous persona if the current began later.
    assert persona_at(100.0, 100.0, 100.0, "job", "tamara") == "tamara"
    assert persona_at(100.0, 100.0, 100.5, "job", "tamara") == "job"
    assert persona_at(100.0, 100.5, 200.0, "job", "tamara") is None
    for never in (math.nan, math.inf, -math.inf):
        assert persona_at(100.0, 0.0, never, "job", "tamara") is None


def test_the_tally_counts_what_the_states_count(states: list[DebtorState]) -> None:
    assert any(s.persona != s.previous_persona for s in states), "the fixture should hold changes"
    tally = PopulationTally()
    for state in states:
        tally.add(state)
    latest = max(s.watermark for s in states)
    for since in (latest - 30 * DAY, latest - 90 * DAY, latest - 150 * DAY, latest):
        full = transitions(states, since)["counts"]
        assert tally.transitions(since) == {row: {c: n for c, n in cells.items() if n} for row, cells in full.items() if any(cells.values())}
    assert tally.debtors == len(states) and tally.personas == population(states)["personas"] and tally.latest == latest


def test_a_summary_round_trips_and_merges_to_the_whole(states: list[DebtorState]) -> None:
    halves = {0: states[::2], 1: states[1::2]}
    summaries = {p: parse_summary(orjson.dumps(summarize(p, 2, group, published_at=5.0)), 2) for p, group in halves.items()}
    assert all(s is not None for s in summaries.values())
    body = merge_population(summaries, 2)  # type: ignore[arg-type]
    whole = population(states)
    assert (body["debtors"], body["personas"], body["quadrants"]) == (whole["debtors"], whole["personas"], whole["quadrants"])
    for days in WINDOWS_DAYS:
        matrix = merge_transitions(summaries, 2, days)  # type: ignore[arg-type]
        assert set(matrix["counts"]) == set(ALL_PERSONAS)


def test_only_the_kept_windows_are_served() -> None:
    assert [window_days(raw) for raw in (None, "30", " 90 ", "365")] == [365, 30, 90, 365]
    for raw in ("60", "", "abc", "90.0"):
        with pytest.raises(UnknownWindow, match=r"days must be one of 30, 90, 365 \(default 365\)"):
            window_days(raw)
    with pytest.raises(UnknownWindow):
        merge_transitions({}, 1, 7)
