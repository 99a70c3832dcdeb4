"""The Kafka path side by side with its ceilings: throughput, latency, cost of state, scale-out.

Needs the local broker (``scripts/kafka start``). Every section writes ``out/bench/<section>.json``;
``report`` turns them (plus ``docs/bench-embedded.md``) into ``docs/performance.md``::

    python bench/kafka_path.py throughput --events 200000      # ceiling app, raw aiokafka, worker
    python bench/kafka_path.py latency --rate 1000 --seconds 30
    python bench/kafka_path.py state --debtors 200000
    python bench/kafka_path.py scaleout --events 200000
    python bench/kafka_path.py report

Workers run as subprocesses (``python -m debtor_segments.agents worker``) exactly as in
``tests/integration/test_service.py``: unique topic prefix, app id, web port and data dir.
Rates are measured from the consumer group's committed offsets (first commit to the last one),
so the ceiling app and the worker are measured the same way; CPU seconds come from /proc.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from debtor_segments.agents.kafka_io import SEQUENCE_HEADER, ensure_topics, route_line
from debtor_segments.agents.model_sync import parse_update
from debtor_segments.agents.settings import Settings
from debtor_segments.agents.topics import MODEL_TOPIC, MODEL_UPDATES_TOPIC, WorkerConfig, topic_plan
from debtor_segments.schemas import (
    CONTACTS_TOPIC,
    DEAD_LETTERS_TOPIC,
    ERASURE_TOPIC,
    INBOUND_TOPICS,
    PERSONA_CHANGES_TOPIC,
    QUADRANT_CHANGES_TOPIC,
)
from debtor_segments.streams.model import SegmentModel
from debtor_segments.streams.simulation import simulate

BOOTSTRAP = os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:9092")
OUT = ROOT / "out" / "bench"
WORK = Path(os.environ.get("BENCH_WORK", "/tmp/debtor-segments-bench"))
PARTITIONS = 4
WORKER_LOGLEVEL = os.environ.get("BENCH_WORKER_LOGLEVEL", "warning")
PER_RUN_TOPICS = (
    MODEL_UPDATES_TOPIC,
    MODEL_TOPIC,
    PERSONA_CHANGES_TOPIC,
    QUADRANT_CHANGES_TOPIC,
    DEAD_LETTERS_TOPIC,
)


def log(text: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def save(section: str, data: dict[str, Any]) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    data["measured_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    (OUT / f"{section}.json").write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
    log(f"{section}: {orjson.dumps(data).decode()}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- Kafka helpers ---------------------------------------------------------------------------


def admin() -> Any:
    from kafka import KafkaAdminClient

    return KafkaAdminClient(bootstrap_servers=BOOTSTRAP, client_id="bench-admin")


def create_topics(prefix: str) -> None:
    ensure_topics(
        BOOTSTRAP,
        topic_plan(WorkerConfig(Settings(partitions=PARTITIONS, topic_prefix=prefix))),
    )


def reset_run_topics(prefix: str) -> None:
    """Drop the model and outbound topics of a prefix so the next run on the same inbound topics
    starts with an empty model-updates backlog (the worker recreates them)."""
    client = admin()
    try:
        names = [prefix + name for name in PER_RUN_TOPICS]
        existing = [t for t in client.list_topics() if t in names]
        if existing:
            client.delete_topics(existing)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and any(t in names for t in client.list_topics()):
            time.sleep(0.5)
    finally:
        client.close()
    create_topics(prefix)


def delete_prefix(prefix: str) -> None:
    client = admin()
    try:
        mine = [t for t in client.list_topics() if t.startswith(prefix)]
        if mine:
            client.delete_topics(mine)
    except Exception:  # noqa: BLE001 - best effort clean-up
        pass
    finally:
        client.close()


def producer(**overrides: Any) -> Any:
    from kafka import KafkaProducer

    config = {
        "acks": "all",
        "linger_ms": 20,
        "batch_size": 256 * 1024,
        "max_request_size": 4 * 1024 * 1024,
    }
    config.update(overrides)
    return KafkaProducer(bootstrap_servers=BOOTSTRAP, **config)


def produce_lines(prefix: str, lines: Iterable[bytes]) -> int:
    """Like ``publish``: route by type, key by debtor id, number every record."""
    out = producer()
    sent = 0
    try:
        for number, line in enumerate(lines, start=1):
            route = route_line(line)
            if route.reason:
                continue  # the bench wants processable records; publish would dead-letter these
            out.send(
                prefix + route.topic,
                key=route.key,
                value=line,
                headers=[(SEQUENCE_HEADER, str(number).encode())],
            )
            sent += 1
        out.flush(timeout=300)
    finally:
        out.close(timeout=10)
    return sent


def end_offsets(topics: Sequence[str]) -> dict[Any, int]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=BOOTSTRAP, group_id=None)
    try:
        tps = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]
        return consumer.end_offsets(tps) if tps else {}
    finally:
        consumer.close()


def committed(client: Any, group: str, topics: Sequence[str]) -> int:
    offsets = client.list_group_offsets(group).get(group, {})
    return sum(meta.offset for tp, meta in offsets.items() if tp.topic in topics and meta.offset >= 0)


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


# --- subprocesses ----------------------------------------------------------------------------


class Proc:
    """A worker or the ceiling app as a subprocess."""

    def __init__(
        self,
        kind: str,
        prefix: str,
        app_id: str,
        *,
        store: str = "memory",
        extra: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.kind, self.prefix, self.app_id, self.store = kind, prefix, app_id, store
        self.port = free_port()
        self.data = WORK / app_id / f"{self.port}"
        self.data.mkdir(parents=True, exist_ok=True)
        self.log_path = WORK / f"{app_id}-{self.port}.log"
        env = {**os.environ, **(env or {})}
        if kind == "worker":
            args = [
                sys.executable, "-m", "debtor_segments.agents", "worker", "--broker", f"kafka://{BOOTSTRAP}",
                "--topic-prefix", prefix, "--app-id", app_id, "--data-dir", str(self.data),
                "--web-port", str(self.port), "--store", store, "--loglevel", WORKER_LOGLEVEL, *extra,
            ]  # fmt: skip
        elif kind == "peer":  # bench/peer_quix.py: Quix Streams + River, the bench extra
            args = [
                sys.executable, str(ROOT / "bench" / "peer_quix.py"), "--prefix", prefix, "--app-id", app_id,
                "--broker", BOOTSTRAP, "--state-dir", str(self.data), "--partitions", str(PARTITIONS),
            ]  # fmt: skip
        else:
            env.update(BENCH_PREFIX=prefix, BENCH_APP_ID=app_id, BENCH_STORE=store, BENCH_DATA_DIR=str(self.data),
                       BENCH_BROKER=f"kafka://{BOOTSTRAP}")  # fmt: skip
            args = [
                sys.executable,
                str(ROOT / "bench" / "ceiling_app.py"),
                "worker",
                "--web-port",
                str(self.port),
                "--loglevel",
                "warn",
            ]
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        self.started = time.monotonic()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def get(self, path: str) -> tuple[int, bytes]:
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited with {self.proc.returncode}: {self.log_path}")
            try:
                if self.get("/ready")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.kind} not ready after {timeout}s: {self.log_path}")

    def events_counted(self) -> int:
        _, body = self.get("/metrics")
        return int(sum(float(line.rsplit(b" ", 1)[1]) for line in body.splitlines() if line.startswith(b"debtor_segments_events_total{")))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        shutil.rmtree(self.data, ignore_errors=True)


def run_group(
    procs: Sequence[Proc],
    group: str,
    topics: Sequence[str],
    total: int,
    timeout: float = 900.0,
) -> dict[str, Any]:
    """Start-to-finish throughput of ``procs`` (one consumer group) on ``total`` pre-produced records."""
    client = admin()
    samples: list[tuple[float, int]] = []
    try:
        deadline = time.monotonic() + timeout
        cpu0 = {p.pid: cpu_seconds(p.pid) for p in procs}
        while time.monotonic() < deadline:
            for p in procs:
                if p.proc.poll() is not None:
                    raise RuntimeError(f"{p.kind} exited with {p.proc.returncode}: {p.log_path}")
            try:
                done = committed(client, group, topics)
            except Exception:  # noqa: BLE001 - the group does not exist yet
                done = 0
            now = time.monotonic()
            if done and (not samples or done != samples[-1][1]):
                samples.append((now, done))
                if len(samples) == 1:
                    cpu0 = {p.pid: cpu_seconds(p.pid) for p in procs}
            if done >= total:
                break
            time.sleep(0.25)
        else:
            raise RuntimeError(f"not done after {timeout}s: {samples[-1:] or 0}/{total}")
        cpu = sum(cpu_seconds(p.pid) - cpu0[p.pid] for p in procs)
        (t0, c0), (t1, c1) = samples[0], samples[-1]
        rss = [rss_mib(p.pid) for p in procs]
    finally:
        client.close()
    events = c1 - c0
    # The same rate without the tail: the last records of a backlog can sit out a consumer's
    # poll timeout or an idle-topic grace (Quix's partition alignment, the worker's scheduler),
    # which no steady stream pays; first commit to the first one at or past 95 % of the total.
    t95, c95 = next(((t, c) for t, c in samples if c >= 0.95 * total), samples[-1])
    return {
        "events": total,
        "measured_events": events,
        "seconds": round(t1 - t0, 2),
        "events_per_s": round(events / (t1 - t0), 1),
        "events_per_s_to_95": round((c95 - c0) / (t95 - t0), 1) if t95 > t0 else None,
        "cpu_us_per_event": round(cpu / events * 1e6, 1),
        "rss_mib": [round(r) for r in rss],
    }


async def _raw_consume(topics: Sequence[str], total: int) -> dict[str, Any]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=BOOTSTRAP, group_id=None, enable_auto_commit=False,
                                max_partition_fetch_bytes=256 * 1024)  # fmt: skip
    await consumer.start()
    try:
        tps = [TopicPartition(tp.topic, tp.partition) for tp in end_offsets(topics)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        count = 0
        started = time.perf_counter()
        cpu0 = time.process_time()
        while count < total:
            batches = await consumer.getmany(timeout_ms=1000, max_records=500)
            for records in batches.values():
                count += len(records)
        seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu0
    finally:
        await consumer.stop()
    return {
        "events": count,
        "seconds": round(seconds, 2),
        "events_per_s": round(count / seconds, 1),
        "cpu_us_per_event": round(cpu / count * 1e6, 1),
    }


# --- sections ----------------------------------------------------------------------------------


def _inbound(prefix: str) -> list[str]:
    return [prefix + name for name in INBOUND_TOPICS]


def prepare(prefix: str, debtors: int, months: int, seed: int, limit: int) -> int:
    create_topics(prefix)
    lines = simulate(debtors, months, seed).lines[:limit]
    started = time.perf_counter()
    sent = produce_lines(prefix, lines)
    log(f"produced {sent} records to {prefix}* in {time.perf_counter() - started:.0f}s")
    return sent


def worker_run(
    prefix: str,
    total: int,
    *,
    workers: int = 1,
    store: str = "memory",
    label: str = "w",
    profile: Path | None = None,
) -> dict[str, Any]:
    """One run of ``workers`` workers on the pre-produced topics; with ``profile``, py-spy
    samples the (first) worker for the whole run and writes its collapsed stacks there."""
    reset_run_topics(prefix)
    app_id = f"{prefix}{label}-{uuid.uuid4().hex[:6]}"
    procs = [Proc("worker", prefix, app_id, store=store) for _ in range(workers)]
    spy = start_profile(procs[0].pid, profile) if profile else None
    try:
        result = run_group(procs, app_id, _inbound(prefix), total)
        if spy:
            result["profile"] = stop_profile(spy, profile)  # type: ignore[arg-type]
        updates = sum(end_offsets([prefix + MODEL_UPDATES_TOPIC]).values())
        snapshots = sum(end_offsets([prefix + MODEL_TOPIC]).values())
        result.update(model_updates=updates, model_snapshots=snapshots, app_id=app_id)
        if workers > 1:
            result["per_worker_events"] = [p.events_counted() for p in procs]
        return result
    finally:
        for p in procs:
            p.stop()


PYSPY_RATE_HZ = 100  # py-spy samples per second: ~1 % overhead, thousands of samples per run


def start_profile(pid: int, path: Path) -> subprocess.Popen[bytes]:
    """py-spy on ``pid`` until :func:`stop_profile`: collapsed stacks (``--format raw``), idle
    samples included (a worker that waits shows it), GIL-free sampling (``--nonblocking``: the
    worker is not paused per sample, so the profile costs it almost nothing)."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    path.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [spy, "record", "--pid", str(pid), "--rate", str(PYSPY_RATE_HZ), "--format", "raw", "--idle",
         "--nonblocking", "--output", str(path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def stop_profile(spy: subprocess.Popen[bytes], path: Path) -> dict[str, Any]:
    """Stop py-spy (SIGINT makes it write its output) and split the samples (bench/profile_split.py)."""
    import signal

    from profile_split import split

    spy.send_signal(signal.SIGINT)
    try:
        spy.wait(60)
    except subprocess.TimeoutExpired:
        spy.kill()
        spy.wait(10)
    if not path.exists():
        return {"error": "py-spy wrote nothing (not installed, or no ptrace permission)"}
    return {"file": str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path),
            **split(path.read_text(), ROOT)}  # fmt: skip


