"""PendingWrites without a broker: order, read-your-writes, held offsets, failures, back-pressure.

Events carry Faust's real ``Message`` (its reference count decides when an offset is acked);
deliveries are plain asyncio futures resolved by the test in any order.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from faust.types.tuples import Message
from hypothesis import given, settings
from hypothesis import strategies as st

from debtor_segments.agents.pending import PendingWrites
from debtor_segments.agents.records import Handled

RECORD: contextvars.ContextVar[str] = contextvars.ContextVar("record", default="")


class Event:
    """What the agent gets from Faust: a message, acked like ``faust.Event.ack`` does."""

    def __init__(self, offset: int) -> None:
        self.message = Message("t", 0, offset, 0.0, 0, None, None, b"k", b"v", None)
        self.message.incref()  # the stream's reference

    def ack(self) -> bool:
        return self.message.ack(None)  # type: ignore[arg-type]

    def stream_acks(self) -> None:
        """The stream's ack once the agent moves on (Faust's ``after``)."""
        self.message.ack(None)  # type: ignore[arg-type]


def state(debtor: str, value: str) -> Handled:
    return Handled("processed", "payment_made", debtor_id=debtor, state=value.encode())


def run(test: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(test())  # type: ignore[arg-type]


def test_a_write_waits_for_its_deliveries_and_for_every_write_before_it() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        table: dict[bytes, bytes] = {}
        acked: list[Event] = []
        writes = PendingWrites(table, on_failure=pytest.fail, on_acked=acked.append)
        first, second, third = (loop.create_future() for _ in range(3))
        events = [Event(offset) for offset in range(4)]
        writes.submit(events[0], state("a", "a1"), [first])
        writes.submit(events[1], state("b", "b1"), [second, third])
        writes.submit(events[2], state("c", "c1"), [])  # nothing to wait for, but behind the others
        for event in events[:3]:
            event.stream_acks()
        second.set_result(None)
        third.set_result(None)
        await asyncio.sleep(0)
        assert table == {} and len(writes) == 3, "b and c wait for a's delivery"
        assert not any(event.message.acked for event in events[:3]), "no offset is acked before its write"
        first.set_result(None)
        await asyncio.sleep(0)
        assert table == {b"a": b"a1", b"b": b"b1", b"c": b"c1"} and len(writes) == 0
        assert acked == events[:3] and all(event.message.acked for event in events[:3])
        writes.submit(events[3], state("d", "d1"), [])  # nothing pending: written at once
        assert table[b"d"] == b"d1" and events[3].message.refcount == 1, "the stream acks it itself"

    run(scenario)


def test_get_answers_with_the_newest_state_written_or_not() -> None:
    async def scenario() -> None:
        delivery = asyncio.get_running_loop().create_future()
        table = {b"a": b"a0", b"b": b"b0"}
        writes = PendingWrites(table, on_failure=pytest.fail)
        writes.submit(Event(0), state("a", "a1"), [delivery])
        writes.submit(Event(1), state("a", "a2"), [])
        writes.submit(Event(2), Handled("processed", "erasure_requested", debtor_id="b", erase=True), [])
        writes.submit(Event(3), Handled("duplicate", "payment_made", debtor_id="a"), [])  # no state change
        assert (writes.get(b"a"), writes.get(b"b"), writes.get(b"c")) == (b"a2", None, None)
        assert table == {b"a": b"a0", b"b": b"b0"}
        delivery.set_result(None)
        await asyncio.sleep(0)
        assert table == {b"a": b"a2"} and writes.get(b"a") == b"a2"

    run(scenario)


def test_writes_run_in_the_context_the_agent_submitted_them_in() -> None:
    """Faust finds the record's partition (changelog, table sensors) in the current context."""

    async def scenario() -> None:
        delivery = asyncio.get_running_loop().create_future()
        seen: list[tuple[bytes, str]] = []

        class Table(dict[bytes, bytes]):
            def __setitem__(self, key: bytes, value: bytes) -> None:
                seen.append((key, RECORD.get()))
                super().__setitem__(key, value)

        writes = PendingWrites(Table(), on_failure=pytest.fail)
        for offset, debtor in enumerate(("a", "b")):
            RECORD.set(f"record {offset}")
            writes.submit(Event(offset), state(debtor, "x"), [delivery] if offset == 0 else [])
        RECORD.set("")
        delivery.set_result(None)
        await asyncio.sleep(0)
        assert seen == [(b"a", "record 0"), (b"b", "record 1")]

    run(scenario)


