"""Dead letters against the real broker (issue 14, item 1): nothing rejected may vanish.

A 170 KB garbage record used to make a 1,020,255-byte dead letter, above the producer's
1,000,000-byte limit: the send raised inside the agent, Faust acked the record anyway and the
record was gone (offset committed, no dead letter, no metric). Now the dead letter keeps the
first 64 KiB of the value with its size and digest; and a send that fails all the same stops
the worker without committing the record, which is processed again after the restart.
"""

from __future__ import annotations

import hashlib
import subprocess
import time
from pathlib import Path

import orjson
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from debtor_segments.schemas import DEAD_LETTERS_TOPIC, PAYMENTS_TOPIC
from tests.integration.test_reliability import prepared
from tests.integration.test_service import PREFIXES, Worker, delete_topics, read_raw, start_workers, wait_caught_up

GARBAGE = b"\x00" * 170_000  # NUL is 6 bytes as JSON (\\u0000): a 1,020,255-byte dead letter
VALID = {"event_id": "dl-ok", "debtor_id": "dl-1", "type": "claim_opened", "occurred_at": "2026-02-01T00:00:00Z",
         "claim_id": "dl-1-c", "creditor_id": "cr-1", "principal_cents": 1000}  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def _delete_topics(kafka_bootstrap: str):  # type: ignore[no-untyped-def]
    yield
    delete_topics(kafka_bootstrap, PREFIXES)


def _send_garbage(bootstrap: str, prefix: str) -> TopicPartition:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", max_request_size=2_000_000)
    try:
        meta = producer.send(prefix + PAYMENTS_TOPIC, key=b"dl-1", value=GARBAGE).get(30)
        producer.send(prefix + PAYMENTS_TOPIC, key=b"dl-1", value=orjson.dumps(VALID)).get(30)
    finally:
        producer.close(10)
    return TopicPartition(prefix + PAYMENTS_TOPIC, meta.partition), meta.offset


def _letters(bootstrap: str, prefix: str) -> list[dict]:
    return [orjson.loads(r.value) for r in read_raw(bootstrap, [prefix + DEAD_LETTERS_TOPIC], timeout=20)]


def _committed(bootstrap: str, group: str, tp: TopicPartition) -> int:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        return consumer.committed(tp) or 0
    finally:
        consumer.close()


def test_a_170_kb_garbage_record_is_dead_lettered(kafka_bootstrap: str, tmp_path: Path) -> None:
    prefix = prepared(kafka_bootstrap, "dl170")
    worker = Worker(kafka_bootstrap, prefix, tmp_path / "data")
    try:
        start_workers([worker])
        _send_garbage(kafka_bootstrap, prefix)
        wait_caught_up(kafka_bootstrap, worker.group, prefix, workers=[worker])
        [letter] = [d for d in _letters(kafka_bootstrap, prefix) if d.get("raw_bytes") == len(GARBAGE)]
        # Above DEBTOR_SEGMENTS_MAX_RECORD_BYTES (issue 14.5), so rejected before it is parsed.
        assert letter["reason"] == "record_too_large" and letter["raw_truncated"] is True
        assert letter["raw_sha256"] == hashlib.sha256(GARBAGE).hexdigest()
        _, metrics = worker.get("/metrics")
        assert b'debtor_segments_dead_letters_total{reason="record_too_large"} 1.0' in metrics
        assert b"debtor_segments_send_failures_total{" not in metrics
    finally:
        worker.stop()


def test_a_send_that_keeps_failing_stops_the_worker_without_committing(kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Dead letters made too large on purpose (raw kept up to 2 MB): the send fails, the worker
    stops with a clear log and the record's offset is not committed; restarted with the default
    limit, the same record becomes a dead letter."""
    prefix = prepared(kafka_bootstrap, "dlstop")
    data = tmp_path / "data"
    monkeypatch.setenv("DEBTOR_SEGMENTS_DEAD_LETTER_RAW_MAX_BYTES", "2000000")
    worker = Worker(kafka_bootstrap, prefix, data)
    start_workers([worker])
    tp, offset = _send_garbage(kafka_bootstrap, prefix)
    assert worker.proc is not None
    try:
        worker.proc.wait(90)
    except subprocess.TimeoutExpired:
        worker.proc.kill()
        pytest.fail(f"the worker went on after a failed send:\n{worker.log_tail()}")
    log = worker.log_path.read_text(errors="replace")
    assert "failed 3 times (ProducerSendError" in log and "MessageSizeTooLargeError" in log and "the record is not committed, the worker stops" in log, worker.log_tail()
    assert GARBAGE[:40].decode("latin-1") not in log
    assert _committed(kafka_bootstrap, worker.group, tp) <= offset
    assert not [d for d in _letters(kafka_bootstrap, prefix) if d.get("raw_bytes") == len(GARBAGE)]

    monkeypatch.delenv("DEBTOR_SEGMENTS_DEAD_LETTER_RAW_MAX_BYTES")
    worker = Worker(kafka_bootstrap, prefix, data)
    try:
        start_workers([worker])
        wait_caught_up(kafka_bootstrap, worker.group, prefix, workers=[worker])
        assert _committed(kafka_bootstrap, worker.group, tp) == offset + 2
        deadline = time.monotonic() + 20
        while not [d for d in _letters(kafka_bootstrap, prefix) if d.get("raw_bytes") == len(GARBAGE)]:
            assert time.monotonic() < deadline, "no dead letter after the restart"
    finally:
        worker.stop()