def peer_available() -> bool:
    """Whether the peer can run here: quixstreams is in the ``bench`` extra only."""
    import importlib.util

    return importlib.util.find_spec("quixstreams") is not None


def peer_run(prefix: str, total: int) -> dict[str, Any]:
    """The peer (bench/peer_quix.py) on the pre-produced topics, measured like the worker."""
    from peer_quix import CHANGES_TOPIC

    app_id = f"{prefix}peer-{uuid.uuid4().hex[:6]}"
    changes = prefix + CHANGES_TOPIC
    before = sum(end_offsets([changes]).values())
    proc = Proc("peer", prefix, app_id)
    try:
        result = run_group([proc], app_id, _inbound(prefix), total)
        result["app_id"] = app_id
        result["change_events"] = sum(end_offsets([changes]).values()) - before
        return result
    finally:
        proc.stop()
        # Quix names its changelog topics after the group (changelog__<group>--...), not the prefix.
        client = admin()
        try:
            mine = [t for t in client.list_topics() if app_id in t and not t.startswith(prefix)]
            if mine:
                client.delete_topics(mine)
        finally:
            client.close()


def ceiling_run(prefix: str, total: int, *, store: str = "memory") -> dict[str, Any]:
    app_id = f"{prefix}ceiling-{uuid.uuid4().hex[:6]}"
    proc = Proc("ceiling", prefix, app_id, store=store)
    try:
        return run_group([proc], app_id, _inbound(prefix), total)
    finally:
        proc.stop()


