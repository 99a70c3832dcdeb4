"""Residue after erasure against the real broker (issue 14, item 8).

The production topics bound how long personal data stays: the changelog is created with a
compaction bound (segment.ms, max.compaction.lag.ms, delete.retention.ms), the change and
dead-letter topics with time-based retention; and ``--loglevel debug`` writes no record values
unless DEBTOR_SEGMENTS_DEBUG_IDS is on.
"""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest
from kafka import KafkaProducer
from kafka.admin import ConfigResource, ConfigResourceType

from debtor_segments.agents.settings import Settings
from debtor_segments.agents.topics import WorkerConfig
from debtor_segments.schemas import DEAD_LETTERS_TOPIC, PAYMENTS_TOPIC, PERSONA_CHANGES_TOPIC, QUADRANT_CHANGES_TOPIC
from tests.integration.test_reliability import prepared
from tests.integration.test_service import PREFIXES, Worker, delete_topics, start_workers, wait_caught_up

IBAN = "DE89370400440532013000"


@pytest.fixture(scope="module", autouse=True)
def _delete_topics(kafka_bootstrap: str):  # type: ignore[no-untyped-def]
    yield
    delete_topics(kafka_bootstrap, PREFIXES)


def _configs(kafka_admin, topic: str) -> dict[str, str]:
    response = kafka_admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    return {name: entry["value"] for name, entry in response["topic"][topic].items()}


def test_topics_bound_how_long_personal_data_stays(kafka_bootstrap: str, kafka_admin) -> None:
    prefix = prepared(kafka_bootstrap, "residue")
    config = WorkerConfig(Settings(partitions=4, topic_prefix=prefix))
    changelog = _configs(kafka_admin, config.changelog_topic)
    assert changelog["cleanup.policy"] == "compact"
    assert changelog["segment.ms"] == str(6 * 3600 * 1000)
    assert changelog["max.compaction.lag.ms"] == str(24 * 3600 * 1000)
    assert changelog["delete.retention.ms"] == str(24 * 3600 * 1000)
    assert changelog["min.compaction.lag.ms"] == "0"
    letters = _configs(kafka_admin, prefix + DEAD_LETTERS_TOPIC)
    assert letters["cleanup.policy"] == "delete" and letters["retention.ms"] == str(14 * 24 * 3600 * 1000)
    for name in (PERSONA_CHANGES_TOPIC, QUADRANT_CHANGES_TOPIC):
        changes = _configs(kafka_admin, prefix + name)
        assert changes["cleanup.policy"] == "delete" and changes["retention.ms"] == str(7 * 24 * 3600 * 1000)


def test_debug_log_holds_no_record_values(kafka_bootstrap: str, tmp_path: Path) -> None:
    prefix = prepared(kafka_bootstrap, "debuglog")
    worker = Worker(kafka_bootstrap, prefix, tmp_path / "data", "--loglevel", "debug")
    try:
        start_workers([worker])
        producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
        event = {"event_id": "rs-1", "debtor_id": "rs-debtor-7", "type": "payment_received", "occurred_at": "2026-02-01T00:00:00Z",
                 "claim_id": IBAN, "amount_cents": 100}  # fmt: skip
        producer.send(prefix + PAYMENTS_TOPIC, key=b"rs-debtor-7", value=orjson.dumps(event)).get(30)
        producer.send(prefix + PAYMENTS_TOPIC, key=b"rs-debtor-7", value=f'{{"broken {IBAN}'.encode()).get(30)
        producer.close(10)
        wait_caught_up(kafka_bootstrap, worker.group, prefix, workers=[worker])
        time.sleep(1.0)
    finally:
        worker.stop()
    log = worker.log_path.read_text(errors="replace")
    assert "[DEBUG]" in log  # the level is on ...
    assert IBAN not in log and "rs-debtor-7" not in log  # ... but no value, no debtor id


