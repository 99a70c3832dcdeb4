"""Long reliability scenarios against the real broker; figures for docs/reliability.md.

Run ``python bench/reliability.py [--debtors 100000] [--soak-minutes 10] [--rate 300]``
with a broker up (``scripts/kafka start``). Scenarios, each on fresh topics (own prefix):

* ``throughput``: the same pre-produced backlog consumed by a worker with
  ``--guarantee at_least_once`` and one with ``exactly_once``; events/s and their ratio.
* ``restart``: ``--debtors`` debtors (claim_opened + one payment + one contact each) processed
  by a RocksDB worker; stopped; then seconds to ``GET /ready`` == 200 for a memory-store worker
  (rebuilds the table from the changelog) and a RocksDB restart on the same data dir.
* ``soak``: on that RocksDB worker, ``--rate`` events/s round-robin over all debtors for
  ``--soak-minutes``; worker RSS at start, middle and end, p99 event age per minute (from the
  worker's ``debtor_segments_event_age_seconds`` histogram; events carry occurred_at = send time).

Results go to ``bench/reliability.json`` (merged across runs) and ``docs/reliability.md`` is
re-rendered from it (``--render-only`` re-renders without running anything).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "reliability.json"
REPORT = ROOT / "docs" / "reliability.md"
sys.path.insert(0, str(ROOT))

from debtor_segments.agents.kafka_io import ensure_topics, route_line
from debtor_segments.agents.settings import Settings
from debtor_segments.agents.topics import WorkerConfig, topic_plan


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_get(port: int, path: str, timeout: float) -> tuple[int, bytes]:
    """(status, body) of a worker's page; (0, b"") while it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except OSError:
        return 0, b""


def wait_ready(proc: subprocess.Popen[bytes], port: int, started: float, timeout: float, log: str, poll: float = 0.2) -> float:
    """Seconds from ``started`` until the worker's /ready says 200; raises if it exits or times out."""
    while time.monotonic() - started < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited {proc.returncode}; see {log}")
        if http_get(port, "/ready", 5)[0] == 200:
            return time.monotonic() - started
        time.sleep(poll)
    raise RuntimeError(f"worker not ready after {timeout}s; see {log}")


class Proc:
    """A worker subprocess with its HTTP port."""

    def __init__(self, bootstrap: str, prefix: str, data: Path, *extra: str) -> None:
        self.port = free_port()
        self.log = data.parent / f"{data.name}-{self.port}.log"
        args = [sys.executable, "-m", "debtor_segments.agents", "worker", "--broker", f"kafka://{bootstrap}", "--topic-prefix", prefix,
                "--data-dir", str(data), "--web-port", str(self.port), "--loglevel", "warning", *extra]  # fmt: skip
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        self.started = time.monotonic()

    def get(self, path: str) -> tuple[int, bytes]:
        return http_get(self.port, path, 10)

    def wait_ready(self, timeout: float = 900.0) -> float:
        return wait_ready(self.proc, self.port, self.started, timeout, str(self.log))

    def metrics(self) -> dict[str, float]:
        _, body = self.get("/metrics")
        out: dict[str, float] = {}
        for line in body.decode().splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                try:
                    out[name] = float(value)
                except ValueError:
                    pass
        return out

    def events(self) -> int:
        return int(sum(v for k, v in self.metrics().items() if k.startswith("debtor_segments_events_total{")))

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def _ts(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def backlog(debtors: int, start: datetime, tag: str) -> list[bytes]:
    """claim_opened, a payment and a contact per debtor, in event-time order."""
    lines: list[bytes] = []
    step = timedelta(milliseconds=1)
    moment = start
    for kind in ("claim_opened", "payment_received", "contact_initiated"):
        for i in range(debtors):
            debtor = f"{tag}-{i:06d}"
            body: dict[str, Any] = {"event_id": f"{debtor}-{kind}", "debtor_id": debtor, "type": kind, "occurred_at": _ts(moment)}
            if kind == "claim_opened":
                body.update(claim_id=f"{debtor}-c", creditor_id="cr-1", principal_cents=50_000 + i % 9_000)
            elif kind == "payment_received":
                body.update(claim_id=f"{debtor}-c", amount_cents=1_000 + i % 3_000)
            else:
                body.update(channel="portal", direction="inbound")
            lines.append(orjson.dumps(body))
            moment += step
    return lines


def produce(bootstrap: str, prefix: str, lines: list[bytes]) -> float:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=20, batch_size=256 * 1024)
    started = time.monotonic()
    for line in lines:
        route = route_line(line)
        producer.send(prefix + route.topic, key=route.key, value=line)
    producer.flush(timeout=300)
    producer.close()
    return time.monotonic() - started


