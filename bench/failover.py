"""Failover benchmark (issue 18): how long do the change topics go silent when a worker dies?

Run ``python bench/failover.py [--rate 40] [--repetitions 3] [--scenario a --scenario b ...]``
with a broker up (``scripts/kafka start``; ``--bootstrap`` or ``KAFKA_BOOTSTRAP``). Workers run
with the production defaults of the failover settings (static membership, session timeout,
heartbeat interval, one standby replica; agents/settings.py) and 4 partitions. Scenarios, each
repetition on fresh topics (own prefix):

* ``a``: one worker, ``kill -9`` and an immediate restart on the same data dir and port;
* ``b``: two workers, one killed with ``kill -9`` for good: the survivor takes its partitions;
* ``c``: two workers restarted one after the other with SIGTERM (a rolling deploy).

Traffic: every debtor has a claim opened 40 days ago (a backlog consumed before the clock
starts) and then one live payment, sent at ``--rate`` events/s; that payment gives the debtor
its first quadrant (exactly one ``quadrant_changed`` each, checked with the core), so the
change topics carry a steady stream whose gaps are the failover's. Measured per repetition:

* **longest gap**: the longest silence on any change-topic partition that spans the fault
  (its partitions are the debtors' partitions, so a stalled inbound partition shows even while
  the other worker's partitions keep flowing); the longest gap before the fault is the baseline;
* **caught up**: seconds from the fault until the last change event that arrived >= 1 s after
  its payment was sent (afterwards the output is live again);
* **re-processed**: records counted by the workers (``debtor_segments_events_total``, the
  killed process's last scrape just before the kill) minus records produced; and **duplicates**:
  change events received more than once (same event id);
* **lost**: debtors whose payment was sent but whose change event never arrived (must be 0).

Results go to ``bench/failover.json``; ``docs/reliability.md`` gets the table between the
``failover`` markers (``--render-only`` re-renders).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "failover.json"
REPORT = ROOT / "docs" / "reliability.md"
sys.path.insert(0, str(ROOT))

from reliability import free_port, http_get, wait_ready

from debtor_segments.agents.kafka_io import SEQUENCE_HEADER, ensure_topics, route_line
from debtor_segments.agents.settings import Settings
from debtor_segments.agents.topics import WorkerConfig, topic_plan
from debtor_segments.schemas import INBOUND_TOPICS, PERSONA_CHANGES_TOPIC, QUADRANT_CHANGES_TOPIC

PARTITIONS = 4
LATE_S = 1.0  # a change event this long after its payment was sent: not caught up yet
TARGETS = {"a": 10.0, "b": 15.0, "c": 5.0}


def log(text: str) -> None:
    print(f"[{datetime.now(UTC).strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


class Proc:
    """A worker subprocess; restarted on the same data dir and port it is the same member."""

    def __init__(self, bootstrap: str, prefix: str, data: Path, *extra: str) -> None:
        self.bootstrap, self.prefix, self.data, self.extra = bootstrap, prefix, data, extra
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.counted_before = 0  # events counted by earlier processes of this worker

    def start(self) -> Proc:
        args = [sys.executable, "-m", "debtor_segments.agents", "worker", "--broker", f"kafka://{self.bootstrap}", "--topic-prefix", self.prefix,
                "--data-dir", str(self.data), "--web-port", str(self.port), "--loglevel", os.environ.get("BENCH_WORKER_LOGLEVEL", "warning"), *self.extra]  # fmt: skip
        with open(self.data.parent / f"{self.data.name}.log", "ab") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        self.started = time.monotonic()
        return self

    def get(self, path: str) -> tuple[int, bytes]:
        return http_get(self.port, path, 5)

    def wait_ready(self, timeout: float = 120.0) -> float:
        assert self.proc is not None
        return wait_ready(self.proc, self.port, self.started, timeout, f"{self.data}.log", poll=0.1)

    def counted(self) -> int | None:
        status, body = self.get("/metrics")
        if status != 200:
            return None
        return int(sum(float(line.rsplit(b" ", 1)[1]) for line in body.splitlines() if line.startswith(b"debtor_segments_events_total{")))

    def kill(self) -> None:
        """SIGKILL right after a last scrape of its counter (what it did since is not counted)."""
        self.counted_before += self.counted() or 0
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self) -> None:
        self.counted_before += self.counted() or 0
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise RuntimeError("worker ignored SIGTERM for 60 s") from None

    def total(self) -> int:
        alive = self.proc is not None and self.proc.poll() is None
        return self.counted_before + ((self.counted() or 0) if alive else 0)


def _ts(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def history(count: int, tag: str) -> list[bytes]:
    """One claim per debtor, 40 days old: the live payment then crosses the quadrant gate."""
    opened = _ts(datetime.now(UTC) - timedelta(days=40))
    return [orjson.dumps({"event_id": f"{tag}-{i}-h", "debtor_id": f"{tag}-{i}", "type": "claim_opened", "occurred_at": opened,
                          "claim_id": f"{tag}-{i}-c", "creditor_id": "cr-1", "principal_cents": 50_000}) for i in range(count)]  # fmt: skip


def payment(tag: str, i: int) -> bytes:
    return orjson.dumps({"event_id": f"{tag}-{i}-p", "debtor_id": f"{tag}-{i}", "type": "payment_received",
                         "occurred_at": _ts(datetime.now(UTC)), "claim_id": f"{tag}-{i}-c", "amount_cents": 1000 + i % 1000})  # fmt: skip


def committed(bootstrap: str, group: str, prefix: str) -> tuple[int, int]:
    """(committed, end) summed over the inbound partitions."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        tps = [TopicPartition(prefix + t, p) for t in INBOUND_TOPICS for p in range(PARTITIONS)]
        ends = consumer.end_offsets(tps)
        return sum(consumer.committed(tp) or 0 for tp in tps), sum(ends.values())
    finally:
        consumer.close()


