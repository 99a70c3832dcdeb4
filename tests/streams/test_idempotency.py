"""Idempotency keys (issue 14, items 2 and 3): keyed digests a sender cannot collide, re-used
ids with another body, and an honest reason when a duplicate cannot be decided."""

from __future__ import annotations

import orjson
import pytest

from debtor_segments.agents.records import handle_record
from debtor_segments.streams.engine import Engine, EngineConfig
from debtor_segments.streams.model import SegmentModel
from debtor_segments.streams.state import DebtorState, event_key, event_token
from tests.streams.conftest import make_event

# Two event ids whose 48-bit keys (the keys before this fix) collide: found by brute force
# over pay-0 .. pay-33554431 (tests/streams/test_idempotency.py, COLLIDING).
COLLIDING = ("pay-21344005", "pay-27001140")


def test_ids_that_collided_in_48_bits_are_both_applied() -> None:
    first, second = COLLIDING
    assert event_key(first) == event_key(second)  # the pair really collided before
    engine = Engine()
    a = engine.handle(make_event("payment_received", event_id=first, at="2026-02-01T10:00:00Z"))
    b = engine.handle(make_event("payment_received", event_id=second, at="2026-02-02T10:00:00Z"))
    assert (a.outcome, b.outcome) == ("processed", "processed")
    assert engine.states["d1"].paid_cents == 10_000


def test_tokens_are_keyed_by_the_deployment_secret() -> None:
    body = b'{"x":1}'
    assert event_token("e1", body, b"one") != event_token("e1", body, b"two")
    assert event_token("e1", body, b"one") == event_token("e1", body, b"one")
    # 72 bits of id: the first 12 characters; the same id with another body shares them.
    assert event_token("e1", body, b"k")[:12] == event_token("e1", b'{"x":2}', b"k")[:12]


@pytest.mark.parametrize("secret", [b"", b"per-deployment-secret"])
def test_a_reused_event_id_with_another_body_is_a_conflict(secret: bytes) -> None:
    engine = Engine(EngineConfig(id_secret=secret))
    first = make_event("payment_received", event_id="p1", amount_cents=5_000)
    assert engine.handle(first).outcome == "processed"
    # The same event again, even with its keys in another order: a duplicate.
    resent = make_event("payment_received", event_id="p1", amount_cents=5_000)
    resent.data.clear()
    resent.data.update(reversed(list(first.data.items())))
    assert engine.handle(resent).outcome == "duplicate"
    # The same id with another amount: not dropped silently.
    other = make_event("payment_received", event_id="p1", amount_cents=7_000)
    step = engine.handle(other)
    assert step.outcome == "conflict" and step.outputs == ()
    assert engine.states["d1"].paid_cents == 5_000


def test_the_worker_dead_letters_conflicts_and_undecidable_duplicates() -> None:
    table: dict[bytes, bytes] = {}
    model, config = SegmentModel(), EngineConfig()

    def send(body: dict, offset: int):
        handled = handle_record(table, key=b"d1", value=orjson.dumps(body), topic="debtor.payments", partition=0, offset=offset, model=model, config=config, max_amount_cents=10**9, emitted_at="t")
        if handled.state is not None:
            table[b"d1"] = handled.state
        return handled

    base = {"event_id": "p1", "debtor_id": "d1", "type": "payment_received", "claim_id": "c1", "amount_cents": 100}
    assert send({**base, "occurred_at": "2026-02-01T10:00:00Z"}, 0).outcome == "processed"
    conflict = send({**base, "occurred_at": "2026-02-01T10:00:00Z", "amount_cents": 200}, 1)
    assert conflict.outcome == "dead_lettered" and conflict.dead_letter_reason == "conflicting_duplicate"
    letter = orjson.loads(conflict.sends[0][2])
    assert letter["reason"] == "conflicting_duplicate" and letter["event_id"] == "p1"
    # 30 events within two hours, then one 4.5 hours older than the newest.
    for n in range(30):
        send({**base, "event_id": f"q{n}", "occurred_at": f"2026-02-02T{12 + n // 15}:{n % 15 * 4:02d}:00Z"}, 2 + n)
    undecidable = send({**base, "event_id": "late-but-valid", "occurred_at": "2026-02-02T09:26:00Z"}, 40)
    assert undecidable.dead_letter_reason == "undecidable_duplicate", undecidable
    assert "lateness window" in orjson.loads(undecidable.sends[0][2])["detail"]
    too_late = send({**base, "event_id": "old", "occurred_at": "2026-01-20T10:00:00Z"}, 41)
    assert too_late.dead_letter_reason == "too_late"


def test_states_of_format_1_are_read_and_their_ids_still_recognised() -> None:
    engine = Engine()
    engine.handle(make_event("payment_received", event_id="old-1", at="2026-02-01T10:00:00Z"))
    state = engine.states["d1"]
    values = orjson.loads(state.to_bytes())
    # What today's main wrote: format 1, [absolute second, 48-bit key of the id].
    names = list(DebtorState.__dataclass_fields__)
    values[0] = 1
    values[1 + names.index("recent")] = [[int(state.watermark), event_key("old-1")]]
    old = DebtorState.from_bytes(orjson.dumps(values))
    assert old.recent == [[int(state.watermark), event_key("old-1")]]
    engine.states["d1"] = old
    assert engine.handle(make_event("payment_received", event_id="old-1", at="2026-02-01T10:00:00Z")).outcome == "duplicate"
    step = engine.handle(make_event("payment_received", event_id="new-1", at="2026-02-01T11:00:00Z"))
    assert step.outcome == "processed"
    # Written back in today's format (3); read again, the same state.
    data = engine.states["d1"].to_bytes()
    assert orjson.loads(data)[0] == 3 and DebtorState.from_bytes(data).to_bytes() == data


def test_change_event_ids_are_unambiguous() -> None:
    """Item 6: ids were hashed from fields joined with NUL, so debtor "a\\x00b" with event "c"
    and debtor "a" with event "b\\x00c" got the same change-event ids. (The decoder now also
    rejects control characters in ids; the encoding must not depend on that.)"""
    from debtor_segments.streams.engine import _erase

    def ids(debtor_id: str, event_id: str, *, stateless: bool = False) -> set[str]:
        event = make_event("erasure_requested", debtor_id="x", event_id="x")._replace(debtor_id=debtor_id, event_id=event_id)
        state = None if stateless else DebtorState.new(debtor_id)
        return {o.value["event_id"] for o in _erase(state, event, "t").outputs}

    assert not ids("a\x00b", "c") & ids("a", "b\x00c")
    assert not ids("a", "b\x00stateless") & ids("a", "b", stateless=True)
    assert ids("a", "b") == ids("a", "b") and not ids("a", "b") & ids("a", "b", stateless=True)