def prepare(bootstrap: str, prefix: str) -> None:
    ensure_topics(bootstrap, topic_plan(WorkerConfig(Settings(partitions=4, topic_prefix=prefix))))


def wait_events(worker: Proc, count: int, timeout: float = 3600.0) -> float:
    started = time.monotonic()
    while worker.events() < count:
        if worker.proc.poll() is not None:
            raise RuntimeError(f"worker exited {worker.proc.returncode}; see {worker.log}")
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"only {worker.events()} of {count} events after {timeout}s")
        time.sleep(0.5)
    return time.monotonic() - started


def throughput(bootstrap: str, tmp: Path, debtors: int) -> dict[str, Any]:
    result: dict[str, Any] = {"debtors": debtors}
    start = datetime.now(UTC) - timedelta(days=1)
    for guarantee in ("at_least_once", "exactly_once"):
        prefix = f"rel-tp-{guarantee[:3]}-{uuid.uuid4().hex[:6]}-"
        lines = backlog(debtors, start, "tp")
        prepare(bootstrap, prefix)
        produce(bootstrap, prefix, lines)
        worker = Proc(bootstrap, prefix, tmp / f"tp-{guarantee}", "--guarantee", guarantee)
        try:
            worker.wait_ready()
            seconds = wait_events(worker, len(lines))
        finally:
            worker.stop()
        result[guarantee] = {"events": len(lines), "seconds": round(seconds, 1), "events_per_s": round(len(lines) / seconds)}
        print(f"throughput {guarantee}: {len(lines)} events in {seconds:.1f}s", flush=True)
    result["ratio_eos_over_alo"] = round(result["exactly_once"]["events_per_s"] / result["at_least_once"]["events_per_s"], 2)
    return result


def histogram(metrics: dict[str, float], name: str) -> list[tuple[float, float]]:
    buckets = []
    for key, value in metrics.items():
        if key.startswith(f"{name}_bucket{{"):
            bound = key.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float("inf") if bound == "+Inf" else float(bound), value))
    return sorted(buckets)


def quantile(before: list[tuple[float, float]], after: list[tuple[float, float]], q: float) -> float | None:
    """q-quantile of the observations between two scrapes, interpolated within the bucket."""
    old = dict(before)
    counts = [(bound, value - old.get(bound, 0.0)) for bound, value in after]
    total = counts[-1][1] if counts else 0
    if total <= 0:
        return None
    target = q * total
    lower, below = 0.0, 0.0
    for bound, cumulative in counts:
        if cumulative >= target:
            if bound == float("inf"):
                return lower
            share = (target - below) / max(cumulative - below, 1e-9)
            return lower + (bound - lower) * share
        lower, below = bound, cumulative
    return lower


