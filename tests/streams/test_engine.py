"""The processing step: purity, idempotency, lateness, erasure, bounded state."""

from __future__ import annotations

import copy
import dataclasses
from contextlib import suppress

import fastjsonschema
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from debtor_segments.schemas import PERSONA_CHANGES_TOPIC, QUADRANT_CHANGES_TOPIC, load_schema
from debtor_segments.streams.engine import Engine, EngineConfig, advance, process
from debtor_segments.streams.events import DecodeError, decode_event
from debtor_segments.streams.model import SegmentModel
from debtor_segments.streams.personas import PERSONAS, UNKNOWN
from debtor_segments.streams.quadrants import QUADRANTS
from debtor_segments.streams.simulation import simulate
from debtor_segments.streams.state import DECAYED, DebtorState
from tests.streams.conftest import make_event

VALIDATE_OUT = {
    PERSONA_CHANGES_TOPIC: fastjsonschema.compile(load_schema("persona_changed")),
    QUADRANT_CHANGES_TOPIC: fastjsonschema.compile(load_schema("quadrant_changed")),
}


def _events(lines: list[bytes]) -> list:
    out = []
    for line in lines:
        with suppress(ValueError):  # the portfolio's bad lines
            out.append(decode_event(line))
    return out


def test_outputs_follow_the_outbound_contract(small_portfolio) -> None:
    engine = Engine()
    seen = 0
    for event in _events(small_portfolio.lines):
        for output in engine.handle(event, emitted_at="2026-11-25T00:00:00Z").outputs:
            VALIDATE_OUT[output.topic](output.value)
            assert output.key == output.value["debtor_id"]
            assert output.value["previous"] != output.value.get("persona", output.value.get("quadrant"))
            seen += 1
    assert seen > 100


def test_first_change_starts_from_unknown_and_ids_are_deterministic(small_portfolio) -> None:
    def run() -> list[dict]:
        engine, values = Engine(), []
        for event in _events(small_portfolio.lines):
            values.extend(o.value for o in engine.handle(event, emitted_at="now").outputs)
        return values

    first, second = run(), run()
    assert [v["event_id"] for v in first] == [v["event_id"] for v in second]
    assert len({v["event_id"] for v in first}) == len(first)
    firsts: dict[tuple[str, str], dict] = {}
    for value in first:
        firsts.setdefault((value["debtor_id"], value["type"]), value)
    assert all(v["previous"] == UNKNOWN for v in firsts.values())


def test_quadrant_changes_do_not_depend_on_the_model_in_use(small_portfolio) -> None:
    """A record processed again after a crash, when the shared model has learned meanwhile,
    gives the same quadrant change: only a record that changes the persona depends on the model."""
    events = _events(small_portfolio.lines)
    learned = Engine()
    for event in events:
        learned.handle(event)
    assert learned.model.version > 0
    engine, compared = Engine(), 0
    for event in events:
        again = process(engine.states.get(event.debtor_id), event, learned.model, emitted_at="t")
        step = engine.handle(event, emitted_at="t")
        if any(o.topic == PERSONA_CHANGES_TOPIC for o in step.outputs + again.outputs):
            continue
        assert again.outputs == step.outputs
        compared += sum(o.topic == QUADRANT_CHANGES_TOPIC for o in step.outputs)
    assert compared > 100


