"""The treatment step: assignment, stickiness, shares, steps falling due, policy changes."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
from jsonschema import Draft202012Validator

from debtor_segments.schemas import CONTACT_DUE_TOPIC, TREATMENTS_TOPIC, load_schema
from debtor_segments.streams.policy import load_policy, parse_policy
from debtor_segments.streams.treatments import Allocation, TreatmentState, due, on_changes

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = load_policy(ROOT / "policies" / "default.yaml")
T0 = 1_772_323_200.0  # 2026-03-01T00:00:00Z
DAY = 86_400.0
VALIDATORS = {name: Draft202012Validator(load_schema(name)) for name in ("treatment_assigned", "contact_due")}


def _change(kind: str, value: str, cause: str = "e1", **more: Any) -> dict[str, Any]:
    field = "persona" if kind == "persona_changed" else "quadrant"
    return {"type": kind, field: value, "cause_event_id": cause, "occurred_at": "2026-03-01T00:00:00Z", "reason": "behaviour", **more}


def _assign(debtor: str, quadrant: str = "unwilling_able", policy=DEFAULT, **kwargs: Any):
    return on_changes(None, debtor, [_change("quadrant_changed", quadrant)], T0, policy, emitted_at="2026-12-03T00:00:00Z", **kwargs)


def test_assignment_has_the_contract_fields_and_validates() -> None:
    step = _assign("d1")
    assigned = [o.value for o in step.outputs if o.topic == TREATMENTS_TOPIC]
    [value] = assigned
    assert not list(VALIDATORS["treatment_assigned"].iter_errors(value))
    assert value["experiment_id"] == "strict-vs-fair" and value["arm"] in ("strict", "fair")
    assert value["assignment_probability"] in (0.8, 0.2)
    assert value["reason"] == "segment_changed" and value["policy_version"] == DEFAULT.version
    assert value["cause_event_id"] == "e1" and value["occurred_at"] == "2026-03-01T00:00:00Z"
    dues = [o.value for o in step.outputs if o.topic == CONTACT_DUE_TOPIC]
    assert [d["step"] for d in dues] == [0]  # day 0 is due at once
    assert not list(VALIDATORS["contact_due"].iter_errors(dues[0]))
    assert dues[0]["cause_event_id"] == value["event_id"]


def test_event_ids_are_deterministic() -> None:
    a, b = _assign("d1"), _assign("d1")
    assert [o.value["event_id"] for o in a.outputs] == [o.value["event_id"] for o in b.outputs]
    assert a.outputs[0].value["event_id"] != _assign("d2").outputs[0].value["event_id"]


def test_same_segment_keeps_plan_and_arm_without_an_event() -> None:
    first = _assign("d1")
    again = on_changes(first.state, "d1", [_change("persona_changed", "saida", cause="e2")], T0 + DAY, DEFAULT, emitted_at="x")
    assert again.outputs == () and again.state.arm == first.state.arm and again.state.assignment_id == first.state.assignment_id


def test_a_segment_change_ends_the_plan_and_assigns_the_new_one() -> None:
    first = _assign("d1")
    moved = on_changes(first.state, "d1", [_change("quadrant_changed", "willing_unable", cause="e2")], T0 + 3 * DAY, DEFAULT, emitted_at="x")
    [assigned] = [o.value for o in moved.outputs if o.topic == TREATMENTS_TOPIC]
    assert assigned["plan_id"] == "social" and assigned["experiment_id"] is None and assigned["assignment_probability"] == 1.0
    assert moved.state.assigned_ts == T0 + 3 * DAY and moved.state.next_step == 1


def test_both_changes_of_one_step_give_one_assignment() -> None:
    step = on_changes(None, "d1", [_change("persona_changed", "job"), _change("quadrant_changed", "willing_able")], T0, DEFAULT, emitted_at="x")
    assert sum(o.topic == TREATMENTS_TOPIC for o in step.outputs) == 1
    assert step.state.persona == "job" and step.state.plan_id == "unburden"


def test_erasure_deletes_the_state_and_sends_nothing() -> None:
    first = _assign("d1")
    erased = on_changes(first.state, "d1", [_change("persona_changed", "unknown", reason="erased"), _change("quadrant_changed", "unknown", reason="erased")], T0, DEFAULT, emitted_at="x")
    assert erased.state is None and erased.outputs == ()


def test_fixed_shares_stay_within_three_points_and_are_sticky() -> None:
    counts: Counter[str] = Counter()
    for n in range(2500):
        counts[_assign(f"debtor-{n}").state.arm] += 1
    assert abs(counts["fair"] / 2500 - 0.2) < 0.03 and abs(counts["strict"] / 2500 - 0.8) < 0.03
    # Back in the segment later: the same arm again (keyed hash of debtor and experiment).
    for n in range(50):
        first = _assign(f"debtor-{n}")
        away = on_changes(first.state, f"debtor-{n}", [_change("quadrant_changed", "willing_able", cause="e2")], T0 + DAY, DEFAULT, emitted_at="x")
        back = on_changes(away.state, f"debtor-{n}", [_change("quadrant_changed", "unwilling_able", cause="e3")], T0 + 2 * DAY, DEFAULT, emitted_at="x")
        assert back.state.arm == first.state.arm


def test_three_arms_and_another_salt() -> None:
    doc = _doc()
    doc["experiments"]["x"]["arms"] = [{"plan": "a", "weight": 1}, {"plan": "b", "weight": 1}, {"plan": "c", "weight": 2}]
    policy = parse_policy(doc)
    counts = Counter(_assign(f"n{n}", "willing_able", policy).state.arm for n in range(3000))
    for arm, share in (("a", 0.25), ("b", 0.25), ("c", 0.5)):
        assert abs(counts[arm] / 3000 - share) < 0.03
    doc["experiments"]["x"]["salt"] = "other"
    salted = parse_policy(doc)
    assert sum(_assign(f"n{n}", "willing_able", salted).state.arm != _assign(f"n{n}", "willing_able", policy).state.arm for n in range(200)) > 50


def test_adaptive_probabilities_are_used_and_reported() -> None:
    policy = parse_policy(_doc())
    allocation = {"x": Allocation({"a": 0.9, "b": 0.05, "c": 0.05})}
    arms = Counter()
    for n in range(2000):
        step = _assign(f"n{n}", "willing_able", policy, allocations=allocation)
        arms[step.state.arm] += 1
        assert step.outputs[0].value["assignment_probability"] == allocation["x"].probabilities[step.state.arm]
    assert abs(arms["a"] / 2000 - 0.9) < 0.03


def test_steps_fall_due_as_the_clock_passes_them() -> None:
    state = _assign("d1", "willing_able").state
    assert due(state, T0 + 1.9 * DAY, DEFAULT, emitted_at="x").outputs == ()
    sent = due(state, T0 + 8 * DAY, DEFAULT, emitted_at="x").outputs
    assert [o.value["message_id"] for o in sent] == ["unburden-paylink-sms", "unburden-pay-later"]
    assert sent[0].value["due_at"] == "2026-03-03T00:00:00Z"
    assert due(state, T0 + 8 * DAY, DEFAULT, emitted_at="x").outputs == ()  # each step once
    rest = due(state, T0 + 80 * DAY, DEFAULT, emitted_at="x").outputs
    last_day = DEFAULT.plans["unburden"].steps[-1].day
    assert len(rest) == 4 and state.next_due_ts == T0 + (last_day + DEFAULT.restart_after_days) * DAY
    assert due(state, T0 + 80 * DAY, DEFAULT, emitted_at="x").outputs == ()


def test_a_finished_plan_starts_again_after_the_rest_while_the_segment_stays() -> None:
    for quadrant, plan in (("willing_able", "unburden"), ("unwilling_able", None)):
        first = _assign("d7", quadrant)
        state = first.state
        [assigned] = [o.value for o in first.outputs if o.topic == TREATMENTS_TOPIC]
        restart_ts = T0 + (DEFAULT.plans[state.plan_id].steps[-1].day + DEFAULT.restart_after_days) * DAY
        due(state, restart_ts - 1.0, DEFAULT, emitted_at="x")
        again = due(state, restart_ts + 5 * DAY, DEFAULT, emitted_at="x").outputs
        [renewed] = [o.value for o in again if o.topic == TREATMENTS_TOPIC]
        assert not list(VALIDATORS["treatment_assigned"].iter_errors(renewed))
        assert renewed["reason"] == "plan_finished" and renewed["event_id"] != assigned["event_id"]
        assert renewed["plan_id"] == assigned["plan_id"] == (plan or assigned["arm"]) and renewed["arm"] == assigned["arm"]
        assert renewed["occurred_at"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(restart_ts))  # when due, not the clock
        steps = [o.value for o in again if o.topic == CONTACT_DUE_TOPIC]
        assert steps and {v["cause_event_id"] for v in steps} == {renewed["event_id"]} and steps[0]["step"] == 0
        # Deterministic: the same history gives the same ids.
        replayed = _assign("d7", quadrant).state
        due(replayed, restart_ts - 1.0, DEFAULT, emitted_at="y")
        assert [o.value["event_id"] for o in due(replayed, restart_ts + 5 * DAY, DEFAULT, emitted_at="y").outputs] == [v["event_id"] for v in (o.value for o in again)]
    document = _default_doc()
    del document["restart_after_days"]
    no_restart = parse_policy({**document, "version": "no-restart"})
    state = _assign("d8", "willing_able", policy=no_restart).state
    due(state, T0 + 365 * DAY, no_restart, emitted_at="x")
    assert state.next_due_ts == float("inf")


def test_channel_topics_route_each_step_to_its_channel() -> None:
    from debtor_segments.streams.engine import Output, Step
    from debtor_segments.streams.events import Event
    from debtor_segments.streams.treatment_runner import TreatmentRunner

    doc = _doc()
    doc["channel_topics"] = True
    runner = TreatmentRunner(parse_policy(doc))
    change = {"type": "quadrant_changed", "quadrant": "willing_unable", "event_id": "q1", "cause_event_id": "e1", "occurred_at": "2026-03-01T10:00:00Z"}
    sent = runner.after(Event("e1", "d1", "call_rated", "", T0 + 36_000.0, {}), Step(None, (Output("debtor.quadrant-changes", "d1", change),), "processed"))
    # The contact guard routes the step it lets go (and only that) to its channel's topic.
    assert [o.topic for o in sent] == ["debtor.treatments", "debtor.contact-decisions", "debtor.contact-due", "debtor.channel.letter"]


def test_a_reloaded_policy_moves_debtors_whose_plan_changed_keeping_their_day() -> None:
    state = _assign("d1", "willing_able").state
    due(state, T0 + 10 * DAY, DEFAULT, emitted_at="x")
    doc = _default_doc()
    doc["version"] = "v2"
    doc["segments"]["willing_able"] = "social"
    v2 = parse_policy(doc)
    sent = due(state, T0 + 11 * DAY, v2, emitted_at="x").outputs
    assert sent[0].value["reason"] == "policy_changed" and sent[0].value["plan_id"] == "social"
    assert [o.value["message_id"] for o in sent[1:]] == []  # social's steps before day 11 are skipped
    assert state.next_step == 3 and state.policy_version == "v2"
    # A new version that changes nothing for this debtor only updates the version.
    doc["version"] = "v3"
    assert due(state, T0 + 12 * DAY, parse_policy(doc), emitted_at="x").outputs == ()


def test_a_promoted_winner_takes_over_running_plans_of_the_other_arm() -> None:
    debtors = [f"d{n}" for n in range(40)]
    states = {d: _assign(d).state for d in debtors}
    loser = next(d for d, s in states.items() if s.arm == "strict")
    sent = due(states[loser], T0 + 5 * DAY, DEFAULT, {"strict-vs-fair": Allocation(winner="fair")}, emitted_at="x").outputs
    assert sent[0].value["reason"] == "winner_promoted" and sent[0].value["plan_id"] == "fair"
    assert sent[0].value["assignment_probability"] == 1.0
    new = _assign("new-debtor", allocations={"strict-vs-fair": Allocation(winner="fair")})
    assert new.state.arm == "fair"


def test_state_is_small() -> None:
    state = _assign("d1").state
    assert len(orjson.dumps(state.to_dict())) < 400
    assert TreatmentState.from_dict(json.loads(orjson.dumps(state.to_dict()))) == state


def _doc() -> dict[str, Any]:
    step = lambda m, ch="email": {"day": 0, "channel": ch, "tone": "neutral", "message_id": m}  # noqa: E731
    return {
        "version": "t",
        "plans": {"a": [step("a")], "b": [step("b")], "c": [step("c")], "s": [step("s", "letter")]},
        "segments": {"willing_able": "x", "willing_unable": "s", "unwilling_able": "s"},
        "experiments": {"x": {"segment": "willing_able", "arms": [{"plan": "a", "weight": 1}, {"plan": "b", "weight": 1}, {"plan": "c", "weight": 1}]}},
    }


def _default_doc() -> dict[str, Any]:
    import yaml

    return yaml.safe_load((ROOT / "policies" / "default.yaml").read_text())
