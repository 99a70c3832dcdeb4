"""GDPR erasure against the real broker: the debtor's state is gone for good from the changelog
(after compaction), the subscribers learn it (final changes to "unknown", reason "erased"),
and no per-debtor data is left in the model topics (model updates carry no key)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType

from debtor_segments.agents.topics import MODEL_UPDATES_TOPIC, STATE_TABLE
from debtor_segments.schemas import DEAD_LETTERS_TOPIC, ERASURE_TOPIC, PERSONA_CHANGES_TOPIC, QUADRANT_CHANGES_TOPIC
from debtor_segments.streams.personas import UNKNOWN
from debtor_segments.streams.simulation import simulate
from tests.integration.test_service import (
    PREFIXES,
    Worker,
    delete_topics,
    new_prefix,
    produce,
    start_workers,
    wait_caught_up,
)


@pytest.fixture(scope="module", autouse=True)
def _delete_topics(kafka_bootstrap: str) -> Iterator[None]:
    yield
    delete_topics(kafka_bootstrap, PREFIXES)


def records(bootstrap: str, topic: str) -> list[tuple[int, bytes | None, bytes | None]]:
    """(partition, key, value) of every record on ``topic`` now (read_uncommitted: the strictest view)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        out: list[tuple[int, bytes | None, bytes | None]] = []
        deadline = time.monotonic() + 30
        while any(consumer.position(tp) < end[tp] for tp in tps) and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=300).values():
                out.extend((r.partition, r.key, r.value) for r in batch)
        return out
    finally:
        consumer.close()


def topic_config(admin: KafkaAdminClient, topic: str) -> dict[str, str]:
    response = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    return {name: entry["value"] for name, entry in response["topic"][topic].items()}


def test_erasure_deletes_the_debtor_everywhere(kafka_bootstrap: str, kafka_admin: KafkaAdminClient, tmp_path: Path) -> None:
    prefix = new_prefix("erase")
    worker = Worker(kafka_bootstrap, prefix, tmp_path / "data")
    changelog = f"{worker.group}-{STATE_TABLE}-changelog"
    # The changelog as the worker would create it, but eager to compact (test only).
    kafka_admin.create_topics([__import__("kafka.admin", fromlist=["NewTopic"]).NewTopic(
        changelog, 4, 1, topic_configs={"cleanup.policy": "compact", "segment.ms": "500", "min.cleanable.dirty.ratio": "0.01",
                                        "delete.retention.ms": "1000", "min.compaction.lag.ms": "0"})])  # fmt: skip
    lines = simulate(debtors=30, months=6, seed=5).lines
    start_workers([worker])
    try:
        topics = kafka_admin.describe_topics([prefix + ERASURE_TOPIC, prefix + MODEL_UPDATES_TOPIC])
        assert {t["name"]: len(t["partitions"]) for t in topics} == {prefix + ERASURE_TOPIC: 4, prefix + MODEL_UPDATES_TOPIC: 1}, "the worker creates them"
        assert topic_config(kafka_admin, prefix + MODEL_UPDATES_TOPIC)["retention.ms"] == str(24 * 3600 * 1000)

        produce(kafka_bootstrap, prefix, lines)
        debtors = sorted({orjson.loads(line)["debtor_id"] for line in lines if line.startswith(b'{"event_id"') and b'"debtor_id"' in line})
        erased, kept = debtors[0], debtors[1]
        request = orjson.dumps({"event_id": "erase-1", "debtor_id": erased, "type": "erasure_requested", "occurred_at": "2026-11-01T00:00:00Z"})
        produce(kafka_bootstrap, prefix, [request])  # keyed by debtor_id, like every inbound record
        wait_caught_up(kafka_bootstrap, worker.group, prefix, workers=[worker])

        [(partition, key, _)] = records(kafka_bootstrap, prefix + ERASURE_TOPIC)
        assert key == erased.encode()
        payment_partitions = {p for p, k, _ in records(kafka_bootstrap, prefix + "debtor.payments") if k == erased.encode()}
        assert payment_partitions <= {partition}, "co-partitioned with the debtor's other events"

        for topic, field in ((PERSONA_CHANGES_TOPIC, "persona"), (QUADRANT_CHANGES_TOPIC, "quadrant")):
            last = [orjson.loads(v) for _, k, v in records(kafka_bootstrap, prefix + topic) if k == erased.encode()][-1]
            assert (last[field], last["reason"], last["cause_event_id"]) == (UNKNOWN, "erased", "erase-1")
        updates = records(kafka_bootstrap, prefix + MODEL_UPDATES_TOPIC)
        assert updates and all(key is None for _, key, _ in updates), "model updates name no debtor"
        assert not any(erased.encode() in (value or b"") for _, _, value in updates)

        # Roll segments with filler tombstones until the log cleaner compacted the erased key away.
        producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
        deadline = time.monotonic() + 120
        try:
            while True:
                for p in range(4):
                    producer.send(changelog, key=b"filler", value=None, partition=p)
                producer.flush()
                live = [v for _, k, v in records(kafka_bootstrap, changelog) if k == erased.encode() and v is not None]
                if not live:
                    break
                assert time.monotonic() < deadline, f"{len(live)} live records of the erased debtor still in the changelog"
                time.sleep(2)
        finally:
            producer.close()
        assert any(k == kept.encode() and v is not None for _, k, v in records(kafka_bootstrap, changelog)), "other debtors keep their state"
    finally:
        worker.stop()


