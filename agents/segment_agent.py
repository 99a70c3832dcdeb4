"""The ``segment`` agent: for every inbound record, handle it, send what it made, then write.

:meth:`SegmentAgent.run` is the body of the worker's one Faust agent. For each record, in the
order the inbound scheduler delivers them (event time across the co-partitioned topics,
:mod:`agents.scheduler`), :meth:`SegmentAgent.handle`:

1. runs the record handler (:func:`agents.records.handle_record`: decode, key check, the core,
   dead letter) against the debtor's newest state;
2. sends what it returned (change events, dead letters), then, with a policy, the treatment
   step's outputs, then the feature vector the shared model should learn, every send tracked
   (:class:`agents.tracked_sends.TrackedSender`);
3. hands the record's state write to :class:`agents.pending.PendingWrites`, which applies it
   (and releases the record's offset) only after all those sends are delivered: at-least-once;
4. counts it in the service's metrics (:func:`count_handled`).

It needs no broker: the stream, topics, sender and pending writes are ports (tests/agents).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from debtor_segments.agents.metrics import ServiceMetrics
from debtor_segments.agents.records import Handled, handle_record, now_iso
from debtor_segments.agents.service import Service
from debtor_segments.agents.settings import Settings
from debtor_segments.agents.topics import MODEL_UPDATES_TOPIC
from debtor_segments.streams.engine import EngineConfig
from debtor_segments.streams.events import Limits

__all__ = ["SegmentAgent", "count_handled"]

# The worker's logger: the agent's records keep the name they had in agents/worker.py.
log = logging.getLogger("debtor_segments.worker")


def count_handled(metrics: ServiceMetrics, topic: str, handled: Handled, started: float, now: float) -> None:
    """Count one handled record: its event and outcome, its dead letter, the persona and
    quadrant changes it made, its event's age (``now`` minus event time) and the time since
    ``started`` (``time.perf_counter``)."""
    metrics.count_event(topic, handled.event_type, handled.outcome)
    if handled.dead_letter_reason:
        metrics.count_dead_letter(handled.dead_letter_reason)
    for kind, previous, new in handled.changes:
        if kind == "persona_changed":
            metrics.count_persona_change(previous, new)
        else:
            metrics.count_quadrant_change(previous, new)
    if handled.event_ts is not None:
        metrics.observe_event_age(now - handled.event_ts)
    metrics.observe_processing(time.perf_counter() - started)


@dataclass(eq=False)
class SegmentAgent:
    """The per-record loop of the worker's ``segment`` agent.

    Parameters
    ----------
    service
        The running service's parts: model holder, state table, metrics, treatments, the
        partitions assigned and their progress.
    pending
        The state writes that wait for the sends (:class:`agents.pending.PendingWrites`).
    sender
        Sends a value to a topic and returns the delivery (:class:`agents.tracked_sends.TrackedSender`).
    outbound
        Outbound topics by unprefixed name (:class:`agents.tracked_sends.OutboundTopics`).
    updates
        The model-updates topic (feature vectors to learn).
    erasures
        Told the partition of every erasure processed (:class:`agents.timers.RecentErasures`).
    """

    service: Service
    pending: Any
    sender: Any
    outbound: Any
    updates: Any
    erasures: Any
    settings: Settings = field(init=False)
    engine_config: EngineConfig = field(init=False)
    prefix_len: int = field(init=False)
    limits: Limits = field(init=False)

    def __post_init__(self) -> None:
        settings = self.settings = self.service.config.settings
        self.engine_config = settings.engine_config()
        self.prefix_len = len(settings.topic_prefix)
        self.limits = settings.limits  # a property that parses a date: once, not per record

    async def run(self, stream: Any) -> None:
        """Handle every event of ``stream`` (Faust's stream of the inbound topics)."""
        holder = self.service.holder
        pending = self.pending
        # Wait for the model inside the loop: Faust acknowledges (and so commits) records that
        # arrive while no stream iterates the topic yet.
        async for event in stream.events():
            if not holder.ready.is_set():
                await holder.ready.wait()
            await self.handle(event)
            if len(pending) >= pending.limit:
                await pending.room()
            # Let the model learner and reader (same event loop) keep up with a backlog.
            await asyncio.sleep(0)

    async def handle(self, event: Any) -> Handled:
        """Handle one record, send what it made and hand its state write to ``pending``."""
        service, settings, send = self.service, self.settings, self.sender.send
        message = event.message
        started = time.perf_counter()
        handled = handle_record(
            self.pending,
            key=message.key,
            value=message.value,
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            model=service.holder.model,
            config=self.engine_config,
            max_amount_cents=settings.max_amount_cents,
            raw_max=settings.dead_letter_raw_max_bytes,
            limits=self.limits,
            now=time.time(),
        )
        sent = [await send(self.outbound[name], name, key, value) for name, key, value in handled.sends]
        treatments = service.treatments
        if treatments is not None:
            if message.partition not in treatments.restored:
                # First record since an assignment: the treatment states of every partition
                # assigned and not restored yet come back from the table (recovered by
                # now), in one scan, before the record is handled.
                partitions = {tp.partition for tp in service.assigned} | {message.partition}
                table = service.table
                entries = table.items() if settings.store == "rocksdb" else list(table.items())
                restored = treatments.restore(partitions, entries)
                log.info("restored %d treatment states of partitions %s", restored, sorted(partitions))
            for name, key, value in treatments.after_record(handled, message.value, now_iso(), message.partition):
                sent.append(await send(self.outbound[name], name, key, value))
            handled.side_writes = treatments.take_writes(message.partition)
        if handled.learn is not None:
            # No key: a feature vector must not name its debtor (erasure; docs/reliability.md).
            sent.append(await send(self.updates, MODEL_UPDATES_TOPIC, None, orjson.dumps(handled.learn)))
        # The change events must be on the broker before the state write can be: else a
        # crash may keep the state (changelog) and lose the events, and re-processing the
        # record finds a duplicate and emits nothing. (Also with exactly_once: Faust sends
        # to topics this app does not consume outside the transaction; docs/reliability.md.)
        # The write waits for them in `pending`, not here: see agents/pending.py. Every
        # send is tracked, dead letters too: a record's offset is committed only once all
        # it sent is delivered, and a send that fails stops the worker before that commit.
        self.pending.submit(event, handled, sent)
        count_handled(service.metrics, message.topic[self.prefix_len :], handled, started, time.time())
        service.progress.processed(message.tp)
        if handled.erase:
            self.erasures.erased(message.partition)
        return handled
