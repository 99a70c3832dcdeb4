"""The Kafka service: a Faust app whose agents run the core (:func:`streams.engine.advance`).

Agents are thin. For every inbound record the ``segment`` agent decodes and validates it, runs
the pure core against the debtor's state in a changelogged Faust table
(:func:`agents.records.handle_record`), and sends what the core returns: change events, dead
letters, and the feature vector the shared model should learn. The state write waits for those
sends (:class:`agents.pending.PendingWrites`).

This module wires the parts into one Faust app (:func:`build_service`) and runs it
(:func:`run_worker`): the topics, the state table, the agent, the timers, the model's reader
and learner tasks, and the web pages.

See Also
--------
agents.records : the record handler the agent calls for every inbound record.
agents.model_sync : the shared model: one learner, the same snapshots on every worker.
agents.scheduler : delivery in timestamp order across the co-partitioned inbound topics.
agents.topics : the topics a worker needs, and their configurations.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import shutil
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, cast

import faust
import orjson
from faust.types import TP

from agents.api import register_api
from agents.metrics import ServiceMetrics, attach_faust_sensors
from agents.model_sync import ModelHolder, ModelLearner, ModelReader, ModelWriter, model_digest
from agents.pending import PendingWrites
from agents.progress import PartitionProgress
from agents.records import handle_record, now_iso
from agents.scheduler import AligningScheduler
from agents.service import Service
from agents.settings import Settings
from agents.topics import MODEL_KEY, MODEL_TOPIC, MODEL_UPDATES_TOPIC, OUTBOUND_TOPICS, STATE_TABLE, WorkerConfig, changelog_config
from agents.treatment_service import TreatmentService
from schemas import ERASURE_TOPIC, INBOUND_TOPICS
from streams.engine import EngineConfig
from streams.personas import PERSONAS, PROTOTYPES
from streams.signing import sign

__all__ = [
    "Service",
    "build_service",
    "run_worker",
]

log = logging.getLogger("debtor_segments.worker")

#: Attempts of a send that raises at once (the client's own retries are inside each attempt).
SEND_ATTEMPTS = 3


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


# --- the Faust app ---------------------------------------------------------------------------


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
    outbound = {name: app.topic(config.topic(name), key_type=bytes, value_type=bytes, partitions=p) for name in OUTBOUND_TOPICS}
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
                for name, key, value in treatments.after_record(handled, message.value, now_iso(), message.partition):
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
            for name, key, value in treatments.due_by_timer(partitions, now_iso()):
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
