"""Access and forgery against real brokers (issue 14, item 10): a broker with SASL/PLAIN refuses
unauthenticated and wrongly authenticated clients and serves clients configured from the
service's settings; a forged model snapshot on the shared broker never becomes the model."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from debtor_segments.agents.kafka_io import route_line
from debtor_segments.agents.population import POPULATION_TOPIC
from debtor_segments.agents.settings import Settings
from debtor_segments.agents.topics import MODEL_TOPIC
from debtor_segments.streams.model import SegmentModel
from debtor_segments.streams.simulation import simulate
from tests.integration.conftest import REPO_ROOT, missing
from tests.integration.test_service import Worker, delete_topics, free_port, new_prefix, produce, start_workers, wait_caught_up

USERS = "admin:admin-secret-7c1,worker:worker-secret-3b9"


@pytest.fixture(scope="module")
def sasl_bootstrap() -> Iterator[str]:
    """A second, private broker whose client listener takes SASL/PLAIN only (scripts/kafka with
    KAFKA_SASL_USERS), on free ports, in a temporary state directory."""
    libs = REPO_ROOT / ".kafka" / "libs"
    if not (libs / ".complete").exists():
        missing("no Kafka jars in .kafka/libs: run scripts/kafka fetch (scripts/kafka start does)")
    state = Path(tempfile.mkdtemp(prefix="kafka-sasl-"))
    port, controller = free_port(), free_port()
    env = dict(os.environ, KAFKA_STATE_DIR=str(state), KAFKA_PORT=str(port), KAFKA_CONTROLLER_PORT=str(controller), KAFKA_SASL_USERS=USERS, KAFKA_START_TIMEOUT="150")
    script = REPO_ROOT / "scripts" / "kafka"
    started = subprocess.run([str(script), "start"], env=env, capture_output=True, text=True, timeout=200, check=False)
    if started.returncode != 0:
        pytest.fail(f"SASL broker did not start:\n{started.stderr[-3000:]}")
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([str(script), "stop"], env=env, capture_output=True, timeout=60, check=False)
        shutil.rmtree(state, ignore_errors=True)


def _roundtrip(bootstrap: str, settings: Settings, topic: str) -> bytes:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    async def run() -> bytes:
        options = settings.kafka_client_options()
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=10_000, **options)
        await producer.start()
        try:
            await producer.send_and_wait(topic, b"hello over SASL", key=b"k")
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None, **options)
        await consumer.start()
        try:
            record = await asyncio.wait_for(consumer.getone(), 30)
            return record.value
        finally:
            await consumer.stop()

    return asyncio.run(run())


def test_sasl_plain_clients_from_the_settings(sasl_bootstrap: str) -> None:
    good = Settings(kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_mechanism="PLAIN", kafka_username="worker", kafka_password="worker-secret-3b9")
    assert _roundtrip(sasl_bootstrap, good, "sasl-test") == b"hello over SASL"
    # kafka-python (the admin client of agents.kafka_io) takes the same options.
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=sasl_bootstrap, **good.kafka_client_options())
    try:
        assert "sasl-test" in admin.list_topics()
    finally:
        admin.close()
    wrong = Settings(kafka_security_protocol="SASL_PLAINTEXT", kafka_username="worker", kafka_password="not-the-password")
    from aiokafka.errors import KafkaConnectionError

    with pytest.raises(KafkaConnectionError):  # aiokafka logs SaslAuthenticationFailed, then gives up
        _roundtrip(sasl_bootstrap, wrong, "sasl-test")
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    with pytest.raises(KafkaError):  # no credentials: the SASL listener does not serve it
        KafkaProducer(bootstrap_servers=sasl_bootstrap, request_timeout_ms=5000, max_block_ms=5000).send("sasl-test", b"x").get(timeout=10)


SASL_ENV = {
    "DEBTOR_SEGMENTS_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
    "DEBTOR_SEGMENTS_KAFKA_SASL_MECHANISM": "PLAIN",
    "DEBTOR_SEGMENTS_KAFKA_USERNAME": "worker",
    "DEBTOR_SEGMENTS_KAFKA_PASSWORD": "worker-secret-3b9",
}


def _cli(*args: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "debtor_segments.agents", *args], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout, check=False)


def test_the_worker_and_the_cli_run_on_sasl(sasl_bootstrap: str, tmp_path: Path) -> None:
    """Every Kafka client of the worker (Faust's, the model reader and learner, the population
    producer and reader, the topic set-up) and of ``publish``/``tail`` takes the security
    settings: on a broker that serves SASL clients only, events go in and change events come out."""
    prefix = new_prefix("sasl")
    lines = simulate(debtors=30, months=4, seed=5).lines
    routable = sum(1 for line in lines if line.strip() and not route_line(line.strip()).reason)
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join(lines) + b"\n")
    env = dict(os.environ, **SASL_ENV)
    with pytest.MonkeyPatch.context() as patch:
        for name, value in SASL_ENV.items():
            patch.setenv(name, value)
        worker = Worker(sasl_bootstrap, prefix, tmp_path / "w", "--partitions", "2")
        start_workers([worker])  # ready: topics created, model topic read, over SASL
    try:
        published = _cli("publish", str(events), "--broker", f"kafka://{sasl_bootstrap}", "--topic-prefix", prefix, "--partitions", "2", env=env, timeout=120)
        assert published.returncode == 0, published.stderr[-3000:]
        assert f"published {routable} events" in published.stderr, published.stderr[-3000:]
        deadline = time.monotonic() + 120
        while worker.events_counted() < routable:
            assert worker.proc is not None and worker.proc.poll() is None, worker.log_tail()
            assert time.monotonic() < deadline, f"{worker.events_counted()} of {routable} events counted:\n{worker.log_tail()}"
            time.sleep(0.5)
        tailed = _cli("tail", "--broker", f"kafka://{sasl_bootstrap}", "--topic-prefix", prefix, "--from-beginning", "--max-messages", "3", "--timeout", "30", env=env, timeout=120)
        assert tailed.returncode == 0, tailed.stderr[-3000:]
        changes = [orjson.loads(line) for line in tailed.stdout.splitlines() if line.strip()]
        assert len(changes) == 3, (tailed.stdout, tailed.stderr[-2000:])
        assert {change["type"] for change in changes} <= {"persona_changed", "quadrant_changed"}, changes
        # The model went round its topics (learner consumer, Faust producer, reader consumer).
        deadline = time.monotonic() + 60
        while True:
            status, model = worker.get("/model")
            if status == 200 and model["version"] > 0:
                break
            assert time.monotonic() < deadline, (model, worker.log_tail())
            time.sleep(0.5)
        # The population summaries went out on the population producer (the reader follows them).
        from kafka import KafkaConsumer, TopicPartition

        options = Settings(kafka_security_protocol="SASL_PLAINTEXT", kafka_username="worker", kafka_password="worker-secret-3b9").kafka_client_options()
        consumer = KafkaConsumer(bootstrap_servers=sasl_bootstrap, group_id=None, **options)
        try:
            population = TopicPartition(prefix + POPULATION_TOPIC, 0)
            deadline = time.monotonic() + 60
            while consumer.end_offsets([population]).get(population, 0) == 0:
                assert time.monotonic() < deadline, worker.log_tail()
                time.sleep(1.0)
        finally:
            consumer.close()
        log = worker.log_path.read_text(errors="replace")
        assert "failed; retrying" not in log and "SaslAuthentication" not in log and "cannot create the topic" not in log, worker.log_tail(80)
    finally:
        assert worker.stop() == 0, worker.log_tail()
    # Without credentials the same CLI is refused by that broker (the settings did the work).
    refused = _cli("publish", str(events), "--broker", f"kafka://{sasl_bootstrap}", "--topic-prefix", prefix, env=dict(os.environ, DEBTOR_SEGMENTS_KAFKA_SECURITY_PROTOCOL="PLAINTEXT"), timeout=120)
    assert refused.returncode != 0, refused.stderr[-2000:]


def test_a_forged_model_snapshot_never_becomes_the_model(kafka_bootstrap: str, tmp_path: Path) -> None:
    """A writer of the model topic without the signing secret: version 10^12 used to be taken by
    every worker, and genuine snapshots refused afterwards."""
    prefix = new_prefix("forge")
    forged = SegmentModel().snapshot()
    forged["version"] = 10**12
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DEBTOR_SEGMENTS_SIGNING_SECRET", "signing-secret-of-the-integration-test")
        patch.setenv("DEBTOR_SEGMENTS_MODEL_SNAPSHOT_EVERY", "20")
        worker = Worker(kafka_bootstrap, prefix, tmp_path / "w")
        start_workers([worker])
    try:
        from kafka import KafkaProducer

        producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
        producer.send(prefix + MODEL_TOPIC, key=b"model", value=orjson.dumps(forged)).get(timeout=30)
        producer.close()
        produce(kafka_bootstrap, prefix, simulate(debtors=40, months=4, seed=3).lines)
        wait_caught_up(kafka_bootstrap, worker.group, prefix, workers=[worker])
        deadline = time.monotonic() + 30
        while True:
            status, model = worker.get("/model")
            if status == 200 and model["version"] > 0:
                break
            assert time.monotonic() < deadline, model
            time.sleep(0.5)
        assert model["version"] < 10**12, model  # genuine, signed snapshots still taken
        with urllib.request.urlopen(f"http://127.0.0.1:{worker.port}/metrics", timeout=10) as response:
            text = response.read().decode()
        line = next(row for row in text.splitlines() if row.startswith('debtor_segments_signature_failures_total{topic="model"}'))
        assert float(line.split()[-1]) >= 1
    finally:
        worker.stop()
        delete_topics(kafka_bootstrap, [prefix])
