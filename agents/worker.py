"""The Kafka service: a Faust app whose agents run the core (:func:`streams.engine.advance`).

Agents are thin. For every inbound record the ``segment`` agent decodes and validates it with
:func:`streams.events.decode_event` (the decoder of the embedded replay), runs the pure core
against the debtor's state in a changelogged Faust table, and sends what the core returns:
change events, dead letters, and the feature vector the shared model should learn.

The shared model::

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

Inbound topics are consumed by one agent and delivered in Kafka timestamp order across the
co-partitioned topics (:class:`AligningScheduler`): a backlog of payments, contacts and ratings
is applied to each debtor in the order it was produced, as the embedded replay does, instead
of one topic racing months ahead of the others and making the rest "too late".
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import logging
import shutil
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import faust
import orjson
from faust.transport.utils import DefaultSchedulingStrategy
from faust.types import TP
from faust.types.transports import SchedulingStrategyT

from agents.api import register_api
from agents.kafka_io import SEQUENCE_HEADER, TopicFollower, TopicSpec
from agents.metrics import ServiceMetrics, attach_faust_sensors
from agents.pending import PendingWrites, apply_state
from agents.progress import PartitionProgress
from agents.replay import DEAD_LETTER_RAW_MAX, dead_letter
from agents.settings import Settings
from agents.treatment_service import TreatmentService
from schemas import (
    CONTACT_DECISIONS_TOPIC,
    CONTACT_DUE_TOPIC,
    DEAD_LETTERS_TOPIC,
    ERASURE_TOPIC,
    INBOUND_TOPICS,
    PERSONA_CHANGES_TOPIC,
    QUADRANT_CHANGES_TOPIC,
    TREATMENTS_TOPIC,
)
from streams.engine import REJECTED_OUTCOMES, EngineConfig, advance
from streams.events import DEFAULT_LIMITS, DecodeError, Limits, decode_event
from streams.features import FEATURES
from streams.model import SegmentModel
from streams.personas import PERSONAS, PROTOTYPES
from streams.signing import sign, unsigned, verify
from streams.state import DebtorState, erasure_marker, marker_key, needs_marker, read_marker

__all__ = [
    "MODEL_TOPIC",
    "MODEL_UPDATES_TOPIC",
    "STATE_TABLE",
    "AligningScheduler",
    "Handled",
    "ModelHolder",
    "ModelWriter",
    "Service",
    "WorkerConfig",
    "apply_state",
    "build_service",
    "handle_record",
    "key_problem",
    "run_worker",
    "topic_plan",
]

log = logging.getLogger("debtor_segments.worker")

#: Single-partition topic of feature vectors to learn (Step.learn), written by every worker.
MODEL_UPDATES_TOPIC = "debtor.model-updates"
#: Compacted single-partition topic of model snapshots, key ``model``.
MODEL_TOPIC = "debtor.model"
MODEL_KEY = b"model"
#: Retention of the model-updates topic: the writer snapshots them within seconds.
MODEL_UPDATES_RETENTION_MS = 24 * 3600 * 1000
#: Name of the per-debtor state table (its changelog is ``<app id>-debtor-state-changelog``).
STATE_TABLE = "debtor-state"
_OUTBOUND = (PERSONA_CHANGES_TOPIC, QUADRANT_CHANGES_TOPIC, DEAD_LETTERS_TOPIC)
#: Longest record key a dead letter keeps as its key (longer: ``sha256:<hex>``).
MAX_KEY_BYTES = 1024
#: Attempts of a send that raises at once (the client's own retries are inside each attempt).
SEND_ATTEMPTS = 3
#: Sent only with a treatment policy (agents/treatment_service.py).
_TREATMENT_OUTBOUND = (TREATMENTS_TOPIC, CONTACT_DUE_TOPIC, CONTACT_DECISIONS_TOPIC)


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """Everything a worker needs: the :class:`Settings` (topic prefix, app id, guarantee, ...) plus
    options that only tests and benchmarks set."""

    settings: Settings = field(default_factory=Settings)
    align_max_wait_s: float = 5.0
    #: Table standby replicas; None: ``settings.standby_replicas``.
    standby_replicas: int | None = None

    @property
    def id(self) -> str:
        """The Faust app id (consumer group, changelog names): ``--app-id`` or prefix + debtor-segments."""
        return self.settings.app_id or f"{self.settings.topic_prefix}debtor-segments"

    def topic(self, name: str) -> str:
        """A topic name with the configured prefix."""
        return self.settings.topic_prefix + name

    @property
    def changelog_topic(self) -> str:
        return f"{self.id}-{STATE_TABLE}-changelog"


#: Faust settings the worker shares with the benchmark's minimal Faust agent
#: (bench/ceiling_app.py), so the two are compared on equal terms.
FAUST_TUNING: dict[str, Any] = {
    "topic_replication_factor": 1,
    "topic_disable_leader": True,
    "broker_commit_every": 1000,
    "broker_commit_interval": 1.0,
    "broker_max_poll_records": 500,
    "stream_buffer_maxsize": 1000,
    "consumer_max_fetch_size": 256 * 1024,
    "key_serializer": "raw",
    "value_serializer": "raw",
    "autodiscover": False,
}


def topic_plan(config: WorkerConfig) -> list[TopicSpec]:
    """The topics a worker needs, with their partition counts.

    Inbound topics and the state changelog are co-partitioned (keyed by debtor id) and must
    have ``--partitions`` partitions; the model topics must have one; outbound topics are
    created with ``--partitions`` but accepted with any count.

    >>> [(s.name, s.partitions, s.strict) for s in topic_plan(WorkerConfig(Settings(partitions=3, topic_prefix="t-")))][-3:]
    [('t-debtor-segments-debtor-state-changelog', 3, True), ('t-debtor.model-updates', 1, True), ('t-debtor.model', 1, True)]
    """
    settings = config.settings
    p = settings.partitions
    compact = {"cleanup.policy": "compact"}
    return [
        *(TopicSpec(config.topic(name), p, role="inbound, keyed by debtor_id") for name in INBOUND_TOPICS),
        *(TopicSpec(config.topic(name), p, outbound_config(settings, name), strict=False, role="outbound") for name in _OUTBOUND),
        *(TopicSpec(config.topic(name), p, outbound_config(settings, name), strict=False, role="outbound, treatments") for name in _TREATMENT_OUTBOUND if config.settings.policy),
        TopicSpec(config.changelog_topic, p, changelog_config(settings), role="state changelog, co-partitioned with the inbound topics"),
        TopicSpec(config.topic(MODEL_UPDATES_TOPIC), 1, {"retention.ms": str(MODEL_UPDATES_RETENTION_MS)}, role="model updates, one writer, no key"),
        TopicSpec(config.topic(MODEL_TOPIC), 1, compact, role="model snapshots"),
    ]


def changelog_config(settings: Settings) -> dict[str, str]:
    """Topic configuration of the state changelog: compacted within a bound (issue 14.8).

    >>> changelog_config(Settings())["max.compaction.lag.ms"], changelog_config(Settings())["segment.ms"]
    ('86400000', '21600000')
    """
    return {
        "cleanup.policy": "compact",
        "segment.ms": str(settings.changelog_segment_ms),
        "min.compaction.lag.ms": str(settings.changelog_min_compaction_lag_ms),
        "max.compaction.lag.ms": str(settings.changelog_max_compaction_lag_ms),
        "delete.retention.ms": str(settings.changelog_delete_retention_ms),
    }


def outbound_config(settings: Settings, name: str) -> dict[str, str]:
    """Topic configuration of a change or dead-letter topic: time-bounded retention.

    >>> outbound_config(Settings(), DEAD_LETTERS_TOPIC)["retention.ms"]
    '1209600000'
    """
    if name == CONTACT_DECISIONS_TOPIC:
        # Keyed <debtor>/<n>: compaction keeps every decision and removes an erased debtor's.
        return {"cleanup.policy": "compact,delete", "retention.ms": str(settings.decision_retention_ms), "segment.ms": str(settings.outbound_segment_ms)}
    retention = settings.dead_letter_retention_ms if name == DEAD_LETTERS_TOPIC else settings.change_retention_ms
    return {"cleanup.policy": "delete", "retention.ms": str(retention), "segment.ms": str(min(settings.outbound_segment_ms, retention))}


# --- the record handler (pure apart from the table it is given) ------------------------------


def key_problem(key: bytes | None, debtor_id: str) -> str:
    """Why a record's Kafka key does not fit its event ("" when it does).

    >>> key_problem(b"d1", "d1"), key_problem(None, "d1"), key_problem(b"d2", "d1")
    ('', 'record has no key; inbound records are keyed by debtor_id', "key 'd2' is not the debtor_id 'd1'")
    """
    if key is None:
        return "record has no key; inbound records are keyed by debtor_id"
    try:
        text = key.decode("utf-8")
    except UnicodeDecodeError:
        return "key is not UTF-8; inbound records are keyed by debtor_id"
    if text != debtor_id:
        shown = text if len(text) <= 64 else text[:61] + "..."
        return f"key {shown!r} is not the debtor_id {debtor_id!r}"
    return ""


@dataclass(slots=True)
class Handled:
    """What became of one inbound record: the outcome, what to send, how the state changes.

    ``sends`` holds (unprefixed topic, key, value) triples in order; ``changes`` holds
    (type, previous, new) of every change event for the metrics. Apply the state change with
    :func:`apply_state` *after* the sends: a crash in between then re-processes the record and
    re-sends its change events (same event ids) instead of losing them.
    """

    outcome: str
    event_type: str
    sends: list[tuple[str, bytes | None, bytes]] = field(default_factory=list)
    learn: dict[str, float] | None = None
    dead_letter_reason: str = ""
    event_ts: float | None = None
    changes: list[tuple[str, str, str]] = field(default_factory=list)
    debtor_id: str = ""
    state: bytes | None = None  # the new state to store, if it changed
    erase: bool = False  # delete the debtor's state (a tombstone in the changelog)
    marker: tuple[bytes, bytes] | None = None  # (key, value) of the erasure marker to store
    # Other entries of the table the record's write carries: (key, value or None to delete);
    # the treatment states it changed (agents/treatment_service.py).
    side_writes: list[tuple[bytes, bytes | None]] = field(default_factory=list)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def handle_record(
    table: Mapping[bytes, bytes] | PendingWrites,
    *,
    key: bytes | None,
    value: bytes | None,
    topic: str,
    partition: int,
    offset: int,
    model: SegmentModel,
    config: EngineConfig,
    max_amount_cents: int,
    emitted_at: str | None = None,
    raw_max: int = DEAD_LETTER_RAW_MAX,
    limits: Limits = DEFAULT_LIMITS,
    now: float | None = None,
) -> Handled:
    """Decode, validate and process one inbound record against ``table`` (UTF-8 debtor id -> state
    bytes; the worker passes its :class:`PendingWrites`, whose states may not be written yet).

    Never raises for bad input: undecodable records, key mismatches and too-late events become
    dead letters (reason, detail, topic, partition, offset, raw). Does not change ``table``:
    see :func:`apply_state`.
    """
    where: dict[str, Any] = {"topic": topic, "partition": partition, "offset": offset}
    raw = value if value is not None else b""

    def rejected(reason: str, detail: str, event_type: str = "invalid", outcome: str = "dead_lettered", **more: Any) -> Handled:
        record = dead_letter(reason, detail, raw, raw_max=raw_max, **where, **more)
        # A garbage key could be as large as a value: keep a digest instead, so it always fits.
        letter_key = key if key is None or len(key) <= MAX_KEY_BYTES else b"sha256:" + hashlib.sha256(key).hexdigest().encode()
        return Handled(outcome, event_type, [(DEAD_LETTERS_TOPIC, letter_key, orjson.dumps(record))], dead_letter_reason=reason)

    if value is None:
        return rejected("invalid_json", "record has no value (tombstone)")
    try:
        event = decode_event(raw, max_amount_cents=max_amount_cents, limits=limits, now=now)
    except DecodeError as error:
        return rejected(error.reason, error.detail)
    ids = {"event_id": event.event_id, "debtor_id": event.debtor_id}
    problem = key_problem(key, event.debtor_id)
    if problem:
        return rejected("key_mismatch", problem, event.type, **ids)
    try:
        current = table.get(event.debtor_id.encode())
        state = DebtorState.from_bytes(current) if current is not None else None
        # An erased debtor's marker (a digest of the id and the erasure time): read only when
        # the debtor has no state, or the event is refused anyway and the reason matters.
        marker = None
        erased_at = None
        if event.type == "erasure_requested" or needs_marker(state, event.ts):
            marker = marker_key(event.debtor_id, config.id_secret)
            erased_at = read_marker(table.get(marker))
        # The state was decoded for this event alone: advance it in place (no copy).
        # The wall clock is read below, only for the few records that emit.
        step = advance(state, event, model, config, emitted_at="", erased_at=erased_at)
    except Exception as error:  # a bug or a corrupt state must not stop the partition
        # Event ids name the debtor: only with DEBTOR_SEGMENTS_DEBUG_IDS (no personal data in logs).
        log.exception("processing %s failed", event.event_id if Settings().debug_ids else event.type)
        return rejected("processing_error", f"{type(error).__name__}: {error}"[:500], event.type, **ids)
    if step.outcome == "late":
        detail = f"older than the {config.lateness_days:g}-day lateness window"
        handled = rejected("too_late", detail, event.type, "late", **ids)
        handled.event_ts = event.ts
        return handled
    if step.outcome in REJECTED_OUTCOMES:
        reason, detail = REJECTED_OUTCOMES[step.outcome]
        return rejected(reason, detail, event.type, **ids)
    handled = Handled(step.outcome, event.type, learn=step.learn, event_ts=event.ts, debtor_id=event.debtor_id)
    if step.marker is not None and marker is not None:
        handled.marker = (marker, erasure_marker(step.marker))
    if step.state is None:
        handled.erase = True
    elif step.outcome == "processed":
        handled.state = step.state.to_bytes()
    stamp = (emitted_at or _now()) if step.outputs else ""
    for output in step.outputs:
        out = output.value
        out["emitted_at"] = stamp
        handled.sends.append((output.topic, output.key.encode(), orjson.dumps(out)))
        handled.changes.append((out["type"], out["previous"], out.get("persona", out.get("quadrant", ""))))
    return handled


# --- the shared model ------------------------------------------------------------------------


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


# --- delivery in timestamp order across co-partitioned inbound topics ------------------------


class AligningScheduler(SchedulingStrategyT):
    """Faust consumer scheduler that merges the inbound topics by Kafka record timestamp.

    Faust's default round-robin hands out whatever each partition fetched; on a backlog a
    sparse topic (ratings) then runs months ahead of a dense one (payments), and the debtor's
    later payments are rejected as too late. This scheduler holds records of the gated
    (inbound) topics and, per partition number (the topics are co-partitioned, a debtor lives
    on one partition number), releases the record with the smallest timestamp as long as no
    other topic of that partition number may still deliver an earlier one: one whose buffer is
    empty, that has not caught up with its high-water mark and whose last record is older.
    Such a topic is waited for at most ``max_wait_s`` (like Kafka Streams' max.task.idle.ms),
    counted once the client has handed out every record it fetched (``view.client_backlog``);
    an idle, caught-up topic holds a record back for ``grace_ms`` at most, and a *live* record
    not at all (see :meth:`_live`). Records with the same millisecond go by the publisher's
    sequence header, else by event time. Other topics (changelogs) pass straight through.

    Held records were never handed to Faust, so they are neither acknowledged nor committed:
    when the consumer seeks back (rebalance, recovery) they are fetched again and the held
    copies are dropped. Nothing is released while a rebalance settles or for a partition Faust
    would skip (``view.settling``, ``view.deliverable``; :class:`agents.faust_internals.ConsumerView`): Faust counts skipped offsets as a
    gap and would commit them unprocessed.
    """

    gated_topics: frozenset[str] = frozenset()
    #: A silent partition that is not caught up is waited for this long, and for at least
    #: ``max_wait_calls`` fetches (time alone would also count time spent blocked downstream),
    #: counted from the last fetch that left the client with no records to hand out.
    max_wait_s: float = 5.0
    max_wait_calls: int = 5
    #: Records younger than this (Kafka timestamp vs. wall clock) wait for a silent partition
    #: to show it has nothing earlier; it bounds the latency such a partition adds.
    grace_ms: float = 2000.0
    #: A record whose event time is this close to its Kafka timestamp is live traffic and passes
    #: a caught-up partition at once (0: never); records of ``strict_topics`` always wait.
    live_window_ms: float = 60_000.0
    strict_topics: frozenset[str] = frozenset()
    #: The consumer as this scheduler reads it (:class:`agents.faust_internals.ConsumerView`),
    #: set per app by :func:`build_service`.
    view: Any = None

    def __init__(self) -> None:
        self._default = DefaultSchedulingStrategy()  # type: ignore[abstract]
        self._buffers: dict[TP, deque[Any]] = {}
        self._next_offset: dict[TP, int] = {}
        self._last_ts: dict[TP, int] = {}
        # Partitions waited for: (since when, at which call of iterate).
        self._waiting: dict[TP, tuple[float, int]] = {}
        self._given_up: set[TP] = set()
        self._calls = 0
        self._backlog = False
        self._tie_keys: dict[tuple[TP, int], _TieKey] = {}
        #: How often a partition was given up on (it stayed silent though not caught up).
        self.gave_up = 0

    @property
    def held(self) -> int:
        """Records held back right now."""
        return sum(len(buffer) for buffer in self._buffers.values())

    def iterate(self, records: Mapping[TP, list[Any]]) -> Iterator[tuple[TP, Any]]:
        self._calls += 1
        self._backlog = self.view.client_backlog(self.gated_topics)
        other: dict[TP, list[Any]] = {}
        for tp, batch in records.items():
            if tp.topic in self.gated_topics:
                self.add(tp, batch)
            else:
                other[tp] = batch
        if other:
            yield from self._default.iterate(other)
        yield from self.drain()

    def add(self, tp: TP, batch: list[Any]) -> None:
        """Buffer newly fetched records of a gated partition."""
        if not batch:
            return
        buffer = self._buffers.setdefault(tp, deque())
        first = batch[0].offset
        expected = self._next_offset.get(tp)
        if expected is not None and first < expected:
            # The consumer sought back: the new fetch supersedes what is held.
            while buffer and buffer[-1].offset >= first:
                buffer.pop()
        buffer.extend(batch)
        self._next_offset[tp] = batch[-1].offset + 1
        self._last_ts[tp] = batch[-1].timestamp
        self._waiting.pop(tp, None)
        self._given_up.discard(tp)

    def nothing_to_deliver(self, tp: TP) -> bool:
        """Whether ``tp`` has no record to hand out: none held here, none fetched beyond.

        For ``/ready``: a partition that resumed after recovery and has nothing to process
        counts as resumed (Faust internals, best effort: False when unknown)."""
        return not self._buffers.get(tp) and self.caught_up(tp)

    def caught_up(self, tp: TP) -> bool:
        highwater = self.view.highwater(tp)
        if highwater is None:
            return False
        position = self._next_offset.get(tp)
        if position is None:
            position = self.view.position(tp)
        return position is not None and position >= highwater

    def drain(self, now: float | None = None, wall_ms: float | None = None) -> Iterator[tuple[TP, Any]]:
        """Release every held record that can go now, in timestamp order per partition number."""
        if self.view.settling():
            return
        assignment = self.view.assignment(self.gated_topics)
        if assignment is not None:
            for tp in [tp for tp in self._buffers if tp not in assignment]:
                self._forget(tp)
            known = assignment | set(self._buffers)
        else:
            known = set(self._buffers)
        groups: dict[int, list[TP]] = {}
        for tp in sorted(known):
            groups.setdefault(tp.partition, []).append(tp)
        now = time.monotonic() if now is None else now
        wall_ms = time.time() * 1000.0 if wall_ms is None else wall_ms
        deliverable = self.view.deliverable()
        active = dict(groups)
        while active:
            for partition in list(active):
                tps = active[partition]
                released = 0
                while released < 100:
                    head = self._head(tps)
                    if head is None or not deliverable(head[1]) or self._blocked(head[1], head[0], tps, now, wall_ms):
                        active.pop(partition)
                        break
                    tp = head[1]
                    record = self._buffers[tp][0]
                    # Pop only once the consumer asks for the next record: if it stops
                    # iterating (rebalance), the record it did not take stays held.
                    yield tp, record
                    buffer = self._buffers.get(tp)
                    if buffer and buffer[0] is record:
                        buffer.popleft()
                    released += 1

    def _head(self, tps: list[TP]) -> tuple[int, TP] | None:
        """The partition whose next record goes first: smallest Kafka timestamp; on a tie (one
        millisecond holds many records of a bulk load) the publisher's sequence number
        (header :data:`SEQUENCE_HEADER`, as ``publish`` sets it), else the earlier event time."""
        best: tuple[int, TP] | None = None
        for tp in tps:
            buffer = self._buffers.get(tp)
            if not buffer:
                continue
            ts = buffer[0].timestamp
            if best is None or ts < best[0] or ts == best[0] and _before(self._tie_key(tp, buffer[0]), self._tie_key(best[1], self._buffers[best[1]][0])):
                best = (ts, tp)
        return best

    def _tie_key(self, tp: TP, record: Any) -> _TieKey:
        key = (tp, record.offset)
        cached = self._tie_keys.get(key)
        if cached is None:
            cached = _TieKey(_sequence(record), record.value)
            if len(self._tie_keys) > 10_000:
                self._tie_keys.clear()
            self._tie_keys[key] = cached
        return cached

    def _blocked(self, head: TP, ts: int, tps: list[TP], now: float, wall_ms: float) -> bool:
        # Whether the head may pass a caught-up partition: asked once, and only if one is met.
        passes_caught_up: bool | None = None
        for tp in tps:
            if self._buffers.get(tp):
                continue  # its head is not earlier: the candidate is the group's smallest
            last = self._last_ts.get(tp)
            passes = last is not None and last >= ts
            if not passes and self.caught_up(tp):
                if passes_caught_up is None:
                    passes_caught_up = ts <= wall_ms - self.grace_ms or self._live(head)
                passes = passes_caught_up
            if passes:
                # A partition keeps producer order, so nothing earlier can come from it once it
                # delivered something later. A caught-up partition may still get records its
                # high-water mark does not show yet (that mark is as old as the last fetch that
                # included it), hence the grace: only records at least that old pass on it,
                # and live ones.
                self._waiting.pop(tp, None)
                continue
            if tp in self._given_up:
                continue
            if self._backlog:
                # The client still holds fetched records it has not handed out: the consumer is
                # behind, not the partition, whose records may be queued behind the others'.
                # On a backlog on a busy machine that takes longer than the wait (CI: a topic
                # given up at start-up ran months ahead and made valid events too late).
                self._waiting[tp] = (now, self._calls)
                return True
            since, calls = self._waiting.setdefault(tp, (now, self._calls))
            if now - since >= self.max_wait_s and self._calls - calls >= self.max_wait_calls:
                log.info("no records from %s[%d] for %.1fs: not waiting for it any longer", tp.topic, tp.partition, now - since)
                self._given_up.add(tp)
                self.gave_up += 1
                continue
            return True
        return False

    def _live(self, tp: TP) -> bool:
        """Whether the head record of ``tp`` is live traffic: its event time is within
        ``live_window_ms`` of its Kafka timestamp (when its producer sent it).

        Why it need not wait for the grace: what the grace waits for are records still in a
        producer's queue, sent before this one. Live records sent before a live record are at
        most seconds older in event time, far inside the engine's lateness window, where the
        order of two events changes no counter of the state (they are kept in event time and
        commute). The grace matters for bulk loads, whose queued records may be months older in
        event time than the one in hand: those carry old event times and wait as before.
        Erasures (``strict_topics``) always wait: one must not overtake its debtor's events.
        """
        if not self.live_window_ms or tp.topic in self.strict_topics:
            return False
        record = self._buffers[tp][0]
        return abs(record.timestamp - self._tie_key(tp, record).event_time * 1000.0) <= self.live_window_ms

    def _forget(self, tp: TP) -> None:
        for mapping in (self._buffers, self._next_offset, self._last_ts, self._waiting):
            mapping.pop(tp, None)
        self._given_up.discard(tp)


def _sequence(record: Any) -> int | None:
    for name, value in getattr(record, "headers", None) or ():
        if name == SEQUENCE_HEADER:
            try:
                return int(value)
            except (TypeError, ValueError):
                return None
    return None


class _TieKey:
    """What orders two records with the same Kafka timestamp: the sequence number a publisher
    gave it, and its event time, parsed from the value only when a tie needs it (records
    of one publisher compare by sequence alone)."""

    __slots__ = ("_event_time", "_value", "sequence")

    def __init__(self, sequence: int | None, value: bytes | None) -> None:
        self.sequence = sequence
        self._value = value
        self._event_time: float | None = None

    @property
    def event_time(self) -> float:
        if self._event_time is None:
            self._event_time = _occurred_at(self._value)
        return self._event_time


def _before(a: _TieKey, b: _TieKey) -> bool:
    """Tie-break of two records with the same Kafka timestamp: sequence numbers of one
    publisher if both have one, else event time.

    >>> late, early = b'{"occurred_at": "2026-01-02T00:00:00Z"}', b'{"occurred_at": "2026-01-01T00:00:00Z"}'
    >>> _before(_TieKey(2, late), _TieKey(3, early)), _before(_TieKey(None, early), _TieKey(3, late))
    (True, True)
    """
    if a.sequence is not None and b.sequence is not None:
        return a.sequence < b.sequence
    return a.event_time < b.event_time


def _occurred_at(value: bytes | None) -> float:
    """An inbound record's event time in POSIX seconds, or -inf if it has none.

    >>> _occurred_at(b'{"occurred_at": "2026-01-01T00:00:01Z"}'), _occurred_at(b"oops")
    (1767225601.0, -inf)
    """
    try:
        return datetime.fromisoformat(orjson.loads(value or b"")["occurred_at"]).timestamp()
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, OverflowError, OSError):
        return float("-inf")


# --- the Faust app ---------------------------------------------------------------------------


@dataclass
class Service:
    """The Faust app and the parts its agents share (exposed for tests and the CLI)."""

    app: faust.App
    config: WorkerConfig
    metrics: ServiceMetrics
    holder: ModelHolder
    writer: ModelWriter
    reader: ModelReader
    table: Any
    assigned: set[TP] = field(default_factory=set)
    assigned_once: bool = False
    counts: Counter[str] = field(default_factory=Counter)
    progress: PartitionProgress = field(default_factory=lambda: PartitionProgress(lambda tp: True))
    #: With a policy: the treatments (GET /debtors/{id} shows the debtor's contact facts from them).
    treatments: TreatmentService | None = None

    def ready(self) -> tuple[bool, dict[str, Any]]:
        """Readiness: partitions assigned, table recovery done, model loaded, and processing
        resumed: every owned inbound partition processed a record since its assignment or has
        nothing to process (:class:`agents.progress.PartitionProgress`)."""
        app = self.app
        try:
            recovered = cast(Any, app.tables).recovery.completed.is_set()
            flowing = app.flow_control.is_active() and app.consumer.flow_active
        except Exception:  # noqa: BLE001 - Faust internals, best effort
            recovered = flowing = False
        scheduler = getattr(app.consumer, "scheduler", None)
        caught_up = getattr(scheduler, "nothing_to_deliver", None) or (lambda tp: False)
        waiting = self.progress.waiting(caught_up) if flowing else None
        checks = {
            "assigned": self.assigned_once,
            "rebalancing": bool(app.rebalancing),
            "recovery_done": recovered and not app.in_recovery,
            "model_loaded": self.holder.ready.is_set(),
            "processing": waiting == [],
            "partitions_waiting": len(waiting) if waiting is not None else None,
        }
        ok = checks["assigned"] and not checks["rebalancing"] and checks["recovery_done"] and checks["model_loaded"] and checks["processing"]
        return ok, checks


async def commit_acknowledged(app: faust.App) -> None:
    """Commit every offset acknowledged so far, also while Faust's timer commit is running.

    Faust's last commit before a stop or a rebalance only waits for a commit under way and
    returns (``Consumer.maybe_wait_for_commit_to_finish``); that commit may predate the last
    acknowledgements, and the next owner processes those records again: their dead letters a
    second time, and their events, older than the debtor's lateness window by then, as too
    late. With ``exactly_once`` the transaction manager commits and ends the transactions: not
    touched here.
    """
    if app.in_transaction:
        return
    consumer = app.consumer
    if not await consumer.commit(start_new_transaction=False):
        await consumer.commit(start_new_transaction=False)


def build_service(config: WorkerConfig, metrics: ServiceMetrics | None = None) -> Service:
    """Create the Faust app with its topics, table, agents, timers and web pages."""
    settings = config.settings
    metrics = metrics if metrics is not None else ServiceMetrics()
    engine_config = EngineConfig(lateness_days=settings.lateness_days, id_secret=settings.id_secret_key)
    inbound_names = tuple(config.topic(name) for name in INBOUND_TOPICS)
    scheduler = type(
        "InboundScheduler",
        (AligningScheduler,),
        {
            "gated_topics": frozenset(inbound_names),
            "max_wait_s": config.align_max_wait_s,
            "live_window_ms": settings.live_window_s * 1000.0,
            "strict_topics": frozenset({config.topic(ERASURE_TOPIC)}),
        },
    )
    from agents import faust_internals

    if settings.guarantee == "exactly_once":
        faust_internals.patch_transactional_commit()
    store = "rocksdb://" if settings.store == "rocksdb" else "memory://"
    instance_id = settings.instance_id(config.id)
    faust_internals.install_seek_reset()  # raises if aiokafka/Faust are not versions it was verified with
    if instance_id is not None and settings.leave_group_on_stop:
        faust_internals.install()
    app = faust.App(
        config.id,
        broker=settings.broker,
        store=store,
        datadir=str(settings.data_dir / config.id),
        topic_partitions=settings.partitions,
        table_standby_replicas=settings.standby_replicas if config.standby_replicas is None else config.standby_replicas,
        # Static membership: a restarted worker (same instance id) is the same member, so the
        # group neither waits for the dead one's session to expire nor moves its partitions.
        consumer_group_instance_id=instance_id,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.heartbeat_interval_s,
        processing_guarantee=settings.guarantee,
        producer_linger=settings.producer_linger_ms / 1000.0,
        web_port=settings.web_port,
        web_bind=settings.web_bind,
        web_host=settings.advertised_web_host,
        ConsumerScheduler=scheduler,
        broker_credentials=settings.faust_broker_credentials(),
        **FAUST_TUNING,
    )
    cast(Any, scheduler).view = faust_internals.ConsumerView(app)
    faust_internals.skip_venusian_attach(app)  # before the decorators below: a faster restart
    p = settings.partitions
    inbound = app.topic(*inbound_names, key_type=bytes, value_type=bytes, partitions=p)
    outbound = {name: app.topic(config.topic(name), key_type=bytes, value_type=bytes, partitions=p) for name in _OUTBOUND}
    # Treatments (issue 15) only with a policy: one call site in the agent, the rest in
    # agents/treatment_service.py.
    treatments = TreatmentService(Path(settings.policy), metrics.registry, default_timezone=settings.default_timezone) if settings.policy else None
    updates = app.topic(config.topic(MODEL_UPDATES_TOPIC), key_type=bytes, value_type=bytes, partitions=1)
    model_topic = app.topic(config.topic(MODEL_TOPIC), key_type=bytes, value_type=bytes, partitions=1)
    table = app.Table(
        STATE_TABLE,
        partitions=p,
        key_type=bytes,  # bytes: Faust's raw serializer, so the changelog holds the bare id and state
        value_type=bytes,
        help="Per-debtor state (DebtorState.to_bytes), keyed by the UTF-8 debtor_id.",
        # As topic_plan creates it, should Faust create the changelog itself.
        extra_topic_configs=changelog_config(settings),
    )
    holder = ModelHolder(orjson.loads(Path(settings.initial_model).read_bytes()) if settings.initial_model else None)
    writer = ModelWriter(settings.model_snapshot_every, settings.model_snapshot_seconds)
    client_options = settings.kafka_client_options()
    reader = ModelReader(
        settings.bootstrap_servers,
        config.topic(MODEL_TOPIC),
        holder,
        metrics,
        f"{config.id}-model-reader",
        settings.signing_key,
        client_options=client_options,
    )
    async def publish_snapshot(snapshot: dict[str, Any]) -> None:
        signed = sign(snapshot, settings.signing_key, "model") if settings.signing_key else snapshot
        delivered = await model_topic.send(key=MODEL_KEY, value=orjson.dumps(signed))
        await delivered  # the offsets of the updates it covers are committed only after this

    learner = ModelLearner(
        settings.bootstrap_servers,
        config.topic(MODEL_UPDATES_TOPIC),
        f"{config.id}-model-writer",
        writer,
        reader,
        holder,
        publish_snapshot,
        instance_id=None if instance_id is None else f"{instance_id}-model-writer",
        session_timeout_s=settings.session_timeout_s,
        heartbeat_interval_s=settings.heartbeat_interval_s,
        client_options=client_options,
    )
    def writes_failed(error: BaseException) -> None:
        # Nothing after the record is written or committed: stop, and process it again on restart.
        log.error("a state write could not complete (%s: %s): the worker stops", type(error).__name__, error)
        asyncio.ensure_future(app.crash(error))

    def released(event: Any) -> None:
        message = event.message
        app.sensors.on_message_out(message.tp, message.offset, message)

    pending = PendingWrites(table, on_failure=writes_failed, on_acked=released, limit=settings.pending_writes)
    service = Service(app, config, metrics, holder, writer, reader, table, treatments=treatments)
    service.progress = progress = PartitionProgress(lambda tp: tp.topic in scheduler.gated_topics)
    metrics.watch_partitions(progress.idle_seconds)
    prefix_len = len(settings.topic_prefix)
    limits = settings.limits

    async def send_tracked(topic: Any, name: str, key: bytes | None, value: bytes | None) -> Awaitable[Any]:
        """Send, retrying a send that raises at once; the delivery to wait for, or a failed
        future if every attempt raised (PendingWrites then stops the writes and the worker).
        Never raises: an exception here would let Faust ack the record and restart the agent
        (offset committed, nothing sent)."""
        error: BaseException | None = None
        for attempt in range(SEND_ATTEMPTS):
            try:
                delivery = await topic.send(key=key, value=value)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - e.g. MessageSizeTooLargeError, a closed producer
                error = exc
                if attempt + 1 < SEND_ATTEMPTS:
                    await asyncio.sleep(0.25 * 2**attempt)
                continue
            delivery.add_done_callback(functools.partial(_count_failed_delivery, name))
            return cast(Awaitable[Any], delivery)
        assert error is not None
        # No key or value in the log: they may hold personal data.
        log.error("sending to %s failed %d times (%s: %s): the record is not committed, the worker stops", name, SEND_ATTEMPTS, type(error).__name__, str(error)[:200])
        metrics.count_send_failure(name)
        failed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        failed.set_exception(error)
        return failed

    def _count_failed_delivery(name: str, delivery: Any) -> None:
        if delivery.cancelled() or delivery.exception() is not None:
            metrics.count_send_failure(name)
            log.error("a send to %s was not delivered (%s): the record is not committed, the worker stops", name, "cancelled" if delivery.cancelled() else type(delivery.exception()).__name__)

    @app.agent(inbound, name="segment")
    async def segment(stream: Any) -> None:
        # Wait for the model inside the loop: Faust acknowledges (and so commits) records that
        # arrive while no stream iterates the topic yet.
        async for event in stream.events():
            if not holder.ready.is_set():
                await holder.ready.wait()
            message = event.message
            started = time.perf_counter()
            topic = message.topic[prefix_len:]
            handled = handle_record(
                pending,
                key=message.key,
                value=message.value,
                topic=message.topic,
                partition=message.partition,
                offset=message.offset,
                model=holder.model,
                config=engine_config,
                max_amount_cents=settings.max_amount_cents,
                raw_max=settings.dead_letter_raw_max_bytes,
                limits=limits,
                now=time.time(),
            )
            sent = [await send_tracked(outbound[name], name, key, value) for name, key, value in handled.sends]
            if treatments is not None:
                if message.partition not in treatments.restored:
                    # First record since an assignment: the treatment states of every partition
                    # assigned and not restored yet come back from the table (recovered by
                    # now), in one scan, before the record is handled.
                    partitions = {tp.partition for tp in service.assigned} | {message.partition}
                    entries = table.items() if settings.store == "rocksdb" else list(table.items())
                    restored = treatments.restore(partitions, entries)
                    log.info("restored %d treatment states of partitions %s", restored, sorted(partitions))
                for name, key, value in treatments.after_record(handled, message.value, _now(), message.partition):
                    if name not in outbound:
                        outbound[name] = app.topic(config.topic(name), key_type=bytes, value_type=bytes, partitions=p)
                    sent.append(await send_tracked(outbound[name], name, key, value))
                handled.side_writes = treatments.take_writes(message.partition)
            if handled.learn is not None:
                # No key: a feature vector must not name its debtor (erasure; docs/reliability.md).
                sent.append(await send_tracked(updates, MODEL_UPDATES_TOPIC, None, orjson.dumps(handled.learn)))
            # The change events must be on the broker before the state write can be: else a
            # crash may keep the state (changelog) and lose the events, and re-processing the
            # record finds a duplicate and emits nothing. (Also with exactly_once: Faust sends
            # to topics this app does not consume outside the transaction; docs/reliability.md.)
            # The write waits for them in `pending`, not here: see agents/pending.py. Every
            # send is tracked, dead letters too: a record's offset is committed only once all
            # it sent is delivered, and a send that fails stops the worker before that commit.
            pending.submit(event, handled, sent)
            metrics.count_event(topic, handled.event_type, handled.outcome)
            if handled.dead_letter_reason:
                metrics.count_dead_letter(handled.dead_letter_reason)
            for kind, previous, new in handled.changes:
                if kind == "persona_changed":
                    metrics.count_persona_change(previous, new)
                else:
                    metrics.count_quadrant_change(previous, new)
            if handled.event_ts is not None:
                metrics.observe_event_age(time.time() - handled.event_ts)
            metrics.observe_processing(time.perf_counter() - started)
            progress.processed(message.tp)
            if handled.erase:
                erased_at[message.partition] = time.monotonic()
            if len(pending) >= pending.limit:
                await pending.room()
            # Let the model learner and reader (same event loop) keep up with a backlog.
            await asyncio.sleep(0)

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def on_revoked(sender: Any, revoked: set[TP], **kwargs: Any) -> None:
        service.assigned.difference_update(revoked)
        if treatments is not None:
            treatments.revoked(tp.partition for tp in revoked)
        await commit_acknowledged(app)

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def on_assigned(sender: Any, assigned: set[TP], **kwargs: Any) -> None:
        service.assigned = set(assigned)
        service.assigned_once = True
        progress.assigned(assigned)

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def on_shutdown(sender: Any, **kwargs: Any) -> None:
        await commit_acknowledged(app)
        await learner.stop()

    erased_at: dict[int, float] = {}  # partition -> when its last erasure was processed

    if settings.store == "rocksdb" and settings.store_maintenance_s > 0:
        from agents import faust_internals

        changelog_and_inbound = {config.changelog_topic, *inbound_names}

        @app.timer(settings.store_maintenance_s)
        async def store_maintenance() -> None:
            if app.rebalancing or app.in_recovery or not service.assigned_once:
                return
            # Erasures processed a while ago: their deletes are applied by now (agents/pending.py).
            due = {partition for partition, at in erased_at.items() if time.monotonic() - at >= 2.0}
            if due:
                done = await asyncio.get_running_loop().run_in_executor(None, faust_internals.compact_partitions, table, due)
                for partition in due:
                    erased_at.pop(partition, None)
                log.info("compacted the local store of partitions %s after erasures", done)
            assignor = app.assignor
            owned = {tp.partition for tp in (*assignor.assigned_actives(), *assignor.assigned_standbys()) if tp.topic in changelog_and_inbound}
            for path in faust_internals.unowned_partition_paths(table, owned, p):
                shutil.rmtree(path, ignore_errors=True)
                log.info("removed the local state of a partition this worker no longer serves: %s", path.name)
    if treatments is not None:
        treatments.install_pages(app, settings.api_tokens)

        @app.timer(interval=5.0)
        async def treatment_policy() -> None:
            treatments.reload_if_changed()
            treatments.refresh_metrics()

        @app.timer(interval=1.0)
        async def treatment_steps_due() -> None:
            # The partition timer: steps fall due on idle partitions too. What it sends is not
            # tied to a record's offset (the states it changes are written with the partition's
            # next record), so a failed send is logged and counted by send_tracked and awaited
            # here, not left to PendingWrites.
            if app.rebalancing or not service.assigned_once:
                return
            partitions = {tp.partition for tp in service.assigned}
            deliveries = []
            for name, key, value in treatments.due_by_timer(partitions, _now()):
                if name not in outbound:
                    outbound[name] = app.topic(config.topic(name), key_type=bytes, value_type=bytes, partitions=p)
                deliveries.append(await send_tracked(outbound[name], name, key, value))
            for outcome in await asyncio.gather(*deliveries, return_exceptions=True):
                if isinstance(outcome, BaseException):
                    log.error("a due treatment step could not be delivered: %s", type(outcome).__name__)

    @app.task
    async def model_learner() -> None:
        await learner.run()

    @app.task
    async def model_reader() -> None:
        await reader.run()

    @app.page("/health")
    async def health(web: Any, request: Any) -> Any:
        scheduler = getattr(app.consumer, "scheduler", None)
        return web.json(
            {
                "status": "ok",
                "model_version": holder.model.version,
                "held": getattr(scheduler, "held", 0),
                "pending_writes": len(pending),
                "gave_up": getattr(scheduler, "gave_up", 0),
            }
        )

    @app.page("/ready")
    async def ready(web: Any, request: Any) -> Any:
        ok, checks = service.ready()
        return web.json({"status": "ready" if ok else "not_ready", **checks}, status=200 if ok else 503)

    @app.page("/model")
    async def model_page(web: Any, request: Any) -> Any:
        model = holder.model
        probes = {persona: model.predict_one(PROTOTYPES[persona]).persona for persona in PERSONAS}
        return web.json(
            {
                "version": model.version,
                "digest": model_digest(model),
                "probes": probes,
                "writer": writer.active,
                "writer_version": writer.model.version if writer.model is not None else None,
            }
        )

    attach_faust_sensors(app, metrics)
    register_api(service)
    return service


#: Loggers whose DEBUG records quote record keys and values (aiokafka's requests, responses
#: and sends; Faust's sends): kept at INFO unless DEBTOR_SEGMENTS_DEBUG_IDS is on.
PAYLOAD_LOGGERS = ("aiokafka", "faust", "mode", "kafka")


def quiet_payload_loggers(settings: Settings) -> list[str]:
    """No record values (ids, IBANs) in the log at ``--loglevel debug`` unless ``debug_ids``:
    raise the payload-quoting loggers to INFO; returns the ones raised (issue 14, item 8).

    >>> quiet_payload_loggers(Settings(loglevel="debug", debug_ids=False))
    ['aiokafka', 'faust', 'mode', 'kafka']
    >>> quiet_payload_loggers(Settings(loglevel="debug", debug_ids=True)), quiet_payload_loggers(Settings(loglevel="info", debug_ids=False))
    ([], [])
    """
    if settings.debug_ids or settings.loglevel != "debug":
        return []
    for name in PAYLOAD_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO)
    return list(PAYLOAD_LOGGERS)


def run_worker(config: WorkerConfig) -> int:
    """Run a worker until SIGTERM/SIGINT; returns its exit code."""
    (config.settings.data_dir / config.id).mkdir(parents=True, exist_ok=True)
    service = build_service(config)
    worker = faust.Worker(service.app, loglevel=config.settings.loglevel, quiet=True)
    quieted = quiet_payload_loggers(config.settings)
    if quieted:
        log.warning("--loglevel debug: %s log at INFO (their debug records quote record values); DEBTOR_SEGMENTS_DEBUG_IDS=1 lifts it", ", ".join(quieted))
    # No terminal spinner: at --loglevel warning/error Faust would set the root logger to DEBUG
    # to spin it on every record, and aiokafka/Faust then format debug records for every send
    # (~7% of a worker's CPU on a backlog; docs/performance.md).
    worker.spinner = None
    try:
        worker.execute_from_commandline()
    except SystemExit as exit_:
        code = exit_.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0


def with_overrides(settings: Settings, **overrides: Any) -> Settings:
    """Settings with the given (non-None) fields replaced."""
    return dataclasses.replace(settings, **{k: v for k, v in overrides.items() if v is not None})
