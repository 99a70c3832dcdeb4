"""The Faust worker against the real broker: real subprocesses, unique topics per module/test.

Each scenario produces a simulated portfolio (delivery order, keyed by debtor_id) and compares
the service's final personas with the embedded :class:`streams.engine.Engine` replay of the same
lines. They may differ only by model timing: the service learns through the shared model topic
(snapshots every few updates), the replay after every event.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import orjson
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from debtor_segments.agents.kafka_io import SEQUENCE_HEADER, ensure_topics, route_line
from debtor_segments.agents.settings import Settings
from debtor_segments.agents.topics import MODEL_UPDATES_TOPIC, WorkerConfig, topic_plan
from debtor_segments.schemas import (
    DEAD_LETTERS_TOPIC,
    INBOUND_TOPICS,
    PAYMENTS_TOPIC,
    PERSONA_CHANGES_TOPIC,
    QUADRANT_CHANGES_TOPIC,
)
from debtor_segments.streams.engine import Engine, EngineConfig, process
from debtor_segments.streams.events import DecodeError, decode_event
from debtor_segments.streams.model import SegmentModel
from debtor_segments.streams.personas import UNKNOWN
from debtor_segments.streams.simulation import simulate
from debtor_segments.streams.state import DebtorState

ROOT = Path(__file__).resolve().parents[2]
AGREEMENT = 0.95

# --- helpers (also used by test_publish_tail.py) --------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


PREFIXES: list[str] = []


def new_prefix(name: str) -> str:
    """A topic prefix (and so app id) unique to one test; its topics are deleted afterwards."""
    prefix = f"it-{name}-{uuid.uuid4().hex[:8]}-"
    PREFIXES.append(prefix)
    return prefix


def delete_topics(bootstrap: str, prefixes: Sequence[str]) -> None:
    """Best effort: drop every topic of these prefixes (inbound, outbound, changelog, model)."""
    from kafka import KafkaAdminClient

    if not prefixes or os.environ.get("DEBTOR_SEGMENTS_KEEP_TOPICS"):
        return
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        mine = [topic for topic in admin.list_topics() if topic.startswith(tuple(prefixes))]
        if mine:
            admin.delete_topics(mine, raise_errors=False)
    except Exception:  # noqa: BLE001 - best effort clean-up
        pass
    finally:
        admin.close()


class Worker:
    """``debtor-segments worker`` as a subprocess, with its HTTP endpoints."""

    def __init__(self, bootstrap: str, prefix: str, data_dir: Path, *extra: str) -> None:
        self.bootstrap = bootstrap
        self.prefix = prefix
        self.data_dir = data_dir
        self.port = free_port()
        self.extra = extra
        self.log_path = data_dir.parent / f"{data_dir.name}-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def group(self) -> str:
        return f"{self.prefix}debtor-segments"

    def start(self) -> Worker:
        args = [
            sys.executable, "-m", "debtor_segments.agents", "worker",
            "--broker", f"kafka://{self.bootstrap}",
            "--topic-prefix", self.prefix,
            "--data-dir", str(self.data_dir),
            "--web-port", str(self.port),
            "--model-snapshot-every", "10",
            "--model-snapshot-seconds", "0.5",
            "--loglevel", "info",
            *self.extra,
        ]  # fmt: skip
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        log.close()
        return self

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def get(self, path: str) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as response:
                body = response.read()
                return response.status, body if path == "/metrics" else orjson.loads(body)
        except urllib.error.HTTPError as error:
            return error.code, orjson.loads(error.read() or b"null")

    def wait_ready(self, timeout: float = 90.0) -> Worker:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                pytest.fail(f"worker exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                status, _ = self.get("/ready")
                if status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.3)
        pytest.fail(f"worker not ready after {timeout}s:\n{self.log_tail()}")

    def events_counted(self) -> int:
        """Sum of debtor_segments_events_total: every inbound record is counted once."""
        _, body = self.get("/metrics")
        return int(sum(float(line.rsplit(b" ", 1)[1]) for line in body.splitlines() if line.startswith(b"debtor_segments_events_total{")))

    def diagnose(self, topics: Iterable[str]) -> str:
        """/health and the per-partition Faust metrics of ``topics``: where a stuck record is."""
        try:
            _, health = self.get("/health")
            _, body = self.get("/metrics")
        except (OSError, ValueError) as error:
            return f"worker on port {self.port}: {error}"
        wanted = tuple(f'topic="{topic}"'.encode() for topic in topics)
        lines = [line.decode() for line in body.splitlines() if line.startswith(b"faust_topic_partition") and any(w in line for w in wanted)]
        return f"worker on port {self.port}: {health}\n" + "\n".join(lines)

    def stop(self, timeout: float = 45.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            pytest.fail(f"worker ignored SIGTERM for {timeout}s:\n{self.log_tail()}")


def start_workers(workers: Sequence[Worker]) -> None:
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.wait_ready()


def produce(bootstrap: str, prefix: str, lines: Iterable[bytes], *, extra: Iterable[tuple[str, bytes | None, bytes]] = ()) -> int:
    """Send lines to their inbound topics keyed by debtor_id, in order, numbered like
    ``publish`` does; lines without a route go to the payments topic (the worker
    dead-letters them). Returns records sent."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    sent = 0
    try:
        for number, line in enumerate(lines, start=1):
            route = route_line(line)
            headers = [(SEQUENCE_HEADER, str(number).encode())]
            if route.reason:
                producer.send(prefix + PAYMENTS_TOPIC, key=b"unroutable", value=line, headers=headers)
            else:
                producer.send(prefix + route.topic, key=route.key, value=line, headers=headers)
            sent += 1
        for topic, key, value in extra:
            producer.send(prefix + topic, key=key, value=value)
            sent += 1
        producer.flush(timeout=60)
    finally:
        producer.close(timeout=10)
    return sent


