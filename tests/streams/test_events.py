"""The decoder: every valid event decodes, everything else is a DecodeError with a reason."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import INBOUND_TYPES
from streams.events import DecodeError, decode_event

VALID = {
    "event_id": "e1",
    "debtor_id": "d1",
    "type": "payment_received",
    "occurred_at": "2026-03-01T10:00:00+01:00",
    "claim_id": "c1",
    "amount_cents": 2500,
}
REASONS = {"invalid_json", "not_an_object", "unknown_type", "missing_field", "invalid_field", "invalid_timestamp", "amount_above_ceiling"}


def test_unknown_extra_fields_are_ignored() -> None:
    event = decode_event(orjson.dumps({**VALID, "campaign": "spring", "nested": {"a": 1}}))
    assert event.type == "payment_received"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"amount_cents": 0}, "invalid_field"),
        ({"amount_cents": -5}, "invalid_field"),
        ({"amount_cents": 2.5}, "invalid_field"),
        ({"amount_cents": True}, "invalid_field"),
        ({"amount_cents": 10**12}, "amount_above_ceiling"),
        ({"occurred_at": "2026-03-01T10:00:00"}, "invalid_timestamp"),
        ({"occurred_at": "yesterday"}, "invalid_timestamp"),
        ({"type": "refund"}, "unknown_type"),
        ({"type": 7}, "unknown_type"),
        ({"debtor_id": ""}, "invalid_field"),
        ({"event_id": "x" * 129}, "invalid_field"),
        ({"debtor_id": None}, "invalid_field"),
    ],
)
def test_contract_violations_have_reasons(change: dict, reason: str) -> None:
    with pytest.raises(DecodeError) as caught:
        decode_event(orjson.dumps({**VALID, **change}))
    assert caught.value.reason == reason


@pytest.mark.parametrize("field", ["event_id", "debtor_id", "type", "occurred_at", "claim_id", "amount_cents"])
def test_missing_fields(field: str) -> None:
    body = {k: v for k, v in VALID.items() if k != field}
    with pytest.raises(DecodeError) as caught:
        decode_event(orjson.dumps(body))
    assert caught.value.reason == "missing_field"


def test_nan_and_infinity_are_not_json() -> None:
    with pytest.raises(DecodeError) as caught:
        decode_event(b'{"event_id": "e", "debtor_id": "d", "type": "call_rated", "occurred_at": "2026-01-01T00:00:00Z", "stars": NaN}')
    assert caught.value.reason == "invalid_json"


def test_contact_direction_is_part_of_the_contract() -> None:
    body = {"event_id": "e", "debtor_id": "d", "type": "contact_initiated", "occurred_at": "2026-01-01T00:00:00Z", "channel": "portal", "direction": "outbound"}
    with pytest.raises(DecodeError):
        decode_event(orjson.dumps(body))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_escape_as_other_errors(raw: bytes) -> None:
    try:
        decode_event(raw)
    except DecodeError as error:
        assert error.reason in REASONS


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(INBOUND_TYPES), st.dictionaries(st.sampled_from(["event_id", "debtor_id", "occurred_at", "claim_id", "amount_cents", "stars", "channel", "outcome", "principal_cents"]), json_values))
def test_arbitrary_objects_decode_or_fail_with_a_reason(event_type: str, fields: dict) -> None:
    try:
        event = decode_event(orjson.dumps({"type": event_type, **fields}))
    except DecodeError as error:
        assert error.reason in REASONS
    else:
        assert event.type == event_type and event.debtor_id


@settings(max_examples=100, deadline=None)
@given(
    st.integers(min_value=1, max_value=10**9),
    st.text(min_size=1, max_size=64),
    st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1)),
    st.integers(min_value=-14 * 60, max_value=14 * 60),
)
def test_valid_payments_always_decode(amount: int, debtor_id: str, moment: datetime, offset_minutes: int) -> None:
    stamp = moment.replace(tzinfo=timezone(timedelta(minutes=offset_minutes))).isoformat()
    body = {**VALID, "amount_cents": amount, "debtor_id": debtor_id, "occurred_at": stamp}
    event = decode_event(orjson.dumps(body))
    assert event.debtor_id == debtor_id and event.data["amount_cents"] == amount
