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
debtor_segments.streams.events.DecodeError: invalid_json: unexpected end of data: line 1 column 18 (char 17)
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

import fastjsonschema
import orjson

from debtor_segments.schemas import INBOUND_TYPES, load_schema
from debtor_segments.streams.local_time import zone

__all__ = [
    "DEFAULT_LIMITS",
    "DEFAULT_MAX_AMOUNT_CENTS",
    "DEFAULT_MAX_RECORD_BYTES",
    "EARLIEST_TS",
    "LATEST_TS",
    "DecodeError",
    "Event",
    "Limits",
    "decode_event",
    "decode_object",
    "parse_time",
]

#: Amounts above this are rejected as implausible (EUR 10 million); configurable per decoder call.
DEFAULT_MAX_AMOUNT_CENTS = 1_000_000_000
#: Records above this size are rejected before parsing (events are a few hundred bytes; a
#: 200 MB line once took 810 MB to reject).
DEFAULT_MAX_RECORD_BYTES = 65_536
#: Events before 2000-01-01T00:00:00Z are implausible (a year-0001 date skipped the evidence gate).
EARLIEST_TS = 946_684_800.0
#: ... and so are events from 2100 on, whatever the clock says: one event dated 9999 froze its
#: debtor (every later real event was too late) and broke the population endpoints.
LATEST_TS = 4_102_444_800.0


@dataclass(frozen=True, slots=True)
class Limits:
    """Plausible event times: ``earliest_ts`` <= ts <= min(:data:`LATEST_TS`, now + ``max_future_s``).

    ``now`` is given per decoder call (the wall clock of the worker; none in pure replays of
    files, where only the fixed bounds apply).

    >>> Limits().latest(now=1_800_000_000.0)
    1800086400.0
    """

    earliest_ts: float = EARLIEST_TS
    latest_ts: float = LATEST_TS
    #: How far ahead of the wall clock an event may be (producers' clock skew).
    max_future_s: float = 86_400.0
    #: Largest record (bytes) the decoder parses.
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES

    def latest(self, now: float | None) -> float:
        """The latest plausible event time at wall-clock time ``now`` (None: no clock)."""
        return self.latest_ts if now is None else min(self.latest_ts, now + self.max_future_s)


DEFAULT_LIMITS = Limits()
# fastjsonschema compiles each schema to Python code once: ~100x faster than interpreting it.
# "format" is an annotation in draft 2020-12; occurred_at is checked once, by parse_time.
# A field's "not": {"pattern": ...} (no control characters in ids) is checked in
# decode_object instead: as compiled by fastjsonschema it tripled the cost of validation.
_FORBIDDEN = {name: tuple((field, re.compile(spec["not"]["pattern"])) for field, spec in load_schema(name)["properties"].items() if "pattern" in spec.get("not", {})) for name in INBOUND_TYPES}


def _without_forbidden(schema: dict[str, Any]) -> dict[str, Any]:
    properties = {field: {k: v for k, v in spec.items() if k != "not"} for field, spec in schema["properties"].items()}
    return {**schema, "properties": properties}


_VALIDATORS = {name: fastjsonschema.compile(_without_forbidden(load_schema(name)), use_formats=False) for name in INBOUND_TYPES}
#: The amount fields of each type, checked against the configurable ceiling.
_AMOUNT_FIELDS = {name: tuple(field for field in load_schema(name)["properties"] if field.endswith("_cents")) for name in INBOUND_TYPES}
#: The integer fields of each type: JSON Schema's "integer" admits 5.0 (and 5.0000000000000001,
#: which parses as 5.0); the contract means a JSON integer literal.
_INTEGER_FIELDS = {name: tuple(field for field, spec in load_schema(name)["properties"].items() if spec.get("type") == "integer") for name in INBOUND_TYPES}
# RFC 3339, section 5.6: the offset has a colon; "T" and "Z" may be lower case; seconds may be 60
# (a leap second, taken as the first instant of the next second).
_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\d)[Tt](\d\d:\d\d):(\d\d)(\.\d+)?([Zz]|[+-]\d\d:\d\d)\Z")
# A key is a string directly followed by a colon: every key of the record matches, so fewer
# matches than keys parsed proves there were no repeated keys (see _check_unique_keys).
_KEY_LIKE = re.compile(rb'"\s*:')
#: Types with a ``timezone`` field, checked against the time zone database.
_ZONED = frozenset(name for name in INBOUND_TYPES if "timezone" in load_schema(name)["properties"])
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


