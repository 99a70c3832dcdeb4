"""The Kafka service: a Faust app whose agents run the core (:func:`streams.engine.advance`).

This module is the composition root: :func:`build_service` builds the parts and connects
them into one Faust app, :func:`run_worker` runs it. Each part is a module of its own:

* :mod:`agents.faust_app`: the Faust app, its inbound scheduler and tuning;
* :mod:`agents.segment_agent`: the ``segment`` agent, for every inbound record: handle it
  (:func:`agents.records.handle_record`), send what it made
  (:mod:`agents.tracked_sends`), hand the state write to :class:`agents.pending.PendingWrites`
  (which waits for those sends), count it;
* :mod:`agents.commits` and :mod:`agents.assignment`: commits, and what changes when
  partitions are assigned, revoked, or the worker stops;
* :mod:`agents.model_parts`: the shared model's holder, writer, reader and learner
  (:mod:`agents.model_sync`), run as tasks;
* :mod:`agents.timers`: the local store's maintenance and the treatments' timers;
* :mod:`agents.status_pages` and :func:`agents.api.register_api`: the web pages.

See Also
--------
agents.service : the parts the pages, the CLI and the tests reach.
agents.scheduler : delivery in timestamp order across the co-partitioned inbound topics.
agents.topics : the topics a worker needs, and their configurations.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import faust

from debtor_segments.agents.api import register_api
from debtor_segments.agents.assignment import PartitionSignals
from debtor_segments.agents.commits import WriteHooks
from debtor_segments.agents.faust_app import inbound_scheduler, inbound_topic_names, make_app
from debtor_segments.agents.faust_metrics import attach_faust_sensors
from debtor_segments.agents.metrics import ServiceMetrics
from debtor_segments.agents.model_parts import SnapshotPublisher, build_model_sync
from debtor_segments.agents.pending import PendingWrites
from debtor_segments.agents.progress import PartitionProgress
from debtor_segments.agents.segment_agent import SegmentAgent
from debtor_segments.agents.service import Service
from debtor_segments.agents.settings import Settings
from debtor_segments.agents.status_pages import install_status_pages
from debtor_segments.agents.timers import RecentErasures, StoreMaintenance, TreatmentTimers
from debtor_segments.agents.topics import MODEL_TOPIC, MODEL_UPDATES_TOPIC, STATE_TABLE, WorkerConfig, changelog_config
from debtor_segments.agents.tracked_sends import OutboundTopics, TrackedSender
from debtor_segments.agents.treatment_service import TreatmentService

__all__ = ["build_service", "run_worker"]

log = logging.getLogger("debtor_segments.worker")


def build_service(config: WorkerConfig, metrics: ServiceMetrics | None = None) -> Service:
    """Create the Faust app with its topics, table, agents, timers and web pages."""
    settings = config.settings
    metrics = metrics if metrics is not None else ServiceMetrics()
    p = settings.partitions
    scheduler = inbound_scheduler(config)
    app = make_app(config, scheduler)
    inbound = app.topic(*inbound_topic_names(config), key_type=bytes, value_type=bytes, partitions=p)
    outbound = OutboundTopics(app, config)
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
    model = build_model_sync(config, metrics, SnapshotPublisher(model_topic, settings.signing_key))
    hooks = WriteHooks(app)
    pending = PendingWrites(table, on_failure=hooks.failed, on_acked=hooks.released, limit=settings.pending_writes)
    progress = PartitionProgress(lambda tp: tp.topic in scheduler.gated_topics)
    service = Service(app, config, metrics, model.holder, model.writer, model.reader, table, progress=progress, treatments=treatments)
    metrics.watch_partitions(progress.idle_seconds)
    sender, erasures = TrackedSender(metrics), RecentErasures()
    agent = SegmentAgent(service, pending, sender, outbound, updates, erasures)

    @app.agent(inbound, name="segment")
    async def segment(stream: Any) -> None:
        await agent.run(stream)

    PartitionSignals(service, model.learner).connect(app)
    if settings.store == "rocksdb" and settings.store_maintenance_s > 0:
        StoreMaintenance(service, erasures, {config.changelog_topic, *scheduler.gated_topics}).install(app, settings.store_maintenance_s)
    if treatments is not None:
        treatments.install_pages(app, settings.api_tokens)
        TreatmentTimers(service, treatments, sender, outbound).install(app)
    app.task(model.learner.run)
    app.task(model.reader.run)
    install_status_pages(app, service, pending)
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
