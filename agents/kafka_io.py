"""Plain Kafka clients (kafka-python) around the service: topic set-up, ``publish`` and ``tail``.

The Faust worker uses :func:`ensure_topics` before it starts, so a partition count that
disagrees with the configuration is one clear error instead of a Faust crash; ``publish``
routes JSON lines to the inbound topics (keyed by debtor id, so each debtor stays on one
partition) and ``tail`` prints the change events.

>>> route_line(b'{"event_id": "e1", "debtor_id": "d1", "type": "call_rated"}')
Route(topic='debtor.ratings', key=b'd1', reason='', detail='')
>>> route_line(b'{"type": "refund"}').reason
'unknown_type'
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, NamedTuple

import orjson

from debtor_segments.schemas import (
    DEAD_LETTERS_TOPIC,
    INBOUND_TOPICS,
    PERSONA_CHANGES_TOPIC,
    QUADRANT_CHANGES_TOPIC,
    TOPIC_BY_TYPE,
)
from debtor_segments.streams.pipeline import dead_letter

log = logging.getLogger(__name__)

__all__ = [
    "SEQUENCE_HEADER",
    "BrokerUnavailable",
    "PublishStats",
    "Route",
    "TopicFollower",
    "TopicMismatch",
    "TopicSpec",
    "check_topics",
    "connect_admin",
    "ensure_topics",
    "publish_lines",
    "route_line",
    "tail",
]


class BrokerUnavailable(RuntimeError):
    """No Kafka broker answered at the bootstrap address in time."""


class TopicMismatch(RuntimeError):
    """Existing topics disagree with the configuration (partition counts)."""


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """A topic the service needs.

    ``strict`` topics must have exactly ``partitions`` partitions when they already exist
    (the inbound topics and the state changelog are co-partitioned; the model topics must
    have one partition); other topics are created with ``partitions`` but accepted as they are.
    """

    name: str
    partitions: int
    config: Mapping[str, str] = field(default_factory=dict)
    strict: bool = True
    role: str = ""


def check_topics(plan: Sequence[TopicSpec], existing: Mapping[str, int]) -> tuple[list[TopicSpec], list[str]]:
    """Compare the plan with existing topics (name -> partition count).

    Returns the topics to create and a list of problems (empty when the plan fits).

    >>> plan = [TopicSpec("a", 4, role="inbound"), TopicSpec("b", 1), TopicSpec("c", 4, strict=False)]
    >>> missing, problems = check_topics(plan, {"a": 2, "c": 1})
    >>> [spec.name for spec in missing], problems
    (['b'], ['a has 2 partitions, expected 4 (inbound)'])
    """
    missing = [spec for spec in plan if spec.name not in existing]
    problems = [
        f"{spec.name} has {existing[spec.name]} partitions, expected {spec.partitions}" + (f" ({spec.role})" if spec.role else "")
        for spec in plan
        if spec.strict and spec.name in existing and existing[spec.name] != spec.partitions
    ]
    return missing, problems


def connect_admin(
    bootstrap: str,
    *,
    wait_s: float = 30.0,
    client_id: str = "debtor-segments-admin",
    client_options: Mapping[str, Any] | None = None,
) -> Any:
    """A KafkaAdminClient, retrying until a broker answers or ``wait_s`` passed.

    ``client_options`` (here and in every client of this module): the security options of
    ``Settings.kafka_client_options()``, names shared by kafka-python and aiokafka."""
    from kafka import KafkaAdminClient

    deadline = time.monotonic() + wait_s
    while True:
        try:
            return KafkaAdminClient(
                bootstrap_servers=bootstrap,
                client_id=client_id,
                request_timeout_ms=10_000,
                bootstrap_timeout_ms=5_000,
                **dict(client_options or {}),
            )
        except Exception as error:  # noqa: BLE001 - NoBrokersAvailable, refused, DNS, ...: retried
            if time.monotonic() >= deadline:
                raise BrokerUnavailable(f"no Kafka broker answered at {bootstrap} within {wait_s:g}s ({error})") from None
            time.sleep(1.0)


def _partition_counts(admin: Any, names: Iterable[str]) -> dict[str, int]:
    counts = {}
    for topic in admin.describe_topics(list(names)):
        if topic.get("error_code", 0) == 0 and topic.get("partitions"):
            counts[topic["name"]] = len(topic["partitions"])
    return counts


def ensure_topics(
    bootstrap: str,
    plan: Sequence[TopicSpec],
    *,
    wait_s: float = 30.0,
    replication_factor: int = 1,
    log: Callable[[str], None] | None = None,
    client_options: Mapping[str, Any] | None = None,
) -> list[str]:
    """Create the missing topics of ``plan``; raise :class:`TopicMismatch` if existing ones disagree.

    Safe when several workers start at once: a topic another process created in between
    is checked like any existing one. Returns the names of the topics this call created.
    """
    admin = connect_admin(bootstrap, wait_s=wait_s, client_options=client_options)
    try:
        existing = _partition_counts(admin, (spec.name for spec in plan))
        missing, problems = check_topics(plan, existing)
        if problems:
            raise TopicMismatch("; ".join(problems))
        created: list[str] = []
        if missing:
            admin.create_topics(
                {
                    spec.name: {
                        "num_partitions": spec.partitions,
                        "replication_factor": replication_factor,
                        "configs": dict(spec.config),
                    }
                    for spec in missing
                },
                raise_errors=False,
            )
            names = [spec.name for spec in missing]
            admin.wait_for_topics(names, timeout_ms=int(wait_s * 1000))
            existing.update(_partition_counts(admin, names))
            still_missing, problems = check_topics(plan, existing)
            if problems:
                raise TopicMismatch("; ".join(problems))
            if still_missing:
                raise TopicMismatch("could not create " + ", ".join(spec.name for spec in still_missing))
            created = names
            if log is not None:
                log("created topics: " + ", ".join(f"{spec.name} ({spec.partitions})" for spec in missing))
        return created
    finally:
        admin.close()


# --- publish -------------------------------------------------------------------------------

#: Header with the line number ``publish`` gives every record: the worker delivers records of
#: co-partitioned topics in Kafka timestamp order, and a bulk load puts many records into one
#: millisecond; between those it keeps the file's order by this number.
SEQUENCE_HEADER = "debtor-segments-seq"


class Route(NamedTuple):
    """Where one input line goes: an inbound topic and key, or a dead-letter reason."""

    topic: str
    key: bytes
    reason: str = ""
    detail: str = ""


def route_line(line: bytes) -> Route:
    """Route one JSON line by its ``type`` (unprefixed topic names); full validation is the worker's.

    >>> route_line(b'not json').reason
    'invalid_json'
    >>> route_line(b'{"type": "payment_received", "debtor_id": 7}')[2:]
    ('invalid_field', 'debtor_id must be a non-empty string to key the record')
    """
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as error:
        return Route(DEAD_LETTERS_TOPIC, b"", "invalid_json", str(error))
    if not isinstance(obj, dict):
        return Route(DEAD_LETTERS_TOPIC, b"", "not_an_object", f"expected a JSON object, got {type(obj).__name__}")
    if "type" not in obj:
        return Route(DEAD_LETTERS_TOPIC, b"", "missing_field", "type is required")
    event_type = obj["type"]
    topic = TOPIC_BY_TYPE.get(event_type) if isinstance(event_type, str) else None
    if topic is None:
        shown = repr(event_type)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        return Route(DEAD_LETTERS_TOPIC, b"", "unknown_type", f"{shown} is not an event type")
    debtor_id = obj.get("debtor_id")
    if "debtor_id" not in obj:
        return Route(DEAD_LETTERS_TOPIC, b"", "missing_field", "debtor_id is required")
    if not isinstance(debtor_id, str) or not debtor_id:
        return Route(DEAD_LETTERS_TOPIC, b"", "invalid_field", "debtor_id must be a non-empty string to key the record")
    return Route(topic, debtor_id.encode())


@dataclass(slots=True)
class PublishStats:
    """What ``publish`` sent."""

    lines: int = 0
    events: Counter[str] = field(default_factory=Counter)  # by topic
    dead_letters: Counter[str] = field(default_factory=Counter)  # by reason
    errors: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        sent = sum(self.events.values())
        bad = sum(self.dead_letters.values())
        text = f"published {sent} events from {self.lines} lines in {self.seconds:.1f}s"
        if self.events:
            text += " (" + ", ".join(f"{topic} {n}" for topic, n in sorted(self.events.items())) + ")"
        text += f"; {bad} dead letters"
        if bad:
            text += " (" + ", ".join(f"{reason} {n}" for reason, n in sorted(self.dead_letters.items())) + ")"
        if self.errors:
            text += f"; {self.errors} FAILED to send"
        return text


def make_producer(bootstrap: str, *, client_options: Mapping[str, Any] | None = None, **overrides: Any) -> Any:
    """A kafka-python producer: idempotent, acks=all, small batches; raw bytes in and out."""
    from kafka import KafkaProducer

    config: dict[str, Any] = {"acks": "all", "linger_ms": 10, "retries": 5, "client_id": "debtor-segments-publish"}
    config.update(client_options or {})
    config.update(overrides)
    return KafkaProducer(bootstrap_servers=bootstrap, **config)


def publish_lines(
    lines: Iterable[bytes],
    producer: Any,
    *,
    topic_prefix: str = "",
    flush_timeout_s: float = 60.0,
) -> PublishStats:
    """Send every non-blank line to its inbound topic keyed by debtor id; unroutable lines
    go to the dead-letter topic with the reason and line number. Flushes at the end."""
    stats = PublishStats()
    started = time.perf_counter()

    def failed(_error: Exception) -> None:
        stats.errors += 1

    for number, raw in enumerate(lines, start=1):
        stats.lines = number
        line = raw.strip()
        if not line:
            continue
        route = route_line(line)
        if route.reason:
            record = dead_letter(route.reason, route.detail, line, line=number)
            future = producer.send(topic_prefix + DEAD_LETTERS_TOPIC, value=orjson.dumps(record))
            stats.dead_letters[route.reason] += 1
        else:
            headers = [(SEQUENCE_HEADER, str(number).encode())]
            future = producer.send(topic_prefix + route.topic, key=route.key, value=line, headers=headers)
            stats.events[route.topic] += 1
        future.add_errback(failed)
    producer.flush(timeout=flush_timeout_s)
    stats.seconds = time.perf_counter() - started
    return stats


def publish_plan(topic_prefix: str, partitions: int) -> list[TopicSpec]:
    """Topics ``publish`` writes to: created if missing (so the broker's auto-creation with
    its default partition count cannot get there first), existing ones taken as they are."""
    return [TopicSpec(topic_prefix + name, partitions, strict=False, role="inbound") for name in (*INBOUND_TOPICS, DEAD_LETTERS_TOPIC)]


# --- tail ----------------------------------------------------------------------------------

CHANGE_TOPICS: tuple[str, ...] = (PERSONA_CHANGES_TOPIC, QUADRANT_CHANGES_TOPIC)


def tail(
    bootstrap: str,
    topics: Sequence[str],
    out: IO[str],
    *,
    from_beginning: bool = False,
    max_messages: int | None = None,
    timeout_s: float | None = None,
    wait_for_topics_s: float = 30.0,
    on_ready: Callable[[], None] | None = None,
    client_options: Mapping[str, Any] | None = None,
) -> int:
    """Print records of ``topics`` (all partitions, no consumer group) as JSON lines.

    Stops after ``max_messages`` records or when nothing arrived for ``timeout_s`` seconds
    (never, if ``None``). Returns the number of records printed.
    """
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        allow_auto_create_topics=False,
        client_id="debtor-segments-tail",
        **dict(client_options or {}),
    )
    try:
        partitions: list[Any] = []
        deadline = time.monotonic() + wait_for_topics_s
        for topic in topics:
            ids = consumer.partitions_for_topic(topic)
            while not ids and time.monotonic() < deadline:
                time.sleep(0.5)
                ids = consumer.partitions_for_topic(topic)
            if not ids:
                raise TopicMismatch(f"topic {topic} does not exist (is a worker running with this --topic-prefix?)")
            partitions.extend(TopicPartition(topic, p) for p in sorted(ids))
        consumer.assign(partitions)
        if from_beginning:
            consumer.seek_to_beginning(*partitions)
        else:
            consumer.seek_to_end(*partitions)
        for tp in partitions:
            consumer.position(tp)  # resolve the start positions now, before on_ready
        if on_ready is not None:
            on_ready()
        printed = 0
        last = time.monotonic()
        while max_messages is None or printed < max_messages:
            if timeout_s is not None and time.monotonic() - last >= timeout_s:
                break
            wait_ms = 500 if timeout_s is None else max(1, int(min(0.5, timeout_s - (time.monotonic() - last)) * 1000))
            batches = consumer.poll(timeout_ms=wait_ms, max_records=500)
            records = sorted((r for batch in batches.values() for r in batch), key=lambda r: (r.timestamp, r.partition, r.offset))
            if records:
                last = time.monotonic()
            for record in records:
                if record.value is None:
                    continue
                out.write(_one_line(record.value) + "\n")
                printed += 1
                if max_messages is not None and printed >= max_messages:
                    break
            out.flush()
        return printed
    finally:
        consumer.close()


def _one_line(value: bytes) -> str:
    """The record as one JSON line (re-encoded compactly if it is JSON, else as text)."""
    try:
        return orjson.dumps(orjson.loads(value)).decode()
    except orjson.JSONDecodeError:
        return value.decode("utf-8", "replace").replace("\n", "\\n")


class TopicFollower:
    """Follows a one-partition topic from its beginning with a consumer of its own (no group,
    nothing committed), for compacted topics that every worker reads whole: the model and the
    population summaries.

    :meth:`run` reads up to the end offset it found at start, calls :meth:`on_caught_up`, then
    keeps reading; after an error it starts over from the beginning (after :meth:`on_restart`).
    Subclasses take the records in :meth:`on_records`.
    """

    def __init__(self, bootstrap: str, topic: str, client_id: str, what: str, *, client_options: Mapping[str, Any] | None = None) -> None:
        self.bootstrap = bootstrap
        self.client_options: dict[str, Any] = dict(client_options or {})
        self.topic = topic
        self.client_id = client_id
        self.what = what  # for the log: "model reader", "population reader"
        self._consumer: Any = None
        self._tp: Any = None

    def on_restart(self) -> None:
        """Called before the topic is read (again) from its beginning."""

    def on_records(self, records: list[Any]) -> None:
        """Take one poll's records, in offset order."""
        raise NotImplementedError

    def on_caught_up(self) -> None:
        """Called once everything that was on the topic at start has been read."""

    async def run(self) -> None:
        while True:
            try:
                await self._run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s failed; retrying in 2s", self.what)
                await asyncio.sleep(2.0)

    async def _run_once(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            client_id=self.client_id,
            **self.client_options,
        )
        await consumer.start()
        try:
            tp = TopicPartition(self.topic, 0)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            self.on_restart()
            self._consumer, self._tp = consumer, tp
            end = (await consumer.end_offsets([tp]))[tp]
            while await consumer.position(tp) < end:
                await self._poll(200)
            self.on_caught_up()
            while True:
                await self._poll(1000)
        finally:
            self._consumer = None
            await consumer.stop()

    async def _poll(self, timeout_ms: int) -> None:
        batches = await self._consumer.getmany(timeout_ms=timeout_ms)
        for records in batches.values():
            self.on_records(records)

    async def sync(self, timeout_s: float = 10.0) -> bool:
        """Wait until everything on the topic right now has been read (False on timeout)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            consumer, tp = self._consumer, self._tp
            if consumer is not None:
                try:
                    end = (await consumer.end_offsets([tp]))[tp]
                    while await consumer.position(tp) < end and time.monotonic() < deadline:
                        await asyncio.sleep(0.05)
                    return True
                except Exception:  # noqa: BLE001 - the follower is restarting; try again
                    log.debug("%s not ready to sync yet", self.what)
            await asyncio.sleep(0.1)
        return False