def _partitions(consumer: KafkaConsumer, topics: Iterable[str]) -> list[TopicPartition]:
    tps = []
    for topic in topics:
        ids = consumer.partitions_for_topic(topic) or set()
        tps.extend(TopicPartition(topic, p) for p in sorted(ids))
    return tps


def wait_caught_up(bootstrap: str, group: str, prefix: str, timeout: float = 120.0, workers: Sequence[Worker] = ()) -> None:
    """Wait until the worker group committed every inbound record (outputs are flushed first)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        tps = _partitions(consumer, (prefix + name for name in INBOUND_TOPICS))
        end = consumer.end_offsets(tps)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            behind = {tp: end[tp] - (consumer.committed(tp) or 0) for tp in tps}
            if all(lag <= 0 for lag in behind.values()):
                return
            for worker in workers:
                if worker.proc is not None and worker.proc.poll() is not None:
                    pytest.fail(f"worker exited with {worker.proc.returncode}:\n{worker.log_tail()}")
            time.sleep(0.5)
        lagging = {tp.topic for tp, lag in behind.items() if lag > 0}
        pytest.fail(f"not caught up after {timeout}s, lag {behind}:\n" + "\n".join(w.log_tail(20) + "\n" + w.diagnose(lagging) for w in workers))
    finally:
        consumer.close()


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: Any


def read_raw(bootstrap: str, topics: Iterable[str], timeout: float = 60.0, isolation_level: str = "read_uncommitted") -> list[Any]:
    """Every record on ``topics`` now, undecoded, in (topic, partition, offset) order.

    ``isolation_level="read_committed"`` skips records of aborted transactions."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, isolation_level=isolation_level)
    try:
        tps = _partitions(consumer, topics)
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        records: list[Any] = []
        deadline = time.monotonic() + timeout
        while any(consumer.position(tp) < end[tp] for tp in tps):
            assert time.monotonic() < deadline, "could not read the topics to their end"
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        return sorted(records, key=lambda r: (r.topic, r.partition, r.offset))
    finally:
        consumer.close()