def decode_event(
    raw: bytes | str,
    *,
    max_amount_cents: int = DEFAULT_MAX_AMOUNT_CENTS,
    limits: Limits = DEFAULT_LIMITS,
    now: float | None = None,
) -> Event:
    """Parse and validate one raw JSON record, or raise :class:`DecodeError`.

    >>> decode_event(b'{"event_id": "e", "debtor_id": "d", "type": "contact_initiated",'
    ...              b' "occurred_at": "9999-12-31T23:59:59-01:00", "channel": "portal", "direction": "inbound"}')
    Traceback (most recent call last):
    ...
    debtor_segments.streams.events.DecodeError: implausible_timestamp: occurred_at '9999-12-31T23:59:59-01:00' is after 2100-01-01T00:00:00Z
    """
    if len(raw) > limits.max_record_bytes:
        raise DecodeError("record_too_large", f"{len(raw)} bytes > {limits.max_record_bytes}")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise DecodeError("invalid_json", str(exc)) from None
    _check_unique_keys(raw, obj)
    return decode_object(obj, max_amount_cents=max_amount_cents, limits=limits, now=now)


def decode_object(
    obj: Any,
    *,
    max_amount_cents: int = DEFAULT_MAX_AMOUNT_CENTS,
    limits: Limits = DEFAULT_LIMITS,
    now: float | None = None,
) -> Event:
    """Validate an already parsed JSON value, or raise :class:`DecodeError`.

    >>> decode_object({"event_id": "e", "debtor_id": "d", "type": "refund",
    ...                "occurred_at": "2026-01-01T00:00:00Z"})
    Traceback (most recent call last):
    ...
    debtor_segments.streams.events.DecodeError: unknown_type: 'refund' is not an event type
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
    for name, forbidden in _FORBIDDEN[event_type]:
        value = obj.get(name)
        if type(value) is str and forbidden.search(value):
            raise DecodeError("invalid_field", f"{name} contains a control character")
    for name in _INTEGER_FIELDS[event_type]:
        if name in obj and type(obj[name]) is not int:
            raise DecodeError("invalid_field", f"{name} must be an integer literal, not {_short(obj[name])}")
    for name in _AMOUNT_FIELDS[event_type]:
        amount = obj[name]
        if amount > max_amount_cents:
            raise DecodeError("amount_above_ceiling", f"{name} {amount} > {max_amount_cents}")
    if "timezone" in obj and event_type in _ZONED and zone(obj["timezone"]) is None:
        raise DecodeError("invalid_timezone", f"timezone {_short(obj['timezone'])} is not an IANA time zone name")
    occurred_at = obj["occurred_at"]
    ts = parse_time(occurred_at)
    if ts < limits.earliest_ts:
        raise DecodeError("implausible_timestamp", f"occurred_at {_short(occurred_at)} is before {_utc(limits.earliest_ts)}")
    latest = limits.latest(now)
    if ts > latest:
        raise DecodeError("implausible_timestamp", f"occurred_at {_short(occurred_at)} is after {_utc(latest)}")
    return Event(obj["event_id"], obj["debtor_id"], event_type, occurred_at, ts, obj)


def _utc(ts: float) -> str:
    try:
        return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")
    except (OverflowError, ValueError, OSError):
        return f"{ts:g} s"


def _check_envelope(obj: dict[str, Any]) -> None:
    """Name the first missing envelope field, so every type reports it the same way."""
    for name in _ENVELOPE_FIELDS:
        if name not in obj:
            raise DecodeError("missing_field", f"{name} is required")


def _check_unique_keys(raw: bytes | str, obj: Any) -> None:
    """Reject a record that repeats a key in an object (orjson keeps the last one silently).

    Counting is cheap; the exact check (the standard library's parser, which reports every
    pair) runs only when a string value looks like a key too.

    >>> _check_unique_keys(b'{"a": 1, "a": 2}', {"a": 2})
    Traceback (most recent call last):
    ...
    debtor_segments.streams.events.DecodeError: duplicate_key: 'a' appears more than once in an object
    """
    data = raw.encode() if isinstance(raw, str) else raw
    key_like = len(_KEY_LIKE.findall(data))
    # A flat object with as many key-like matches as keys (the usual event) needs no count.
    if (isinstance(obj, dict) and key_like == len(obj)) or key_like <= _count_keys(obj):
        return

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        result = dict(items)
        if len(result) != len(items):
            seen: set[str] = set()
            for key, _ in items:
                if key in seen:
                    raise DecodeError("duplicate_key", f"{_short(key)} appears more than once in an object")
                seen.add(key)
        return result

    try:
        json.loads(data, object_pairs_hook=pairs)
    except RecursionError:  # nesting orjson accepts (up to 1024) but this parser does not
        raise DecodeError("invalid_json", "nested too deeply to check for repeated keys") from None


def _count_keys(value: Any) -> int:
    # Iterative: orjson accepts nesting deeper than Python's recursion limit.
    count, stack = 0, [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            count += len(item)
            stack.extend(v for v in item.values() if isinstance(v, dict | list))
        elif isinstance(item, list):
            stack.extend(v for v in item if isinstance(v, dict | list))
    return count


def parse_time(text: str) -> float:
    """An event time (RFC 3339, as ``occurred_at``) in POSIX seconds: the one parser of event
    times, for the decoder and for the shell's readers of raw records (agents/scheduler.py).

    Raises :class:`DecodeError` (``invalid_timestamp``) for anything else; a value that is not
    a string raises TypeError. A leap second (second 60) is the first instant of the next second.

    >>> parse_time("2026-03-01T10:00:00+01:00"), parse_time("2016-12-31t23:59:60z")
    (1772355600.0, 1483228800.0)
    >>> parse_time("2026-03-01 10:00:00")
    Traceback (most recent call last):
    ...
    debtor_segments.streams.events.DecodeError: invalid_timestamp: occurred_at '2026-03-01 10:00:00' is not RFC 3339
    """
    # The pattern admits RFC 3339's shape only (fromisoformat alone accepts more of ISO 8601,
    # such as "+0100"); fromisoformat then checks the ranges (month 13, 30 February).
    match = _RFC3339.match(text)
    if not match:
        raise DecodeError("invalid_timestamp", f"occurred_at {_short(text)} is not RFC 3339")
    day, minute, second, fraction, offset = match.groups()
    leap = second == "60"
    if int(second) > 60:
        raise DecodeError("invalid_timestamp", f"occurred_at {_short(text)} has second {second}")
    offset = "+00:00" if offset in "Zz" else offset
    try:
        moment = datetime.fromisoformat(f"{day}T{minute}:{'59' if leap else second}{fraction or ''}{offset}")
    except ValueError:
        raise DecodeError("invalid_timestamp", f"occurred_at {_short(text)} is not RFC 3339") from None
    if moment.tzinfo is None:
        raise DecodeError("invalid_timestamp", f"occurred_at {_short(text)} has no UTC offset")
    try:
        return moment.timestamp() + (1.0 if leap else 0.0)
    except (OverflowError, ValueError, OSError):
        raise DecodeError("invalid_timestamp", f"occurred_at {_short(text)} is out of range") from None


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
