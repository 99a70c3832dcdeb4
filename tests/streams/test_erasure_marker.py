"""Erasure markers (issue 14, item 7): an erasure sticks against late and re-sent events."""

from __future__ import annotations

import asyncio

import orjson

from debtor_segments.agents.pending import PendingWrites
from debtor_segments.agents.records import Handled, apply_state, handle_record
from debtor_segments.streams.engine import Engine, EngineConfig
from debtor_segments.streams.model import SegmentModel
from debtor_segments.streams.state import marker_key, read_marker
from tests.streams.conftest import make_event


def test_events_before_an_erasure_never_rebuild_the_profile() -> None:
    engine = Engine(EngineConfig(id_secret=b"k"))
    engine.handle(make_event("payment_received", event_id="p1", at="2026-02-01T10:00:00Z"))
    assert engine.handle(make_event("erasure_requested", event_id="x", at="2026-03-01T00:00:00Z")).outcome == "erased"
    assert "d1" not in engine.states
    # Re-sent, and a late one: refused, no state created.
    assert engine.handle(make_event("payment_received", event_id="p1", at="2026-02-01T10:00:00Z")).outcome == "before_erasure"
    assert engine.handle(make_event("call_rated", event_id="r1", at="2026-02-28T23:00:00Z")).outcome == "before_erasure"
    assert "d1" not in engine.states
    # A newer event starts a new profile; an event before the erasure stays refused even now
    # (it is inside the new state's lateness window).
    assert engine.handle(make_event("contact_initiated", event_id="n1", at="2026-03-02T00:00:00Z")).outcome == "processed"
    assert engine.handle(make_event("call_rated", event_id="r2", at="2026-02-28T23:30:00Z")).outcome == "before_erasure"
    assert engine.handle(make_event("contact_initiated", event_id="n2", at="2026-03-01T12:00:00Z")).outcome == "processed"
    assert engine.states["d1"].applied == 2
    # The marker: a keyed digest of the id, and the erasure time only.
    [(key, erased_at)] = engine.markers.items()
    assert key == marker_key("d1", b"k") and b"d1" not in key and erased_at == 1772323200.0


def test_the_worker_stores_only_a_digest_and_the_time() -> None:
    table: dict[bytes, bytes] = {}
    model, config = SegmentModel(), EngineConfig(id_secret=b"secret")

    def send(event, offset: int) -> Handled:
        handled = handle_record(table, key=b"d1", value=orjson.dumps(event.data), topic="t", partition=0, offset=offset, model=model, config=config, max_amount_cents=10**9, emitted_at="t")
        apply_state(table, handled)
        return handled

    send(make_event("payment_received", event_id="p1", at="2026-02-01T10:00:00Z"), 0)
    send(make_event("erasure_requested", event_id="x", at="2026-03-01T00:00:00Z"), 1)
    assert list(table) == [marker_key("d1", b"secret")]
    [value] = table.values()
    assert orjson.loads(value) == {"erased_at": 1772323200.0} and b"d1" not in value
    late = send(make_event("payment_received", event_id="p1", at="2026-02-01T10:00:00Z"), 2)
    assert late.outcome == "dead_lettered" and late.dead_letter_reason == "erased" and b"d1" not in table
    assert orjson.loads(late.sends[0][2])["reason"] == "erased"
    assert send(make_event("contact_initiated", event_id="n1", at="2026-03-02T00:00:00Z"), 3).outcome == "processed"
    # An older erasure processed again (after a crash) never moves the marker back.
    send(make_event("erasure_requested", event_id="x0", at="2026-01-01T00:00:00Z"), 4)
    assert read_marker(table[marker_key("d1", b"secret")]) == 1772323200.0


def test_a_pending_erasure_marker_is_seen_before_it_is_written() -> None:
    class Message:
        refcount = 1

        def incref(self) -> None:
            self.refcount += 1

    class Event:
        def __init__(self) -> None:
            self.message = Message()

        def ack(self) -> bool:
            self.message.refcount -= 1
            return self.message.refcount == 0

    async def scenario() -> tuple[bytes | None, dict]:
        table: dict[bytes, bytes] = {}
        writes = PendingWrites(table, on_failure=print)
        delivery = asyncio.get_running_loop().create_future()
        key = marker_key("d1")
        writes.submit(Event(), Handled("erased", "erasure_requested", debtor_id="d1", erase=True, marker=(key, b'{"erased_at":1.0}')), [delivery])
        seen = writes.get(key)
        delivery.set_result(None)
        await asyncio.sleep(0)
        return seen, table

    seen, table = asyncio.run(scenario())
    assert seen == b'{"erased_at":1.0}' and table == {marker_key("d1"): b'{"erased_at":1.0}'}
