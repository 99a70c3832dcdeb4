"""Unit tests of the service's pure parts: no broker, no Faust worker."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, NamedTuple

import orjson
import pytest
from faust.types import TP
from hypothesis import given, settings
from hypothesis import strategies as st

from debtor_segments.agents.commits import commit_acknowledged
from debtor_segments.agents.kafka_io import (
    TopicSpec,
    check_topics,
    publish_lines,
    publish_plan,
    route_line,
)
from debtor_segments.agents.model_sync import ModelHolder, ModelWriter, model_digest, parse_update
from debtor_segments.agents.records import apply_state, handle_record
from debtor_segments.agents.scheduler import AligningScheduler
from debtor_segments.agents.settings import Settings
from debtor_segments.agents.topics import MODEL_TOPIC, MODEL_UPDATES_TOPIC, WorkerConfig, topic_plan
from debtor_segments.schemas import (
    DEAD_LETTERS_TOPIC,
    INBOUND_TOPICS,
    PERSONA_CHANGES_TOPIC,
    QUADRANT_CHANGES_TOPIC,
)
from debtor_segments.streams.engine import EngineConfig
from debtor_segments.streams.features import FEATURES
from debtor_segments.streams.model import SegmentModel
from debtor_segments.streams.personas import PROTOTYPES
from debtor_segments.streams.pipeline import key_problem
from debtor_segments.streams.state import DebtorState

# --- topic plan ------------------------------------------------------------------------------


def test_topic_plan_prefixes_every_topic_and_sizes_them() -> None:
    config = WorkerConfig(Settings(partitions=6, topic_prefix="it-"))
    plan = {spec.name: spec for spec in topic_plan(config)}
    for name in INBOUND_TOPICS:
        assert plan[f"it-{name}"].partitions == 6 and plan[f"it-{name}"].strict
    for name in (PERSONA_CHANGES_TOPIC, QUADRANT_CHANGES_TOPIC, DEAD_LETTERS_TOPIC):
        assert plan[f"it-{name}"].partitions == 6 and not plan[f"it-{name}"].strict
    changelog = plan["it-debtor-segments-debtor-state-changelog"]
    # Compacted within a bound (issue 14.8): the old states of an erased debtor and then its
    # tombstone leave the changelog within segment.ms + max.compaction.lag.ms (+ delete.retention.ms).
    assert changelog.partitions == 6 and changelog.config == {
        "cleanup.policy": "compact", "segment.ms": "21600000", "min.compaction.lag.ms": "0",
        "max.compaction.lag.ms": "86400000", "delete.retention.ms": "86400000",
    }  # fmt: skip
    for name in (PERSONA_CHANGES_TOPIC, QUADRANT_CHANGES_TOPIC):
        assert plan[f"it-{name}"].config == {"cleanup.policy": "delete", "retention.ms": str(7 * 86_400_000), "segment.ms": "86400000"}
    assert plan[f"it-{DEAD_LETTERS_TOPIC}"].config == {"cleanup.policy": "delete", "retention.ms": str(14 * 86_400_000), "segment.ms": "86400000"}
    assert plan[f"it-{MODEL_UPDATES_TOPIC}"].partitions == 1
    assert plan[f"it-{MODEL_TOPIC}"].partitions == 1
    assert plan[f"it-{MODEL_TOPIC}"].config == {"cleanup.policy": "compact"}


def test_app_id_defaults_to_prefix_and_can_be_set() -> None:
    assert WorkerConfig(Settings(topic_prefix="x-")).id == "x-debtor-segments"
    config = WorkerConfig(Settings(topic_prefix="x-", app_id="mine"))
    assert config.id == "mine" and config.changelog_topic == "mine-debtor-state-changelog"


def test_check_topics_reports_strict_mismatches_only() -> None:
    plan = [TopicSpec("in", 4, role="inbound"), TopicSpec("out", 4, strict=False), TopicSpec("model", 1)]
    missing, problems = check_topics(plan, {"in": 4, "out": 12})
    assert [spec.name for spec in missing] == ["model"] and problems == []
    missing, problems = check_topics(plan, {"in": 3, "out": 4, "model": 2})
    assert missing == []
    assert problems == ["in has 3 partitions, expected 4 (inbound)", "model has 2 partitions, expected 1"]


def test_publish_plan_never_fails_on_existing_counts() -> None:
    assert all(not spec.strict for spec in publish_plan("p-", 4))
    assert {spec.name for spec in publish_plan("p-", 4)} == {f"p-{n}" for n in (*INBOUND_TOPICS, DEAD_LETTERS_TOPIC)}


# --- records -----------------------------------------------------------------------------------

CONFIG = EngineConfig()


def _event(event_id: str, occurred_at: str, debtor: str = "d1", **fields: Any) -> bytes:
    body = {"event_id": event_id, "debtor_id": debtor, "type": "contact_initiated", "occurred_at": occurred_at, "channel": "portal", "direction": "inbound"}
    body.update(fields)
    return orjson.dumps(body)


def _handle(table: dict[bytes, bytes], value: bytes | None, key: bytes | None = b"d1", offset: int = 7) -> Any:
    return handle_record(
        table,
        key=key,
        value=value,
        topic="p-debtor.contacts",
        partition=2,
        offset=offset,
        model=SegmentModel(),
        config=CONFIG,
        max_amount_cents=1_000_000_000,
        emitted_at="2026-05-01T00:00:00+00:00",
    )


def test_key_problem() -> None:
    assert key_problem(b"d1", "d1") == ""
    assert "no key" in key_problem(None, "d1")
    assert "not UTF-8" in key_problem(b"\xff", "d1")
    assert key_problem(b"d2", "d1") == "key 'd2' is not the debtor_id 'd1'"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"not json", "invalid_json"),
        (b"[1, 2]", "not_an_object"),
        (b'{"event_id": "x", "debtor_id": "d1", "type": "refund", "occurred_at": "2026-01-01T00:00:00Z"}', "unknown_type"),
        (_event("e1", "2026-01-01 00:00:00"), "invalid_timestamp"),
        (None, "invalid_json"),
    ],
)
def test_undecodable_records_become_dead_letters_with_their_origin(raw: bytes | None, reason: str) -> None:
    table: dict[bytes, bytes] = {}
    handled = _handle(table, raw)
    assert handled.outcome == "dead_lettered" and handled.dead_letter_reason == reason
    [(topic, key, value)] = handled.sends
    record = orjson.loads(value)
    assert topic == DEAD_LETTERS_TOPIC and key == b"d1"
    assert record["reason"] == reason and record["detail"]
    assert (record["topic"], record["partition"], record["offset"]) == ("p-debtor.contacts", 2, 7)
    assert record["raw"] == (raw or b"").decode("utf-8", "replace")
    apply_state(table, handled)
    assert table == {}


def test_key_mismatch_is_dead_lettered_and_not_applied() -> None:
    table: dict[bytes, bytes] = {}
    handled = _handle(table, _event("e1", "2026-01-01T00:00:00Z"), key=b"someone-else")
    assert (handled.outcome, handled.dead_letter_reason, handled.event_type) == ("dead_lettered", "key_mismatch", "contact_initiated")
    record = orjson.loads(handled.sends[0][2])
    assert record["debtor_id"] == "d1" and record["event_id"] == "e1" and "someone-else" in record["detail"]
    apply_state(table, handled)
    assert table == {}


def test_processing_stores_state_and_recognises_duplicates() -> None:
    table: dict[bytes, bytes] = {}
    handled = _handle(table, _event("e1", "2026-01-01T00:00:00Z"))
    assert handled.outcome == "processed" and handled.state is not None and not handled.sends
    apply_state(table, handled)
    assert DebtorState.from_bytes(table[b"d1"]).applied == 1
    again = _handle(table, _event("e1", "2026-01-01T00:00:00Z"))
    assert again.outcome == "duplicate" and again.state is None and not again.sends


def test_too_late_events_are_dead_lettered_with_outcome_late() -> None:
    table: dict[bytes, bytes] = {}
    apply_state(table, _handle(table, _event("e1", "2026-03-01T00:00:00Z")))
    handled = _handle(table, _event("e0", "2026-01-01T00:00:00Z"))
    assert (handled.outcome, handled.dead_letter_reason) == ("late", "too_late")
    assert orjson.loads(handled.sends[0][2])["event_id"] == "e0"


def test_erasure_deletes_the_state_and_announces_it() -> None:
    table: dict[bytes, bytes] = {}
    apply_state(table, _handle(table, _event("e1", "2026-01-01T00:00:00Z")))
    erase = orjson.dumps({"event_id": "x1", "debtor_id": "d1", "type": "erasure_requested", "occurred_at": "2026-01-02T00:00:00Z"})
    handled = _handle(table, erase)
    assert handled.outcome == "erased" and handled.erase
    assert {topic for topic, _, _ in handled.sends} == {PERSONA_CHANGES_TOPIC, QUADRANT_CHANGES_TOPIC}
    assert all(orjson.loads(value)["reason"] == "erased" for _, _, value in handled.sends)
    assert [kind for kind, _, _ in handled.changes] == ["persona_changed", "quadrant_changed"]
    apply_state(table, handled)
    assert b"d1" not in table
    apply_state(table, handled)  # erasing twice is fine


def test_a_corrupt_state_is_dead_lettered_not_raised() -> None:
    table = {b"d1": b"[99]"}
    handled = _handle(table, _event("e1", "2026-01-01T00:00:00Z"))
    assert handled.dead_letter_reason == "processing_error"


# --- publish routing ----------------------------------------------------------------------------


def test_route_line() -> None:
    assert route_line(_event("e1", "2026-01-01T00:00:00Z")) == ("debtor.contacts", b"d1", "", "")
    assert route_line(b"{").reason == "invalid_json"
    assert route_line(b'"text"').reason == "not_an_object"
    assert route_line(b'{"debtor_id": "d1"}').reason == "missing_field"
    assert route_line(b'{"type": "payment_received"}').reason == "missing_field"
    assert route_line(b'{"type": "payment_received", "debtor_id": ""}').reason == "invalid_field"
    assert route_line(b'{"type": "refund", "debtor_id": "d1"}').reason == "unknown_type"


class _Future:
    def add_errback(self, fn: Any) -> None:
        pass


class _Producer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes]] = []
        self.flushed = False

    def send(self, topic: str, key: bytes | None = None, value: bytes = b"", headers: Any = None) -> _Future:
        self.sent.append((topic, key, value))
        return _Future()

    def flush(self, timeout: float | None = None) -> None:
        self.flushed = True


def test_publish_routes_lines_and_dead_letters_the_rest() -> None:
    lines = [_event("e1", "2026-01-01T00:00:00Z"), b"", b"oops\n", b'{"type": "call_rated", "debtor_id": "d9"}']
    producer = _Producer()
    stats = publish_lines(lines, producer, topic_prefix="p-")
    assert producer.flushed and stats.lines == 4
    assert stats.events == Counter({"debtor.contacts": 1, "debtor.ratings": 1})
    assert stats.dead_letters == Counter({"invalid_json": 1})
    assert producer.sent[0][:2] == ("p-debtor.contacts", b"d1")
    topic, key, value = producer.sent[1]
    assert topic == "p-debtor.dead-letters" and key is None
    assert orjson.loads(value) | {"detail": ""} == {"reason": "invalid_json", "detail": "", "line": 3, "raw": "oops"}
    assert "2 events" in stats.summary() and "1 dead letters (invalid_json 1)" in stats.summary()


# --- the shared model ----------------------------------------------------------------------------


def test_model_holder_only_moves_forward() -> None:
    holder = ModelHolder()
    model = SegmentModel()
    for _ in range(3):
        model.learn_one(PROTOTYPES["job"])
    assert holder.offer(model.snapshot()) and holder.model.version == 3
    assert model_digest(holder.model) == model_digest(model)
    older = SegmentModel()
    older.learn_one(PROTOTYPES["saida"])
    assert not holder.offer(older.snapshot()) and holder.model.version == 3


def test_model_writer_publishes_every_n_or_after_t_seconds() -> None:
    writer = ModelWriter(every=2, seconds=60.0)
    assert not writer.active and not writer.due()
    writer.take_over(None)
    writer.learn(PROTOTYPES["job"])
    assert not writer.due()
    writer.learn(PROTOTYPES["job"])
    assert writer.due()
    snapshot = writer.take_snapshot()
    assert snapshot["version"] == 2 and not writer.due()
    writer.learn(PROTOTYPES["bryan"])
    assert writer.due(now=time.monotonic() + 61)
    writer.release()
    assert not writer.active
    # A new owner goes on from the newest snapshot it knows: its own last one here.
    writer.take_over({**SegmentModel().snapshot(), "version": 1})
    assert writer.model is not None and writer.model.version == 2


def test_parse_update() -> None:
    x = {name: 0.5 for name in FEATURES}
    assert parse_update(orjson.dumps(x)) == x
    assert parse_update(b"nope") is None
    assert parse_update(orjson.dumps({**x, FEATURES[0]: "a"})) is None
    assert parse_update(orjson.dumps({**x, FEATURES[0]: True})) is None
    assert parse_update(None) is None


# --- aligning scheduler ----------------------------------------------------------------------------


class Rec(NamedTuple):
    offset: int
    timestamp: int
    value: bytes = b""
    headers: tuple[tuple[str, bytes], ...] = ()


class _View:
    """The scheduler's port (agents.faust_internals.ConsumerView), faked."""

    def __init__(self, tps: set[TP]) -> None:
        self.tps = tps
        self.hw: dict[TP, int] = {}
        self.active = set(tps)
        self.buffered: set[TP] = set()
        self.rebalancing = False
        self.backlog = False
        self.position: Callable[[TP], int | None] = lambda tp: None

    def assignment(self, topics: frozenset[str]) -> set[TP]:
        return {tp for tp in self.tps if tp.topic in topics}

    def highwater(self, tp: TP) -> int | None:
        return self.hw.get(tp)

    def client_backlog(self, topics: frozenset[str]) -> bool:
        return self.backlog

    def settling(self) -> bool:
        return self.rebalancing

    def deliverable(self) -> Callable[[TP], bool]:
        return lambda tp: tp in self.active or tp in self.buffered


