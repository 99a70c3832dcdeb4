"""The ``segment`` agent's loop without a broker: fakes of its ports (stream, sender, pending writes)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import orjson
from faust.types import TP

from debtor_segments.agents.model_sync import ModelHolder
from debtor_segments.agents.progress import PartitionProgress
from debtor_segments.agents.segment_agent import SegmentAgent
from debtor_segments.agents.settings import Settings
from debtor_segments.agents.timers import RecentErasures
from debtor_segments.agents.topics import MODEL_UPDATES_TOPIC, WorkerConfig
from debtor_segments.schemas import DEAD_LETTERS_TOPIC
from debtor_segments.streams.simulation import simulate

TOPIC = "unit-debtor.contacts"


class Calls:
    """Records every method called on it (a fake of ServiceMetrics)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, name: str) -> Any:
        return lambda *args: self.calls.append((name, args))

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


class Pending:
    """A fake of PendingWrites: the states the agent reads, and the writes it submits."""

    def __init__(self, log: list[Any], limit: int = 100) -> None:
        self.states: dict[bytes, bytes] = {}
        self.log = log
        self.limit = limit
        self.submitted: list[tuple[Any, Any, list[Any]]] = []
        self.rooms = 0

    def get(self, key: bytes, default: bytes | None = None) -> bytes | None:
        return self.states.get(key, default)

    def submit(self, event: Any, handled: Any, deliveries: list[Any]) -> None:
        self.log.append(("submit", len(deliveries)))
        self.submitted.append((event, handled, deliveries))
        if handled.state is not None:
            self.states[handled.debtor_id.encode()] = handled.state

    def __len__(self) -> int:
        return len(self.submitted)

    async def room(self) -> None:
        self.rooms += 1


class Sender:
    def __init__(self, log: list[Any]) -> None:
        self.log = log

    async def send(self, topic: Any, name: str, key: bytes | None, value: bytes | None) -> Any:
        self.log.append(("send", name, topic))
        return f"delivery of {name}"


def _event(event_id: str, occurred_at: str, debtor: str = "d1", **fields: Any) -> Any:
    body = {"event_id": event_id, "debtor_id": debtor, "type": "contact_initiated", "occurred_at": occurred_at, "channel": "portal", "direction": "inbound", **fields}
    message = SimpleNamespace(key=debtor.encode(), value=orjson.dumps(body), topic=TOPIC, partition=2, offset=7, tp=TP(TOPIC, 2))
    return SimpleNamespace(message=message)


def _agent(limit: int = 100) -> tuple[SegmentAgent, list[Any]]:
    log: list[Any] = []
    service = SimpleNamespace(
        config=WorkerConfig(Settings(topic_prefix="unit-")),
        holder=ModelHolder(),
        metrics=Calls(),
        treatments=None,
        assigned=set(),
        table={},
        progress=PartitionProgress(lambda tp: True),
    )
    outbound = {name: f"topic {name}" for name in ("debtor.persona-changes", "debtor.quadrant-changes", DEAD_LETTERS_TOPIC)}
    agent = SegmentAgent(service, Pending(log, limit), Sender(log), outbound, "updates topic", RecentErasures())  # type: ignore[arg-type]
    return agent, log


def _line_event(line: bytes, offset: int) -> Any:
    try:
        key = orjson.loads(line)["debtor_id"].encode()
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
        key = None  # the simulation's broken lines: dead letters
    message = SimpleNamespace(key=key, value=line, topic=TOPIC, partition=2, offset=offset, tp=TP(TOPIC, 2))
    return SimpleNamespace(message=message)


