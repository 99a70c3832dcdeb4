"""agents/faust_internals.py against the real broker: the seek Faust makes after a rebalance."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from debtor_segments.agents.faust_internals import seek_to_committed_or_reset


async def _fetched_to_end(bootstrap: str, topic: str, records: int) -> tuple[AIOKafkaConsumer, TopicPartition]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for i in range(records):
            await producer.send_and_wait(topic, f"r{i}".encode())
    finally:
        await producer.stop()
    tp = TopicPartition(topic, 0)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=f"it-seek-{uuid.uuid4().hex[:8]}", enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    consumer.assign([tp])
    fetched = 0
    while fetched < records:
        fetched += len((await consumer.getmany(tp, timeout_ms=5000)).get(tp, []))
    assert await consumer.position(tp) == records
    return consumer, tp


def _run(bootstrap: str, topic: str, body: Callable[[AIOKafkaConsumer, TopicPartition], object]) -> object:
    async def main() -> object:
        consumer, tp = await _fetched_to_end(bootstrap, topic, 5)
        try:
            return await body(consumer, tp)  # type: ignore[misc]
        finally:
            await consumer.stop()

    return asyncio.run(main())


def test_aiokafka_alone_leaves_a_partition_without_commit_at_its_fetch_position(kafka_bootstrap: str, make_topic: Callable[..., str]) -> None:
    """The premise of the fix: records fetched and dropped are never fetched again."""

    async def body(consumer: AIOKafkaConsumer, tp: TopicPartition) -> int:
        assert await consumer.seek_to_committed() == {tp: None}
        return await consumer.position(tp)

    assert _run(kafka_bootstrap, make_topic("plain"), body) == 5


def test_a_partition_without_commit_is_rewound_to_its_beginning(kafka_bootstrap: str, make_topic: Callable[..., str]) -> None:
    async def body(consumer: AIOKafkaConsumer, tp: TopicPartition) -> tuple[object, int, int]:
        committed = await seek_to_committed_or_reset(consumer, lambda tp: False, "earliest")
        position = await consumer.position(tp)
        again = len((await consumer.getmany(tp, timeout_ms=5000)).get(tp, []))
        return committed, position, again

    committed, position, again = _run(kafka_bootstrap, make_topic("unset"), body)  # type: ignore[misc]
    assert (position, again) == (0, 5)
    assert list(committed.values()) == [None]  # type: ignore[attr-defined]


def test_committed_partitions_go_to_their_commit_and_changelogs_are_left_alone(kafka_bootstrap: str, make_topic: Callable[..., str]) -> None:
    async def committed_at_3(consumer: AIOKafkaConsumer, tp: TopicPartition) -> int:
        await consumer.commit({tp: OffsetAndMetadata(3, "")})
        await seek_to_committed_or_reset(consumer, lambda tp: False, "earliest")
        return await consumer.position(tp)

    async def changelog(consumer: AIOKafkaConsumer, tp: TopicPartition) -> int:
        await seek_to_committed_or_reset(consumer, lambda tp: True, "earliest")
        return await consumer.position(tp)

    async def latest(consumer: AIOKafkaConsumer, tp: TopicPartition) -> int:
        consumer.seek(tp, 1)
        await seek_to_committed_or_reset(consumer, lambda tp: False, "latest")
        return await consumer.position(tp)

    assert _run(kafka_bootstrap, make_topic("committed"), committed_at_3) == 3
    assert _run(kafka_bootstrap, make_topic("changelog"), changelog) == 5
    assert _run(kafka_bootstrap, make_topic("latest"), latest) == 5