def restart_and_soak(bootstrap: str, tmp: Path, debtors: int, minutes: float, rate: int) -> dict[str, Any]:
    prefix = f"rel-big-{uuid.uuid4().hex[:6]}-"
    prepare(bootstrap, prefix)
    lines = backlog(debtors, datetime.now(UTC) - timedelta(hours=2), "big")
    result: dict[str, Any] = {"debtors": debtors, "events": len(lines)}
    result["produce_s"] = round(produce(bootstrap, prefix, lines), 1)
    data = tmp / "big-rocks"
    started = time.monotonic()
    first = Proc(bootstrap, prefix, data, "--store", "rocksdb")
    try:
        result["first_ready_s"] = round(first.wait_ready(), 1)
        wait_events(first, len(lines))
        # From the start: the worker processes the backlog before it reports ready.
        seconds = time.monotonic() - started
        result["load_s"] = round(seconds, 1)
        result["load_events_per_s"] = round(len(lines) / seconds)
        result["rss_after_load_mb"] = round(first.rss_mb())
        time.sleep(3)  # let the last commit go out
    finally:
        first.stop()
    print(f"loaded {len(lines)} events: {result}", flush=True)
    memory = Proc(bootstrap, prefix, tmp / "big-memory", "--store", "memory")
    try:
        result["ready_memory_store_s"] = round(memory.wait_ready(), 1)
        result["rss_memory_store_mb"] = round(memory.rss_mb())
    finally:
        memory.stop()
    print(f"memory store ready in {result['ready_memory_store_s']}s", flush=True)
    worker = Proc(bootstrap, prefix, data, "--store", "rocksdb")
    try:
        result["ready_rocksdb_restart_s"] = round(worker.wait_ready(), 1)
        print(f"rocksdb restart ready in {result['ready_rocksdb_restart_s']}s", flush=True)
        if minutes > 0:
            result["soak"] = soak(bootstrap, prefix, worker, debtors, minutes, rate)
    finally:
        worker.stop()
    return result


