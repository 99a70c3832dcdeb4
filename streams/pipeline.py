"""The record pipeline: one raw inbound record in, a :class:`Verdict` out.

Decode the record (:func:`streams.events.decode_event`), check its key against the debtor id
where the record has a key (Kafka), run the engine step against the stored state, and turn
every rejection into a dead-letter record (``schemas/dead_letter.json``): bad JSON and schema
errors, key mismatches, events too late, the outcomes the engine refuses
(:data:`streams.engine.REJECTED_OUTCOMES`) and a step that failed. The worker
(:func:`agents.records.handle_record`) and ``replay`` (:func:`agents.replay.replay_lines`)
both run it, so a record is rejected the same way, with the same words, everywhere.

Pure: the step is the caller's (how it stores states is the caller's too), and the shell sends
what the verdict holds.

Examples
--------
>>> from debtor_segments.streams.engine import Engine
>>> engine = Engine()
>>> good = (b'{"event_id": "e1", "debtor_id": "d1", "type": "contact_initiated",'
...         b' "occurred_at": "2026-02-01T12:00:00Z", "channel": "portal", "direction": "inbound"}')
>>> run_record(good, engine.handle, engine.config, where={"line": 1}).outcome
'processed'
>>> late = good.replace(b"e1", b"e0").replace(b"2026-02-01", b"2026-01-01")
>>> verdict = run_record(late, engine.handle, engine.config, where={"line": 2}, event_fields=("event_id",))
>>> verdict.outcome, {name: value for name, value in verdict.letter.items() if name != "raw"}
('late', {'reason': 'too_late', 'detail': 'older than the 7-day lateness window', 'line': 2, 'event_id': 'e0'})
>>> run_record(good, engine.handle, engine.config, where={}, key=b"d2").letter["detail"]
"key 'd2' is not the debtor_id 'd1'"
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from enum import Enum
from typing import Any, Final, NamedTuple, Protocol

from debtor_segments.streams.engine import REJECTED_OUTCOMES, EngineConfig, Step, advance
from debtor_segments.streams.events import DEFAULT_LIMITS, DEFAULT_MAX_AMOUNT_CENTS, DecodeError, Event, Limits, decode_event
from debtor_segments.streams.model import SegmentModel
from debtor_segments.streams.state import DebtorState, marker_key, needs_marker, read_marker

__all__ = [
    "DEAD_LETTER_DETAIL_MAX",
    "DEAD_LETTER_RAW_MAX",
    "UNKEYED",
    "StateLookup",
    "Unkeyed",
    "Verdict",
    "advance_stored",
    "dead_letter",
    "key_problem",
    "run_record",
]

#: Raw bytes a dead letter keeps at most: with JSON escaping (at most 6 bytes a byte) the record
#: stays far below the producer's 1,000,000-byte request limit (issue 14, item 1).
DEAD_LETTER_RAW_MAX = 64 * 1024
#: Characters of ``detail`` kept at most (a decoder message may quote the input).
DEAD_LETTER_DETAIL_MAX = 1000
#: Characters of a ``processing_error`` detail kept at most (the exception's type and text).
_ERROR_DETAIL_MAX = 500


class Unkeyed(Enum):
    """The type of :data:`UNKEYED`: a record that comes without a key to check (a file's line)."""

    UNKEYED = "unkeyed"


#: ``key`` of a record read from a file (``replay``): no key check. A Kafka record without a
#: key is ``None``, and rejected: inbound records are keyed by debtor id.
UNKEYED: Final = Unkeyed.UNKEYED


class StateLookup(Protocol):
    """What :func:`advance_stored` reads of a table: the bytes stored under a key, or None
    (a dict, or the worker's :class:`agents.pending.PendingWrites`)."""

    def get(self, key: bytes, /) -> bytes | None: ...


class Verdict(NamedTuple):
    """What became of one record.

    Attributes
    ----------
    outcome
        The step's outcome (:class:`streams.engine.Step`) if it was applied or recognised
        (processed, duplicate, erased); ``late`` for an event too late; else ``dead_lettered``.
    event
        The decoded event; None if the record did not decode.
    step
        The engine's step; None if the record was rejected before it (decoding, key) or the
        step failed. A rejected outcome (late, conflict, ...) keeps its step.
    reason
        The dead letter's reason ("" when the record was not rejected).
    letter
        The dead-letter record (``schemas/dead_letter.json``), None when not rejected.
    error
        The exception of a failed step (reason ``processing_error``), for the shell's log.
    """

    outcome: str
    event: Event | None
    step: Step | None
    reason: str = ""
    letter: dict[str, Any] | None = None
    error: Exception | None = None


def dead_letter(reason: str, detail: str, raw: bytes, *, raw_max: int = DEAD_LETTER_RAW_MAX, **where: Any) -> dict[str, Any]:
    """A dead-letter record (``schemas/dead_letter.json``): reason, detail, where, the raw text.

    A raw value longer than ``raw_max`` bytes is cut to that length; the record then says so
    (``raw_truncated``) and keeps the original's size (``raw_bytes``) and SHA-256
    (``raw_sha256``), so the dead letter always fits the producer's size limit and the
    original can still be identified.

    Parameters
    ----------
    reason
        Short machine-readable code (a metric label), e.g. ``invalid_json``.
    detail
        What exactly is wrong; cut to :data:`DEAD_LETTER_DETAIL_MAX` characters.
    raw
        The record's value as received.
    raw_max
        Raw bytes kept at most.
    **where
        Where the record came from and what it was (``line``; ``topic``, ``partition``,
        ``offset``; ``event_id``, ``debtor_id``), in this order after ``detail``.

    Examples
    --------
    >>> letter = dead_letter("invalid_json", "x" * 5000, b"0123456789", raw_max=4)
    >>> letter["raw"], letter["raw_truncated"], letter["raw_bytes"], len(letter["detail"])
    ('0123', True, 10, 1000)
    >>> "raw_truncated" in dead_letter("invalid_json", "bad", b"{")
    False
    """
    letter = {"reason": reason, "detail": detail[:DEAD_LETTER_DETAIL_MAX], **where}
    if len(raw) > raw_max:
        letter.update(raw=raw[:raw_max].decode("utf-8", "replace"), raw_truncated=True, raw_bytes=len(raw), raw_sha256=hashlib.sha256(raw).hexdigest())
    else:
        letter["raw"] = raw.decode("utf-8", "replace")
    return letter


def key_problem(key: bytes | None, debtor_id: str) -> str:
    """Why a record's Kafka key does not fit its event ("" when it does).

    >>> key_problem(b"d1", "d1"), key_problem(None, "d1"), key_problem(b"d2", "d1")
    ('', 'record has no key; inbound records are keyed by debtor_id', "key 'd2' is not the debtor_id 'd1'")
    """
    if key is None:
        return "record has no key; inbound records are keyed by debtor_id"
    try:
        text = key.decode("utf-8")
    except UnicodeDecodeError:
        return "key is not UTF-8; inbound records are keyed by debtor_id"
    if text != debtor_id:
        shown = text if len(text) <= 64 else text[:61] + "..."
        return f"key {shown!r} is not the debtor_id {debtor_id!r}"
    return ""


def advance_stored(table: StateLookup, event: Event, model: SegmentModel, config: EngineConfig) -> Step:
    """The engine step of ``event`` against the state stored in ``table`` (UTF-8 debtor id ->
    :meth:`streams.state.DebtorState.to_bytes`), as the worker stores it; ``table`` is not changed.

    The debtor's erasure marker (:func:`streams.state.marker_key`) is read only when the debtor
    has no state, or the event is refused anyway and the reason matters
    (:func:`streams.state.needs_marker`), or the event is an erasure. A corrupt state raises.

    >>> event = decode_event(b'{"event_id": "e1", "debtor_id": "d1", "type": "contact_initiated",'
    ...     b' "occurred_at": "2026-02-01T12:00:00Z", "channel": "portal", "direction": "inbound"}')
    >>> advance_stored({}, event, SegmentModel(), EngineConfig()).outcome
    'processed'
    """
    current = table.get(event.debtor_id.encode())
    state = DebtorState.from_bytes(current) if current is not None else None
    erased_at = None
    if event.type == "erasure_requested" or needs_marker(state, event.ts):
        erased_at = read_marker(table.get(marker_key(event.debtor_id, config.id_secret)))
    # The state was decoded for this event alone: advance it in place (no copy). The shell
    # stamps emitted_at on the few outputs, so the wall clock is read only for those.
    return advance(state, event, model, config, emitted_at="", erased_at=erased_at)


def run_record(
    raw: bytes | None,
    step: Callable[[Event], Step],
    config: EngineConfig,
    *,
    where: Mapping[str, Any],
    key: bytes | None | Unkeyed = UNKEYED,
    event_fields: tuple[str, ...] = ("event_id", "debtor_id"),
    max_amount_cents: int = DEFAULT_MAX_AMOUNT_CENTS,
    limits: Limits = DEFAULT_LIMITS,
    now: float | None = None,
    raw_max: int = DEAD_LETTER_RAW_MAX,
    contain_errors: bool = True,
) -> Verdict:
    """Decode one record, check its key, run ``step`` on it and judge the outcome.

    Parameters
    ----------
    raw
        The record's value; None is a Kafka tombstone (rejected: events have a value).
    step
        The engine step against the caller's stored state: :func:`advance_stored` over the
        worker's table, or :meth:`streams.engine.Engine.handle`.
    config
        The engine's configuration (its lateness window is named in ``too_late`` letters).
    where
        Where the record came from, kept in its dead letter (``line``, or ``topic``,
        ``partition``, ``offset``).
    key
        The record's Kafka key, checked against the debtor id (:func:`key_problem`);
        :data:`UNKEYED` (a file's line): no check.
    event_fields
        The fields of a decoded event a dead letter names, after ``where``.
    max_amount_cents, limits, now
        What the decoder accepts (:func:`streams.events.decode_event`).
    raw_max
        Raw bytes a dead letter keeps (:func:`dead_letter`).
    contain_errors
        Whether an exception of ``step`` becomes a ``processing_error`` dead letter (the
        worker: a bug or a corrupt state must not stop the partition) or is raised (an
        :class:`streams.engine.Engine` that advanced its state halfway has none to go on with).

    Returns
    -------
    Verdict
        The outcome, the event and step, and the dead letter if the record was rejected.
    """

    if raw is None:
        return _rejected(raw, where, event_fields, raw_max, "invalid_json", "record has no value (tombstone)")
    try:
        event = decode_event(raw, max_amount_cents=max_amount_cents, limits=limits, now=now)
    except DecodeError as error:
        return _rejected(raw, where, event_fields, raw_max, error.reason, error.detail)
    if key is not UNKEYED:
        problem = key_problem(key, event.debtor_id)
        if problem:
            return _rejected(raw, where, event_fields, raw_max, "key_mismatch", problem, event)
    if contain_errors:
        try:
            result = step(event)
        except Exception as error:  # noqa: BLE001 - a bug or a corrupt state: a dead letter, not a stop
            return _rejected(raw, where, event_fields, raw_max, "processing_error", f"{type(error).__name__}: {error}"[:_ERROR_DETAIL_MAX], event, error=error)
    else:
        result = step(event)
    if result.outcome == "late":
        return _rejected(raw, where, event_fields, raw_max, "too_late", f"older than the {config.lateness_days:g}-day lateness window", event, result, "late")
    if result.outcome in REJECTED_OUTCOMES:
        reason, detail = REJECTED_OUTCOMES[result.outcome]
        return _rejected(raw, where, event_fields, raw_max, reason, detail, event, result)
    return Verdict(result.outcome, event, result)


def _rejected(
    raw: bytes | None,
    where: Mapping[str, Any],
    event_fields: tuple[str, ...],
    raw_max: int,
    reason: str,
    detail: str,
    event: Event | None = None,
    step: Step | None = None,
    outcome: str = "dead_lettered",
    error: Exception | None = None,
) -> Verdict:
    fields = {} if event is None else {name: getattr(event, name) for name in event_fields}
    letter = dead_letter(reason, detail, b"" if raw is None else raw, raw_max=raw_max, **where, **fields)
    return Verdict(outcome, event, step, reason, letter, error)