def cmd_throughput(args: argparse.Namespace) -> None:
    prefix = args.prefix or f"bench-tp-{uuid.uuid4().hex[:6]}-"
    total = prepare(prefix, args.debtors, args.months, 7, args.events) if not args.prefix else sum(end_offsets(_inbound(prefix)).values())
    raw = asyncio.run(_raw_consume(_inbound(prefix), total))
    log(f"raw aiokafka: {raw}")
    ceiling = ceiling_run(prefix, total, store=args.store)
    log(f"ceiling: {ceiling}")
    worker = worker_run(prefix, total, store=args.store)
    log(f"worker: {worker}")
    profiled = None
    if args.profile:
        # A run of its own, so that py-spy (~0.1 core here) does not move the ratios measured above.
        path = OUT / f"{args.name}-worker.pyspy.txt"
        profiled = worker_run(prefix, total, store=args.store, label="prof", profile=path)
        log(f"worker under py-spy: {profiled}")
    peer = None
    if args.peer and peer_available():
        peer = peer_run(prefix, total)
        log(f"peer: {peer}")
    elif args.peer:
        log("peer: skipped, quixstreams is not installed (pip install -e '.[bench]')")
    two = None
    if args.two:
        two = worker_run(prefix, total, workers=2, store=args.store, label="two")
        log(f"two workers: {two}")
    section = {"two": two, "prefix": prefix, "events": total, "debtors": args.debtors, "months": args.months, "store": args.store,
               "raw": raw, "ceiling": ceiling, "worker": worker, "peer": peer, "worker_profiled": profiled,
               "state_bytes": changelog_sizes(f"{worker['app_id']}-debtor-state-changelog"),
               "learn": learn_rate(prefix)}  # fmt: skip
    save(args.name, section)
    if not args.keep:
        delete_prefix(prefix)


