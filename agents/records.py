"""The record handler: one inbound record in, what to send and how the state changes out.

For every inbound record the worker's ``segment`` agent calls :func:`handle_record`, which
runs the record pipeline of the core (:func:`streams.pipeline.run_record`, the one of the
embedded replay: decode, key check, the engine step against the debtor's state in the table it
is given, dead letters) and returns a :class:`Handled`: the change events and dead letters to send,
the feature vector the shared model should learn, and the state change, which
:func:`apply_state` stores once the sends are delivered (:mod:`agents.pending`).

Pure apart from the table it reads: bad input never raises, it becomes a dead letter.

See Also
--------
agents.segment_agent : the Faust agent that sends what a record's :class:`Handled` holds.
agents.pending : the state writes that wait for their record's sends.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache

import orjson

from debtor_segments.agents.settings import Settings
from debtor_segments.schemas import DEAD_LETTERS_TOPIC
from debtor_segments.streams.engine import EngineConfig, Step
from debtor_segments.streams.events import DEFAULT_LIMITS, Event, Limits
from debtor_segments.streams.model import SegmentModel
from debtor_segments.streams.pipeline import DEAD_LETTER_RAW_MAX, StateLookup, advance_stored, run_record
from debtor_segments.streams.state import erasure_marker, marker_key

__all__ = ["MAX_KEY_BYTES", "Handled", "apply_state", "handle_record", "now_iso"]

# The worker's logger: the handler's records keep the name they had in agents/worker.py.
log = logging.getLogger("debtor_segments.worker")

#: Longest record key a dead letter keeps as its key (longer: ``sha256:<hex>``).
MAX_KEY_BYTES = 1024


@cache
def _debug_ids() -> bool:
    """DEBTOR_SEGMENTS_DEBUG_IDS, read once (at the first failing record), not per record."""
    return Settings().debug_ids


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
    debug_ids: bool | None = None,
) -> Handled:
    """Decode, validate and process one inbound record against ``table`` (UTF-8 debtor id -> state
    bytes; the worker passes its :class:`agents.pending.PendingWrites`, whose states may not be written yet).

    Never raises for bad input: undecodable records, key mismatches, too-late events and
    failed steps become dead letters (reason, detail, topic, partition, offset, raw:
    :func:`streams.pipeline.run_record`). Does not change ``table``: see :func:`apply_state`.
    ``debug_ids`` (None: DEBTOR_SEGMENTS_DEBUG_IDS, read once) lets the log of a failed step
    name its event id.
    """

    def step(event: Event) -> Step:
        return advance_stored(table, event, model, config)

    verdict = run_record(
        value,
        step,
        config,
        where={"topic": topic, "partition": partition, "offset": offset},
        key=key,
        max_amount_cents=max_amount_cents,
        limits=limits,
        now=now,
        raw_max=raw_max,
    )
    event, result = verdict.event, verdict.step
    if verdict.letter is not None:
        if verdict.error is not None and event is not None:
            # Event ids name the debtor: only with DEBTOR_SEGMENTS_DEBUG_IDS (no personal data in logs).
            named = _debug_ids() if debug_ids is None else debug_ids
            log.error("processing %s failed", event.event_id if named else event.type, exc_info=verdict.error)
        # A garbage key could be as large as a value: keep a digest instead, so it always fits.
        letter_key = key if key is None or len(key) <= MAX_KEY_BYTES else b"sha256:" + hashlib.sha256(key).hexdigest().encode()
        handled = Handled(verdict.outcome, "invalid" if event is None else event.type, [(DEAD_LETTERS_TOPIC, letter_key, orjson.dumps(verdict.letter))], dead_letter_reason=verdict.reason)
        if verdict.outcome == "late" and event is not None:
            handled.event_ts = event.ts
        return handled
    assert event is not None and result is not None  # accepted: decoded and stepped
    handled = Handled(result.outcome, event.type, learn=result.learn, event_ts=event.ts, debtor_id=event.debtor_id)
    if result.marker is not None:  # an erasure: the marker the debtor's state leaves behind
        handled.marker = (marker_key(event.debtor_id, config.id_secret), erasure_marker(result.marker))
    if result.state is None:
        handled.erase = True
    elif result.outcome == "processed":
        handled.state = result.state.to_bytes()
    stamp = (emitted_at or now_iso()) if result.outputs else ""
    for output in result.outputs:
        out = output.value
        assert out is not None  # the engine's outputs are change events, never tombstones
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
