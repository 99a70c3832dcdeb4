"""The shared model: every worker predicts with the same snapshot, one worker learns.

Each worker's ``segment`` agent sends the feature vector a record should teach the model
(``Step.learn``) to the single-partition model-updates topic; the worker the updates' own
consumer group gives that partition learns them and publishes snapshots to the compacted model
topic, which every worker reads from the start::

    worker A (inbound partitions 0,1)                 worker B (inbound partitions 2,3)
      segment agent                                     segment agent
         | Step.learn                                      | Step.learn
         +-------------> debtor.model-updates <------------+
                         (1 partition, consumer group <app id>-model-writer)
                                      |
               model writer on whichever worker the group gives that partition:
               SegmentModel.learn_one; every N updates or T seconds a snapshot,
               then commits the updates it covers
                                      v
                         debtor.model (compacted, key "model")
                                      |
         +----------------------------+----------------------------+
         v                                                         v
      model reader (own consumer, from the start)               model reader
      swaps in SegmentModel.restore(snapshot)                   same snapshots, same order
      when the version increases                                -> same model version
      A predicts with snapshot v                                B predicts with snapshot v

Until the first snapshot exists every worker uses ``SegmentModel()`` (deterministic initial
prototypes), so a persona never depends on which worker processed the event.

See Also
--------
agents.topics : the two model topics (``MODEL_UPDATES_TOPIC``, ``MODEL_TOPIC``).
agents.worker : the Faust app that runs the reader and the learner as tasks.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson

from debtor_segments.agents.kafka_io import TopicFollower
from debtor_segments.agents.metrics import ServiceMetrics
from debtor_segments.streams.features import FEATURES
from debtor_segments.streams.model import SegmentModel
from debtor_segments.streams.signing import unsigned, verify

__all__ = [
    "ModelHolder",
    "ModelLearner",
    "ModelReader",
    "ModelWriter",
    "model_digest",
    "parse_update",
]

# The worker's logger: the model's records keep the name they had in agents/worker.py.
log = logging.getLogger("debtor_segments.worker")


def model_digest(model: SegmentModel) -> str:
    """A short fingerprint of a model's centres and names: equal digests, equal predictions."""
    snapshot = model.snapshot()
    body = orjson.dumps([snapshot["personas"], snapshot["centers"]], option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(body, digest_size=8).hexdigest()


class ModelHolder:
    """The model a worker predicts with: ``SegmentModel()`` until a snapshot arrives, then the
    newest snapshot read from the model topic (only ever moving to a higher version)."""

    def __init__(self, initial: Mapping[str, Any] | None = None) -> None:
        # A fitted snapshot (settings.initial_model) is where every worker starts, so workers
        # agree before the first snapshot of the topic, and the writer learns on from it.
        self.model = SegmentModel.restore(initial) if initial is not None else SegmentModel()
        self.snapshot: dict[str, Any] | None = dict(initial) if initial is not None else None
        self.ready = asyncio.Event()

    def offer(self, snapshot: Mapping[str, Any]) -> bool:
        """Swap in ``snapshot`` if it is newer than the model in use; say whether it was."""
        version = snapshot.get("version")
        if not isinstance(version, int) or version <= self.model.version:
            return False
        self.model = SegmentModel.restore(snapshot)
        self.snapshot = dict(snapshot)
        return True


class ModelWriter:
    """The single learner, active on the worker that owns the model-updates partition."""

    def __init__(self, every: int, seconds: float) -> None:
        self.every = max(1, every)
        self.seconds = seconds
        self.model: SegmentModel | None = None
        self.pending = 0
        self.published: dict[str, Any] | None = None
        self._last_publish = time.monotonic()

    @property
    def active(self) -> bool:
        return self.model is not None

    def take_over(self, latest: Mapping[str, Any] | None) -> None:
        """Start learning from the newest snapshot known (or from the initial prototypes)."""
        candidates = [s for s in (latest, self.published) if s is not None]
        newest = max(candidates, key=lambda s: s["version"], default=None)
        self.model = SegmentModel.restore(newest) if newest is not None else SegmentModel()
        self.pending = 0
        self._last_publish = time.monotonic()

    def learn(self, x: Mapping[str, float]) -> None:
        assert self.model is not None
        self.model.learn_one(x)
        self.pending += 1

    def due(self, now: float | None = None) -> bool:
        """Whether to publish: every ``every`` updates, or ``seconds`` after the last publish."""
        if self.model is None or not self.pending:
            return False
        now = time.monotonic() if now is None else now
        return self.pending >= self.every or now - self._last_publish >= self.seconds

    def take_snapshot(self) -> dict[str, Any]:
        assert self.model is not None
        snapshot = self.model.snapshot()
        self.published = snapshot
        self.pending = 0
        self._last_publish = time.monotonic()
        return snapshot

    def release(self) -> None:
        self.model = None
        self.pending = 0


def parse_update(value: bytes | None) -> dict[str, float] | None:
    """A learn vector from the model-updates topic, or None if it is not one.

    >>> parse_update(b'{"files": 0.5}') is None
    True
    """
    try:
        x = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None
    if not isinstance(x, dict) or set(x) != set(FEATURES):
        return None
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in x.values()):
        return None
    return {name: float(x[name]) for name in FEATURES}


