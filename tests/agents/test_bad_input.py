"""Bad input on the worker's real decode path (``handle_record``): every bad record becomes a
dead letter with a reason and the raw value; valid records interleaved with them all apply."""

from __future__ import annotations

import hashlib

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from debtor_segments.agents.records import apply_state, handle_record
from debtor_segments.schemas import DEAD_LETTERS_TOPIC
from debtor_segments.streams.engine import EngineConfig
from debtor_segments.streams.model import SegmentModel
from debtor_segments.streams.pipeline import DEAD_LETTER_RAW_MAX
from debtor_segments.streams.simulation import simulate

MODEL = SegmentModel()
CONFIG = EngineConfig()
CEILING = 1_000_000_000
VALID = {"event_id": "v", "debtor_id": "d1", "type": "payment_received", "occurred_at": "2026-03-01T10:00:00Z", "claim_id": "c1", "amount_cents": 2500}


def _handle(table: dict, value: bytes | None, key: bytes | None = b"d1", offset: int = 0):
    return handle_record(table, key=key, value=value, topic="debtor.payments", partition=0, offset=offset, model=MODEL, config=CONFIG, max_amount_cents=CEILING, emitted_at="t")


def _mutations() -> st.SearchStrategy[bytes]:
    """Records that break the contract in the ways upstream systems do."""

    def body(**change: object) -> bytes:
        return orjson.dumps({**VALID, **change})

    nested: object = 1
    for _ in range(200):
        nested = [nested]
    return st.one_of(
        st.binary(max_size=200),
        st.integers(min_value=0, max_value=len(body()) - 1).map(lambda n: body()[:n]),  # truncated
        st.sampled_from(
            [
                body(amount_cents="12"),
                body(amount_cents=1.5),
                body(amount_cents=-3),
                body(amount_cents=0),
                body(amount_cents=CEILING + 1),
                body(amount_cents=10**15),
                body(occurred_at="2026-03-01T10:00:00"),
                body(occurred_at="2026-13-01T10:00:00Z"),
                body(occurred_at=""),
                body(type="refund"),
                body(type=None),
                body(debtor_id=""),
                body(debtor_id="x" * 65),
                body(event_id="e" * 129),
                body(claim_id=None),
                body(event_id=7),
                orjson.dumps({k: v for k, v in VALID.items() if k != "debtor_id"}),
                orjson.dumps({k: v for k, v in VALID.items() if k != "event_id"}),
                b'{"event_id": "n", "debtor_id": "d1", "type": "call_rated", "occurred_at": "2026-03-01T10:00:00Z", "stars": NaN}',
                b'{"event_id": "n", "debtor_id": "d1", "type": "payment_received", "occurred_at": "2026-03-01T10:00:00Z", "claim_id": "c", "amount_cents": Infinity}',
                orjson.dumps({**VALID, "claim_id": "c" * 100_000}),
                orjson.dumps({**VALID, "extra": nested}),
                b"[]",
                b"null",
                b'"a string"',
                b"\xff\xfe\x00",
            ]
        ),
    )


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mutations())
def test_every_bad_record_is_a_dead_letter_with_reason_and_raw(raw: bytes) -> None:
    handled = _handle({}, raw, offset=42)
    if handled.outcome == "processed":  # hypothesis found a valid event: fine, nothing to check
        return
    assert handled.outcome == "dead_lettered", handled
    [(topic, _key, value)] = handled.sends
    record = orjson.loads(value)
    assert topic == DEAD_LETTERS_TOPIC and record["reason"] == handled.dead_letter_reason
    assert record["offset"] == 42 and record["partition"] == 0 and record["topic"] == "debtor.payments"
    if len(raw) <= DEAD_LETTER_RAW_MAX:
        assert record["raw"] == raw.decode("utf-8", "replace") and "raw_truncated" not in record
    else:  # cut so that the dead letter fits the producer's limit; the original stays identifiable
        assert record["raw"] == raw[:DEAD_LETTER_RAW_MAX].decode("utf-8", "replace") and record["raw_truncated"] is True
        assert record["raw_bytes"] == len(raw) and record["raw_sha256"] == hashlib.sha256(raw).hexdigest()


def test_keys_that_disagree_with_the_debtor_are_rejected() -> None:
    for key in (b"d2", None, b"\xff"):
        handled = _handle({}, orjson.dumps(VALID), key=key)
        assert handled.dead_letter_reason == "key_mismatch"


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_mutations(), min_size=1, max_size=30), st.randoms(use_true_random=False))
def test_valid_events_interleaved_with_garbage_are_all_processed(garbage: list[bytes], rnd) -> None:
    lines = [line for line in simulate(debtors=3, months=2, seed=5).lines if b'"event_id":"d' in line][:60]
    ordered = [(line, True) for line in lines]
    for raw in garbage:  # garbage at random places; valid lines keep their order
        ordered.insert(rnd.randrange(len(ordered) + 1), (raw, False))
    table: dict[bytes, bytes] = {}
    outcomes = []
    for offset, (raw, ok) in enumerate(ordered):
        debtor = orjson.loads(raw)["debtor_id"].encode() if ok else b"d1"
        handled = _handle(table, raw, key=debtor, offset=offset)
        apply_state(table, handled)
        if ok:
            outcomes.append(handled.outcome)
    # Every valid event was applied or recognised as a re-send: none lost, none dead-lettered.
    assert set(outcomes) <= {"processed", "duplicate"}
    assert outcomes.count("processed") == len({orjson.loads(line)["event_id"] for line in lines})


