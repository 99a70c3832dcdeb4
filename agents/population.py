"""The population summaries across workers: each worker publishes the summary of every table
partition it actively owns, and reads those of all partitions.

A worker holds only its own partitions of the state table, so each worker publishes a summary
per partition it actively owns (:class:`PopulationPublisher`; the summary is
:func:`streams.population.summarize`'s: counts, and transition counts for the windows
:data:`streams.population.WINDOWS_DAYS`) to the compacted one-partition topic
``<prefix>debtor.population`` keyed by the partition number, and every worker reads that whole
topic (:class:`PopulationBoard`); the HTTP pages (:mod:`agents.http_population`) add up the
newest summary of every partition.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import orjson
from faust import current_event
from faust.sensors import Sensor

from debtor_segments.agents.kafka_io import TopicFollower, TopicSpec, ensure_topics
from debtor_segments.streams.population import PopulationTally, parse_summary
from debtor_segments.streams.signing import sign, unsigned, verify
from debtor_segments.streams.state import DebtorState, is_debtor_key

if TYPE_CHECKING:
    from debtor_segments.agents.service import Service

__all__ = [
    "GAUGE_SECONDS",
    "POPULATION_TOPIC",
    "REFRESH_SECONDS",
    "REPUBLISH_SECONDS",
    "SCAN_BACKOFF",
    "PopulationBoard",
    "PopulationPublisher",
    "SummaryProducer",
    "TableChanges",
    "key_partition",
]

log = logging.getLogger("debtor_segments.api")

#: Compacted single-partition topic of per-partition population summaries, key = partition number.
POPULATION_TOPIC = "debtor.population"
#: Seconds between population refreshes; a partition's summary is published when it changed,
#: and at least every :data:`REPUBLISH_SECONDS` (which also repairs a summary an old owner
#: published late during a rebalance).
REFRESH_SECONDS = 5.0
#: The population gauges (debtors per persona and quadrant, drift) are set this often, from
#: the publisher's latest scans.
GAUGE_SECONDS = 15.0
REPUBLISH_SECONDS = 60.0
#: A refresh scans the local table; the next one waits at least this many times as long as the
#: scan took, so aggregates never take more than about 1/20 of the event loop.
SCAN_BACKOFF = 20.0


def key_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner (murmur2, as Java, kafka-python and aiokafka
    use) gives ``key``: where the debtor's inbound records and table state live.

    >>> key_partition(b"d1", 4)
    1
    """
    from aiokafka.partitioner import murmur2

    hashed: int = murmur2(key)
    return (hashed & 0x7FFFFFFF) % partitions


class TableChanges(Sensor):
    """Marks the partition of every key the agents set or delete in the state table."""

    def __init__(self, table: Any, mark: Callable[[bytes], None]) -> None:
        super().__init__()
        self._table = table
        self._mark = mark

    def on_table_set(self, table: Any, key: Any, value: Any) -> None:
        if table is self._table:
            self._mark(key)

    def on_table_del(self, table: Any, key: Any) -> None:
        if table is self._table:
            self._mark(key)