def test_erasure_sticks_against_late_and_resent_events(kafka_bootstrap: str, tmp_path: Path) -> None:
    """Issue 14, item 7: the first event after an erasure created a fresh state that never
    checked lateness, so a re-sent older event rebuilt the profile. Now a marker (keyed digest
    of the id, erasure time only) refuses events that occurred before the erasure."""
    prefix = new_prefix("erase7")
    worker = Worker(kafka_bootstrap, prefix, tmp_path / "data")
    lines = simulate(debtors=10, months=3, seed=9).lines
    valid = [orjson.loads(line) for line in lines if line.startswith(b'{"event_id"') and b'"debtor_id"' in line]
    erased = sorted({event["debtor_id"] for event in valid})[0]
    old = next(event for event in valid if event["debtor_id"] == erased)

    def contact(event_id: str, at: str) -> bytes:
        return orjson.dumps({"event_id": event_id, "debtor_id": erased, "type": "contact_initiated", "occurred_at": at, "channel": "portal", "direction": "inbound"})

    after = [
        orjson.dumps({"event_id": "erase-7", "debtor_id": erased, "type": "erasure_requested", "occurred_at": "2026-06-01T00:00:00Z"}),
        orjson.dumps({**old, "event_id": "resent-old"}),  # a re-sent event from before the erasure
        contact("new-1", "2026-07-01T00:00:00Z"),  # a new profile starts
        contact("new-2", "2026-06-30T00:00:00Z"),  # after the erasure, inside the window: applied
        contact("before-1", "2026-05-31T23:59:59Z"),  # before the erasure: refused, state or not
        orjson.dumps({**old}),  # the original again
    ]
    start_workers([worker])
    try:
        produce(kafka_bootstrap, prefix, [*lines, *after])
        wait_caught_up(kafka_bootstrap, worker.group, prefix, workers=[worker])
        letters = [orjson.loads(v) for _, _, v in records(kafka_bootstrap, prefix + DEAD_LETTERS_TOPIC)]
        refused = sorted(d.get("event_id", "") for d in letters if d["reason"] == "erased")
        assert refused == sorted(["resent-old", "before-1", old["event_id"]]), letters
        assert not [d for d in letters if d.get("event_id") in ("new-1", "new-2")], letters
        changelog = records(kafka_bootstrap, f"{worker.group}-{STATE_TABLE}-changelog")
        markers = [(k, v) for _, k, v in changelog if k is not None and k.startswith(b"\x00erased:")]
        assert markers and all(erased.encode() not in k and orjson.loads(v) == {"erased_at": 1780272000.0} for k, v in markers), markers
        [state] = [v for _, k, v in changelog if k == erased.encode()][-1:]
        restored = __import__("debtor_segments.streams.state", fromlist=["DebtorState"]).DebtorState.from_bytes(state)
        assert restored.applied == 2 and restored.first_ts == 1782777600.0  # new-1 and new-2 only
    finally:
        worker.stop()