class ModelReader(TopicFollower):
    """Reads the whole model topic and offers the newest snapshot of each poll to the holder."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        holder: ModelHolder,
        metrics: ServiceMetrics,
        client_id: str,
        signing_key: bytes = b"",
        *,
        client_options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(bootstrap, topic, client_id, "model reader", client_options=client_options)
        self.holder = holder
        self.metrics = metrics
        self.signing_key = signing_key

    def on_caught_up(self) -> None:
        if not self.holder.ready.is_set():
            log.info("model reader caught up: model version %d", self.holder.model.version)
            self.holder.ready.set()

    def on_records(self, records: list[Any]) -> None:
        newest: dict[str, Any] | None = None
        for record in records:
            if record.value is None:
                continue
            try:
                snapshot = orjson.loads(record.value)
                version = snapshot["version"]
            except (orjson.JSONDecodeError, TypeError, KeyError):
                log.warning("ignoring unreadable model snapshot at offset %d", record.offset)
                continue
            if self.signing_key:
                # A forged snapshot (any writer of the topic) must never become the model.
                if not verify(snapshot, self.signing_key, "model"):
                    self.metrics.count_signature_failure("model")
                    log.warning("refusing a model snapshot without a valid signature at offset %d", record.offset)
                    continue
                snapshot = unsigned(snapshot)
            if isinstance(version, int) and (newest is None or version > newest["version"]):
                newest = snapshot
        if newest is None:
            return
        try:
            swapped = self.holder.offer(newest)
        except (ValueError, KeyError, TypeError) as error:
            log.warning("ignoring model snapshot version %s: %s", newest.get("version"), error)
            return
        if swapped:
            self.metrics.count_model_update(self.holder.model.version)
            log.debug("model version %d in use", self.holder.model.version)

    async def sync(self, timeout_s: float = 10.0) -> bool:
        """Wait until everything on the model topic right now has been read."""
        deadline = time.monotonic() + timeout_s
        while not self.holder.ready.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        return await super().sync(max(0.0, deadline - time.monotonic()))


class ModelLearner:
    """The single model writer: a consumer in its own group on the one-partition updates topic.

    Whichever worker the group gives that partition learns (:class:`ModelWriter`) and publishes
    snapshots; it commits the updates' offsets only once the snapshot covering them is on the
    model topic, so a new owner restores that snapshot and goes on from the next update.
    (A consumer of its own rather than a Faust agent: Faust's shared fetcher would serve the
    updates only after the inbound backlog, and commit them on its own schedule.)
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        group_id: str,
        writer: ModelWriter,
        reader: ModelReader,
        holder: ModelHolder,
        publish: Callable[[dict[str, Any]], Awaitable[None]],
        *,
        instance_id: str | None = None,
        session_timeout_s: float = 10.0,
        heartbeat_interval_s: float = 3.0,
        client_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.client_options: dict[str, Any] = dict(client_options or {})
        self.instance_id = instance_id
        self.session_timeout_s = session_timeout_s
        self.heartbeat_interval_s = heartbeat_interval_s
        self.bootstrap = bootstrap
        self.topic = topic
        self.group_id = group_id
        self.writer = writer
        self.reader = reader
        self.holder = holder
        self.publish = publish
        self._consumer: Any = None
        self._position: dict[Any, int] = {}
        self._lock = asyncio.Lock()
        self._stopped = False

    async def run(self) -> None:
        await self.holder.ready.wait()
        while not self._stopped:
            try:
                await self._run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("model writer failed; retrying in 2s")
                await asyncio.sleep(2.0)

    async def _run_once(self) -> None:
        from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener

        learner = self

        class Listener(ConsumerRebalanceListener):  # type: ignore[misc]
            async def on_partitions_revoked(self, revoked: Any) -> None:
                await learner.release()

            async def on_partitions_assigned(self, assigned: Any) -> None:
                pass

        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=self.group_id,
            client_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=500,
            # Static membership as for the worker's own consumer: a restarted writer resumes
            # without waiting for its predecessor's session.
            group_instance_id=self.instance_id,
            session_timeout_ms=int(self.session_timeout_s * 1000),
            heartbeat_interval_ms=int(self.heartbeat_interval_s * 1000),
            **self.client_options,
        )
        consumer.subscribe([self.topic], listener=Listener())
        await consumer.start()
        self._consumer = consumer
        try:
            while not self._stopped:
                batches = await consumer.getmany(timeout_ms=250)
                async with self._lock:
                    for tp, records in batches.items():
                        for record in records:
                            self._position = {tp: record.offset + 1}
                            await self._learn(record.value)
                    if self.writer.due():
                        await self._publish()
        finally:
            self._consumer = None
            await consumer.stop()

    async def _learn(self, value: bytes | None) -> None:
        x = parse_update(value)
        if x is None:
            log.warning("ignoring a malformed model update")
            return
        if not self.writer.active:
            await self.reader.sync()
            self.writer.take_over(self.holder.snapshot)
            log.info("model writer active from version %d", self.writer.model.version if self.writer.model else 0)
        self.writer.learn(x)
        if self.writer.due():
            await self._publish()

    async def _publish(self) -> None:
        snapshot = self.writer.take_snapshot()
        await self.publish(snapshot)
        log.info("published model snapshot version %d", snapshot["version"])
        consumer, position = self._consumer, self._position
        if consumer is not None and position:
            try:
                await consumer.commit(position)
            except Exception as error:  # noqa: BLE001 - rebalancing: the next owner re-learns from the snapshot
                log.warning("could not commit model updates up to %s: %s", position, error)

    async def release(self) -> None:
        """Publish what was learned and stop learning (partition revoked, or shutting down)."""
        async with self._lock:
            if self.writer.active:
                if self.writer.pending:
                    await self._publish()
                self.writer.release()
                log.info("model writer released")

    async def stop(self) -> None:
        self._stopped = True
        await self.release()