def soak(bootstrap: str, prefix: str, worker: Proc, debtors: int, minutes: float, rate: int) -> dict[str, Any]:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=5)
    name = "debtor_segments_event_age_seconds"
    rss = {"start": round(worker.rss_mb())}
    before_events = worker.events()
    scrape = histogram(worker.metrics(), name)
    per_minute: list[dict[str, Any]] = []
    started = time.monotonic()
    sent = 0
    tick = 0.1
    next_minute = started + 60
    middle_at = started + minutes * 30
    i = 0
    while time.monotonic() - started < minutes * 60:
        due = int((time.monotonic() - started) * rate)
        while sent < due:
            debtor = f"big-{i % debtors:06d}"
            kind = ("payment_received", "contact_initiated", "contact_attempted")[(i // debtors) % 3]
            body: dict[str, Any] = {"event_id": f"{debtor}-soak-{i}", "debtor_id": debtor, "type": kind, "occurred_at": _ts(datetime.now(UTC))}
            if kind == "payment_received":
                body.update(claim_id=f"{debtor}-c", amount_cents=500)
            elif kind == "contact_initiated":
                body.update(channel="portal", direction="inbound")
            else:
                body.update(channel="email", direction="outbound", tone="friendly")
            line = orjson.dumps(body)
            route = route_line(line)
            producer.send(prefix + route.topic, key=route.key, value=line)
            sent += 1
            i += 1
        now = time.monotonic()
        if "middle" not in rss and now >= middle_at:
            rss["middle"] = round(worker.rss_mb())
        if now >= next_minute:
            current = histogram(worker.metrics(), name)
            p99 = quantile(scrape, current, 0.99)
            p50 = quantile(scrape, current, 0.5)
            per_minute.append({"minute": len(per_minute) + 1, "p50_s": None if p50 is None else round(p50, 3),
                               "p99_s": None if p99 is None else round(p99, 3), "rss_mb": round(worker.rss_mb())})  # fmt: skip
            print(f"soak minute {len(per_minute)}: {per_minute[-1]}", flush=True)
            scrape = current
            next_minute += 60
        if worker.proc.poll() is not None:
            raise RuntimeError(f"worker exited during the soak; see {worker.log}")
        time.sleep(tick)
    producer.flush(60)
    producer.close()
    wait_events(worker, before_events + sent, timeout=300)
    rss["end"] = round(worker.rss_mb())
    return {"minutes": minutes, "rate": rate, "sent": sent, "rss_mb": rss, "per_minute": per_minute}


def render(results: dict[str, Any]) -> str:
    """The figures section of docs/reliability.md (between the ``figures`` markers)."""
    out = ["<!-- figures: generated by bench/reliability.py from bench/reliability.json -->", ""]
    tp = results.get("throughput")
    if tp:
        out += [f"**Throughput by guarantee** (same backlog: {tp['debtors']:,} debtors, {tp['at_least_once']['events']:,} events, one worker, 4 partitions):", "",
                "| guarantee | seconds | events/s |", "| --- | ---: | ---: |"]  # fmt: skip
        for name in ("at_least_once", "exactly_once"):
            out.append(f"| `{name}` | {tp[name]['seconds']} | {tp[name]['events_per_s']:,} |")
        out += ["", f"exactly_once / at_least_once = **{tp['ratio_eos_over_alo']}**.", ""]
        samples = results.get("throughput_samples", [])
        if len(samples) > 1:
            rows = ", ".join(f"{x['at_least_once']['events_per_s']:,} vs {x['exactly_once']['events_per_s']:,} events/s (ratio {x['ratio_eos_over_alo']})" for x in samples)
            out += [f"All runs (at_least_once vs exactly_once; the machine is shared, 2 cores): {rows}.", ""]
    rs = results.get("restart")
    if rs:
        out += [f"**{rs['debtors']:,} debtors in state** ({rs['events']:,} events: claim, payment, contact each; measured {rs.get('measured_at', '?')}):", "",
                "| | |", "| --- | ---: |",
                f"| produce the backlog (kafka-python) | {rs['produce_s']} s |",
                f"| process it (one worker, RocksDB) | {rs['load_s']} s, {rs['load_events_per_s']:,} events/s |",
                f"| worker RSS after the load | {rs['rss_after_load_mb']} MB |",
                f"| **time to ready, RocksDB restart on the same data dir** | **{rs['ready_rocksdb_restart_s']} s** |",
                f"| time to ready, memory store (whole changelog replayed) | {rs['ready_memory_store_s']} s (RSS {rs['rss_memory_store_mb']} MB) |", ""]  # fmt: skip
        soak = rs.get("soak")
        if soak:
            rss = soak["rss_mb"]
            out += [(f"**Soak**: {soak['rate']} events/s round-robin over the {rs['debtors']:,} debtors for {soak['minutes']:g} minutes ({soak['sent']:,} events), "
                     f"RocksDB worker. RSS start / middle / end: {rss.get('start')} / {rss.get('middle')} / {rss.get('end')} MB."), "",
                    "| minute | event age p50 (s) | p99 (s) | RSS (MB) |", "| ---: | ---: | ---: | ---: |"]  # fmt: skip
            for row in soak["per_minute"]:
                out.append(f"| {row['minute']} | {row['p50_s']} | {row['p99_s']} | {row['rss_mb']} |")
            out += ["", ("Event age = processing time minus occurred_at (set at send time), from the worker's "
                         "`debtor_segments_event_age_seconds` histogram, interpolated within buckets (0.01, 0.05, 0.25, 1, 5 s ...)."), ""]  # fmt: skip
    out.append("<!-- /figures -->")
    return "\n".join(out)


def write_report(results: dict[str, Any]) -> None:
    text = REPORT.read_text() if REPORT.exists() else "# Reliability\n\n<!-- figures -->\n<!-- /figures -->\n"
    head, _, rest = text.partition("<!-- figures")
    _, _, tail = rest.partition("<!-- /figures -->")
    REPORT.write_text(head + render(results) + tail)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:9092"))
    parser.add_argument("--debtors", type=int, default=100_000)
    parser.add_argument("--throughput-debtors", type=int, default=10_000)
    parser.add_argument("--soak-minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=int, default=300)
    parser.add_argument("--only", choices=["throughput", "restart"], action="append")
    parser.add_argument("--render-only", action="store_true")
    args = parser.parse_args(argv)
    results: dict[str, Any] = orjson.loads(RESULTS.read_bytes()) if RESULTS.exists() else {}
    if not args.render_only:
        only = set(args.only or ["throughput", "restart"])
        with tempfile.TemporaryDirectory(prefix="reliability-") as tmp:
            if "throughput" in only:
                results["throughput"] = throughput(args.bootstrap, Path(tmp), args.throughput_debtors)
                results.setdefault("throughput_samples", []).append(results["throughput"])
                RESULTS.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
            if "restart" in only:
                results["restart"] = restart_and_soak(args.bootstrap, Path(tmp), args.debtors, args.soak_minutes, args.rate)
                results["restart"]["measured_at"] = datetime.now(UTC).strftime("%Y-%m-%d")
                RESULTS.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    write_report(results)
    print(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
