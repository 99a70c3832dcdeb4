"""Faults, bad input, duplicates and privacy against the real broker with real worker processes.

The reference is the core replayed with states kept as bytes (as the Faust table keeps them):
everything in a debtor's state that does not depend on the model (payments, claims, contacts,
ratings, quadrant) must equal it exactly, whatever the faults; personas (model timing) must agree
for >= 95% of debtors, as in test_service.py. Long scenarios (100k debtors, soak) are in
bench/reliability.py, figures in docs/reliability.md.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaProducer

from debtor_segments.agents.kafka_io import SEQUENCE_HEADER, ensure_topics
from debtor_segments.agents.settings import Settings
from debtor_segments.agents.topics import WorkerConfig, topic_plan
from debtor_segments.schemas import (
    DEAD_LETTERS_TOPIC,
    PERSONA_CHANGES_TOPIC,
    QUADRANT_CHANGES_TOPIC,
)
from debtor_segments.streams.events import DecodeError, decode_event
from debtor_segments.streams.simulation import simulate
from debtor_segments.streams.state import DebtorState
from tests.integration.test_service import (
    AGREEMENT,
    PREFIXES,
    ROOT,
    Worker,
    delete_topics,
    new_prefix,
    produce,
    read_raw,
    start_workers,
    wait_caught_up,
    wire_replay,
)

#: State fields that depend on the model (its timing differs between runs); the rest must be exact.
MODEL_FIELDS = {"persona", "persona_since", "previous_persona", "confidence", "candidate", "streak",
                "candidate_since", "anchor", "model_version", "last_learn_ts"}  # fmt: skip
FIELDS = [f.name for f in dataclasses.fields(DebtorState) if f.name not in MODEL_FIELDS]


def features(state: bytes) -> tuple[Any, ...]:
    decoded = DebtorState.from_bytes(state)
    return tuple(getattr(decoded, name) for name in FIELDS)


def _close(a: Any, b: Any) -> bool:
    """Equal, floats up to the wire format's rounding: events of one debtor within the lateness
    window may be applied in another order across topics (e.g. while a topic is waited for
    during a broker outage), which changes the last digit of a rounded decayed counter."""
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-3, abs_tol=2e-3)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _decodes(line: bytes) -> bool:
    try:
        decode_event(line)
    except DecodeError:
        return False
    return True


def read_committed(bootstrap: str, topics: Iterable[str], timeout: float = 60.0) -> list[Any]:
    """Every committed record on ``topics`` (aborted transactions skipped), in order."""
    return read_raw(bootstrap, topics, timeout, isolation_level="read_committed")


def table(bootstrap: str, worker: Worker) -> dict[str, bytes]:
    """The state table as its changelog holds it (last committed value per key; tombstones drop)."""
    states: dict[str, bytes] = {}
    for record in read_committed(bootstrap, [f"{worker.group}-debtor-state-changelog"]):
        key = record.key.decode()
        if record.value is None:
            states.pop(key, None)
        else:
            states[key] = record.value
    return states


def changes(bootstrap: str, prefix: str) -> list[dict[str, Any]]:
    return [orjson.loads(r.value) for r in read_committed(bootstrap, [prefix + PERSONA_CHANGES_TOPIC, prefix + QUADRANT_CHANGES_TOPIC])]


def check_changes_exact(events: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Duplicates only if identical apart from emitted_at; returns them by event id."""
    by_id: dict[str, dict[str, Any]] = {}
    for event in events:
        body = {k: v for k, v in event.items() if k != "emitted_at"}
        seen = by_id.setdefault(event["event_id"], body)
        assert seen == body, f"two different change events with one id: {seen} vs {body}"
    return by_id