def read_all(bootstrap: str, topics: Iterable[str], timeout: float = 60.0) -> list[Record]:
    """Every record on ``topics`` now, values decoded, in (topic, partition, offset) order."""
    return [Record(r.topic, r.partition, r.offset, r.key, orjson.loads(r.value) if r.value else None) for r in read_raw(bootstrap, topics, timeout)]


def final_personas(records: Iterable[Record]) -> dict[str, str]:
    """Last persona per debtor from persona_changed events (a debtor lives on one partition)."""
    personas: dict[str, str] = {}
    for record in records:
        if record.value and record.value.get("type") == "persona_changed":
            personas[record.value["debtor_id"]] = record.value["persona"]
    return personas


@dataclass
class Expected:
    """What the service should find for a portfolio.

    ``personas`` and ``model_version`` come from the embedded :class:`Engine` replay; the exact
    expectations (``changed``, ``quadrant_ids``, ``dead_letters``) from :func:`wire_replay`,
    which stores states as the service does (DebtorState.to_bytes rounds decayed counters).
    """

    lines: list[bytes]
    personas: dict[str, str]
    model_version: int
    changed: set[str]  # debtors with at least one change event
    quadrant_ids: set[str]  # event ids of the quadrant changes (no model involved)
    dead_letters: Counter[str]


class WireReplay(NamedTuple):
    """What the core gives with states kept as bytes, as in the Faust table."""

    states: dict[str, bytes]  # final state per debtor
    changed: set[str]  # debtors with at least one change event
    quadrant_ids: set[str]  # event ids of the quadrant changes
    dead_letters: Counter[str]


def wire_replay(lines: Iterable[bytes]) -> WireReplay:
    """The core with states kept as bytes (each event decodes and re-encodes the state)."""
    settings = Settings()
    config = EngineConfig(lateness_days=settings.lateness_days)
    model = SegmentModel()
    run = WireReplay({}, set(), set(), Counter())
    states = run.states
    for line in lines:
        try:
            event = decode_event(line, max_amount_cents=settings.max_amount_cents)
        except DecodeError as error:
            run.dead_letters[error.reason] += 1
            continue
        stored = states.get(event.debtor_id)
        step = process(DebtorState.from_bytes(stored) if stored else None, event, model, config, emitted_at=event.occurred_at)
        if step.state is None:
            states.pop(event.debtor_id, None)
        elif step.outcome == "processed":
            states[event.debtor_id] = step.state.to_bytes()
        if step.outcome == "late":
            run.dead_letters["too_late"] += 1
        if step.learn is not None:
            model.learn_one(step.learn)
        for output in step.outputs:
            run.changed.add(event.debtor_id)
            if output.value["type"] == "quadrant_changed":
                run.quadrant_ids.add(output.value["event_id"])
    return run


def replay(lines: Sequence[bytes]) -> Expected:
    engine = Engine(EngineConfig(lateness_days=Settings().lateness_days))
    for line in lines:
        try:
            engine.handle(decode_event(line, max_amount_cents=Settings().max_amount_cents))
        except DecodeError:
            continue
    personas = {debtor: state.persona for debtor, state in engine.states.items()}
    _, changed, quadrant_ids, dead_letters = wire_replay(lines)
    return Expected(list(lines), personas, engine.model.version, changed, quadrant_ids, dead_letters)


def agreement(expected: Expected, got: dict[str, str]) -> tuple[float, list[str]]:
    differ = [d for d, persona in expected.personas.items() if got.get(d, UNKNOWN) != persona]
    return 1 - len(differ) / len(expected.personas), differ


def wait_model(workers: Sequence[Worker], version: int, timeout: float = 30.0) -> list[dict[str, Any]]:
    """Wait until every worker uses the same model, of ``version``; return their /model pages."""
    deadline = time.monotonic() + timeout
    pages: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        pages = [worker.get("/model")[1] for worker in workers]
        if all(page["version"] == version for page in pages):
            return pages
        time.sleep(0.3)
    pytest.fail(f"models did not reach version {version}: {[p['version'] for p in pages]}")