class PopulationPublisher:
    """Publishes the summary of every table partition this worker actively owns.

    A partition is refreshed when a key of it changed (see :class:`TableChanges`), when this
    worker has not published it yet since it got it, and every :data:`REPUBLISH_SECONDS`; a
    summary equal to the last one published (apart from its time) is not sent again unless
    that is due.
    """

    def __init__(self, service: Service, board: PopulationBoard, send: Callable[[bytes, bytes], Any]) -> None:
        self.service = service
        self.board = board
        self.send = send
        self.partitions = service.config.settings.partitions
        self.changelog = service.table.changelog_topic.get_topic_name()
        self.dirty: set[int] = set()
        self.published: dict[int, tuple[float, bytes]] = {}  # partition -> (when, content without time)
        self._not_before = 0.0
        #: The publisher's clock (monotonic seconds): when summaries were sent, how long a scan
        #: took (tests freeze it, which also takes the scan backoff away).
        self.clock: Callable[[], float] = time.monotonic
        #: Debtors per persona and per quadrant of each partition, from its latest scan: the
        #: worker's population gauges read them instead of scanning the table again.
        self.counts: dict[int, tuple[dict[str, int], dict[str, int]]] = {}
        # RocksDB iterates a consistent view while the agent writes; the memory store cannot.
        self.persistent = not service.config.settings.store.startswith("memory")

    def mark(self, key: Any) -> None:
        """A key of the table changed: its partition needs a new summary."""
        event = current_event()
        if event is not None:  # the agent's record: Faust writes the changelog to its partition
            self.dirty.add(event.message.partition)
        elif isinstance(key, bytes | str):
            self.dirty.add(key_partition(key.encode() if isinstance(key, str) else key, self.partitions))

    def forget(self, partitions: Iterable[int]) -> None:
        """Partitions revoked: publish them afresh should they come back."""
        for partition in partitions:
            self.published.pop(partition, None)
            self.counts.pop(partition, None)

    def owned(self) -> set[int]:
        """Table partitions this worker actively owns now."""
        try:
            actives = self.service.app.assignor.assigned_actives()
        except Exception:  # noqa: BLE001 - no assignment yet (Faust internals)
            return set()
        return {tp.partition for tp in actives if tp.topic == self.changelog}

    def _settled(self) -> bool:
        app = self.service.app
        try:
            return bool(self.service.assigned_once) and not app.rebalancing and not app.in_recovery
        except Exception:  # noqa: BLE001 - Faust internals, best effort
            return False

    def population(self) -> tuple[Counter[str], Counter[str]] | None:
        """Debtors per persona and per quadrant in the partitions this worker owns, summed
        from their latest scans; None while one of them has not been scanned yet."""
        owned = self.owned()
        if not owned <= self.counts.keys():
            return None
        personas: Counter[str] = Counter()
        quadrants: Counter[str] = Counter()
        for partition in owned:
            personas.update(self.counts[partition][0])
            quadrants.update(self.counts[partition][1])
        return +personas, +quadrants  # without the personas and quadrants nobody has

    async def refresh(self, *, force: bool = False) -> int:
        """Publish the summaries that are due (with ``force``: of every partition owned, now,
        changed or not); returns how many were sent."""
        now = self.clock()
        if not self.board.topic_ready.is_set() or not self._settled() or (not force and now < self._not_before):
            return 0
        owned = self.owned()
        due = {p for p in owned if force or p in self.dirty or p not in self.published or now - self.published[p][0] >= REPUBLISH_SECONDS}
        if not due:
            return 0
        self.dirty -= due  # changes from here on mark them again
        try:
            return await self._publish(due, force)
        except BaseException:
            self.dirty |= due
            raise

    async def _publish(self, due: set[int], force: bool) -> int:
        started = self.clock()
        tallies = {p: PopulationTally() for p in due}
        items: Iterable[tuple[Any, Any]] = self.service.table.items()
        if not self.persistent:
            # The memory store is a dict, which must not change while the scan yields below.
            items = list(items)
        for number, (key, value) in enumerate(items, start=1):
            if isinstance(key, bytes) and value is not None and is_debtor_key(key):
                tally = tallies.get(key_partition(key, self.partitions))
                if tally is not None:
                    tally.add(DebtorState.from_bytes(value))
            if number % 500 == 0:
                await asyncio.sleep(0)
        if not self._settled() or not due <= self.owned():
            self.dirty |= due  # a rebalance began meanwhile: try again later
            return 0
        for partition in due:
            self.counts[partition] = (tallies[partition].personas, tallies[partition].quadrants)
        sent = 0
        for partition in sorted(due):
            summary = tallies[partition].summary(partition, self.partitions)
            content = orjson.dumps({k: v for k, v in summary.items() if k != "published_at"}, option=orjson.OPT_SORT_KEYS)
            last = self.published.get(partition)
            if not force and last is not None and last[1] == content and self.clock() - last[0] < REPUBLISH_SECONDS:
                continue
            key = self.service.config.settings.signing_key
            await self.send(str(partition).encode(), orjson.dumps(sign(summary, key, "population") if key else summary))
            self.published[partition] = (self.clock(), content)
            sent += 1
        finished = self.clock()
        self._not_before = finished + (finished - started) * SCAN_BACKOFF
        return sent