def compare_with_replay(expected: dict[str, bytes], got: dict[str, bytes]) -> None:
    missing = set(expected) - set(got)
    assert not missing, f"{len(missing)} debtors have no state: {sorted(missing)[:5]}"
    assert set(got) == set(expected), f"unexpected debtors: {sorted(set(got) - set(expected))[:5]}"
    differ = [d for d in expected if not _close(features(expected[d]), features(got[d]))]
    assert not differ, f"features (payments, claims, contacts, quadrant) differ for {differ[:5]}: {features(expected[differ[0]])} vs {features(got[differ[0]])}"
    pairs = Counter((DebtorState.from_bytes(expected[d]).persona, DebtorState.from_bytes(got[d]).persona) for d in expected)
    share = sum(n for (want, have), n in pairs.items() if want == have) / len(expected)
    differ_pairs = {f"{want}->{have}": n for (want, have), n in pairs.items() if want != have}
    assert share >= AGREEMENT, f"personas agree for {share:.1%} only; replay->service: {differ_pairs}"


def wait_counted(worker: Worker, count: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if worker.events_counted() >= count:
                return
        except OSError:
            pass
        time.sleep(0.05)
    pytest.fail(f"worker did not count {count} events:\n{worker.log_tail()}")


def kill(worker: Worker) -> None:
    assert worker.proc is not None
    worker.proc.send_signal(signal.SIGKILL)
    worker.proc.wait(10)


@pytest.fixture(scope="module")
def lines() -> list[bytes]:
    return simulate(debtors=100, months=5, seed=31).lines


@pytest.fixture(scope="module")
def expected(lines: list[bytes]) -> dict[str, bytes]:
    return wire_replay(lines).states


@pytest.fixture(scope="module", autouse=True)
def _delete_topics(kafka_bootstrap: str) -> Iterator[None]:
    yield
    delete_topics(kafka_bootstrap, PREFIXES)


def prepared(bootstrap: str, name: str) -> str:
    prefix = new_prefix(name)
    ensure_topics(bootstrap, topic_plan(WorkerConfig(Settings(partitions=4, topic_prefix=prefix))))
    return prefix


# --- faults ---------------------------------------------------------------------------------


def test_kill_9_twice_while_events_flow_loses_and_doubles_nothing(kafka_bootstrap: str, tmp_path: Path, lines: list[bytes], expected: dict[str, bytes]) -> None:
    """SIGKILL twice mid-stream, restart each time: the same table as the replay, no change
    event lost (every quadrant change of the core is there), duplicates only identical."""
    prefix = prepared(kafka_bootstrap, "kill9")
    data = tmp_path / "data"
    produce(kafka_bootstrap, prefix, lines[: len(lines) // 2])
    worker = Worker(kafka_bootstrap, prefix, data)
    start_workers([worker])
    wait_counted(worker, len(lines) // 5)
    kill(worker)
    worker = Worker(kafka_bootstrap, prefix, data)
    start_workers([worker])
    produce(kafka_bootstrap, prefix, lines[len(lines) // 2 :])  # events flow while it works
    wait_counted(worker, len(lines) // 5)
    kill(worker)
    worker = Worker(kafka_bootstrap, prefix, data)
    try:
        start_workers([worker])
        wait_caught_up(kafka_bootstrap, worker.group, prefix, workers=[worker])
        got = table(kafka_bootstrap, worker)
        compare_with_replay(expected, got)
        by_id = check_changes_exact(changes(kafka_bootstrap, prefix))

        _, _, quadrant_ids, bad = wire_replay(lines)
        got_quadrants = {i for i, e in by_id.items() if e["type"] == "quadrant_changed"}
        assert got_quadrants == quadrant_ids, f"lost {len(quadrant_ids - got_quadrants)}, extra {len(got_quadrants - quadrant_ids)}"
        final = {e["debtor_id"]: e["quadrant"] for e in by_id.values() if e["type"] == "quadrant_changed"}
        assert final == {d: DebtorState.from_bytes(s).quadrant for d, s in expected.items() if d in final}
        letters = [orjson.loads(r.value) for r in read_committed(kafka_bootstrap, [prefix + DEAD_LETTERS_TOPIC])]
        dead = Counter(d["reason"] for d in letters if d["reason"] != "too_late")
        assert set(dead) == set(bad) and all(dead[k] >= bad[k] for k in bad), f"dead letters {dead} vs {bad}"
        # Known limit: a record re-processed after the crash that is older than its debtor's
        # lateness window cannot be told from a late event: dead-lettered as too_late (it was
        # applied once, the table equals the replay). Only valid portfolio events may be such.
        valid = {decode_event(line).event_id for line in lines if _decodes(line)}
        late = [d for d in letters if d["reason"] == "too_late"]
        assert all(d.get("event_id") in valid for d in late)
        print(f"kill -9 x2: {len(late)} re-delivered records dead-lettered as too_late")
    finally:
        worker.stop()


def test_two_workers_one_killed_survivor_finishes(kafka_bootstrap: str, tmp_path: Path, lines: list[bytes], expected: dict[str, bytes]) -> None:
    prefix = prepared(kafka_bootstrap, "killone")
    workers = [Worker(kafka_bootstrap, prefix, tmp_path / f"w{i}") for i in (1, 2)]
    start_workers(workers)
    produce(kafka_bootstrap, prefix, lines)
    wait_counted(workers[1], 20)
    kill(workers[1])
    try:
        wait_caught_up(kafka_bootstrap, workers[0].group, prefix, workers=workers[:1], timeout=180)
        assert workers[0].proc is not None and workers[0].proc.poll() is None
        compare_with_replay(expected, table(kafka_bootstrap, workers[0]))
        check_changes_exact(changes(kafka_bootstrap, prefix))
    finally:
        workers[0].stop()


def test_broker_stop_and_start_while_the_worker_runs(tmp_path: Path, lines: list[bytes], expected: dict[str, bytes]) -> None:
    """A dedicated throw-away broker (ports 19092/19093, own KAFKA_STATE_DIR) is stopped and
    started under a running worker: it recovers on its own and loses nothing."""
    if shutil.which("java") is None:
        pytest.skip("java not on PATH")
    state = Path(tempfile.mkdtemp(prefix="kafka-it-"))
    env = {**os.environ, "KAFKA_STATE_DIR": str(state), "KAFKA_PORT": "19092", "KAFKA_CONTROLLER_PORT": "19093",
           "KAFKA_HEAP_OPTS": "-Xmx256m -Xms128m"}  # fmt: skip

    def kafka(command: str) -> None:
        result = subprocess.run([str(ROOT / "scripts" / "kafka"), command], env=env, capture_output=True, text=True, timeout=180, check=False)
        assert result.returncode == 0, result.stderr[-2000:]

    bootstrap = "127.0.0.1:19092"
    kafka("start")
    worker: Worker | None = None
    try:
        prefix = prepared(bootstrap, "broker")
        worker = Worker(bootstrap, prefix, tmp_path / "data")
        start_workers([worker])
        produce(bootstrap, prefix, lines[: len(lines) // 2])
        wait_counted(worker, len(lines) // 6)
        kafka("stop")
        time.sleep(5)  # the worker sees the broker gone
        assert worker.proc is not None and worker.proc.poll() is None, worker.log_tail()
        kafka("start")
        produce(bootstrap, prefix, lines[len(lines) // 2 :])
        wait_caught_up(bootstrap, worker.group, prefix, workers=[worker], timeout=180)
        compare_with_replay(expected, table(bootstrap, worker))
        check_changes_exact(changes(bootstrap, prefix))
    finally:
        if worker is not None:
            worker.proc and worker.proc.poll() is None and worker.proc.kill()
        kafka("stop")
        shutil.rmtree(state, ignore_errors=True)


def test_rocksdb_restart_with_5000_debtors_is_ready_quickly(kafka_bootstrap: str, tmp_path: Path) -> None:
    """Scaled-down version of bench/reliability.py's 100k restart: ready within 30 s."""
    prefix = prepared(kafka_bootstrap, "rocks5k")
    claims = [orjson.dumps({"event_id": f"r5-{i:05d}-c", "debtor_id": f"r5-{i:05d}", "type": "claim_opened",
                            "occurred_at": f"2026-01-01T{i // 3600 % 24:02d}:{i // 60 % 60:02d}:{i % 60:02d}Z",
                            "claim_id": f"r5-{i:05d}-c1", "creditor_id": "cr-1", "principal_cents": 10_000 + i})
              for i in range(5000)]  # fmt: skip
    produce(kafka_bootstrap, prefix, claims)
    data = tmp_path / "data"
    first = Worker(kafka_bootstrap, prefix, data, "--store", "rocksdb")
    start_workers([first])
    wait_caught_up(kafka_bootstrap, first.group, prefix, workers=[first], timeout=180)
    assert first.stop() == 0
    second = Worker(kafka_bootstrap, prefix, data, "--store", "rocksdb")
    started = time.monotonic()
    try:
        second.start().wait_ready(timeout=60)
        seconds = time.monotonic() - started
        assert seconds < 30, f"ready after {seconds:.1f}s"
        assert len(table(kafka_bootstrap, second)) == 5000
    finally:
        second.stop()


# --- bad input, duplicates, lateness, privacy ------------------------------------------------


def garbage(debtor: str) -> list[tuple[str, bytes | None, bytes, str]]:
    """(topic, key, value, expected reason) of every kind of bad record."""
    good = {"event_id": "g-1", "debtor_id": debtor, "type": "payment_received", "occurred_at": "2026-02-01T00:00:00Z",
            "claim_id": "c", "amount_cents": 10}  # fmt: skip

    def variant(**changes: Any) -> bytes:
        body = {**good, **changes}
        return orjson.dumps({k: v for k, v in body.items() if v is not ...})

    return [
        ("debtor.payments", debtor.encode(), bytes(range(256))[::7] + b"\xff\xfe", "invalid_json"),
        ("debtor.payments", debtor.encode(), variant(event_id="g-trunc")[:40], "invalid_json"),
        ("debtor.payments", debtor.encode(), variant(event_id="g-nan").replace(b'"amount_cents":10', b'"amount_cents":NaN'), "invalid_json"),
        ("debtor.payments", debtor.encode(), variant(event_id="g-nooffset", occurred_at="2026-02-01T00:00:00"), "invalid_timestamp"),
        ("debtor.payments", debtor.encode(), variant(event_id="g-ceiling", amount_cents=10**13), "amount_above_ceiling"),
        ("debtor.contacts", debtor.encode(), variant(event_id="g-type", type="telepathy"), "unknown_type"),
        ("debtor.payments", b"x", variant(event_id="g-noid", debtor_id=...), "missing_field"),
        ("debtor.payments", debtor.encode(), variant(event_id=...), "missing_field"),
        ("debtor.payments", b"someone-else", variant(event_id="g-key"), "key_mismatch"),
        ("debtor.payments", None, variant(event_id="g-nokey"), "key_mismatch"),
        ("debtor.ratings", debtor.encode(), orjson.dumps(["not-an-object", debtor]), "not_an_object"),
        ("debtor.payments", debtor.encode(), variant(event_id="g-neg", amount_cents=-5), "invalid_field"),
    ]


def test_bad_input_duplicates_lateness_and_no_ids_in_logs(kafka_bootstrap: str, tmp_path: Path, lines: list[bytes], expected: dict[str, bytes]) -> None:
    prefix = prepared(kafka_bootstrap, "bad")
    data = tmp_path / "data"
    debtors = sorted(expected)
    bad = [record for i, debtor in enumerate(debtors[:3]) for record in garbage(debtor)]
    # Interleave: garbage after every 40th valid line.
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", linger_ms=5)
    from debtor_segments.agents.kafka_io import route_line

    sequence = iter(range(1, 10**9))

    def send(topic: str, key: bytes | None, value: bytes) -> None:
        # Numbered like publish does: records of one millisecond keep the producer's order.
        producer.send(prefix + topic, key=key, value=value, headers=[(SEQUENCE_HEADER, str(next(sequence)).encode())])

    # Lateness: a debtor of its own, events 3 days out of order (applied) and 10 days (too late).
    late = "late-debtor"

    def contact(event_id: str, day: int) -> bytes:
        return orjson.dumps({"event_id": event_id, "debtor_id": late, "type": "contact_initiated",
                             "occurred_at": f"2026-03-{day:02d}T10:00:00Z", "channel": "portal", "direction": "inbound"})  # fmt: skip

    lateness = [contact("late-1", 20), contact("late-2", 17), contact("late-3", 9)]
    worker = Worker(kafka_bootstrap, prefix, data, "--store", "rocksdb")
    start_workers([worker])
    try:
        bad_iter = iter(bad)
        for number, line in enumerate(lines):
            route = route_line(line)
            send(route.topic if not route.reason else "debtor.payments", route.key if not route.reason else b"unroutable", line)
            if number % 40 == 0:
                record = next(bad_iter, None)
                if record:
                    send(*record[:3])
        for record in bad_iter:
            send(*record[:3])
        for line in lateness:
            send("debtor.contacts", late.encode(), line)
        producer.flush(60)
        wait_caught_up(kafka_bootstrap, worker.group, prefix, workers=[worker])
        assert worker.proc is not None and worker.proc.poll() is None, "the worker never crashes on bad input"

        dead = [orjson.loads(r.value) for r in read_committed(kafka_bootstrap, [prefix + DEAD_LETTERS_TOPIC])]
        by_raw = {d["raw"]: d for d in dead}
        for topic, _key, value, reason in bad:
            letter = by_raw.get(value.decode("utf-8", "replace"))
            assert letter is not None, f"not dead-lettered: {value[:60]!r}"
            assert letter["reason"] == reason, (value[:60], letter)
            assert letter["detail"] and letter["topic"] == prefix + topic
        valid_ids = set()
        for line in lines:
            try:
                valid_ids.add(decode_event(line).event_id)
            except DecodeError:
                pass
        assert not [d for d in dead if d.get("event_id") in valid_ids and d["reason"] != "too_late"], "a valid event was dead-lettered"
        [too_late] = [d for d in dead if d.get("event_id", "").startswith("late-")]
        assert (too_late["event_id"], too_late["reason"]) == ("late-3", "too_late")
        states = table(kafka_bootstrap, worker)
        assert DebtorState.from_bytes(states.pop(late)).applied == 2, "3 days out of order is applied"
        compare_with_replay(expected, states)
        metrics = worker.get("/metrics")[1]
        assert re.search(rb'debtor_segments_dead_letters_total\{reason="too_late"\} 1\.0', metrics), "too_late is counted"

        # Duplicates after a restart: re-send valid events; nothing changes.
        before_changes = len(changes(kafka_bootstrap, prefix))
        assert worker.stop() == 0
        worker = Worker(kafka_bootstrap, prefix, data, "--store", "rocksdb")
        start_workers([worker])
        replayed = [line for line in lines[-60:] if not route_line(line).reason]
        for line in replayed:
            route = route_line(line)
            send(route.topic, route.key, line)
        producer.flush(60)
        wait_caught_up(kafka_bootstrap, worker.group, prefix, workers=[worker])
        after = table(kafka_bootstrap, worker)
        after.pop(late)
        assert after == {d: s for d, s in states.items()}, "a re-sent event changed a state"
        assert len(changes(kafka_bootstrap, prefix)) == before_changes, "a re-sent event emitted a change"

        # ... and after a partition moves to a second worker.
        other = Worker(kafka_bootstrap, prefix, tmp_path / "other")
        start_workers([other])
        for line in replayed:
            route = route_line(line)
            send(route.topic, route.key, line)
        producer.flush(60)
        wait_caught_up(kafka_bootstrap, worker.group, prefix, workers=[worker, other])
        assert other.events_counted() > 0, "the second worker took partitions"
        moved = table(kafka_bootstrap, worker)
        moved.pop(late)
        assert moved == after and len(changes(kafka_bootstrap, prefix)) == before_changes
        other_log = other
    finally:
        producer.close(10)
        worker.stop()
        if "other" in locals():
            other.stop()

    # No debtor id in the logs or the metrics (DEBTOR_SEGMENTS_DEBUG_IDS not set).
    ids = set(debtors) | {late} | {DebtorState.from_bytes(s).debtor_id for s in expected.values()}
    pattern = re.compile("|".join(re.escape(i) for i in sorted(ids, key=len, reverse=True)))
    for proc in (worker, other_log):
        text = proc.log_path.read_text(errors="replace")
        found = pattern.findall(text)
        assert not found, f"debtor ids in the log {proc.log_path}: {Counter(found).most_common(3)}"
    assert not pattern.search(metrics.decode()), "a debtor id in a metric label"
