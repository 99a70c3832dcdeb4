"""The record handler: one inbound record in, what to send and how the state changes out.

For every inbound record the worker's ``segment`` agent calls :func:`handle_record`, which
decodes and validates it with :func:`streams.events.decode_event` (the decoder of the embedded
replay), runs the pure core (:func:`streams.engine.advance`) against the debtor's state in the
table it is given, and returns a :class:`Handled`: the change events and dead letters to send,
the feature vector the shared model should learn, and the state change, which
:func:`apply_state` stores once the sends are delivered (:mod:`agents.pending`).

Pure apart from the table it reads: bad input never raises, it becomes a dead letter.

See Also
--------
agents.worker : the Faust agent that sends what a record's :class:`Handled` holds.
agents.pending : the state writes that wait for their record's sends.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson

from agents.replay import DEAD_LETTER_RAW_MAX, dead_letter
from agents.settings import Settings
from schemas import DEAD_LETTERS_TOPIC
from streams.engine import REJECTED_OUTCOMES, EngineConfig, advance
from streams.events import DEFAULT_LIMITS, DecodeError, Limits, decode_event
from streams.model import SegmentModel
from streams.state import DebtorState, erasure_marker, marker_key, needs_marker, read_marker

__all__ = [
    "MAX_KEY_BYTES",
    "Handled",
    "StateLookup",
    "apply_state",
    "handle_record",
    "key_problem",
    "now_iso",
]

# The worker's logger: the handler's records keep the name they had in agents/worker.py.
log = logging.getLogger("debtor_segments.worker")

#: Longest record key a dead letter keeps as its key (longer: ``sha256:<hex>``).
MAX_KEY_BYTES = 1024


class StateLookup(Protocol):
    """What :func:`handle_record` reads of its table: the state bytes stored under a key, or None
    (a dict, or the worker's :class:`agents.pending.PendingWrites`)."""

    def get(self, key: bytes, /) -> bytes | None: ...


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


@dataclass(slots=True)
class Handled:
    """What became of one inbound record: the outcome, what to send, how the state changes.

    ``sends`` holds (unprefixed topic, key, value) triples in order; ``changes`` holds
    (type, previous, new) of every change event for the metrics. Apply the state change with
    :func:`apply_state` *after* the sends: a crash in between then re-processes the record and
    re-sends its change events (same event ids) instead of losing them.
    """

    outcome: str
    event_type: str
    sends: list[tuple[str, bytes | None, bytes]] = field(default_factory=list)
    learn: dict[str, float] | None = None
    dead_letter_reason: str = ""
    event_ts: float | None = None
    changes: list[tuple[str, str, str]] = field(default_factory=list)
    debtor_id: str = ""
    state: bytes | None = None  # the new state to store, if it changed
    erase: bool = False  # delete the debtor's state (a tombstone in the changelog)
    marker: tuple[bytes, bytes] | None = None  # (key, value) of the erasure marker to store
    # Other entries of the table the record's write carries: (key, value or None to delete);
    # the treatment states it changed (agents/treatment_service.py).
    side_writes: list[tuple[bytes, bytes | None]] = field(default_factory=list)


def now_iso() -> str:
    """The wall clock as ISO 8601 UTC with milliseconds: the ``emitted_at`` of change events."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def handle_record(
    table: StateLookup,
    *,
    key: bytes | None,
    value: bytes | None,
    topic: str,
    partition: int,
    offset: int,
    model: SegmentModel,
    config: EngineConfig,
    max_amount_cents: int,
    emitted_at: str | None = None,
    raw_max: int = DEAD_LETTER_RAW_MAX,
    limits: Limits = DEFAULT_LIMITS,
    now: float | None = None,
) -> Handled:
    """Decode, validate and process one inbound record against ``table`` (UTF-8 debtor id -> state
    bytes; the worker passes its :class:`agents.pending.PendingWrites`, whose states may not be written yet).

    Never raises for bad input: undecodable records, key mismatches and too-late events become
    dead letters (reason, detail, topic, partition, offset, raw). Does not change ``table``:
    see :func:`apply_state`.
    """
    where: dict[str, Any] = {"topic": topic, "partition": partition, "offset": offset}
    raw = value if value is not None else b""

    def rejected(reason: str, detail: str, event_type: str = "invalid", outcome: str = "dead_lettered", **more: Any) -> Handled:
        record = dead_letter(reason, detail, raw, raw_max=raw_max, **where, **more)
        # A garbage key could be as large as a value: keep a digest instead, so it always fits.
        letter_key = key if key is None or len(key) <= MAX_KEY_BYTES else b"sha256:" + hashlib.sha256(key).hexdigest().encode()
        return Handled(outcome, event_type, [(DEAD_LETTERS_TOPIC, letter_key, orjson.dumps(record))], dead_letter_reason=reason)

    if value is None:
        return rejected("invalid_json", "record has no value (tombstone)")
    try:
        event = decode_event(raw, max_amount_cents=max_amount_cents, limits=limits, now=now)
    except DecodeError as error:
        return rejected(error.reason, error.detail)
    ids = {"event_id": event.event_id, "debtor_id": event.debtor_id}
    problem = key_problem(key, event.debtor_id)
    if problem:
        return rejected("key_mismatch", problem, event.type, **ids)
    try:
        current = table.get(event.debtor_id.encode())
        state = DebtorState.from_bytes(current) if current is not None else None
        # An erased debtor's marker (a digest of the id and the erasure time): read only when
        # the debtor has no state, or the event is refused anyway and the reason matters.
        marker = None
        erased_at = None
        if event.type == "erasure_requested" or needs_marker(state, event.ts):
            marker = marker_key(event.debtor_id, config.id_secret)
            erased_at = read_marker(table.get(marker))
        # The state was decoded for this event alone: advance it in place (no copy).
        # The wall clock is read below, only for the few records that emit.
        step = advance(state, event, model, config, emitted_at="", erased_at=erased_at)
    except Exception as error:  # a bug or a corrupt state must not stop the partition
        # Event ids name the debtor: only with DEBTOR_SEGMENTS_DEBUG_IDS (no personal data in logs).
        log.exception("processing %s failed", event.event_id if Settings().debug_ids else event.type)
        return rejected("processing_error", f"{type(error).__name__}: {error}"[:500], event.type, **ids)
    if step.outcome == "late":
        detail = f"older than the {config.lateness_days:g}-day lateness window"
        handled = rejected("too_late", detail, event.type, "late", **ids)
        handled.event_ts = event.ts
        return handled
    if step.outcome in REJECTED_OUTCOMES:
        reason, detail = REJECTED_OUTCOMES[step.outcome]
        return rejected(reason, detail, event.type, **ids)
    handled = Handled(step.outcome, event.type, learn=step.learn, event_ts=event.ts, debtor_id=event.debtor_id)
    if step.marker is not None and marker is not None:
        handled.marker = (marker, erasure_marker(step.marker))
    if step.state is None:
        handled.erase = True
    elif step.outcome == "processed":
        handled.state = step.state.to_bytes()
    stamp = (emitted_at or now_iso()) if step.outputs else ""
    for output in step.outputs:
        out = output.value
        out["emitted_at"] = stamp
        handled.sends.append((output.topic, output.key.encode(), orjson.dumps(out)))
        handled.changes.append((out["type"], out["previous"], out.get("persona", out.get("quadrant", ""))))
    return handled


def apply_state(table: MutableMapping[bytes, bytes], handled: Handled) -> None:
    """Store (or delete) the debtor state that :func:`handle_record` computed."""
    key = handled.debtor_id.encode()
    if handled.erase:
        if key in table:
            del table[key]
    elif handled.state is not None:
        table[key] = handled.state
    if handled.marker is not None:  # an erasure's marker (streams.state.marker_key)
        table[handled.marker[0]] = handled.marker[1]
    for side_key, side_value in handled.side_writes:
        if side_value is not None:
            table[side_key] = side_value
        elif side_key in table:
            del table[side_key]
