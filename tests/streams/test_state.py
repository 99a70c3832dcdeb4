"""Serialisation of the debtor state (``streams.state``)."""

from __future__ import annotations

import dataclasses

import orjson
from hypothesis import given
from hypothesis import strategies as st

from streams.state import CHANNELS, DECAYED, DebtorState

_DECAYED_AT = 1 + [f.name for f in dataclasses.fields(DebtorState)].index("decayed")
counters = st.lists(st.floats(min_value=0.0, max_value=1e7, allow_nan=False, allow_infinity=False), min_size=len(DECAYED), max_size=len(DECAYED))


@given(counters)
def test_stored_counters_are_rounded_to_4_decimals(values: list[float]) -> None:
    state = DebtorState.new("d1")
    state.decayed = list(values)
    stored = orjson.loads(state.to_bytes())[_DECAYED_AT]
    for value, kept in zip(values, stored, strict=True):
        assert abs(kept - value) <= 0.00005 + 1e-9 * value
        assert abs(kept * 10_000 - round(kept * 10_000)) <= 1e-6 * max(1.0, kept)


@given(counters, st.lists(st.floats(min_value=0.0, max_value=1e4), min_size=len(CHANNELS), max_size=len(CHANNELS)))
def test_a_state_read_back_serialises_to_the_same_bytes(values: list[float], channels: list[float]) -> None:
    state = DebtorState.new("d1")
    state.decayed, state.channel_out, state.channel_resp = list(values), list(channels), list(reversed(channels))
    once = state.to_bytes()
    assert DebtorState.from_bytes(once).to_bytes() == once