def test_dead_letter_of_a_170_kb_garbage_record_fits_the_producer_limit() -> None:
    """Issue 14.1: a 170 KB garbage record made a 1,020,255-byte dead letter, above the
    producer's 1,000,000-byte limit: the send failed and the record vanished."""
    garbage = b"\x00" * 170_000  # NUL is 6 bytes as JSON: a 1,020,255-byte dead letter before
    handled = _handle({}, garbage)
    [(topic, key, value)] = handled.sends
    letter = orjson.loads(value)
    # Above the record size limit (DEBTOR_SEGMENTS_MAX_RECORD_BYTES) since issue 14.5.
    assert topic == DEAD_LETTERS_TOPIC and key == b"d1" and handled.dead_letter_reason == "record_too_large"
    assert len(value) < 1_000_000 // 2, len(value)
    assert letter["raw_truncated"] is True and letter["raw_bytes"] == 170_000
    assert letter["raw_sha256"] == hashlib.sha256(garbage).hexdigest()
    assert len(letter["detail"]) <= 1000
    # A key as large as a value is replaced by its digest.
    [(_, big_key, _)] = _handle({}, garbage, key=garbage).sends
    assert big_key == b"sha256:" + hashlib.sha256(garbage).hexdigest().encode()


def test_implausible_event_times_are_dead_lettered_and_do_not_freeze_the_debtor() -> None:
    """Issue 14, item 4: one event dated 9999 made every later real event of its debtor too late."""
    table: dict = {}
    now = 1_796_000_000.0  # 2026-11-29
    for n, stamp in enumerate(["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00Z", "2026-12-05T00:00:00Z"]):
        handled = handle_record(
            table,
            key=b"d1",
            value=orjson.dumps({**VALID, "event_id": f"bad-{n}", "occurred_at": stamp}),
            topic="debtor.payments",
            partition=0,
            offset=n,
            model=MODEL,
            config=CONFIG,
            max_amount_cents=CEILING,
            emitted_at="t",
            now=now,
        )
        assert handled.outcome == "dead_lettered" and handled.dead_letter_reason == "implausible_timestamp", (stamp, handled)
        [(topic, _, value)] = handled.sends
        assert topic == DEAD_LETTERS_TOPIC and orjson.loads(value)["reason"] == "implausible_timestamp"
        apply_state(table, handled)
    assert table == {}
    real = handle_record(
        table,
        key=b"d1",
        value=orjson.dumps(VALID),
        topic="debtor.payments",
        partition=0,
        offset=9,
        model=MODEL,
        config=CONFIG,
        max_amount_cents=CEILING,
        emitted_at="t",
        now=now,
    )
    assert real.outcome == "processed"


def test_replay_and_the_worker_reject_a_record_in_the_same_words() -> None:
    """One pipeline (streams/pipeline.py): the same line gets the same reason, detail and raw
    from ``replay`` as from the worker; only where it came from differs (line vs. offset)."""
    from debtor_segments.agents.replay import replay_lines
    from debtor_segments.streams.engine import Engine

    lines = [
        b"not json",
        b"[]",
        orjson.dumps({**VALID, "type": "refund"}),
        orjson.dumps({**VALID, "amount_cents": "12"}),
        orjson.dumps({**VALID, "occurred_at": "2026-03-01 10:00:00"}),
        orjson.dumps({**VALID, "amount_cents": CEILING + 1}),
        b'{"a": 1, "a": 2}',
        b"x" * 70_000,
        orjson.dumps(VALID),
        orjson.dumps({**VALID, "amount_cents": 1}),
        orjson.dumps({**VALID, "event_id": "old", "occurred_at": "2026-01-01T00:00:00Z"}),
    ]
    replayed: list[dict] = []
    replay_lines(lines, Engine(CONFIG, MODEL), lambda _: None, replayed.append, max_amount_cents=CEILING, emitted_at=lambda: "t")
    table: dict[bytes, bytes] = {}
    worker = []
    for offset, line in enumerate(lines):
        handled = _handle(table, line, offset=offset)
        apply_state(table, handled)
        worker.extend(orjson.loads(value) for topic, _, value in handled.sends if topic == DEAD_LETTERS_TOPIC)
    assert len(worker) == len(replayed) == len(lines) - 1  # all but VALID
    common = ("reason", "detail", "raw", "raw_truncated", "raw_bytes", "raw_sha256")
    assert [{k: w[k] for k in common if k in w} for w in worker] == [{k: r[k] for k in common if k in r} for r in replayed]
    assert {w["reason"] for w in worker} >= {
        "invalid_json",
        "not_an_object",
        "unknown_type",
        "invalid_field",
        "invalid_timestamp",
        "amount_above_ceiling",
        "duplicate_key",
        "record_too_large",
        "conflicting_duplicate",
        "too_late",
    }
