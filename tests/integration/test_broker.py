"""Smoke tests against the real broker: Python clients and kcat interoperate."""

from __future__ import annotations

import subprocess
import uuid

from kafka import KafkaConsumer, KafkaProducer

N = 100


def test_produce_with_kafka_python_consume_with_kcat(kafka_bootstrap, kcat, make_topic):
    topic = make_topic("ordered", partitions=1)
    expected = [f"msg-{i:03d}" for i in range(N)]

    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", linger_ms=5, retries=5)
    try:
        for i, value in enumerate(expected):
            producer.send(topic, key=f"k{i % 7}".encode(), value=value.encode())
        producer.flush(timeout=30)
    finally:
        producer.close(timeout=10)

    # -e: exit at end of partition; -q: no informational noise on stdout.
    proc = subprocess.run(
        [kcat, "-b", kafka_bootstrap, "-C", "-t", topic, "-e", "-o", "beginning", "-q", "-f", "%o %s\\n"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, f"kcat failed ({proc.returncode}): {proc.stderr}"
    lines = proc.stdout.splitlines()
    assert len(lines) == N, f"expected {N} messages, got {len(lines)}: {lines[:5]}..."
    assert lines == [f"{i} {v}" for i, v in enumerate(expected)]


def test_produce_with_kcat_consume_with_group(kafka_bootstrap, kcat, make_topic):
    """kcat -> kafka-python consumer group (group coordinator + offset commit)."""
    topic = make_topic("group", partitions=3)
    values = [f"v{i}" for i in range(30)]
    proc = subprocess.run(
        [kcat, "-b", kafka_bootstrap, "-P", "-t", topic, "-K", ":"],
        input="".join(f"k{i % 5}:{v}\n" for i, v in enumerate(values)),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, f"kcat produce failed: {proc.stderr}"

    group = f"{topic}-g-{uuid.uuid4().hex[:6]}"
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        allow_auto_create_topics=False,
        consumer_timeout_ms=10_000,
    )
    try:
        got = []
        for msg in consumer:
            got.append(msg.value.decode())
            if len(got) == len(values):
                break
        consumer.commit()
        committed = {tp.partition: consumer.committed(tp) for tp in consumer.assignment()}
    finally:
        consumer.close()

    assert sorted(got) == sorted(values)
    assert sum(off or 0 for off in committed.values()) == len(values)