events_strategy = st.lists(
    st.builds(
        lambda kind, day, n, stars: make_event(
            kind,
            event_id=f"e{n}",
            at=f"2026-{1 + day // 28:02d}-{1 + day % 28:02d}T10:00:00Z",
            **({"stars": stars} if kind == "call_rated" else {}),
        ),
        st.sampled_from(["claim_opened", "payment_received", "arrangement_agreed", "installment_missed", "claim_closed", "contact_attempted", "contact_responded", "contact_initiated", "call_rated"]),
        st.integers(min_value=0, max_value=300),
        st.integers(min_value=0, max_value=40),
        st.integers(min_value=1, max_value=5),
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events_strategy)
def test_process_never_mutates_its_inputs_and_duplicates_change_nothing(events: list) -> None:
    model = SegmentModel()
    state: DebtorState | None = None
    for event in events:
        before = copy.deepcopy(state)
        event_before = copy.deepcopy(event)
        step = process(state, event, model, emitted_at="t")
        assert state == before and event == event_before
        assert step.state is not None
        assert step.state.persona in (*PERSONAS, UNKNOWN)
        assert step.state.quadrant in (*QUADRANTS, UNKNOWN)
        if step.outcome == "processed":
            again = process(step.state, event, model, emitted_at="t")
            assert again.outcome == "duplicate" and again.state == step.state and again.outputs == ()
        state = step.state


@settings(max_examples=40, deadline=None)
@given(events_strategy, st.randoms(use_true_random=False))
def test_order_within_the_lateness_window_does_not_matter(events: list, rnd) -> None:
    """Counters commute: a shuffle within days gives the same behavioural state."""
    events = sorted({e.event_id: e for e in events}.values(), key=lambda e: e.ts)
    shuffled = list(events)
    # Move events by at most a couple of positions among those within 3 days of each other.
    for i in range(len(shuffled) - 1):
        if rnd.random() < 0.5 and shuffled[i + 1].ts - shuffled[i].ts < 3 * 86400:
            shuffled[i], shuffled[i + 1] = shuffled[i + 1], shuffled[i]
    config = EngineConfig(min_evidence=10**9)  # behaviour only: no persona decisions
    a, b = Engine(config), Engine(config)
    for event in events:
        a.handle(event)
    for event in shuffled:
        b.handle(event)
    sa, sb = a.states["d1"], b.states["d1"]
    assert sa.paid_cents == sb.paid_cents and sa.claims == sb.claims and sa.ratings == sb.ratings
    assert all(abs(x - y) < 1e-6 * max(1.0, abs(x)) for x, y in zip(sa.decayed, sb.decayed, strict=True))


def test_a_payment_that_arrives_before_its_arrangement_still_counts_as_kept() -> None:
    agreed = make_event("arrangement_agreed", event_id="a", at="2026-03-01T10:00:00Z")
    paid = make_event("payment_received", event_id="p", at="2026-03-02T10:00:00Z")
    before = make_event("payment_received", event_id="b", at="2026-02-27T10:00:00Z")
    kept = []
    for order in ((before, agreed, paid), (paid, before, agreed), (agreed, paid, before)):
        engine = Engine(EngineConfig(min_evidence=10**9))
        for event in order:
            engine.handle(event)
        kept.append(engine.states["d1"].decayed_value("kept"))
    # Only the payment made on or after the agreement counts, whatever the arrival order.
    assert kept[0] == pytest.approx(1.0) and kept[1] == pytest.approx(kept[0]) and kept[2] == pytest.approx(kept[0])


def test_states_written_before_the_kept_rule_still_count_kept_payments() -> None:
    engine = Engine(EngineConfig(min_evidence=10**9))
    engine.handle(make_event("arrangement_agreed", event_id="a", at="2026-03-01T10:00:00Z"))
    current = orjson.loads(engine.states["d1"].to_bytes())
    # Such states were written in format 2, which grew at the end: a prefix of today's fields.
    legacy = [2, *current[1 : 1 + [f.name for f in dataclasses.fields(DebtorState)].index("first_arrangement_ts")]]
    state = DebtorState.from_bytes(orjson.dumps(legacy))
    assert state.first_arrangement_ts is not None and state.uncounted_payments == [] and state.channel_ts is None
    engine.states["d1"] = state
    engine.handle(make_event("payment_received", event_id="p", at="2026-03-02T10:00:00Z"))
    assert engine.states["d1"].decayed_value("kept") == pytest.approx(1.0)


def test_too_late_events_are_reported_not_applied() -> None:
    engine = Engine(EngineConfig(lateness_days=7))
    engine.handle(make_event("payment_received", event_id="new", at="2026-03-20T00:00:00Z"))
    step = engine.handle(make_event("payment_received", event_id="old", at="2026-03-01T00:00:00Z"))
    assert step.outcome == "late"
    assert engine.states["d1"].paid_cents == 5_000


def test_erasure_deletes_state_and_says_unknown() -> None:
    engine = Engine(EngineConfig(min_evidence=0))
    engine.handle(make_event("contact_initiated", event_id="a"))
    engine.handle(make_event("call_rated", event_id="b", at="2026-02-02T10:00:00Z"))
    step = engine.handle(make_event("erasure_requested", event_id="erase"))
    assert step.outcome == "erased" and "d1" not in engine.states
    assert {(o.value["type"], o.value["reason"]) for o in step.outputs} == {("persona_changed", "erased"), ("quadrant_changed", "erased")}
    assert all(o.value.get("persona", o.value.get("quadrant")) == UNKNOWN for o in step.outputs)
    # Processed again after a crash, with the state gone: a no-op under ids of its own, so no
    # two different events share an id.
    again = engine.handle(make_event("erasure_requested", event_id="erase"))
    assert again.outcome == "erased" and again.state is None
    assert {o.value["previous"] for o in again.outputs} == {UNKNOWN}
    assert not {o.value["event_id"] for o in again.outputs} & {o.value["event_id"] for o in step.outputs}


def test_state_stays_under_one_kib(small_portfolio) -> None:
    engine = Engine()
    for event in _events(small_portfolio.lines):
        engine.handle(event)
    sizes = sorted(len(s.to_bytes()) for s in engine.states.values())
    assert sizes[-1] < 1024, sizes[-5:]
    for state in list(engine.states.values())[:20]:
        restored = DebtorState.from_bytes(state.to_bytes())
        assert restored.to_bytes() == state.to_bytes()
        assert (restored.persona, restored.quadrant, restored.paid_cents) == (state.persona, state.quadrant, state.paid_cents)


def test_model_snapshot_restores_the_same_predictions(small_portfolio) -> None:
    engine = Engine()
    for event in _events(small_portfolio.lines):
        engine.handle(event)
    restored = SegmentModel.restore(orjson.loads(orjson.dumps(engine.model.snapshot())))
    assert restored.version == engine.model.version > 0
    from debtor_segments.streams.features import feature_vector

    for state in engine.states.values():
        x = feature_vector(state)
        assert restored.predict_vector(x) == engine.model.predict_vector(x)


def test_a_busy_debtor_stays_under_one_kib() -> None:
    """Pathological case: a 64-character id, microsecond timestamps, a full idempotency window,
    every counter and channel in use. Bounded at 1.4 KiB; the 1 KiB goal is for real portfolios
    (test above and bench/embedded.py)."""
    engine = Engine(EngineConfig(min_evidence=0, min_quadrant_evidence=0))
    kinds = ["claim_opened", "payment_received", "arrangement_agreed", "installment_missed", "contact_attempted", "contact_responded", "contact_initiated", "call_rated"]
    channels = ["letter", "email", "sms", "call", "whatsapp", "visit"]
    for i in range(400):
        kind = kinds[i % len(kinds)]
        extra = {"channel": channels[i % 6]} if kind in ("contact_attempted", "contact_responded") else {}
        if kind == "claim_opened":
            extra = {"claim_id": f"claim-{i:06d}", "creditor_id": f"creditor-{i:06d}", "principal_cents": 123_456_789}
        day, second = divmod(i * 20_000, 86_400)
        at = f"2026-{1 + day // 28:02d}-{1 + day % 28:02d}T{second // 3600:02d}:{second % 3600 // 60:02d}:01.123456+05:30"
        engine.handle(make_event(kind, debtor_id="d" * 64, event_id=f"{i:0128d}", at=at, **extra))
    state = engine.states["d" * 64]
    assert len(state.recent) == EngineConfig().max_remembered_ids
    assert len(state.to_bytes()) < 1400, len(state.to_bytes())
    # Payments before any arrangement wait (for a late one) in the state: a bounded number.
    for i in range(100):
        engine.handle(make_event("payment_received", debtor_id="p" * 64, event_id=f"{i:0128d}", at=f"2026-03-01T10:{i // 60:02d}:{i % 60:02d}.123456+05:30"))
    assert len(engine.states["p" * 64].uncounted_payments) == 8


def _bryan_like(scale: float) -> DebtorState:
    """A Bryan after 110 days: several files, some installments paid, some contact; ``scale``
    multiplies the counts of installments and contacts behind the shares."""
    state = DebtorState.new("d1")
    state.first_ts, state.applied = 1_767_225_600.0, 30
    state.watermark = state.first_ts + 110 * 86_400
    state.claims = state.open_claims = 5
    state.creditor_bits = 0b1111
    state.outstanding_cents = state.principal_cents = 250_000
    for name, value in {"kept": 1.0, "arrangements": 1.5, "outbound": 6.0, "responded": 2.5, "inbound": 1.0}.items():
        state.decayed[DECAYED.index(name)] = value * scale
    return state


def test_first_persona_waits_until_the_features_separate_it_from_the_runner_up() -> None:
    event = make_event("contact_attempted", at="2026-04-21T10:00:00Z")
    model = SegmentModel()

    def first_persona(state: DebtorState, config: EngineConfig) -> str:
        step = process(state, event, model, config, emitted_at="2026-04-21T10:00:00Z")
        assert step.state is not None
        changes = [output for output in step.outputs if output.topic == PERSONA_CHANGES_TOPIC]
        assert len(changes) == (step.state.persona != UNKNOWN)
        return step.state.persona

    # One installment and one inbound contact: the shares rest on too little to tell Bryan from Tamara.
    assert first_persona(_bryan_like(1.0), EngineConfig()) == UNKNOWN
    assert first_persona(_bryan_like(1.0), EngineConfig(min_first_separation=0.0)) == "bryan"
    # The same kind of behaviour seen five times as often is clear enough.
    assert first_persona(_bryan_like(5.0), EngineConfig()) == "bryan"


def _personas_with_model_lag(lines: list[bytes], lag: int) -> dict[str, str]:
    """Replay with the model learning ``lag`` updates late, as workers that read the model
    writer's snapshots do."""
    engine, pending = Engine(), []
    for line in lines:
        try:
            event = decode_event(line)
        except DecodeError:
            continue
        step = advance(engine.states.get(event.debtor_id), event, engine.model, engine.config, emitted_at="t")
        engine.states[event.debtor_id] = step.state
        if step.learn is not None:
            pending.append(step.learn)
        if len(pending) > lag:
            engine.model.learn_one(pending.pop(0))
    return {debtor: state.persona for debtor, state in engine.states.items()}


def test_personas_hardly_depend_on_how_late_the_model_learns() -> None:
    """Workers use model snapshots that lag the writer: a short history (5 months, where many
    debtors await their first persona) must still get the same personas for 95% of debtors,
    as the service tests require."""
    lines = simulate(debtors=100, months=5, seed=31).lines
    prompt, lagging = _personas_with_model_lag(lines, 0), _personas_with_model_lag(lines, 100)
    assert sum(prompt[d] == lagging[d] for d in prompt) / len(prompt) >= 0.95
