"""Serialisation of the debtor state (``streams.state``)."""

from __future__ import annotations

import dataclasses

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from debtor_segments.streams.state import CHANNELS, DECAYED, DebtorState

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


def _busy_state() -> DebtorState:
    from debtor_segments.streams.events import decode_object

    state = DebtorState.new("d1")
    for i, (kind, extra) in enumerate(
        (
            ("claim_opened", {"claim_id": "c1", "creditor_id": "shop", "principal_cents": 30_000}),
            ("arrangement_agreed", {"claim_id": "c1", "arrangement_id": "a1", "installments": 3, "installment_cents": 10_000}),
            ("payment_received", {"claim_id": "c1", "amount_cents": 10_000}),
        )
    ):
        event = decode_object({"event_id": f"e{i}", "debtor_id": "d1", "type": kind, "occurred_at": f"2026-01-0{i + 1}T09:00:00Z", **extra})
        state.apply(event, half_life_days=120.0)
        state.remember(event.ts, f"token-{i}", 7 * 86_400.0, 24)
    return state


#: The fields a state of format 3 (today's) holds, in order: stored states are read by these
#: names for as long as format 3 is read.
FORMAT_3 = (
    "debtor_id", "first_ts", "watermark", "applied", "recent", "dedup_floor", "open_claims", "claims", "creditor_bits",
    "principal_cents", "paid_cents", "outstanding_cents", "claims_paid", "claims_unpaid", "open_arrangements", "stars_total",
    "ratings", "last_payment_ts", "last_contact_ts", "decayed", "channel_out", "channel_resp", "persona", "persona_since",
    "previous_persona", "confidence", "candidate", "streak", "candidate_since", "anchor", "quadrant", "willingness", "ability",
    "model_version", "last_learn_ts", "first_arrangement_ts", "uncounted_payments", "channel_ts",
)  # fmt: skip


def test_a_new_field_needs_a_new_format_with_its_layout() -> None:
    """Issue 13: states are read by the field names of the format they were written in."""
    assert tuple(f.name for f in dataclasses.fields(DebtorState)) == FORMAT_3, "DebtorState's fields changed: add a state format with its layout in streams/state.py"
    state = _busy_state()
    stored = orjson.loads(state.to_bytes())
    assert stored[0] == 3
    named = dict(zip(FORMAT_3, stored[1:], strict=True))  # format 3 holds its layout's fields, by name
    assert (named["debtor_id"], named["claims"], named["paid_cents"], named["open_arrangements"]) == ("d1", 1, 10_000, 1)
    assert named["first_arrangement_ts"] == state.first_arrangement_ts and named["persona"] == state.persona
    with pytest.raises(ValueError, match="has .* fields"):
        DebtorState.from_bytes(orjson.dumps(stored[:-1]))  # format 3 holds every field of its layout
    with pytest.raises(ValueError, match="has .* fields"):
        DebtorState.from_bytes(orjson.dumps([*stored, 0]))
    with pytest.raises(ValueError, match="unsupported"):
        DebtorState.from_bytes(orjson.dumps([99, *stored[1:]]))


def test_states_of_format_2_are_still_read_whatever_their_length() -> None:
    state = _busy_state()
    body = orjson.loads(state.to_bytes())[1:]
    assert DebtorState.from_bytes(orjson.dumps([2, *body])).to_bytes() == state.to_bytes()
    # Written before the last fields were appended: they keep their defaults, and a debtor with
    # arrangements then counts payments as kept from its first event on (the old rule).
    names = [f.name for f in dataclasses.fields(DebtorState)]
    short = DebtorState.from_bytes(orjson.dumps([2, *body[: names.index("first_arrangement_ts")]]))
    assert short.first_arrangement_ts == int(short.first_ts) and short.uncounted_payments == [] and short.channel_ts is None
    full = DebtorState.from_bytes(state.to_bytes())
    assert short.decayed == full.decayed and short.recent == full.recent
