"""Profiles and population views used by the HTTP API."""

from __future__ import annotations

import orjson

from debtor_segments.streams.engine import Engine
from debtor_segments.streams.events import DecodeError, decode_event
from debtor_segments.streams.population import population, transitions
from debtor_segments.streams.profile import profile


def _engine(lines: list[bytes]) -> Engine:
    engine = Engine()
    for line in lines:
        try:
            engine.handle(decode_event(line))
        except DecodeError:
            pass
    return engine


def test_profile_is_json_and_consistent(small_portfolio) -> None:
    engine = _engine(small_portfolio.lines)
    rated = next(s for s in engine.states.values() if s.ratings and s.persona != "unknown")
    view = orjson.loads(orjson.dumps(profile(rated, engine.model)))
    assert view["persona"] == rated.persona and view["ratings"] == rated.ratings
    assert 1 <= view["average_stars"] <= 5
    assert view["explanation"] and set(view["explanation"]) <= set(view["features"])


def test_population_and_transitions_count_every_debtor(small_portfolio) -> None:
    engine = _engine(small_portfolio.lines)
    states = list(engine.states.values())
    view = population(states)
    assert sum(view["personas"].values()) == sum(view["quadrants"].values()) == len(states)
    since = small_portfolio.start_ts + (small_portfolio.end_ts - small_portfolio.start_ts) / 2
    matrix = transitions(states, since)
    total = sum(sum(row.values()) for row in matrix["counts"].values())
    assert total == sum(s.first_ts <= since for s in states)
    for row, shares in matrix["row_shares"].items():
        if sum(matrix["counts"][row].values()):
            assert abs(sum(shares.values()) - 1) < 1e-9
