"""The record pipeline of the core (streams/pipeline.py): every rejection is a dead letter with
its reason, the worker's table step equals the embedded engine's, failures are contained or not."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from debtor_segments.streams.engine import Engine, EngineConfig, Step
from debtor_segments.streams.events import DecodeError, Event, decode_event, parse_time
from debtor_segments.streams.model import SegmentModel
from debtor_segments.streams.pipeline import UNKEYED, Verdict, advance_stored, run_record
from debtor_segments.streams.simulation import simulate
from debtor_segments.streams.state import DebtorState, erasure_marker, marker_key

BODY = {"event_id": "e1", "debtor_id": "d1", "type": "contact_initiated", "occurred_at": "2026-02-01T12:00:00Z", "channel": "portal", "direction": "inbound"}
WHERE = {"topic": "debtor.contacts", "partition": 3, "offset": 9}


def _raw(**change: object) -> bytes:
    return orjson.dumps({**BODY, **change})


def _run(engine: Engine, raw: bytes | None, **options: Any) -> Verdict:
    return run_record(raw, engine.handle, engine.config, where=WHERE, **options)


def test_accepted_records_carry_the_step_and_no_letter() -> None:
    verdict = _run(Engine(), _raw(), key=b"d1")
    assert verdict.outcome == "processed" and verdict.letter is None and verdict.reason == ""
    assert verdict.event is not None and verdict.event.event_id == "e1" and verdict.step is not None


@pytest.mark.parametrize(
    ("raw", "key", "reason", "detail"),
    [
        (None, b"d1", "invalid_json", "record has no value (tombstone)"),
        (b"{", b"d1", "invalid_json", "unexpected end of data: line 1 column 2 (char 1)"),
        (_raw(type="refund"), b"d1", "unknown_type", "'refund' is not an event type"),
        (_raw(), None, "key_mismatch", "record has no key; inbound records are keyed by debtor_id"),
        (_raw(), b"\xff", "key_mismatch", "key is not UTF-8; inbound records are keyed by debtor_id"),
        (_raw(), b"d2", "key_mismatch", "key 'd2' is not the debtor_id 'd1'"),
    ],
)
def test_rejections_before_the_step_are_dead_letters(raw: bytes | None, key: bytes | None, reason: str, detail: str) -> None:
    engine = Engine()
    verdict = _run(engine, raw, key=key)
    assert verdict.outcome == "dead_lettered" and verdict.step is None and verdict.reason == reason
    assert verdict.letter is not None and verdict.letter["reason"] == reason and verdict.letter["detail"] == detail
    assert verdict.letter["raw"] == (raw or b"").decode("utf-8", "replace")
    assert [verdict.letter[name] for name in WHERE] == list(WHERE.values())
    assert engine.states == {}  # the step never ran


def test_an_unkeyed_record_skips_the_key_check_and_a_letter_names_the_fields_asked_for() -> None:
    engine = Engine()
    assert _run(engine, _raw(), key=UNKEYED).outcome == "processed"
    verdict = run_record(_raw(occurred_at="2026-01-01T00:00:00Z", event_id="e0"), engine.handle, engine.config, where={"line": 2}, event_fields=("event_id",))
    assert verdict.outcome == "late" and verdict.step is not None and verdict.step.outcome == "late"
    assert verdict.letter is not None and list(verdict.letter) == ["reason", "detail", "line", "event_id", "raw"]
    assert verdict.letter["detail"] == "older than the 7-day lateness window"


def test_rejected_outcomes_of_the_engine_are_dead_letters() -> None:
    engine = Engine(EngineConfig(lateness_days=2.5))
    assert _run(engine, _raw(), key=b"d1").outcome == "processed"
    conflict = _run(engine, _raw(channel="email"), key=b"d1")
    assert (conflict.outcome, conflict.reason) == ("dead_lettered", "conflicting_duplicate")
    assert conflict.letter is not None and (conflict.letter["event_id"], conflict.letter["debtor_id"]) == ("e1", "d1")
    late = _run(engine, _raw(event_id="e0", occurred_at="2026-01-20T00:00:00Z"), key=b"d1")
    assert late.reason == "too_late" and late.letter is not None and late.letter["detail"] == "older than the 2.5-day lateness window"
    assert _run(engine, _raw(event_id="x", type="erasure_requested"), key=b"d1").outcome == "erased"
    before = _run(engine, _raw(event_id="e2", occurred_at="2026-02-01T11:00:00Z"), key=b"d1")
    assert (before.outcome, before.reason) == ("dead_lettered", "erased")


def test_a_failing_step_is_a_processing_error_or_raised() -> None:
    def broken(event: Event) -> Step:
        raise KeyError("boom")

    verdict = run_record(_raw(), broken, EngineConfig(), where=WHERE)
    assert verdict.reason == "processing_error" and verdict.letter is not None and verdict.letter["detail"] == "KeyError: 'boom'"
    assert isinstance(verdict.error, KeyError) and verdict.step is None and verdict.event is not None
    with pytest.raises(KeyError):
        run_record(_raw(), broken, EngineConfig(), where=WHERE, contain_errors=False)


def test_a_corrupt_stored_state_is_a_processing_error() -> None:
    verdict = run_record(_raw(), lambda event: advance_stored({b"d1": b"[99]"}, event, SegmentModel(), EngineConfig()), EngineConfig(), where=WHERE)
    assert verdict.reason == "processing_error" and verdict.letter is not None and verdict.letter["detail"].startswith("ValueError: ")


def test_the_table_step_equals_the_embedded_engine() -> None:
    """advance_stored over a table of state bytes (the worker) and Engine.handle (replay) give
    the same outcomes, outputs and states for a portfolio, erasures included, once the
    engine's states go through the same bytes (the stored form rounds)."""
    config = EngineConfig(id_secret=b"k")
    engine, model, table = Engine(config), SegmentModel(), {}
    lines = simulate(debtors=20, months=3, seed=11).lines
    erasures = [_raw(event_id=f"erase-{d}", debtor_id=d, type="erasure_requested", occurred_at="2026-03-01T00:00:00Z") for d in ("d0", "d3")]
    for raw in [*lines[: len(lines) // 2], *erasures, *lines[len(lines) // 2 :]]:
        try:
            event = decode_event(raw)
        except DecodeError:
            continue
        embedded = engine.handle(event, emitted_at="t")
        if event.debtor_id in engine.states:
            engine.states[event.debtor_id] = DebtorState.from_bytes(engine.states[event.debtor_id].to_bytes())
        stored = advance_stored(table, event, model, config)
        assert (stored.outcome, stored.learn, stored.marker) == (embedded.outcome, embedded.learn, embedded.marker)
        assert [(o.topic, o.key, {**(o.value or {}), "emitted_at": "t"}) for o in stored.outputs] == [(o.topic, o.key, o.value) for o in embedded.outputs]
        if stored.learn is not None:
            model.learn_one(stored.learn)
        if stored.marker is not None:
            table[marker_key(event.debtor_id, config.id_secret)] = erasure_marker(stored.marker)
        if stored.state is None:
            table.pop(event.debtor_id.encode(), None)
        elif stored.outcome == "processed":
            table[event.debtor_id.encode()] = stored.state.to_bytes()
    assert {d: s.to_bytes() for d, s in engine.states.items()} == {k.decode(): v for k, v in table.items() if not k.startswith(b"\x00")}


def test_event_time_is_parsed_one_way() -> None:
    for line in simulate(debtors=5, months=2, seed=2).lines:
        try:
            event = decode_event(line)
        except DecodeError:
            continue
        assert parse_time(event.occurred_at) == event.ts
    with pytest.raises(DecodeError, match="invalid_timestamp"):
        parse_time("2026-02-30T00:00:00Z")