class Traffic:
    """Sends the live payments at a fixed rate and receives the change events, in threads."""

    def __init__(self, bootstrap: str, prefix: str, tag: str, rate: float, debtors: int) -> None:
        self.bootstrap, self.prefix, self.tag, self.rate, self.debtors = bootstrap, prefix, tag, rate, debtors
        self.sent_at: dict[str, float] = {}  # debtor -> wall time its payment was sent
        self.received: list[tuple[float, int, str, str]] = []  # (wall time, partition, event id, debtor)
        self.stop_sending = threading.Event()
        self.stop_receiving = threading.Event()
        self.ready = threading.Event()
        self.sent = 0

    def start(self) -> None:
        self.receiver = threading.Thread(target=self._receive, daemon=True)
        self.receiver.start()
        self.ready.wait(30)
        self.sender = threading.Thread(target=self._send, daemon=True)
        self.sender.start()

    def _send(self) -> None:
        from kafka import KafkaProducer

        producer = KafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=2)
        started = time.monotonic()
        try:
            while not self.stop_sending.is_set() and self.sent < self.debtors:
                due = started + self.sent / self.rate
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                line = payment(self.tag, self.sent)
                route = route_line(line)
                self.sent_at[f"{self.tag}-{self.sent}"] = time.time()
                producer.send(self.prefix + route.topic, key=route.key, value=line, headers=[(SEQUENCE_HEADER, str(self.sent).encode())])
                self.sent += 1
            producer.flush(30)
        finally:
            producer.close(10)

    def _receive(self) -> None:
        from kafka import KafkaConsumer, TopicPartition

        consumer = KafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50)
        tps = [TopicPartition(self.prefix + t, p) for t in (PERSONA_CHANGES_TOPIC, QUADRANT_CHANGES_TOPIC) for p in range(PARTITIONS)]
        consumer.assign(tps)
        consumer.seek_to_end(*tps)
        for tp in tps:
            consumer.position(tp)
        self.ready.set()
        try:
            while not self.stop_receiving.is_set():
                for tp, batch in consumer.poll(timeout_ms=50).items():
                    now = time.time()
                    for record in batch:
                        event = orjson.loads(record.value)
                        self.received.append((now, tp.partition, event["event_id"], event["debtor_id"]))
        finally:
            consumer.close()

    def wait_all(self, timeout: float, behind: Any) -> None:
        """Until every payment's change event arrived, or the group committed everything and
        nothing arrived for 10 s (then what is missing is lost, not late), or ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len({r[3] for r in self.received}) < self.sent:
            last = self.received[-1][0] if self.received else 0.0
            if time.time() - last > 10 and behind() == 0:
                break
            time.sleep(0.5)
        time.sleep(1.0)  # duplicates that follow
        self.stop_receiving.set()
        self.receiver.join(10)


def longest_gap(received: list[tuple[float, int, str, str]], start: float, end: float) -> float:
    """Longest silence on one change-topic partition that ends in [start, end] (wall times)."""
    by_partition: dict[int, list[float]] = defaultdict(list)
    for at, partition, _, _ in received:
        by_partition[partition].append(at)
    gap = 0.0
    for times in by_partition.values():
        times.sort()
        for before, after in zip(times, times[1:], strict=False):
            if start <= after <= end:
                gap = max(gap, after - before)
    return gap


def caught_up(traffic: Traffic, fault: float, end: float = float("inf")) -> float:
    late = [at for at, _, _, debtor in traffic.received if fault <= at <= end and at - traffic.sent_at.get(debtor, at) >= LATE_S]
    return max(late) - fault if late else 0.0


def run(bootstrap: str, scenario: str, rate: float, tmp: Path, warmup: float, after: float, store: str) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:6]
    prefix = f"bench-fo-{scenario}-{tag}-"
    load = round(os.getloadavg()[0], 1)
    config = WorkerConfig(Settings(partitions=PARTITIONS, topic_prefix=prefix))
    ensure_topics(bootstrap, topic_plan(config))
    group = config.id
    count = int(rate * (warmup + after + (40 if scenario == "c" else 15)))
    workers = [Proc(bootstrap, prefix, tmp / f"{scenario}-{tag}-w{i}", "--store", store) for i in range(1 if scenario == "a" else 2)]
    try:
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.wait_ready()
        from kafka import KafkaProducer

        producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
        for number, line in enumerate(history(count, tag)):
            route = route_line(line)
            producer.send(prefix + route.topic, key=route.key, value=line, headers=[(SEQUENCE_HEADER, str(number).encode())])
        producer.flush(60)
        producer.close(10)
        deadline = time.monotonic() + 300
        while (c := committed(bootstrap, group, prefix))[0] < c[1]:
            if time.monotonic() > deadline:
                raise RuntimeError(f"history not consumed: {c}")
            time.sleep(0.5)
        traffic = Traffic(bootstrap, prefix, tag, rate, count)
        traffic.start()
        time.sleep(warmup)
        faults: list[tuple[float, float]] = []  # (wall time of the fault, wall time the next window starts)
        restarts: list[float] = []  # seconds from the fault to /ready of the restarted process
        stops: list[float] = []  # seconds from SIGTERM to the exit
        if scenario == "a":
            fault = time.time()
            workers[0].kill()
            workers[0].start()
            workers[0].wait_ready()
            restarts.append(time.time() - fault)
            faults.append((fault, float("inf")))
        elif scenario == "b":
            fault = time.time()
            workers[1].kill()
            faults.append((fault, float("inf")))
        else:
            for worker in workers:
                fault = time.time()
                worker.terminate()
                stops.append(time.time() - fault)
                worker.start()
                worker.wait_ready()
                restarts.append(time.time() - fault)
                faults.append((fault, float("inf")))
                time.sleep(after / 2)
        time.sleep(after)
        traffic.stop_sending.set()
        traffic.sender.join(30)

        def behind() -> int:
            done, end = committed(bootstrap, group, prefix)
            return end - done

        traffic.wait_all(timeout=300, behind=behind)
        sent = traffic.sent
        windows = [(f, nxt[0] if nxt else float("inf")) for f, nxt in zip([f for f, _ in faults], [*faults[1:], None], strict=False)]
        baseline = longest_gap(traffic.received, 0.0, faults[0][0])
        gaps = [longest_gap(traffic.received, start, end) for start, end in windows]
        ups = [caught_up(traffic, start, end) for start, end in windows]
        ids = [r[2] for r in traffic.received]
        debtors = {r[3] for r in traffic.received}
        deadline = time.monotonic() + 60
        while (c := committed(bootstrap, group, prefix))[0] < c[1] and time.monotonic() < deadline:
            time.sleep(0.5)
        counted = sum(worker.total() for worker in workers)
        return {
            "scenario": scenario,
            "rate": rate,
            "load_avg_1m": load,
            "store": store,
            "sent": sent,
            "baseline_gap_s": round(baseline, 2),
            "gap_s": [round(g, 2) for g in gaps],
            "caught_up_s": [round(u, 2) for u in ups],
            "ready_after_s": [round(r, 2) for r in restarts],
            "stop_s": [round(x, 2) for x in stops],
            "reprocessed": counted - count - sent,
            "duplicates": len(ids) - len(set(ids)),
            "lost": len({f"{tag}-{i}" for i in range(sent)} - debtors),
            # Records not committed when the run ended: missing change events with 0 here are lost.
            "uncommitted_at_end": behind(),
        }
    finally:
        for worker in workers:
            if worker.proc is not None and worker.proc.poll() is None:
                worker.proc.send_signal(signal.SIGTERM)
                try:
                    worker.proc.wait(60)
                except subprocess.TimeoutExpired:
                    worker.proc.kill()
        delete_prefix(bootstrap, prefix)


def delete_prefix(bootstrap: str, prefix: str) -> None:
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.delete_topics([t for t in admin.list_topics() if t.startswith(prefix)])
    except Exception:  # noqa: BLE001 - clean-up, best effort
        pass
    finally:
        admin.close()


NAMES = {"a": "(a) kill -9, immediate restart, 1 worker", "b": "(b) 2 workers, one killed for good", "c": "(c) graceful rolling restart, 2 workers"}


def render(results: dict[str, Any]) -> str:
    out = ["<!-- failover: generated by bench/failover.py from bench/failover.json -->", ""]
    runs = results.get("runs", [])
    if runs:
        first = runs[0]
        out += [(f"**Failover** (bench/failover.py, measured {results.get('measured_at', '?')}, {first['rate']:g} live events/s, "
                 f"4 partitions, default failover settings: static membership, session timeout "
                 f"{results.get('session_timeout_s', '?')} s, heartbeat {results.get('heartbeat_interval_s', '?')} s, "
                 "1 standby replica, leave on graceful stop; 2 cores shared with other benchmarks, 1-minute load average "
                 "per run in the last column). Per scenario and store, over its repetitions:"), "",
                "| scenario | store | reps | longest output gap (s), max / median | target | caught up (s), max | restarted worker ready (s) | re-processed | duplicate change events | lost | load |",
                "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
        for store in ("rocksdb", "memory"):
            for scenario in ("a", "b", "c"):
                mine = [r for r in runs if r["scenario"] == scenario and r.get("store", results.get("store", "memory")) == store]
                if not mine:
                    continue
                gaps = [g for r in mine for g in r["gap_s"]]
                ups = [u for r in mine for u in r["caught_up_s"]]
                ready = [x for r in mine for x in r["ready_after_s"]]
                ok = "met" if max(gaps) <= TARGETS[scenario] else "**missed**"
                out.append(f"| {NAMES[scenario]} | `{store}` | {len(mine)} | {max(gaps):.1f} / {statistics.median(gaps):.1f} | <= {TARGETS[scenario]:g} s ({ok}) | "
                           f"{max(ups):.1f} | {', '.join(f'{x:.1f}' for x in ready) or '-'} | {', '.join(str(r['reprocessed']) for r in mine)} | "
                           f"{', '.join(str(r['duplicates']) for r in mine)} | {sum(r['lost'] for r in mine)} | "
                           f"{', '.join(str(r.get('load_avg_1m', '?')) for r in mine)} |")  # fmt: skip
        base = max(r["baseline_gap_s"] for r in runs)
        out += ["", (f"Longest gap before any fault (baseline, all runs): {base:.1f} s. A gap is the longest silence on one "
                     "change-topic partition spanning the fault; for (c) one value per restart. Re-processed: records "
                     "counted by the workers minus records produced (the killed process's count is its last scrape just "
                     "before the kill, so this is a lower bound; for (c) its count before SIGTERM). Duplicate change "
                     "events are identical re-sends (same event id) of records processed again after a kill."), ""]  # fmt: skip
    out.append("<!-- /failover -->")
    return "\n".join(out)


def write_report(results: dict[str, Any]) -> None:
    text = REPORT.read_text()
    if "<!-- failover" not in text:
        text = text.rstrip("\n") + "\n\n<!-- failover -->\n<!-- /failover -->\n"
    head, _, rest = text.partition("<!-- failover")
    _, _, tail = rest.partition("<!-- /failover -->")
    REPORT.write_text(head + render(results) + tail)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP", f"127.0.0.1:{os.environ.get('KAFKA_PORT', '9092')}"))
    parser.add_argument("--rate", type=float, default=40.0)
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--scenario", choices=["a", "b", "c"], action="append")
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--after", type=float, default=15.0)
    parser.add_argument("--store", choices=["memory", "rocksdb"], default="memory")
    parser.add_argument("--render-only", action="store_true")
    parser.add_argument("--append", action="store_true", help="keep earlier runs of bench/failover.json")
    args = parser.parse_args(argv)
    results: dict[str, Any] = orjson.loads(RESULTS.read_bytes()) if RESULTS.exists() else {}
    if not args.render_only:
        settings = Settings()
        if not args.append:
            results = {}
        results.update({"measured_at": datetime.now(UTC).strftime("%Y-%m-%d"), "store": args.store,
                        "session_timeout_s": settings.session_timeout_s, "heartbeat_interval_s": settings.heartbeat_interval_s})  # fmt: skip
        runs = results.setdefault("runs", [])
        keep = os.environ.get("BENCH_KEEP_DIR")
        with tempfile.TemporaryDirectory(prefix="failover-", dir=keep) as tmp:
            for scenario in args.scenario or ["a", "b", "c"]:
                for rep in range(args.repetitions):
                    log(f"scenario {scenario}, repetition {rep + 1}")
                    result = run(args.bootstrap, scenario, args.rate, Path(tmp), args.warmup, args.after, args.store)
                    log(orjson.dumps(result).decode())
                    runs.append(result)
                    RESULTS.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    write_report(results)
    print(render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