def test_the_state_write_is_submitted_after_every_send_it_depends_on() -> None:
    agent, log = _agent()
    lines = simulate(debtors=20, months=8, seed=5).lines

    async def run() -> list[Any]:
        return [await agent.handle(_line_event(line, offset)) for offset, line in enumerate(lines)]

    every = asyncio.run(run())
    assert any(h.sends and h.learn is not None for h in every), "the sample has records that change a persona and teach the model"
    # Per record: its sends (what the core returned, then the feature vector), then its write.
    for handled, (_, submitted, deliveries) in zip(every, agent.pending.submitted, strict=True):
        names = [name for name, _, _ in handled.sends] + ([MODEL_UPDATES_TOPIC] if handled.learn is not None else [])
        assert submitted is handled and deliveries == [f"delivery of {name}" for name in names]
        sends, log = log[: len(names)], log[len(names) :]
        assert [entry[:2] for entry in sends] == [("send", name) for name in names]
        assert log.pop(0) == ("submit", len(names))
    assert log == []
    metrics = agent.service.metrics
    assert metrics.names().count("count_event") == metrics.names().count("observe_processing") == len(lines)
    assert metrics.names()[-1] == "observe_processing"
    assert agent.service.progress.waiting(lambda tp: False) == []


def test_a_bad_record_is_dead_lettered_and_counted() -> None:
    agent, log = _agent()
    event = _event("e1", "2026-03-01T00:00:00Z")
    event.message.value = b"not json"
    handled = asyncio.run(agent.handle(event))
    assert handled.dead_letter_reason == "invalid_json"
    assert log == [("send", DEAD_LETTERS_TOPIC, f"topic {DEAD_LETTERS_TOPIC}"), ("submit", 1)]
    assert ("count_dead_letter", ("invalid_json",)) in agent.service.metrics.calls


def test_an_erasure_is_told_to_the_store_maintenance() -> None:
    agent, _ = _agent()
    asyncio.run(agent.handle(_event("e1", "2026-01-01T00:00:00Z")))
    assert agent.erasures.due(min_age=0.0) == set()
    asyncio.run(agent.handle(_event("x1", "2026-01-02T00:00:00Z", type="erasure_requested")))
    assert agent.erasures.due(min_age=0.0) == {2}


def test_the_loop_waits_for_the_model_and_for_room() -> None:
    agent, log = _agent(limit=1)

    class Stream:
        async def events(self) -> AsyncIterator[Any]:
            for n in range(2):
                yield _event(f"e{n}", f"2026-03-0{n + 1}T00:00:00Z")

    async def run() -> None:
        task = asyncio.ensure_future(agent.run(Stream()))
        await asyncio.sleep(0.01)
        assert log == [], "no record is handled before the model is ready"
        agent.service.holder.ready.set()
        await asyncio.wait_for(task, 1.0)

    asyncio.run(run())
    assert [entry for entry in log if entry[0] == "submit"] and len(agent.pending.submitted) == 2
    assert agent.pending.rooms == 2  # the pending writes were at their limit after each record


def test_treatments_are_restored_once_sent_after_the_core_and_written_with_the_record() -> None:
    agent, log = _agent()

    class Treatments:
        restored: set[int] = set()
        restores: list[set[int]] = []

        def restore(self, partitions: set[int], entries: Any) -> int:
            self.restores.append(set(partitions))
            self.restored |= partitions
            return 0

        def after_record(self, handled: Any, raw: bytes, emitted_at: str, partition: int) -> list[tuple[str, bytes, bytes]]:
            return [("debtor.channel.sms", b"d1", b"{}")]

        def take_writes(self, partition: int) -> list[tuple[bytes, bytes | None]]:
            return [(b"treatment:d1", b"state")]

    agent.service.treatments = Treatments()
    agent.service.assigned = {TP(TOPIC, 0), TP(TOPIC, 2)}
    agent.outbound["debtor.channel.sms"] = "topic debtor.channel.sms"
    first = asyncio.run(agent.handle(_event("e1", "2026-03-01T00:00:00Z")))
    asyncio.run(agent.handle(_event("e2", "2026-03-02T00:00:00Z")))
    assert agent.service.treatments.restores == [{0, 2}], "restored once, for every assigned partition"
    assert first.side_writes == [(b"treatment:d1", b"state")]
    sends = [entry[1] for entry in log if entry[0] == "send"]
    assert sends.count("debtor.channel.sms") == 2
    # The treatment's sends go before the record's write, which waits for them too.
    assert log.index(("send", "debtor.channel.sms", "topic debtor.channel.sms")) < log.index(("submit", len(agent.pending.submitted[0][2])))