A0, B0, C0, A1, B1 = TP("a", 0), TP("b", 0), TP("c", 0), TP("a", 1), TP("b", 1)
NOW_MS = 10_000_000.0


class _Clock:
    """The scheduler's monotonic clock, faked: seconds that move only when a test sets them."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _scheduler(tps: set[TP], clock: _Clock | None = None) -> tuple[AligningScheduler, _View, _View]:
    """A scheduler of the gated topics a, b, c over a faked view; with ``clock``, on that clock
    and a wall clock standing at NOW_MS (else on the real clocks)."""
    view = _View(tps)
    cls = type("S", (AligningScheduler,), {"gated_topics": frozenset({"a", "b", "c"}), "view": view})
    if clock is None:
        return cls(), view, view
    return cls(clock=clock, wall_clock=lambda: NOW_MS / 1000.0), view, view


def _recs(first_offset: int, *timestamps: int) -> list[Rec]:
    return [Rec(first_offset + i, ts) for i, ts in enumerate(timestamps)]


def _drain(scheduler: AligningScheduler, **kw: Any) -> list[tuple[TP, int]]:
    return [(tp, rec.offset) for tp, rec in scheduler.drain(**{"now": 0.0, "wall_ms": NOW_MS, **kw})]


def _fetch(scheduler: AligningScheduler, records: dict[TP, list[Rec]] | None = None) -> list[tuple[TP, int]]:
    """One fetch handed to the scheduler (Faust's call), and what it released."""
    return [(tp, rec.offset) for tp, rec in scheduler.iterate(records or {})]


def test_scheduler_merges_caught_up_topics_by_timestamp() -> None:
    scheduler, consumer, _ = _scheduler({A0, B0})
    consumer.hw = {A0: 3, B0: 3}
    out = [(tp.topic, rec.timestamp) for tp, rec in scheduler.iterate({A0: _recs(0, 1, 3, 5), B0: _recs(0, 2, 4, 6)})]
    assert out == [("a", 1), ("b", 2), ("a", 3), ("b", 4), ("a", 5), ("b", 6)]


def test_scheduler_waits_for_a_lagging_topic_of_the_same_partition_only() -> None:
    scheduler, consumer, _ = _scheduler({A0, B0, A1, B1})
    consumer.hw = {A0: 2, B0: 5, A1: 1, B1: 0}
    scheduler.add(A0, _recs(0, 10, 20))
    scheduler.add(A1, _recs(0, 30))
    consumer.position = lambda tp: 0 if tp == B1 else None
    # b[0] has records it has not delivered yet: a[0] waits; b[1] is empty and caught up.
    assert _drain(scheduler) == [(A1, 0)]
    scheduler.add(B0, _recs(0, 5, 6, 7, 15, 16))
    assert [(tp.topic, offset) for tp, offset in _drain(scheduler)] == [("b", 0), ("b", 1), ("b", 2), ("a", 0), ("b", 3), ("b", 4), ("a", 1)]


def test_equal_timestamps_go_in_event_time_order() -> None:
    scheduler, consumer, _ = _scheduler({A0, B0})
    consumer.hw = {A0: 2, B0: 1}

    def day(d: int) -> bytes:
        return orjson.dumps({"occurred_at": f"2026-01-{d:02d}T00:00:00Z"})

    scheduler.add(A0, [Rec(0, 5, day(9)), Rec(1, 5, day(10))])
    scheduler.add(B0, [Rec(0, 5, day(2))])
    assert _drain(scheduler) == [(B0, 0), (A0, 0), (A0, 1)]


def test_equal_timestamps_keep_the_publishers_sequence() -> None:
    scheduler, consumer, _ = _scheduler({A0, B0})
    consumer.hw = {A0: 1, B0: 1}
    late = orjson.dumps({"occurred_at": "2026-01-01T00:00:00Z"})  # delivered after b's record
    scheduler.add(A0, [Rec(0, 5, late, (("debtor-segments-seq", b"8"),))])
    scheduler.add(B0, [Rec(0, 5, b"{}", (("debtor-segments-seq", b"7"),))])
    assert _drain(scheduler) == [(B0, 0), (A0, 0)]


def test_a_partition_that_delivered_later_records_does_not_block() -> None:
    scheduler, consumer, _ = _scheduler({A0, B0})
    consumer.hw = {A0: 1, B0: 10}  # b is far from caught up ...
    scheduler.add(B0, _recs(0, 50))
    assert _drain(scheduler) == []  # ... and a[0] has nothing: b's record waits
    scheduler.add(A0, _recs(0, 60))
    assert _drain(scheduler) == [(B0, 0)]  # a's 60 waits for b (its last record is older)


def test_caught_up_partitions_pass_only_records_older_than_the_grace() -> None:
    scheduler, consumer, _ = _scheduler({A0, B0})
    consumer.hw = {A0: 1, B0: 0}
    consumer.position = lambda tp: 0
    scheduler.add(A0, _recs(0, int(NOW_MS) - 500))
    assert _drain(scheduler) == []
    assert _drain(scheduler, wall_ms=NOW_MS + 2000) == [(A0, 0)]


def test_live_records_pass_a_caught_up_partition_at_once_bulk_records_and_erasures_wait() -> None:
    """Live: event time within the live window of the Kafka timestamp (when it was sent)."""
    scheduler, consumer, _ = _scheduler({A0, B0, C0})
    type(scheduler).strict_topics = frozenset({"c"})  # the erasure topic
    consumer.hw = {A0: 2, B0: 0, C0: 0}
    consumer.position = lambda tp: 0
    sent = int(NOW_MS) - 5  # 5 ms ago: well inside the 2 s grace

    def at(seconds: float) -> bytes:
        return orjson.dumps({"occurred_at": datetime.fromtimestamp(seconds, UTC).isoformat()})

    scheduler.add(A0, [Rec(0, sent, at(sent / 1000 - 3))])  # occurred 3 s before it was sent
    assert _drain(scheduler) == [(A0, 0)]
    scheduler.add(A0, [Rec(1, sent, at(sent / 1000 - 86_400))])  # a day old: a bulk load
    scheduler.add(C0, [Rec(0, sent, at(sent / 1000))])  # an erasure, live or not
    assert _drain(scheduler) == []
    assert _drain(scheduler, wall_ms=NOW_MS + 2000) == [(A0, 1), (C0, 0)]
    type(scheduler).live_window_ms = 0  # switched off: the grace for every record
    scheduler.add(B0, [Rec(0, sent + 1, at(sent / 1000))])
    assert _drain(scheduler, wall_ms=NOW_MS + 1) == []


def test_a_silent_partition_is_given_up_after_the_wait() -> None:
    clock = _Clock()
    scheduler, consumer, _ = _scheduler({A0, B0}, clock)
    consumer.hw = {A0: 1, B0: 5}
    scheduler.add(A0, _recs(0, 1))
    assert _drain(scheduler, now=0.0) == []
    clock.now = 10.0
    for _ in range(1, 5):
        assert _fetch(scheduler) == []  # long enough, but too few fetches yet
    assert _fetch(scheduler) == [(A0, 0)]  # the fifth fetch
    assert scheduler.gave_up == 1


def test_no_partition_is_given_up_while_the_client_holds_fetched_records() -> None:
    """On a backlog a partition's records can queue in the client behind other partitions'
    for longer than the wait: that is the consumer being behind, not the partition silent."""
    clock = _Clock()
    scheduler, consumer, _ = _scheduler({A0, B0}, clock)
    consumer.hw = {A0: 1, B0: 5}
    scheduler.add(A0, _recs(0, 1))
    consumer.backlog = True
    for now in (0.0, 10.0, 30.0, 60.0):  # ten fetches at each time: 40 by 60 s
        clock.now = now
        for _ in range(10):
            assert _fetch(scheduler) == []
    consumer.backlog = False  # the client handed out everything: b[0] is waited for from here
    clock.now = 64.0
    for _ in range(9):  # fetches 41 to 49: enough of them, but not long enough
        assert _fetch(scheduler) == []
    clock.now = 65.0
    assert _fetch(scheduler) == [(A0, 0)]  # fetch 50
    assert scheduler.gave_up == 1


def test_a_topic_is_not_given_up_on_while_the_client_holds_a_backlog() -> None:
    clock = _Clock()
    scheduler, consumer, _ = _scheduler({A0, B0}, clock)
    consumer.hw = {A0: 1, B0: 5}
    consumer.backlog = True
    assert _fetch(scheduler, {A0: _recs(0, 10)}) == []
    clock.now = 1000.0
    for _ in range(100):  # the backlog is read from the view at every fetch: b[0] is not given up
        assert _fetch(scheduler) == []
    assert scheduler.gave_up == 0
    consumer.backlog = False
    assert _fetch(scheduler) == []  # fetch 102: waited for from here ...
    clock.now = 2000.0
    assert _fetch(scheduler) == []  # ... long enough, but too few fetches since ...
    clock.now = 3000.0
    assert [_fetch(scheduler) for _ in range(3)] == [[], [], [(A0, 0)]] and scheduler.gave_up == 1  # ... then given up


def test_seeking_back_replaces_held_records() -> None:
    scheduler, consumer, _ = _scheduler({A0, B0})
    consumer.hw = {A0: 7, B0: 1}
    scheduler.add(A0, _recs(0, 1, 2, 3, 4, 5))
    assert _drain(scheduler) == []  # b[0] not there yet
    scheduler.add(A0, _recs(2, 3, 4, 5, 6, 7))  # the consumer sought back to offset 2
    scheduler.add(B0, _recs(0, 100))
    assert [offset for tp, offset in _drain(scheduler) if tp == A0] == [0, 1, 2, 3, 4, 5, 6]


def test_nothing_is_released_while_rebalancing_or_for_paused_partitions() -> None:
    scheduler, consumer, app = _scheduler({A0})
    consumer.hw = {A0: 2}
    scheduler.add(A0, _recs(0, 1, 2))
    app.rebalancing = True
    assert _drain(scheduler) == []
    app.rebalancing = False
    consumer.active = set()
    assert _drain(scheduler) == []
    consumer.buffered = {A0}
    assert _drain(scheduler) == [(A0, 0), (A0, 1)]


def test_a_record_the_consumer_did_not_take_stays_held() -> None:
    scheduler, consumer, _ = _scheduler({A0})
    consumer.hw = {A0: 2}
    scheduler.add(A0, _recs(0, 1, 2))
    iterator = scheduler.drain(now=0.0, wall_ms=NOW_MS)
    assert next(iterator)[1].offset == 0
    iterator.close()  # the consumer stopped (rebalance) before asking for the next one
    assert scheduler.held == 2
    assert _drain(scheduler) == [(A0, 0), (A0, 1)]
    assert scheduler.held == 0


def test_revoked_partitions_are_forgotten() -> None:
    scheduler, consumer, _ = _scheduler({A0, A1})
    consumer.hw = {A0: 1, A1: 5}
    scheduler.add(A1, _recs(0, 1))
    consumer.tps = {A0}
    assert _drain(scheduler) == [] and scheduler.held == 0


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from([A0, B0, C0, A1, B1]), st.integers(0, 50)), min_size=1, max_size=60),
    st.lists(st.integers(1, 8), min_size=1, max_size=30),
)
def test_scheduler_delivers_each_record_once_in_timestamp_order_per_partition(draws: list[tuple[TP, int]], batch_sizes: list[int]) -> None:
    # Per partition, timestamps follow production order (non-decreasing).
    per_tp: dict[TP, list[Rec]] = {}
    clock = 0
    for tp, step in draws:
        clock += step
        records = per_tp.setdefault(tp, [])
        records.append(Rec(len(records), clock))
    scheduler, consumer, _ = _scheduler(set(per_tp))
    consumer.hw = {tp: len(records) for tp, records in per_tp.items()}
    # Deliver in batches of varying size, partitions in a rotating order.
    pending = {tp: list(records) for tp, records in per_tp.items()}
    out: list[tuple[TP, Rec]] = []
    turn = 0
    while any(pending.values()):
        batch: dict[TP, list[Rec]] = {}
        for tp in sorted(pending, key=lambda tp: (hash((tp, turn)) % 7, tp)):
            size = batch_sizes[turn % len(batch_sizes)]
            turn += 1
            if pending[tp] and turn % 2:
                batch[tp], pending[tp] = pending[tp][:size], pending[tp][size:]
        out.extend(scheduler.iterate(batch))
    out.extend(scheduler.drain(now=0.0, wall_ms=NOW_MS))
    assert sorted((tp, rec.offset) for tp, rec in out) == sorted((tp, rec.offset) for tp, records in per_tp.items() for rec in records)
    for partition in (0, 1):
        stamps = [rec.timestamp for tp, rec in out if tp.partition == partition]
        assert stamps == sorted(stamps)


def test_the_last_commit_runs_again_when_it_only_waited_for_a_timer_commit() -> None:
    """Faust's commit returns False, committing nothing, while another commit is under way."""

    class Consumer:
        def __init__(self, results: list[bool]) -> None:
            self.results = results
            self.calls: list[bool] = []

        async def commit(self, start_new_transaction: bool = True) -> bool:
            self.calls.append(start_new_transaction)
            return self.results.pop(0)

    waited = Consumer([False, True])
    asyncio.run(commit_acknowledged(SimpleNamespace(consumer=waited, in_transaction=False)))  # type: ignore[arg-type]
    assert waited.calls == [False, False]
    committed = Consumer([True])
    asyncio.run(commit_acknowledged(SimpleNamespace(consumer=committed, in_transaction=False)))  # type: ignore[arg-type]
    assert committed.calls == [False]
    transactional = Consumer([])  # exactly_once: Faust's transaction manager commits
    asyncio.run(commit_acknowledged(SimpleNamespace(consumer=transactional, in_transaction=True)))  # type: ignore[arg-type]
    assert transactional.calls == []