def changelog_sizes(topic: str) -> dict[str, Any]:
    """Serialized state per debtor: the last value per key on the changelog."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=BOOTSTRAP,
        group_id=None,
        enable_auto_commit=False,
        fetch_max_bytes=8 * 1024 * 1024,
    )
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        sizes: dict[bytes, int] = {}
        while any(consumer.position(tp) < end[tp] for tp in tps):
            for batch in consumer.poll(timeout_ms=500, max_records=5000).values():
                for r in batch:
                    sizes[r.key] = len(r.value) if r.value is not None else 0
    finally:
        consumer.close()
    values = sorted(v for v in sizes.values() if v)
    if not values:
        return {}
    return {
        "debtors": len(values),
        "mean": round(statistics.fmean(values)),
        "p99": values[int(len(values) * 0.99)],
        "max": values[-1],
    }


def learn_rate(prefix: str, limit: int = 20_000) -> dict[str, Any]:
    """The single model writer's learn rate: parse_update + SegmentModel.learn_one per update."""
    from kafka import KafkaConsumer, TopicPartition

    topic = prefix + MODEL_UPDATES_TOPIC
    consumer = KafkaConsumer(bootstrap_servers=BOOTSTRAP, group_id=None, enable_auto_commit=False)
    values: list[bytes] = []
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        end = consumer.end_offsets([tp])[tp]
        while consumer.position(tp) < min(end, limit):
            for batch in consumer.poll(timeout_ms=500).values():
                values.extend(r.value for r in batch)
    finally:
        consumer.close()
    values = values[:limit]
    if not values:
        return {}
    model = SegmentModel()
    started = time.perf_counter()
    for value in values:
        x = parse_update(value)
        if x is not None:
            model.learn_one(x)
    seconds = time.perf_counter() - started
    return {
        "updates": len(values),
        "us_per_update": round(seconds / len(values) * 1e6, 1),
        "updates_per_s": round(len(values) / seconds),
    }


