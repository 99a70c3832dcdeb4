"""The shared model's parts on one worker, built from its settings (:func:`build_model_sync`).

The holder (the snapshot the agent predicts with), the writer (when to publish a snapshot),
the reader (every snapshot from the model topic) and the learner (the feature vectors of the
model-updates topic, on whichever worker its consumer group gives the partition), as
:mod:`agents.model_sync` describes them; :class:`SnapshotPublisher` is how the learner
publishes a snapshot (signed with a signing key).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import orjson

from debtor_segments.agents.metrics import ServiceMetrics
from debtor_segments.agents.model_sync import ModelHolder, ModelLearner, ModelReader, ModelWriter
from debtor_segments.agents.topics import MODEL_KEY, MODEL_TOPIC, MODEL_UPDATES_TOPIC, WorkerConfig
from debtor_segments.streams.signing import sign

__all__ = ["ModelSync", "SnapshotPublisher", "build_model_sync"]


class SnapshotPublisher:
    """Publish a model snapshot on the model topic (a Faust topic), signed with ``signing_key``
    if there is one, and wait for its delivery.

    >>> import asyncio
    >>> class Topic:
    ...     sent = []
    ...     async def send(self, key, value):
    ...         self.sent.append((key, value))
    ...         done = asyncio.get_running_loop().create_future()
    ...         done.set_result(None)
    ...         return done
    >>> topic = Topic()
    >>> asyncio.run(SnapshotPublisher(topic, b"")({"version": 3}))
    >>> topic.sent
    [(b'model', b'{"version":3}')]
    """

    def __init__(self, topic: Any, signing_key: bytes) -> None:
        self.topic = topic
        self.signing_key = signing_key

    async def __call__(self, snapshot: dict[str, Any]) -> None:
        signed = sign(snapshot, self.signing_key, "model") if self.signing_key else snapshot
        delivered = await self.topic.send(key=MODEL_KEY, value=orjson.dumps(signed))
        await delivered  # the offsets of the updates it covers are committed only after this


class ModelSync(NamedTuple):
    holder: ModelHolder
    writer: ModelWriter
    reader: ModelReader
    learner: ModelLearner


def build_model_sync(config: WorkerConfig, metrics: ServiceMetrics, publish: SnapshotPublisher) -> ModelSync:
    """The holder, writer, reader and learner of a worker (``config``)."""
    settings = config.settings
    instance_id = settings.instance_id(config.id)
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
    learner = ModelLearner(
        settings.bootstrap_servers,
        config.topic(MODEL_UPDATES_TOPIC),
        f"{config.id}-model-writer",
        writer,
        reader,
        holder,
        publish,
        instance_id=None if instance_id is None else f"{instance_id}-model-writer",
        session_timeout_s=settings.session_timeout_s,
        heartbeat_interval_s=settings.heartbeat_interval_s,
        client_options=client_options,
    )
    return ModelSync(holder, writer, reader, learner)