def _files_holding(root: Path, needle: bytes) -> list[str]:
    return [str(path.relative_to(root)) for path in root.rglob("*") if path.is_file() and needle in path.read_bytes()]


def _claim(debtor: str, day: int = 1) -> bytes:
    return orjson.dumps({"event_id": f"{debtor}-c", "debtor_id": debtor, "type": "claim_opened", "occurred_at": f"2026-02-{day:02d}T00:00:00Z",
                         "claim_id": f"{debtor}-c1", "creditor_id": "cr-1", "principal_cents": 1000})  # fmt: skip


def test_rocksdb_files_lose_an_erased_debtor(kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Delete, flush and close used to leave the erased state in the SST files."""
    prefix = prepared(kafka_bootstrap, "rockserase")
    monkeypatch.setenv("DEBTOR_SEGMENTS_STORE_MAINTENANCE_S", "1")
    data = tmp_path / "data"
    worker = Worker(kafka_bootstrap, prefix, data, "--store", "rocksdb")
    debtor = "rs-erase-q7x9"
    try:
        start_workers([worker])
        producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
        for i in range(200):  # neighbours, so the store has more than one key
            producer.send(prefix + "debtor.payments", key=f"rs-n-{i}".encode(), value=_claim(f"rs-n-{i}"))
        producer.send(prefix + "debtor.payments", key=debtor.encode(), value=_claim(debtor)).get(30)
        producer.flush(30)
        wait_caught_up(kafka_bootstrap, worker.group, prefix, workers=[worker])
        erasure = {"event_id": f"{debtor}-erase", "debtor_id": debtor, "type": "erasure_requested", "occurred_at": "2026-02-02T00:00:00Z"}
        producer.send(prefix + "debtor.erasure-requests", key=debtor.encode(), value=orjson.dumps(erasure)).get(30)
        producer.close(10)
        wait_caught_up(kafka_bootstrap, worker.group, prefix, workers=[worker])
        deadline = time.monotonic() + 30
        while _files_holding(data, debtor.encode()) and time.monotonic() < deadline:
            time.sleep(0.5)
        # The data files lose it at once; RocksDB's MANIFEST names it (a former file boundary,
        # no value) until the store is opened again.
        assert [f for f in _files_holding(data, debtor.encode()) if "MANIFEST" not in f] == []
        assert "compacted the local store of partitions" in worker.log_path.read_text(errors="replace")
    finally:
        worker.stop()
    worker = Worker(kafka_bootstrap, prefix, data, "--store", "rocksdb")
    try:
        start_workers([worker])
    finally:
        worker.stop()
    assert not _files_holding(data, debtor.encode())
    assert _files_holding(data, b"rs-n-7")  # the neighbours are still there


def test_a_former_owner_removes_the_partition_files(kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    prefix = prepared(kafka_bootstrap, "rocksown")
    monkeypatch.setenv("DEBTOR_SEGMENTS_STORE_MAINTENANCE_S", "1")
    extra = ("--store", "rocksdb", "--standby-replicas", "0")
    first = Worker(kafka_bootstrap, prefix, tmp_path / "w1", *extra)
    second = Worker(kafka_bootstrap, prefix, tmp_path / "w2", *extra)
    try:
        start_workers([first])
        producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
        for i in range(200):
            producer.send(prefix + "debtor.payments", key=f"ro-{i}".encode(), value=_claim(f"ro-{i}"))
        producer.flush(30)
        producer.close(10)
        wait_caught_up(kafka_bootstrap, first.group, prefix, workers=[first])
        assert len(list((tmp_path / "w1").rglob("*debtor-state-*.db"))) == 4
        start_workers([second])
        deadline = time.monotonic() + 40
        while len(list((tmp_path / "w1").rglob("*debtor-state-*.db"))) != 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert len(list((tmp_path / "w1").rglob("*debtor-state-*.db"))) == 2, first.log_tail()
        assert "no longer serves" in first.log_path.read_text(errors="replace")
    finally:
        second.stop()
        first.stop()
