"""The worker's topics: their names, partition counts and topic configurations.

The worker consumes the co-partitioned inbound topics (keyed by debtor id) and its state
table's changelog, sends change events and dead letters to the outbound topics, and shares
its model through two single-partition topics (:mod:`agents.model_sync`). :func:`topic_plan`
lists them all with the partition counts a worker checks (or creates) before it starts;
:func:`changelog_config` and :func:`outbound_config` are their topic configurations.

See Also
--------
agents.worker : the Faust app that consumes and sends these topics.
agents.kafka_io : ``ensure_topics`` and ``check_topics``, which apply a plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from debtor_segments.agents.kafka_io import TopicSpec
from debtor_segments.agents.settings import Settings
from debtor_segments.schemas import (
    CONTACT_DECISIONS_TOPIC,
    CONTACT_DUE_TOPIC,
    DEAD_LETTERS_TOPIC,
    INBOUND_TOPICS,
    PERSONA_CHANGES_TOPIC,
    QUADRANT_CHANGES_TOPIC,
    TREATMENTS_TOPIC,
)

__all__ = [
    "MODEL_KEY",
    "MODEL_TOPIC",
    "MODEL_UPDATES_TOPIC",
    "OUTBOUND_TOPICS",
    "STATE_TABLE",
    "WorkerConfig",
    "changelog_config",
    "outbound_config",
    "topic_plan",
]

#: Single-partition topic of feature vectors to learn (Step.learn), written by every worker.
MODEL_UPDATES_TOPIC = "debtor.model-updates"
#: Compacted single-partition topic of model snapshots, key ``model``.
MODEL_TOPIC = "debtor.model"
MODEL_KEY = b"model"
#: Retention of the model-updates topic: the writer snapshots them within seconds.
MODEL_UPDATES_RETENTION_MS = 24 * 3600 * 1000
#: Name of the per-debtor state table (its changelog is ``<app id>-debtor-state-changelog``).
STATE_TABLE = "debtor-state"
#: The change and dead-letter topics every worker sends to.
OUTBOUND_TOPICS = (PERSONA_CHANGES_TOPIC, QUADRANT_CHANGES_TOPIC, DEAD_LETTERS_TOPIC)
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
        *(TopicSpec(config.topic(name), p, outbound_config(settings, name), strict=False, role="outbound") for name in OUTBOUND_TOPICS),
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