class SummaryProducer:
    """A plain producer for the summaries: they are derived data, outside the processing
    guarantee (Faust's producer sends transactionally under exactly_once, and only to topics
    its agents consume)."""

    def __init__(self, bootstrap: str, topic: str, client_id: str, *, client_options: Mapping[str, Any] | None = None) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.client_id = client_id
        self.client_options: dict[str, Any] = dict(client_options or {})
        self._producer: Any = None

    async def send(self, key: bytes, value: bytes) -> None:
        if self._producer is None:
            from aiokafka import AIOKafkaProducer

            producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, client_id=self.client_id, acks="all", **self.client_options)
            await producer.start()
            self._producer = producer
        await self._producer.send_and_wait(self.topic, value, key=key)

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()


class _SummaryReader(TopicFollower):
    """Reads the whole population topic into its board (the connection is TopicFollower's)."""

    board: PopulationBoard

    def on_restart(self) -> None:
        self.board.summaries.clear()

    def on_records(self, records: list[Any]) -> None:
        for record in records:
            self.board.offer(record.key, record.value)

    def on_caught_up(self) -> None:
        self.board.loaded.set()


class PopulationBoard:
    """The newest summary of every partition, read from the whole population topic.

    ``reader`` follows the topic (:class:`agents.kafka_io.TopicFollower`); :meth:`offer`
    takes each record, so the board is tested without a broker.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        partitions: int,
        client_id: str,
        signing_key: bytes = b"",
        on_bad_signature: Callable[[], None] = lambda: None,
        *,
        client_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.reader = _SummaryReader(bootstrap, topic, client_id, "population reader", client_options=client_options)
        self.reader.board = self
        self.partitions = partitions
        self.signing_key = signing_key
        self.on_bad_signature = on_bad_signature
        self.summaries: dict[int, dict[str, Any]] = {}
        self.topic_ready = asyncio.Event()
        self.loaded = asyncio.Event()
        self.ignored = 0

    def offer(self, key: bytes | None, value: bytes | None) -> None:
        """Take one record of the topic (records come in offset order: the newest wins)."""
        try:
            partition = int((key or b"").decode())
        except (UnicodeDecodeError, ValueError):
            self.ignored += 1
            return
        if value is None:
            self.summaries.pop(partition, None)
            return
        summary = parse_summary(value, self.partitions)
        if summary is None or summary["partition"] != partition:
            self.ignored += 1
            return
        if self.signing_key:
            if not verify(summary, self.signing_key, "population"):
                self.ignored += 1
                self.on_bad_signature()
                return
            summary = unsigned(summary)
        self.summaries[partition] = summary

    async def ensure_topic(self) -> None:
        reader = self.reader
        spec = TopicSpec(
            reader.topic,
            1,
            {"cleanup.policy": "compact", "segment.ms": "600000", "min.cleanable.dirty.ratio": "0.1"},
            role="population summaries, key = table partition",
        )
        while not self.topic_ready.is_set():
            try:
                await asyncio.to_thread(ensure_topics, reader.bootstrap, [spec], wait_s=30.0, client_options=reader.client_options)
                self.topic_ready.set()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - broker down or topic mismatch: keep trying
                log.warning("cannot create the topic %s (%s); retrying in 5s", reader.topic, error)
                await asyncio.sleep(5.0)

    async def run(self) -> None:
        """Create the topic if need be, then follow it (forever)."""
        await self.ensure_topic()
        await self.reader.run()