def wait_model_settled(bootstrap: str, worker: Worker, timeout: float = 30.0) -> int:
    """The worker's model version once every model update sent so far is learned and published
    (the model-writer group committed the end of the updates topic) and the worker reads it.

    Caught up on the inbound topics is not enough: the writer publishes a snapshot every few
    updates or fractions of a second, so the model in use can be a few updates behind."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=f"{worker.group}-model-writer", enable_auto_commit=False)
    tp = TopicPartition(worker.prefix + MODEL_UPDATES_TOPIC, 0)
    try:
        deadline = time.monotonic() + timeout
        page: dict[str, Any] = {}
        while time.monotonic() < deadline:
            end = consumer.end_offsets([tp])[tp]
            page = worker.get("/model")[1]
            if (consumer.committed(tp) or 0) >= end and page["version"] == page["writer_version"]:
                return int(page["version"])
            time.sleep(0.3)
        pytest.fail(f"the model did not settle after {timeout}s: {page}, updates {consumer.committed(tp)} of {end}")
    finally:
        consumer.close()


# --- fixtures --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def portfolio() -> Expected:
    return replay(simulate(debtors=150, months=6, seed=23).lines)


@pytest.fixture(scope="module")
def worker(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    """One memory-store worker shared by the tests of this module that need no other."""
    data = tmp_path_factory.mktemp("worker") / "data"
    process = Worker(kafka_bootstrap, new_prefix("svc"), data)
    try:
        start_workers([process])
        yield process
    finally:
        process.stop()


# --- tests -----------------------------------------------------------------------------------------


def test_end_to_end_matches_the_embedded_replay(kafka_bootstrap: str, worker: Worker, portfolio: Expected) -> None:
    assert worker.get("/health") == (200, {"status": "ok", "model_version": 0, "held": 0, "pending_writes": 0, "gave_up": 0})
    mismatched = orjson.dumps({"event_id": "km-1", "debtor_id": "d23-000001", "type": "contact_initiated", "occurred_at": "2026-02-01T00:00:00Z", "channel": "portal", "direction": "inbound"})
    produce(kafka_bootstrap, worker.prefix, portfolio.lines, extra=[("debtor.contacts", b"not-the-debtor", mismatched)])
    wait_caught_up(kafka_bootstrap, worker.group, worker.prefix, workers=[worker])
    [page] = wait_model([worker], portfolio.model_version)
    assert page["writer"] is True and page["writer_version"] == portfolio.model_version

    records = read_all(kafka_bootstrap, [worker.prefix + PERSONA_CHANGES_TOPIC, worker.prefix + QUADRANT_CHANGES_TOPIC])
    share, differ = agreement(portfolio, final_personas(records))
    assert share >= AGREEMENT, f"personas agree for {share:.1%} only; differ: {differ}"
    assert {r.value["debtor_id"] for r in records} == portfolio.changed
    # Deterministic ids: the quadrant changes (no model involved) are exactly the core's.
    assert {r.value["event_id"] for r in records if r.value["type"] == "quadrant_changed"} == portfolio.quadrant_ids
    assert all(r.key == r.value["debtor_id"].encode() for r in records)
    ids = Counter(r.value["event_id"] for r in records)
    assert max(ids.values()) == 1, "a change event was emitted twice"

    dead = [r.value for r in read_all(kafka_bootstrap, [worker.prefix + DEAD_LETTERS_TOPIC])]
    assert Counter(d["reason"] for d in dead) == portfolio.dead_letters + Counter({"key_mismatch": 1})
    assert portfolio.dead_letters, "the simulation should inject bad lines"
    by_raw = {d["raw"] for d in dead}
    for line in portfolio.lines:
        try:
            decode_event(line)
        except DecodeError:
            assert line.decode("utf-8", "replace") in by_raw
    for letter in dead:
        assert letter["topic"].startswith(worker.prefix) and isinstance(letter["partition"], int)
        assert isinstance(letter["offset"], int) and letter["detail"] and "raw" in letter
    [mismatch] = [d for d in dead if d["reason"] == "key_mismatch"]
    assert mismatch["event_id"] == "km-1" and mismatch["topic"] == worker.prefix + "debtor.contacts"

    status, ready = worker.get("/ready")
    assert status == 200 and ready["status"] == "ready"
    _, metrics = worker.get("/metrics")
    assert b'debtor_segments_events_total{outcome="processed"' in metrics
    assert b"faust_messages_received_total" in metrics
    assert worker.events_counted() == len(portfolio.lines) + 1


def test_kcat_produces_and_consumes(kafka_bootstrap: str, kcat: str, worker: Worker) -> None:
    prefix = worker.prefix

    def event(event_id: str, debtor: str, event_type: str = "contact_initiated", day: int = 1) -> str:
        body: dict[str, Any] = {"event_id": event_id, "debtor_id": debtor, "type": event_type, "occurred_at": f"2026-03-{day:02d}T10:00:00Z"}
        if event_type == "contact_initiated":
            body.update(channel="call", direction="inbound")
        return orjson.dumps(body).decode()

    contacts = f"kc-1|{event('kc-e1', 'kc-1')}\nkc-1|{event('kc-e2', 'kc-1', day=2)}\nnope|{event('kc-e3', 'kc-2')}\n"
    erasure = f"kc-1|{event('kc-e4', 'kc-1', 'erasure_requested', day=3)}\n"
    for topic, data in ((prefix + "debtor.contacts", contacts), (prefix + "debtor.erasure-requests", erasure)):
        # murmur2_random: the Java/kafka-python partitioner, so kcat keys land where theirs do.
        subprocess.run([kcat, "-b", kafka_bootstrap, "-P", "-t", topic, "-K", "|", "-X", "topic.partitioner=murmur2_random"],
                       input=data, text=True, check=True, timeout=60, capture_output=True)  # fmt: skip
    wait_caught_up(kafka_bootstrap, worker.group, prefix, workers=[worker])

    def consume(topic: str, *fmt: str) -> list[str]:
        result = subprocess.run([kcat, "-b", kafka_bootstrap, "-C", "-t", topic, "-e", "-o", "beginning", "-q", *fmt],
                                text=True, check=True, timeout=60, capture_output=True)  # fmt: skip
        return result.stdout.splitlines()

    personas = [line.split("|", 1) for line in consume(prefix + PERSONA_CHANGES_TOPIC, "-f", "%k|%s\n")]
    [value] = [v for k, v in personas if k == "kc-1"]
    erased = orjson.loads(value)
    assert (erased["persona"], erased["reason"], erased["cause_event_id"]) == (UNKNOWN, "erased", "kc-e4")
    dead = [orjson.loads(line) for line in consume(prefix + DEAD_LETTERS_TOPIC, "-f", "%s\n")]
    assert [d["reason"] for d in dead if d.get("event_id") == "kc-e3"] == ["key_mismatch"]
    # The erasure left a tombstone (-Z: a null value has length -1) as the key's last changelog record.
    changelog = [line.split(" ") for line in consume(f"{worker.group}-debtor-state-changelog", "-Z", "-f", "%k %S\n")]
    assert [size for key, size in changelog if key == "kc-1"][-1] == "-1"


def test_worker_refuses_topics_with_other_partition_counts(kafka_bootstrap: str, worker: Worker, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "debtor_segments.agents", "worker", "--broker", f"kafka://{kafka_bootstrap}", "--topic-prefix", worker.prefix,
         "--partitions", "2", "--web-port", str(free_port()), "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60, cwd=ROOT, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("Error: topics disagree with --partitions 2") and f"{worker.prefix}debtor.payments has 4 partitions" in line


def test_two_workers_share_partitions_and_one_model(kafka_bootstrap: str, tmp_path: Path, portfolio: Expected) -> None:
    prefix = new_prefix("two")
    workers = [Worker(kafka_bootstrap, prefix, tmp_path / f"w{i}") for i in (1, 2)]
    try:
        start_workers(workers)
        produce(kafka_bootstrap, prefix, portfolio.lines)
        wait_caught_up(kafka_bootstrap, workers[0].group, prefix, workers=workers)
        pages = wait_model(workers, portfolio.model_version)
        assert pages[0]["digest"] == pages[1]["digest"] and pages[0]["probes"] == pages[1]["probes"]
        assert sorted(page["writer"] for page in pages) == [False, True], "exactly one model writer"
        counted = [worker.events_counted() for worker in workers]
        assert sum(counted) == len(portfolio.lines) and min(counted) > 0, f"both workers must process: {counted}"
        records = read_all(kafka_bootstrap, [prefix + PERSONA_CHANGES_TOPIC])
        share, differ = agreement(portfolio, final_personas(records))
        assert share >= AGREEMENT, f"personas agree for {share:.1%} only; differ: {differ}"
        dead = Counter(r.value["reason"] for r in read_all(kafka_bootstrap, [prefix + DEAD_LETTERS_TOPIC]))
        assert dead == portfolio.dead_letters
    finally:
        for worker in workers:
            worker.stop()


def test_restart_mid_stream_loses_nothing(kafka_bootstrap: str, tmp_path: Path, portfolio: Expected) -> None:
    prefix = new_prefix("restart")
    data = tmp_path / "data"
    # A backlog: the worker starts behind. Create the topics first, or the producer has the
    # broker auto-create them with one partition (and the worker would refuse them).
    ensure_topics(kafka_bootstrap, topic_plan(WorkerConfig(Settings(partitions=4, topic_prefix=prefix))))
    produce(kafka_bootstrap, prefix, portfolio.lines)
    first = Worker(kafka_bootstrap, prefix, data, "--store", "rocksdb")
    start_workers([first])
    deadline = time.monotonic() + 60
    while first.events_counted() < len(portfolio.lines) // 3:
        assert time.monotonic() < deadline, first.log_tail()
        time.sleep(0.05)
    version_before = first.get("/model")[1]["version"]
    assert first.stop() == 0, first.log_tail()
    assert any(data.rglob("*")), "rocksdb keeps the table in --data-dir"

    second = Worker(kafka_bootstrap, prefix, data, "--store", "rocksdb")
    try:
        start_workers([second])
        assert second.get("/model")[1]["version"] >= version_before, "the model survives the restart"
        wait_caught_up(kafka_bootstrap, second.group, prefix, workers=[second])
        records = read_all(kafka_bootstrap, [prefix + PERSONA_CHANGES_TOPIC, prefix + QUADRANT_CHANGES_TOPIC])
        share, differ = agreement(portfolio, final_personas(records))
        assert share >= AGREEMENT, f"personas agree for {share:.1%} only; differ: {differ}"
        missing = portfolio.changed - {r.value["debtor_id"] for r in records}
        assert not missing, f"no change events for {sorted(missing)}"
        dead = Counter(r.value["reason"] for r in read_all(kafka_bootstrap, [prefix + DEAD_LETTERS_TOPIC]))
        assert dead == portfolio.dead_letters, "nothing too late, nothing lost"
        version = wait_model_settled(kafka_bootstrap, second)
        assert abs(version - portfolio.model_version) <= max(3, portfolio.model_version // 50)
    finally:
        second.stop()


@pytest.fixture(scope="module", autouse=True)
def _delete_topics(kafka_bootstrap: str) -> Iterator[None]:
    """Drop this module's topics afterwards (set DEBTOR_SEGMENTS_KEEP_TOPICS=1 to keep them)."""
    yield
    delete_topics(kafka_bootstrap, PREFIXES)