def test_a_failed_delivery_stops_every_later_write_and_is_reported_once() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        table: dict[bytes, bytes] = {}
        failures: list[BaseException] = []
        writes = PendingWrites(table, on_failure=failures.append, limit=2)
        ok, failing = loop.create_future(), loop.create_future()
        events = [Event(offset) for offset in range(3)]
        writes.submit(events[0], state("a", "a1"), [ok])
        writes.submit(events[1], state("b", "b1"), [failing])
        writes.submit(events[2], state("c", "c1"), [])
        ok.set_result(None)
        failing.set_exception(ConnectionError("broker gone"))
        await asyncio.sleep(0)
        assert table == {b"a": b"a1"}, "b failed: neither b nor c (which may build on it) is written"
        assert [str(error) for error in failures] == ["broker gone"]
        assert not events[1].message.acked and not events[2].message.acked, "nothing committed past the failure"
        writes.submit(Event(3), state("d", "d1"), [])
        assert b"d" not in table and len(failures) == 1
        await asyncio.wait_for(writes.room(), 1)  # full, but failed: the agent is not left waiting

    run(scenario)


def test_a_write_that_raises_stops_the_writes_instead_of_leaving_an_offset_unacked() -> None:
    class Table(dict[bytes, bytes]):
        def __setitem__(self, key: bytes, value: bytes) -> None:
            if key == b"b":
                raise RuntimeError("store closed")
            super().__setitem__(key, value)

    async def scenario() -> None:
        delivery = asyncio.get_running_loop().create_future()
        table = Table()
        failures: list[BaseException] = []
        writes = PendingWrites(table, on_failure=failures.append)
        events = [Event(offset) for offset in range(3)]
        for event, debtor in zip(events, "abc", strict=True):
            writes.submit(event, state(debtor, "1"), [delivery] if debtor == "a" else [])
            event.stream_acks()
        delivery.set_result(None)
        await asyncio.sleep(0)
        assert table == {b"a": b"1"} and [str(error) for error in failures] == ["store closed"]
        assert events[0].message.acked and not events[1].message.acked and not events[2].message.acked
        assert len(writes) == 2, "the failed write and the one after it stay pending (and unacked)"

    run(scenario)


def test_room_waits_while_the_limit_is_reached() -> None:
    async def scenario() -> None:
        delivery = asyncio.get_running_loop().create_future()
        writes = PendingWrites({}, on_failure=pytest.fail, limit=2)
        writes.submit(Event(0), state("a", "a1"), [delivery])
        await asyncio.wait_for(writes.room(), 1)  # one pending, room for another
        writes.submit(Event(1), state("b", "b1"), [])
        waiting = asyncio.ensure_future(writes.room())
        await asyncio.sleep(0.01)
        assert not waiting.done()
        delivery.set_result(None)
        await asyncio.wait_for(waiting, 1)
        assert len(writes) == 0

    run(scenario)


@settings(max_examples=60, deadline=None)
@given(
    records=st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 2)), min_size=1, max_size=30),
    order=st.randoms(use_true_random=False),
)
def test_any_delivery_order_writes_what_writing_in_record_order_writes(records: list[tuple[str, int]], order: Any) -> None:
    """Deliveries complete in any order; the table ends as if each record had been written in
    turn, and offsets are released in record order."""

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        table: dict[bytes, bytes] = {}
        acked: list[int] = []
        writes = PendingWrites(table, on_failure=pytest.fail, on_acked=lambda event: acked.append(event.message.offset))
        deliveries: list[asyncio.Future[None]] = []
        expected: dict[bytes, bytes] = {}
        held: list[int] = []
        for offset, (debtor, sends) in enumerate(records):
            futures = [loop.create_future() for _ in range(sends)]
            deliveries += futures
            event = Event(offset)
            value = f"{debtor}{offset}"
            assert writes.get(debtor.encode()) == expected.get(debtor.encode()), "reads see every earlier record"
            writes.submit(event, state(debtor, value), futures)
            event.stream_acks()
            expected[debtor.encode()] = value.encode()
            if sends or held:
                held.append(offset)
        order.shuffle(deliveries)
        for future in deliveries:
            future.set_result(None)
            await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert table == expected and len(writes) == 0
        assert acked == held

    run(scenario)
