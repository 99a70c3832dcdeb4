"""The worker's Faust app, configured from its settings (:func:`make_app`).

Before the app exists the private Faust/aiokafka behaviour the worker relies on is installed
(:mod:`agents.faust_internals`, which refuses to start with versions it was not verified
with); the app gets the inbound scheduler (:func:`inbound_scheduler`: timestamp order across
the co-partitioned inbound topics) and the settings it shares with the benchmark's minimal
Faust agent (:data:`FAUST_TUNING`).
"""

from __future__ import annotations

from typing import Any, cast

import faust

from debtor_segments.agents import faust_internals
from debtor_segments.agents.scheduler import AligningScheduler
from debtor_segments.agents.topics import WorkerConfig
from debtor_segments.schemas import ERASURE_TOPIC, INBOUND_TOPICS

__all__ = ["FAUST_TUNING", "inbound_scheduler", "inbound_topic_names", "make_app"]

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


def inbound_topic_names(config: WorkerConfig) -> tuple[str, ...]:
    """The prefixed inbound topics, in :data:`schemas.INBOUND_TOPICS` order."""
    return tuple(config.topic(name) for name in INBOUND_TOPICS)


def inbound_scheduler(config: WorkerConfig) -> type[AligningScheduler]:
    """The consumer scheduler class of one app: the inbound topics gated, erasures strict."""
    settings = config.settings
    return type(
        "InboundScheduler",
        (AligningScheduler,),
        {
            "gated_topics": frozenset(inbound_topic_names(config)),
            "max_wait_s": config.align_max_wait_s,
            "live_window_ms": settings.live_window_s * 1000.0,
            "strict_topics": frozenset({config.topic(ERASURE_TOPIC)}),
        },
    )


def make_app(config: WorkerConfig, scheduler: type[AligningScheduler]) -> faust.App:
    """The Faust app of a worker, delivering inbound records through ``scheduler``."""
    settings = config.settings
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
        # Faust's /table and /router pages would serve any debtor's stored state to anyone
        # who reaches the port: the API serves what it may (agents/http_debtors.py).
        web_tables_enabled=False,
        web_router_enabled=False,
        broker_credentials=settings.faust_broker_credentials(),
        **FAUST_TUNING,
    )
    cast(Any, scheduler).view = faust_internals.ConsumerView(app)
    faust_internals.skip_venusian_attach(app)  # before the app's decorators: a faster restart
    return app
