"""The parts agents/worker.py wires, without a broker: sends, commits, assignment signals, timers, status pages."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP

from debtor_segments.agents.assignment import PartitionSignals
from debtor_segments.agents.commits import WriteHooks
from debtor_segments.agents.faust_app import inbound_scheduler, inbound_topic_names
from debtor_segments.agents.model_sync import ModelHolder, ModelWriter
from debtor_segments.agents.progress import PartitionProgress
from debtor_segments.agents.settings import Settings
from debtor_segments.agents.status_pages import health_body, model_body
from debtor_segments.agents.timers import RecentErasures, StoreMaintenance, TreatmentTimers
from debtor_segments.agents.topics import OUTBOUND_TOPICS, WorkerConfig
from debtor_segments.agents.tracked_sends import OutboundTopics, TrackedSender
from debtor_segments.schemas import ERASURE_TOPIC, INBOUND_TOPICS

CONFIG = WorkerConfig(Settings(topic_prefix="unit-", partitions=4))


class Failures:
    """A fake of ServiceMetrics: the send failures counted, by topic."""

    def __init__(self) -> None:
        self.failed: list[str] = []

    def count_send_failure(self, topic: str) -> None:
        self.failed.append(topic)


# --- tracked sends ---------------------------------------------------------------------------


def test_a_delivery_that_fails_later_is_counted_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    metrics = Failures()
    sender = TrackedSender(metrics)  # type: ignore[arg-type]

    class Topic:
        async def send(self, key: bytes | None, value: bytes | None) -> Any:
            self.delivery: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            return self.delivery

    async def run() -> None:
        topic = Topic()
        delivery = await sender.send(topic, "debtor.persona-changes", b"d1", b"{}")
        topic.delivery.set_exception(OSError("broker gone"))
        with pytest.raises(OSError):
            await delivery
        await asyncio.sleep(0)  # the done callbacks run

    with caplog.at_level(logging.ERROR, "debtor_segments.worker"):
        asyncio.run(run())
    assert metrics.failed == ["debtor.persona-changes"]
    assert caplog.messages == ["a send to debtor.persona-changes was not delivered (OSError): the record is not committed, the worker stops"]


def test_a_send_that_always_raises_returns_a_failed_delivery_and_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    metrics, waits = Failures(), []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    class Topic:
        async def send(self, key: bytes | None, value: bytes | None) -> Any:
            raise ValueError("too large")

    async def run() -> Any:
        return await TrackedSender(metrics, sleep=sleep).send(Topic(), "debtor.dead-letters", b"k", b"v")  # type: ignore[arg-type]

    with caplog.at_level(logging.ERROR, "debtor_segments.worker"):
        failed = asyncio.run(run())
    assert isinstance(failed.exception(), ValueError) and waits == [0.25, 0.5] and metrics.failed == ["debtor.dead-letters"]
    assert caplog.messages == ["sending to debtor.dead-letters failed 3 times (ValueError: too large): the record is not committed, the worker stops"]


def test_outbound_topics_are_created_once_with_the_prefix_and_the_inbound_partitions() -> None:
    created: list[tuple[str, int]] = []
    app = SimpleNamespace(topic=lambda name, key_type, value_type, partitions: created.append((name, partitions)) or name)
    topics = OutboundTopics(app, CONFIG)
    assert created == [(f"unit-{name}", 4) for name in OUTBOUND_TOPICS]
    assert topics["debtor.channel.sms"] == topics["debtor.channel.sms"] == "unit-debtor.channel.sms"
    assert created[-1] == ("unit-debtor.channel.sms", 4) and len(created) == len(OUTBOUND_TOPICS) + 1


# --- commits and assignment --------------------------------------------------------------------


def test_write_hooks_crash_the_app_on_a_failed_write_and_report_released_offsets() -> None:
    crashed: list[BaseException] = []
    out: list[tuple[Any, int]] = []

    async def crash(error: BaseException) -> None:
        crashed.append(error)

    app = SimpleNamespace(crash=crash, sensors=SimpleNamespace(on_message_out=lambda tp, offset, message: out.append((tp, offset))))
    hooks = WriteHooks(app)

    async def run() -> None:
        hooks.failed(OSError("write"))
        await asyncio.sleep(0)

    asyncio.run(run())
    assert [type(error) for error in crashed] == [OSError]
    hooks.released(SimpleNamespace(message=SimpleNamespace(tp=TP("t", 1), offset=9)))
    assert out == [(TP("t", 1), 9)]


def test_partition_signals_keep_the_assignment_and_commit_before_a_hand_over() -> None:
    log: list[Any] = []

    async def commit(app: Any) -> None:
        log.append(("commit", app))

    class Learner:
        async def stop(self) -> None:
            log.append("learner stopped")

    treatments = SimpleNamespace(revoked=lambda partitions: log.append(("forget", sorted(partitions))))
    service = SimpleNamespace(app="app", assigned=set(), assigned_once=False, progress=PartitionProgress(lambda tp: True), treatments=treatments)
    signals = PartitionSignals(service, Learner(), commit)  # type: ignore[arg-type]
    a, b = TP("in", 0), TP("in", 1)
    asyncio.run(signals.on_assigned(None, {a, b}))
    assert service.assigned == {a, b} and service.assigned_once and set(service.progress.waiting(lambda tp: False)) == {a, b}
    asyncio.run(signals.on_revoked(None, {b}))
    assert service.assigned == {a} and log == [("forget", [1]), ("commit", "app")]
    asyncio.run(signals.on_shutdown(None))
    assert log[2:] == [("commit", "app"), "learner stopped"]


def test_partition_signals_connect_to_the_apps_signals() -> None:
    connected: dict[str, Any] = {}
    names = ("on_partitions_revoked", "on_partitions_assigned", "on_before_shutdown")
    app = SimpleNamespace(**{name: SimpleNamespace(connect=lambda fun, name=name: connected.setdefault(name, fun)) for name in names})
    signals = PartitionSignals(SimpleNamespace(), None)  # type: ignore[arg-type]
    signals.connect(app)
    assert connected == {"on_partitions_revoked": signals.on_revoked, "on_partitions_assigned": signals.on_assigned, "on_before_shutdown": signals.on_shutdown}


# --- timers ---------------------------------------------------------------------------------


def _maintenance_service(**app: Any) -> Any:
    assignor = SimpleNamespace(assigned_actives=lambda: {TP("cl", 0), TP("other", 3)}, assigned_standbys=lambda: {TP("cl", 1)})
    return SimpleNamespace(
        app=SimpleNamespace(rebalancing=False, in_recovery=False, assignor=assignor, **app),
        assigned_once=True,
        table=SimpleNamespace(data={}),
        config=CONFIG,
    )


def test_store_maintenance_waits_out_rebalances_and_recent_erasures() -> None:
    clock = [100.0]
    erasures = RecentErasures(clock=lambda: clock[0])
    erasures.erased(2)
    service = _maintenance_service()
    maintenance = StoreMaintenance(service, erasures, {"cl"})
    service.app.rebalancing = True
    asyncio.run(maintenance.tick())
    clock[0] += 5.0
    asyncio.run(maintenance.tick())
    assert erasures.due(0.0) == {2}, "nothing done while rebalancing"
    service.app.rebalancing = False
    clock[0] = 101.0
    asyncio.run(maintenance.tick())
    assert erasures.due(0.0) == {2}, "a second after its erasure a partition is not compacted yet"
    clock[0] = 102.0
    asyncio.run(maintenance.tick())  # a memory store: nothing on disk to compact or remove
    assert erasures.due(0.0) == set()


def test_the_partition_timer_sends_due_steps_of_assigned_partitions_and_logs_failed_deliveries(caplog: pytest.LogCaptureFixture) -> None:
    asked: list[set[int]] = []

    class Treatments:
        def due_by_timer(self, partitions: set[int], emitted_at: str) -> list[tuple[str, bytes, bytes]]:
            asked.append(set(partitions))
            return [("debtor.contact-due", b"d1", b"{}"), ("debtor.treatments", b"d2", b"{}")]

    class Sender:
        def __init__(self) -> None:
            self.sent: list[tuple[Any, str]] = []

        async def send(self, topic: Any, name: str, key: bytes | None, value: bytes | None) -> Any:
            self.sent.append((topic, name))
            delivery = asyncio.get_running_loop().create_future()
            delivery.set_exception(OSError("gone")) if name == "debtor.treatments" else delivery.set_result(None)
            return delivery

    service = SimpleNamespace(app=SimpleNamespace(rebalancing=False), assigned_once=False, assigned={TP("in", 1), TP("in", 3)})
    sender = Sender()
    timers = TreatmentTimers(service, Treatments(), sender, {"debtor.contact-due": "due", "debtor.treatments": "treatments"})  # type: ignore[arg-type]
    asyncio.run(timers.steps_due())
    assert asked == [], "nothing before the first assignment"
    service.assigned_once = True
    with caplog.at_level(logging.ERROR, "debtor_segments.worker"):
        asyncio.run(timers.steps_due())
    assert asked == [{1, 3}] and sender.sent == [("due", "debtor.contact-due"), ("treatments", "debtor.treatments")]
    assert caplog.messages == ["a due treatment step could not be delivered: OSError"]


# --- the app's scheduler, the status pages ---------------------------------------------------------


def test_the_inbound_scheduler_gates_the_inbound_topics_and_holds_erasures_strictly() -> None:
    scheduler = inbound_scheduler(CONFIG)
    assert inbound_topic_names(CONFIG) == tuple(f"unit-{name}" for name in INBOUND_TOPICS)
    assert scheduler.gated_topics == frozenset(inbound_topic_names(CONFIG))
    assert scheduler.strict_topics == frozenset({f"unit-{ERASURE_TOPIC}"})


def test_status_bodies() -> None:
    assert health_body(SimpleNamespace(held=3, gave_up=1), 7, 2) == {"status": "ok", "model_version": 7, "held": 3, "pending_writes": 2, "gave_up": 1}
    body = model_body(ModelHolder(), ModelWriter(10, 5.0))
    assert body["version"] == 0 and body["writer"] is False and body["writer_version"] is None and body["digest"]
    assert set(body["probes"]) == set(body["probes"].values())  # every prototype is its own persona
