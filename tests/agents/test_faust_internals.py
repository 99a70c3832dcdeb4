"""agents/faust_internals.py: the private aiokafka behaviour it changes, and its fail-closed check."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP

from debtor_segments.agents import faust_internals


def test_install_refuses_unverified_versions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(faust_internals, "VERIFIED", {"aiokafka": {"0.0.0"}, "faust-streaming": {"0.15.3"}})
    monkeypatch.setattr(faust_internals, "_patched", set())
    with pytest.raises(faust_internals.InternalsMismatch, match="verified with"):
        faust_internals.install()


def test_leave_group_v3_names_the_static_member() -> None:
    request = faust_internals._leave_request()("group-a", "member-1", "instance-1")
    struct = request.prepare({13: (0, 5)})
    assert struct.API_VERSION == 3
    assert struct.encode() == faust_internals._leave_request()("group-a", "member-1", "instance-1").prepare({13: (3, 3)}).encode()
    assert b"instance-1" in struct.encode() and b"member-1" in struct.encode()


def test_a_static_member_leaves_on_close_and_a_dynamic_one_as_before() -> None:
    from aiokafka.consumer.group_coordinator import GroupCoordinator

    faust_internals.install()
    assert faust_internals.installed()
    sent: list[Any] = []

    class Coordinator:
        group_id, member_id, generation = "g", "m-1", 3

        def __init__(self, instance_id: str | None) -> None:
            self._group_instance_id = instance_id
            self.reset = False

        async def _send_req(self, request: Any) -> Any:
            sent.append(request.prepare({13: (0, 5)}))
            return SimpleNamespace(error_code=0, members=[("m-1", "i-1", 0)])

        def reset_generation(self) -> None:
            self.reset = True

    static = Coordinator("i-1")
    asyncio.run(GroupCoordinator._maybe_leave_group(static))  # type: ignore[arg-type]
    assert static.reset and [s.API_VERSION for s in sent] == [3]
    dynamic = Coordinator(None)
    asyncio.run(GroupCoordinator._maybe_leave_group(dynamic))  # type: ignore[arg-type]
    assert dynamic.reset and [s.API_VERSION for s in sent] == [3, 1]


def test_seek_reset_refuses_unverified_versions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(faust_internals, "VERIFIED", {"aiokafka": {"0.14.0"}, "faust-streaming": {"0.0.0"}})
    monkeypatch.setattr(faust_internals, "_patched", set())
    with pytest.raises(faust_internals.InternalsMismatch, match="rewind partitions"):
        faust_internals.install_seek_reset()


def test_seek_reset_replaces_the_seek_faust_calls_after_a_rebalance(monkeypatch: pytest.MonkeyPatch) -> None:
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    monkeypatch.setattr(faust_internals, "_patched", set())
    monkeypatch.setattr(AIOKafkaConsumerThread, "seek_to_committed", AIOKafkaConsumerThread.seek_to_committed)
    original = AIOKafkaConsumerThread.seek_to_committed
    faust_internals.install_seek_reset()
    assert AIOKafkaConsumerThread.seek_to_committed is not original


def _faust_consumer(**fields: Any) -> SimpleNamespace:
    """The private shape of Faust's consumer that ConsumerView reads (faust-streaming 0.15.3)."""
    active: set[Any] = set(fields.pop("active", ()))
    consumer = SimpleNamespace(_buffered_partitions=set(), flow_active=True, assignment=lambda: set(), highwater=lambda tp: None, **fields)
    consumer._get_active_partitions = lambda: active

    async def wait_next_records(timeout: float) -> Any:
        return {}, active

    consumer._wait_next_records = wait_next_records
    return consumer


def test_the_client_backlog_counts_fetched_records_of_the_given_topics_only() -> None:
    fetcher = SimpleNamespace(_records={})
    consumer = _faust_consumer(_thread=SimpleNamespace(_ensure_consumer=lambda: SimpleNamespace(_fetcher=fetcher)))
    view = faust_internals.ConsumerView(SimpleNamespace(consumer=consumer))
    topics = frozenset({"a", "b"})
    assert view.client_backlog(topics) is False
    fetcher._records = {TP("changelog", 0): object()}
    assert view.client_backlog(topics) is False
    fetcher._records = {TP("b", 0): object()}
    assert view.client_backlog(topics) is True
    fetcher._records = {}
    consumer._buffered_partitions = {TP("a", 0)}  # Faust paused it: its stream buffer is full
    assert view.client_backlog(topics) is True


def test_deliverable_follows_the_active_set_faust_took_for_the_fetch() -> None:
    a0, a1 = TP("a", 0), TP("a", 1)
    consumer = _faust_consumer(active={a0})
    view = faust_internals.ConsumerView(SimpleNamespace(consumer=consumer))
    deliverable = view.deliverable()
    assert deliverable(a0) and not deliverable(a1)
    consumer._buffered_partitions.add(a1)
    assert view.deliverable()(a1)
    records, active = asyncio.run(consumer._wait_next_records(1.0))  # now through the hook
    assert view._fetch_active is active


def test_the_view_fails_closed_where_a_wrong_answer_would_commit_unprocessed_records(caplog: pytest.LogCaptureFixture) -> None:
    view = faust_internals.ConsumerView(SimpleNamespace(consumer=SimpleNamespace()))  # no private fields
    assert view.deliverable()(TP("a", 0)) is False
    assert view.deliverable()(TP("a", 0)) is False
    assert len([r for r in caplog.records if "cannot tell" in r.getMessage()]) == 1  # once, not per fetch
    assert view.settling() is True
    assert view.position(TP("a", 0)) is None and view.client_backlog(frozenset({"a"})) is False