def cmd_latency(args: argparse.Namespace) -> None:
    from kafka import KafkaConsumer, TopicPartition

    prefix = f"bench-lat-{uuid.uuid4().hex[:6]}-"
    create_topics(prefix)
    app_id = f"{prefix}ceiling" if args.ceiling else f"{prefix}debtor-segments"
    if args.ceiling:
        # The floor: Faust alone, forwarding one record in eight and waiting for its delivery.
        worker = Proc("ceiling", prefix, app_id, env={"BENCH_FORWARD": "1"})
    else:
        worker = Proc("worker", prefix, app_id)

    def portfolio(start: datetime) -> list[bytes]:
        lines = simulate(args.debtors, args.months, 11, start=start.strftime("%Y-%m-%d")).lines
        return [line for line in lines if not route_line(line).reason]

    start = datetime(2026, 1, 1, tzinfo=UTC)  # simulate's default calendar
    lines = portfolio(start)
    if not args.historical and args.history < len(lines):
        # Shift the portfolio's calendar so that its history ends today: the live events then
        # continue it (no months-long gap that would change every debtor at once).
        cut = datetime.fromisoformat(orjson.loads(lines[args.history])["occurred_at"])
        lines = portfolio(start + (datetime.now(UTC) - cut))
    count = int(args.rate * (args.seconds + args.warmup))
    history = [] if args.historical else lines[: args.history]
    lines = lines[len(history) : len(history) + count]
    sent_at: dict[str, float] = {}
    received: list[tuple[str, float]] = []
    acked: list[float] = []  # seconds from send() to the broker's acknowledgement
    stop = threading.Event()
    ready = threading.Event()

    def consume() -> None:
        consumer = KafkaConsumer(
            bootstrap_servers=BOOTSTRAP,
            group_id=None,
            enable_auto_commit=False,
            fetch_max_wait_ms=100,
        )
        topics = [prefix + PERSONA_CHANGES_TOPIC, prefix + QUADRANT_CHANGES_TOPIC]
        tps = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]
        consumer.assign(tps)
        consumer.seek_to_end(*tps)
        for tp in tps:
            consumer.position(tp)
        ready.set()
        while not stop.is_set():
            for batch in consumer.poll(timeout_ms=100).values():
                now = time.time()
                for r in batch:
                    received.append((orjson.loads(r.value)["cause_event_id"], now))
        consumer.close()

    try:
        worker.wait_ready()
        if history:
            # The debtors' past, as a backlog with its own event times: live events then
            # continue histories instead of starting from nothing (which would emit no changes).
            sent = produce_lines(prefix, history)
            client = admin()
            deadline = time.monotonic() + 600
            while committed(client, app_id, _inbound(prefix)) < sent:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"history of {sent} events not consumed in 600 s")
                time.sleep(0.5)
            client.close()
            log(f"history: {sent} events consumed")
        thread = threading.Thread(target=consume, daemon=True)
        thread.start()
        ready.wait(30)
        out = producer(linger_ms=0, batch_size=16384)
        started = time.monotonic()
        step = 0.01  # send in 10 ms ticks
        per_tick = args.rate * step
        owed = 0.0
        tick = 0
        index = 0
        measure_from = args.warmup * args.rate
        probes: list[dict[str, Any]] = []
        next_probe = time.monotonic()
        while index < len(lines):
            if not args.ceiling and time.monotonic() >= next_probe:  # the worker's progress and held records, every 2 s
                next_probe += 2.0
                try:
                    health = orjson.loads(worker.get("/health")[1])
                    probes.append(
                        {
                            "t": round(time.monotonic() - started, 1),
                            "sent": index,
                            "counted": worker.events_counted(),
                            "held": health.get("held"),
                        }
                    )
                except (OSError, ValueError):
                    pass
            tick += 1
            if args.erasure_heartbeat_ms and tick % max(1, round(args.erasure_heartbeat_ms / 10)) == 0:
                # An erasure request for a debtor nobody has, on every partition: it changes
                # nothing, but the erasure topic is no longer idle, so the worker's aligning
                # scheduler need not hold records for its 2 s grace.
                for partition in range(PARTITIONS):
                    debtor = f"hb-{partition}-{tick}"
                    heartbeat = orjson.dumps({"event_id": debtor, "debtor_id": debtor, "type": "erasure_requested",
                                              "occurred_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")})  # fmt: skip
                    out.send(
                        prefix + ERASURE_TOPIC,
                        key=debtor.encode(),
                        value=heartbeat,
                        partition=partition,
                    )
            owed += per_tick
            while owed >= 1 and index < len(lines):
                line = lines[index]
                route = route_line(line)
                event = orjson.loads(line)
                event_id = event["event_id"]
                if not args.historical:
                    # Live traffic: the event happens as it is sent (a payment, a call).
                    event["occurred_at"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                    line = orjson.dumps(event)
                if index >= measure_from:
                    sent_at[event_id] = time.time()
                future = out.send(
                    prefix + route.topic,
                    key=route.key,
                    value=line,
                    headers=[(SEQUENCE_HEADER, str(len(history) + index + 1).encode())],
                )
                if index >= measure_from:
                    future.add_callback(lambda _, at=sent_at[event_id]: acked.append(time.time() - at))
                index += 1
                owed -= 1
            delay = started + tick * step - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        out.flush(30)
        produced_s = time.monotonic() - started
        out.close()
        time.sleep(5)
        stop.set()
        thread.join(10)
        cpu = cpu_seconds(worker.pid)
    finally:
        worker.stop()
        delete_prefix(prefix)
    latencies = sorted((at - sent_at[cause]) * 1000 for cause, at in received if cause in sent_at)
    acked_ms = sorted(seconds * 1000 for seconds in acked)

    def at_rank(values: list[float], q: float) -> float | None:
        """The value at rank ``q`` of sorted ``values`` (nearest rank below), rounded."""
        return round(values[int(len(values) * q)], 1) if values else None

    # one cause can have a persona and a quadrant change: count each change event
    result = {
        "rate_target": args.rate,
        "rate_achieved": round(len(lines) / produced_s, 1),
        "events": len(lines),
        "measured_events": len(sent_at),
        "change_events": len(latencies),
        "p50_ms": at_rank(latencies, 0.5),
        "p90_ms": at_rank(latencies, 0.9),
        "p99_ms": at_rank(latencies, 0.99),
        "max_ms": round(latencies[-1], 1) if latencies else None,
        "produce_ack_p50_ms": at_rank(acked_ms, 0.5),
        "produce_ack_p99_ms": at_rank(acked_ms, 0.99),
        "worker_cpu_s": round(cpu, 1),
        "erasure_heartbeat_ms": args.erasure_heartbeat_ms,
        "traffic": "historical" if args.historical else "live",
        "history_events": len(history),
        "consumer": "ceiling" if args.ceiling else "worker",
        "probes": probes,
    }
    if latencies:
        by_time = sorted(((sent_at[cause], (at - sent_at[cause]) * 1000) for cause, at in received if cause in sent_at))
        tenth = max(1, len(by_time) // 10)
        result["p50_ms_by_tenth"] = [
            round(
                sorted(x for _, x in by_time[i : i + tenth])[len(by_time[i : i + tenth]) // 2],
                1,
            )
            for i in range(0, len(by_time), tenth)
        ]
    save(args.name, result)


def cmd_state(args: argparse.Namespace) -> None:
    """RSS of a rocksdb worker as the number of debtors grows (one contact_initiated each)."""
    prefix = f"bench-state-{uuid.uuid4().hex[:6]}-"
    create_topics(prefix)
    out = producer()
    started = time.perf_counter()
    for i in range(args.debtors):
        debtor = f"s-{i:07d}"
        value = orjson.dumps({"event_id": f"{debtor}-1", "debtor_id": debtor, "type": "contact_initiated",
                              "occurred_at": "2026-01-01T00:00:00Z", "channel": "portal", "direction": "inbound"})  # fmt: skip
        out.send(prefix + CONTACTS_TOPIC, key=debtor.encode(), value=value)
    out.flush(300)
    out.close()
    log(f"produced {args.debtors} one-event debtors in {time.perf_counter() - started:.0f}s")
    app_id = f"{prefix}debtor-segments"
    worker = Proc("worker", prefix, app_id, store="rocksdb")
    points: list[dict[str, Any]] = []
    try:
        worker.wait_ready()
        client = admin()
        points.append({"debtors": 0, "rss_mib": round(rss_mib(worker.pid))})
        marks = [int(args.debtors * f) for f in (0.25, 0.5, 0.75, 1.0)]
        deadline = time.monotonic() + 1200
        cpu0 = cpu_seconds(worker.pid)
        t0 = time.monotonic()
        while marks and time.monotonic() < deadline:
            done = committed(client, app_id, _inbound(prefix))
            if done >= marks[0]:
                points.append({"debtors": done, "rss_mib": round(rss_mib(worker.pid))})
                log(f"state: {points[-1]}")
                while marks and done >= marks[0]:
                    marks.pop(0)
            time.sleep(0.5)
        seconds = time.monotonic() - t0
        cpu = cpu_seconds(worker.pid) - cpu0
        client.close()
        du = sum(f.stat().st_size for f in worker.data.rglob("*") if f.is_file())
    finally:
        worker.stop()
    sizes = changelog_sizes(f"{app_id}-debtor-state-changelog")
    delete_prefix(prefix)
    (x0, y0), (x1, y1) = (
        (points[1]["debtors"], points[1]["rss_mib"]),
        (points[-1]["debtors"], points[-1]["rss_mib"]),
    )
    slope = (y1 - y0) / (x1 - x0) if x1 > x0 else 0.0
    save(args.name, {"debtors": args.debtors, "points": points, "mib_per_100k": round(slope * 100_000, 1),
                     "extrapolated_1m_mib": round(y1 + slope * (1_000_000 - x1)), "rocksdb_dir_mib": round(du / 2**20),
                     "seconds": round(seconds, 1), "cpu_us_per_event": round(cpu / max(1, args.debtors) * 1e6, 1),
                     "state_bytes": sizes})  # fmt: skip


def cmd_scaleout(args: argparse.Namespace) -> None:
    prefix = f"bench-so-{uuid.uuid4().hex[:6]}-"
    total = prepare(prefix, args.debtors, args.months, 7, args.events)
    one = worker_run(prefix, total, workers=1, label="one")
    log(f"one worker: {one}")
    two = worker_run(prefix, total, workers=2, label="two")
    log(f"two workers: {two}")
    save(
        args.name,
        {"events": total, "one": one, "two": two, "learn": learn_rate(prefix)},
    )
    delete_prefix(prefix)


# --- report ------------------------------------------------------------------------------------


def _load(name: str) -> dict[str, Any] | None:
    # out/bench holds this machine's runs; bench/baseline the committed runs from before the
    # shell changes (and rejected experiments) that the report compares against.
    for path in (OUT / f"{name}.json", ROOT / "bench" / "baseline" / f"{name}.json"):
        if path.exists():
            return orjson.loads(path.read_bytes())
    return None


def _yes(ok: bool) -> str:
    return "yes" if ok else "**no**"


def cmd_report(args: argparse.Namespace) -> None:
    from report import render  # bench/report.py

    text = render(_load, ROOT)
    Path(args.output).write_text(text)
    print(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    tp = sub.add_parser("throughput")
    tp.add_argument("--events", type=int, default=200_000)
    tp.add_argument("--debtors", type=int, default=10_000)
    tp.add_argument("--months", type=int, default=3)
    tp.add_argument("--store", choices=["memory", "rocksdb"], default="memory")
    tp.add_argument("--prefix", default="", help="reuse topics produced before (with --keep)")
    tp.add_argument("--keep", action="store_true", help="keep the topics")
    tp.add_argument(
        "--two",
        action="store_true",
        help="also run two workers on the same topics (scale-out)",
    )
    tp.add_argument(
        "--no-peer",
        dest="peer",
        action="store_false",
        help="skip the peer (bench/peer_quix.py, Quix Streams + River; needs the bench extra)",
    )
    tp.add_argument(
        "--profile",
        action="store_true",
        help="then run the worker once more under py-spy (out/bench/<name>-worker.pyspy.txt)",
    )
    tp.add_argument("--name", default="throughput")
    tp.set_defaults(func=cmd_throughput)
    lat = sub.add_parser("latency")
    lat.add_argument("--rate", type=float, default=1000.0)
    lat.add_argument("--seconds", type=float, default=30.0)
    lat.add_argument("--warmup", type=float, default=5.0)
    lat.add_argument("--debtors", type=int, default=3000)
    lat.add_argument("--months", type=int, default=6)
    lat.add_argument(
        "--erasure-heartbeat-ms",
        type=float,
        default=0.0,
        help="also send a no-op erasure request to every erasure partition this often",
    )
    lat.add_argument(
        "--history",
        type=int,
        default=30_000,
        help="live traffic: first load this many events of the portfolio as a backlog with their own event times",
    )
    lat.add_argument(
        "--historical",
        action="store_true",
        help="send the simulated event times (months ago) instead of the send time: a bulk load at a steady rate",
    )
    lat.add_argument(
        "--ceiling",
        action="store_true",
        help="measure the floor instead: bench/ceiling_app.py forwarding one record in eight",
    )
    lat.add_argument("--name", default="latency")
    lat.set_defaults(func=cmd_latency)
    st = sub.add_parser("state")
    st.add_argument("--debtors", type=int, default=200_000)
    st.add_argument("--name", default="state")
    st.set_defaults(func=cmd_state)
    so = sub.add_parser("scaleout")
    so.add_argument("--events", type=int, default=200_000)
    so.add_argument("--debtors", type=int, default=10_000)
    so.add_argument("--months", type=int, default=3)
    so.add_argument("--name", default="scaleout")
    so.set_defaults(func=cmd_scaleout)
    rep = sub.add_parser("report")
    rep.add_argument("--output", default=str(ROOT / "docs" / "performance.md"))
    rep.set_defaults(func=cmd_report)
    args = parser.parse_args(argv)
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
