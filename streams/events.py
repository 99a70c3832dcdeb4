"""Inbound events: decoding and validation against the wire contract.

One decoder serves the embedded replay and the Kafka agents, so an event is valid
or invalid the same way everywhere.

>>> event = decode_event(b'{"event_id": "e1", "debtor_id": "d1", "type": "payment_received",'
...                      b' "occurred_at": "2026-03-01T10:00:00+01:00", "claim_id": "c1",'
...                      b' "amount_cents": 2500}')
>>> event.type, event.debtor_id, event.ts
('payment_received', 'd1', 1772355600.0)
>>> decode_event(b'{"event_id": "e1"')
Traceback (most recent call last):
...
streams.events.DecodeError: invalid_json: unexpected end of data: line 1 column 18 (char 17)
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, NamedTuple

import fastjsonschema
import orjson

from schemas import INBOUND_TYPES, load_schema

__all__ = ["DEFAULT_MAX_AMOUNT_CENTS", "DecodeError", "Event", "decode_event", "decode_object"]

#: Amounts above this are rejected as implausible (EUR 10 million); configurable per decoder call.
DEFAULT_MAX_AMOUNT_CENTS = 1_000_000_000
# fastjsonschema compiles each schema to Python code once: ~100x faster than interpreting it.
# "format" is an annotation in draft 2020-12; occurred_at is checked once, by _parse_timestamp.
_VALIDATORS = {name: fastjsonschema.compile(load_schema(name), use_formats=False) for name in INBOUND_TYPES}
#: The amount fields of each type, checked against the configurable ceiling.
_AMOUNT_FIELDS = {
    name: tuple(field for field in load_schema(name)["properties"] if field.endswith("_cents"))
    for name in INBOUND_TYPES
}
_RFC3339 = re.compile(r"\d{4}-\d\d-\d\d[Tt]\d\d:\d\d:\d\d(?:\.\d+)?(?:[Zz]|[+-]\d\d:?\d\d)\Z")
_ENVELOPE_FIELDS = ("event_id", "debtor_id", "type", "occurred_at")


class DecodeError(ValueError):
    """An inbound record that breaks the contract.

    ``reason`` is a short code suitable as a metric label; ``detail`` says what exactly is wrong.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class Event(NamedTuple):
    """A validated inbound event.

    ``ts`` is ``occurred_at`` as POSIX seconds; ``data`` is the decoded object, with any
    unknown extra fields kept (they are ignored, for forward compatibility).
    """

    event_id: str
    debtor_id: str
    type: str
    occurred_at: str
    ts: float
    data: dict[str, Any]


def decode_event(raw: bytes | str, *, max_amount_cents: int = DEFAULT_MAX_AMOUNT_CENTS) -> Event:
    """Parse and validate one raw JSON record, or raise :class:`DecodeError`."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise DecodeError("invalid_json", str(exc)) from None
    return decode_object(obj, max_amount_cents=max_amount_cents)


def decode_object(obj: Any, *, max_amount_cents: int = DEFAULT_MAX_AMOUNT_CENTS) -> Event:
    """Validate an already parsed JSON value, or raise :class:`DecodeError`.

    >>> decode_object({"event_id": "e", "debtor_id": "d", "type": "refund",
    ...                "occurred_at": "2026-01-01T00:00:00Z"})
    Traceback (most recent call last):
    ...
    streams.events.DecodeError: unknown_type: 'refund' is not an event type
    """
    if not isinstance(obj, dict):
        raise DecodeError("not_an_object", f"expected a JSON object, got {type(obj).__name__}")
    event_type: Any = obj.get("type")
    try:
        validate = _VALIDATORS.get(event_type)
    except TypeError:  # an unhashable "type", such as a list
        validate = None
    if validate is None:
        _check_envelope(obj)
        raise DecodeError("unknown_type", f"{_short(event_type)} is not an event type")
    try:
        validate(obj)
    except fastjsonschema.JsonSchemaValueException as exc:
        if exc.rule == "required":
            _check_envelope(obj)
            code = "missing_field"
        elif exc.name == "data.occurred_at":
            code = "invalid_timestamp"
        else:
            code = "invalid_field"
        raise DecodeError(code, exc.message) from None
    for name in _AMOUNT_FIELDS[event_type]:
        amount = obj[name]
        if amount > max_amount_cents:
            raise DecodeError("amount_above_ceiling", f"{name} {amount} > {max_amount_cents}")
    occurred_at = obj["occurred_at"]
    return Event(obj["event_id"], obj["debtor_id"], event_type, occurred_at, _parse_timestamp(occurred_at), obj)


def _check_envelope(obj: dict[str, Any]) -> None:
    """Name the first missing envelope field, so every type reports it the same way."""
    for name in _ENVELOPE_FIELDS:
        if name not in obj:
            raise DecodeError("missing_field", f"{name} is required")


def _parse_timestamp(text: str) -> float:
    # The pattern admits RFC 3339's shape only (fromisoformat alone accepts more of ISO 8601);
    # fromisoformat then checks the ranges (month 13, 30 February).
    if not _RFC3339.match(text):
        raise DecodeError("invalid_timestamp", f"occurred_at {_short(text)} is not RFC 3339")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise DecodeError("invalid_timestamp", f"occurred_at {_short(text)} is not RFC 3339") from None
    if moment.tzinfo is None:
        raise DecodeError("invalid_timestamp", f"occurred_at {_short(text)} has no UTC offset")
    try:
        return moment.timestamp()
    except (OverflowError, ValueError, OSError):
        raise DecodeError("invalid_timestamp", f"occurred_at {_short(text)} is out of range") from None


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
