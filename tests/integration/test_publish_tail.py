"""``debtor-segments publish`` and ``tail`` against the real broker and a running worker."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from debtor_segments.agents.kafka_io import route_line
from debtor_segments.streams.simulation import simulate
from tests.integration.test_service import (
    PREFIXES,
    ROOT,
    Worker,
    delete_topics,
    new_prefix,
    start_workers,
    wait_caught_up,
    wire_replay,
)

BAD = {
    5: b"this is not json",
    17: b'{"event_id": "u1", "debtor_id": "d5-000001", "type": "refund_issued", "occurred_at": "2026-01-05T00:00:00Z"}',
    40: b'{"event_id": "u2", "type": "call_rated", "occurred_at": "2026-01-05T00:00:00Z"}',
}


def _cli(*args: str, stdin: bytes | None = None, timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "debtor_segments.agents", *args], input=stdin, capture_output=True, timeout=timeout, cwd=ROOT, check=False)


@pytest.fixture(scope="module")
def worker(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    process = Worker(kafka_bootstrap, new_prefix("cli"), tmp_path_factory.mktemp("cli") / "data")
    try:
        start_workers([process])
        yield process
    finally:
        process.stop()
        delete_topics(kafka_bootstrap, PREFIXES)


def test_publish_then_tail(kafka_bootstrap: str, worker: Worker, tmp_path: Path) -> None:
    lines = list(simulate(debtors=20, months=3, seed=5).lines)
    for number, bad in sorted(BAD.items()):
        lines.insert(number - 1, bad)
    source = tmp_path / "portfolio.jsonl"
    source.write_bytes(b"\n".join(lines) + b"\n\n")
    broker = ["--broker", f"kafka://{kafka_bootstrap}", "--topic-prefix", worker.prefix]

    result = _cli("publish", str(source), *broker)
    assert result.returncode == 0, result.stderr.decode()
    summary = result.stderr.decode()
    unroutable = {n: route_line(line).reason for n, line in enumerate(lines, start=1) if route_line(line).reason}
    assert {n: unroutable[n] for n in BAD} == {5: "invalid_json", 17: "unknown_type", 40: "missing_field"}
    assert f"published {len(lines) - len(unroutable)} events from {len(lines) + 1} lines" in summary
    assert f"{len(unroutable)} dead letters (" in summary
    wait_caught_up(kafka_bootstrap, worker.group, worker.prefix, workers=[worker])

    result = _cli("tail", *broker, "--from-beginning", "--timeout", "3", "--dead-letters")
    assert result.returncode == 0, result.stderr.decode()
    printed = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert result.stderr.decode().strip() == f"{len(printed)} records"

    # Outbound event ids are deterministic: the quadrant changes (no model involved) are
    # exactly those of the core, ids and all.
    quadrant_ids = wire_replay(lines).quadrant_ids
    assert {p["event_id"] for p in printed if p.get("type") == "quadrant_changed"} == quadrant_ids
    assert {p.get("type", "dead letter") for p in printed} <= {"persona_changed", "quadrant_changed", "dead letter"}

    by_line = {p["line"]: p for p in printed if "line" in p}
    assert {n: p["reason"] for n, p in by_line.items()} == unroutable
    assert all(by_line[n]["raw"] == BAD[n].decode() for n in BAD)

    result = _cli("tail", *broker, "--from-beginning", "--max-messages", "2")
    assert result.returncode == 0 and len(result.stdout.splitlines()) == 2


def test_tail_prints_changes_as_they_arrive(kafka_bootstrap: str, worker: Worker) -> None:
    broker = ["--broker", f"kafka://{kafka_bootstrap}", "--topic-prefix", worker.prefix]
    tail = subprocess.Popen(
        [sys.executable, "-m", "debtor_segments.agents", "tail", *broker, "--max-messages", "2", "--timeout", "60"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    try:
        time.sleep(3)  # let it find the end of the topics
        erase = b'{"event_id": "live-1", "debtor_id": "live-d1", "type": "erasure_requested", "occurred_at": "2026-04-01T00:00:00Z"}'
        result = _cli("publish", "-", *broker, stdin=erase + b"\n")
        assert result.returncode == 0, result.stderr.decode()
        out, err = tail.communicate(timeout=60)
    finally:
        if tail.poll() is None:
            tail.kill()
    assert tail.returncode == 0, err.decode()
    printed = [orjson.loads(line) for line in out.splitlines()]
    assert sorted(p["type"] for p in printed) == ["persona_changed", "quadrant_changed"]
    assert all(p["debtor_id"] == "live-d1" and p["reason"] == "erased" for p in printed)
