"""The decoder: every valid event decodes, everything else is a DecodeError with a reason."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from debtor_segments.schemas import INBOUND_TYPES
from debtor_segments.streams.events import EARLIEST_TS, LATEST_TS, DecodeError, Limits, decode_event

VALID = {
    "event_id": "e1",
    "debtor_id": "d1",
    "type": "payment_received",
    "occurred_at": "2026-03-01T10:00:00+01:00",
    "claim_id": "c1",
    "amount_cents": 2500,
}
REASONS = {
    "invalid_json",
    "not_an_object",
    "unknown_type",
    "missing_field",
    "invalid_field",
    "invalid_timestamp",
    "implausible_timestamp",
    "amount_above_ceiling",
    "duplicate_key",
    "record_too_large",
}


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
@given(
    st.sampled_from(INBOUND_TYPES),
    st.dictionaries(
        st.sampled_from(["event_id", "debtor_id", "occurred_at", "claim_id", "amount_cents", "stars", "channel", "outcome", "principal_cents"]),
        json_values,
    ),
)
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
    # Any text but control characters (the contract forbids them in ids).
    st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=64),
    # The plausible range (streams.events.Limits), a day inside it so any offset stays inside.
    st.datetimes(min_value=datetime(2000, 1, 2), max_value=datetime(2099, 12, 30)),
    st.integers(min_value=-14 * 60, max_value=14 * 60),
)
def test_valid_payments_always_decode(amount: int, debtor_id: str, moment: datetime, offset_minutes: int) -> None:
    stamp = moment.replace(tzinfo=timezone(timedelta(minutes=offset_minutes))).isoformat()
    body = {**VALID, "amount_cents": amount, "debtor_id": debtor_id, "occurred_at": stamp}
    event = decode_event(orjson.dumps(body))
    assert event.debtor_id == debtor_id and event.data["amount_cents"] == amount


# --- plausible event times (issue 14, item 4) -------------------------------------------------

NOW = 1_796_000_000.0  # 2026-11-29


@pytest.mark.parametrize(
    "stamp",
    [
        "9999-12-31T23:59:59-01:00",  # UTC year 10000: froze the debtor, broke /personas
        "9999-12-31T23:59:59Z",
        "2100-01-01T00:00:01Z",
        "0001-01-01T00:00:00Z",  # skipped the evidence gate
        "1970-01-01T00:00:00Z",
        "1999-12-31T23:59:59Z",
        "2000-01-01T00:30:00+01:00",  # 1999 in UTC
    ],
)
def test_event_times_outside_the_plausible_range_are_dead_lettered(stamp: str) -> None:
    with pytest.raises(DecodeError) as caught:
        decode_event(orjson.dumps({**VALID, "occurred_at": stamp}))
    assert caught.value.reason == "implausible_timestamp"
    assert stamp in caught.value.detail


def test_event_times_too_far_ahead_of_the_clock_are_dead_lettered() -> None:
    ahead = datetime.fromtimestamp(NOW + 86_400 + 1, UTC).isoformat()
    with pytest.raises(DecodeError) as caught:
        decode_event(orjson.dumps({**VALID, "occurred_at": ahead}), now=NOW)
    assert caught.value.reason == "implausible_timestamp"
    # Within the skew, and without a clock (a replay of a file): accepted.
    within = datetime.fromtimestamp(NOW + 86_400, UTC).isoformat()
    assert decode_event(orjson.dumps({**VALID, "occurred_at": within}), now=NOW).ts == NOW + 86_400
    assert decode_event(orjson.dumps({**VALID, "occurred_at": ahead})).ts == NOW + 86_401
    # The skew and the earliest time are configurable.
    strict = Limits(earliest_ts=NOW - 10, max_future_s=60.0)
    for ts in (NOW - 11, NOW + 61):
        stamp = datetime.fromtimestamp(ts, UTC).isoformat()
        with pytest.raises(DecodeError, match="implausible_timestamp"):
            decode_event(orjson.dumps({**VALID, "occurred_at": stamp}), limits=strict, now=NOW)


def test_the_bounds_themselves_are_plausible() -> None:
    for ts in (EARLIEST_TS, LATEST_TS):
        stamp = datetime.fromtimestamp(ts, UTC).isoformat()
        assert decode_event(orjson.dumps({**VALID, "occurred_at": stamp})).ts == ts


# --- decoder strictness (issue 14, item 5) ----------------------------------------------------

RATED = {"event_id": "e1", "debtor_id": "d1", "type": "call_rated", "occurred_at": "2026-03-01T10:00:00Z", "stars": 4, "call_id": "c1"}


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (orjson.dumps(RATED)[:-1] + b',"stars":5}', "duplicate_key"),  # a second "stars"
        (orjson.dumps(RATED)[:-1] + b',"debtor_id":"d2"}', "duplicate_key"),
        (orjson.dumps(RATED)[:-1] + b',"extra":{"a":1,"a":2}}', "duplicate_key"),  # nested too
        (orjson.dumps({**RATED, "call_id": '"x":'})[:-1] + b',"stars":5}', "duplicate_key"),  # a key-like value
        (orjson.dumps(RATED).replace(b'"stars":4', b'"stars":5.0000000000000001'), "invalid_field"),
        (orjson.dumps(RATED).replace(b'"stars":4', b'"stars":4.0'), "invalid_field"),
        (orjson.dumps(RATED).replace(b'"stars":4', b'"stars":4e0'), "invalid_field"),
        (orjson.dumps({**VALID, "amount_cents": 2500.0}), "invalid_field"),
        (orjson.dumps({**RATED, "event_id": "e\x001"}), "invalid_field"),
        (orjson.dumps({**RATED, "debtor_id": "d\x001"}), "invalid_field"),
        (orjson.dumps({**RATED, "call_id": "c\n1"}), "invalid_field"),
        (orjson.dumps({**RATED, "debtor_id": "d\x7f"}), "invalid_field"),
        (orjson.dumps({**RATED, "debtor_id": "d\x85"}), "invalid_field"),
        (orjson.dumps({**RATED, "occurred_at": "2026-03-01T10:00:00+0100"}), "invalid_timestamp"),
        (orjson.dumps({**RATED, "occurred_at": "2026-03-01T10:00:61Z"}), "invalid_timestamp"),
        (orjson.dumps({**RATED, "occurred_at": "2026-03-01T10:00:00+01"}), "invalid_timestamp"),
        (orjson.dumps({**RATED, "occurred_at": "2026-03-01 10:00:00Z"}), "invalid_timestamp"),
        (orjson.dumps({**RATED, "pad": "x" * 70_000}), "record_too_large"),
    ],
)
def test_strict_decoding(raw: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as caught:
        decode_event(raw)
    assert caught.value.reason == reason, caught.value


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        ("2026-03-01t10:00:00z", "2026-03-01T10:00:00+00:00"),  # RFC 3339 allows lower case
        ("2026-03-01T10:00:00z", "2026-03-01T10:00:00+00:00"),
        ("2026-03-01t11:00:00+01:00", "2026-03-01T10:00:00+00:00"),
        ("2016-12-31T23:59:60Z", "2017-01-01T00:00:00+00:00"),  # a leap second: the next instant
        ("2016-12-31T18:59:60.5-05:00", "2017-01-01T00:00:00.500000+00:00"),
        ("2026-03-01T10:00:00.123456789Z", "2026-03-01T10:00:00.123456+00:00"),  # microseconds, truncated
    ],
)
def test_rfc3339_forms_are_accepted(stamp: str, expected: str) -> None:
    event = decode_event(orjson.dumps({**RATED, "occurred_at": stamp}))
    assert datetime.fromtimestamp(event.ts, UTC).isoformat() == expected
    assert event.occurred_at == stamp


def test_ids_with_other_unicode_and_key_like_values_are_fine() -> None:
    event = decode_event(orjson.dumps({**RATED, "debtor_id": "dé-ü 名", "call_id": '"stars": 5', "note": {"k": [1, {"j": 2}]}}))
    assert event.debtor_id == "dé-ü 名" and event.data["stars"] == 4


def test_the_record_size_limit_is_configurable() -> None:
    raw = orjson.dumps({**RATED, "pad": "x" * 1000})
    assert decode_event(raw).type == "call_rated"
    with pytest.raises(DecodeError, match="record_too_large"):
        decode_event(raw, limits=Limits(max_record_bytes=1000))


def test_deep_nesting_is_a_reason_not_a_crash() -> None:
    raw = b'{"event_id":"\\":","x":' + b"[" * 1000 + b"]" * 1000 + b"}"
    with pytest.raises(DecodeError) as caught:
        decode_event(raw)
    assert caught.value.reason in REASONS
