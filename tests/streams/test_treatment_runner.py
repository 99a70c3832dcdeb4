"""The embedded runner over a simulated portfolio: contracts, determinism, event-time order."""

from __future__ import annotations

import math
from pathlib import Path

from jsonschema import Draft202012Validator

from debtor_segments.schemas import load_schema
from debtor_segments.streams.engine import Engine
from debtor_segments.streams.events import DecodeError, decode_event
from debtor_segments.streams.policy import load_policy
from debtor_segments.streams.simulation import simulate
from debtor_segments.streams.treatment_runner import TreatmentRunner

POLICY = load_policy(Path(__file__).resolve().parents[2] / "policies" / "default.yaml")
PORTFOLIO = simulate(debtors=150, months=6, seed=11)


def _run():
    engine, runner, sent = Engine(), TreatmentRunner(POLICY), []
    for line in PORTFOLIO.lines:
        try:
            event = decode_event(line)
        except DecodeError:
            continue
        for output in runner.after(event, engine.handle(event), engine.states.get(event.debtor_id), emitted_at="fixed"):
            sent.append((event.ts, output))
    return runner, sent


def test_outputs_follow_their_contracts_and_replay_is_deterministic() -> None:
    runner, sent = _run()
    kinds = {o.value["type"] for _, o in sent}
    assert {"treatment_assigned", "contact_due"} <= kinds
    validators = {name: Draft202012Validator(load_schema(name)) for name in ("treatment_assigned", "contact_due", "experiment_concluded", "contact_decision")}
    for _, output in sent:
        errors = list(validators[output.value["type"]].iter_errors(output.value))
        assert not errors, (output.value, errors[0].message)
    _, again = _run()
    assert [o.value for _, o in sent] == [o.value for _, o in again]


def test_steps_are_sent_once_the_clock_passed_them_after_their_assignment() -> None:
    _, sent = _run()
    assigned = set()
    from datetime import datetime

    for clock, output in sent:
        value = output.value
        if value["type"] == "treatment_assigned":
            assigned.add(value["event_id"])
        elif value["type"] == "contact_due":
            assert value["cause_event_id"] in assigned
            assert datetime.fromisoformat(value["due_at"]).timestamp() <= clock
    ids = [o.value["event_id"] for _, o in sent if o.value["type"] == "contact_due"]
    assert len(ids) == len(set(ids))


def test_experiment_debtors_are_followed() -> None:
    runner, sent = _run()
    in_experiment = [o.value for _, o in sent if o.value["type"] == "treatment_assigned" and o.value["experiment_id"]]
    assert in_experiment
    report = runner.book.report()["experiments"]["strict-vs-fair"]
    assert report["segments"]["all"]["strict"]["d30"]["debtors"] + report["in_follow_up"] > 0


def test_each_partition_has_its_own_clock() -> None:
    from debtor_segments.streams.engine import Output, Step
    from debtor_segments.streams.events import Event

    runner = TreatmentRunner(POLICY)
    day = 86_400.0
    change = {"type": "quadrant_changed", "quadrant": "willing_able", "cause_event_id": "c1", "occurred_at": "2026-03-01T10:00:00Z", "reason": "behaviour"}
    t0 = 1_772_359_200.0  # 2026-03-01T10:00:00Z: inside the contact hours
    step = Step(None, (Output("debtor.quadrant-changes", "d1", change),), "processed")
    sent = runner.after(Event("c1", "d1", "call_rated", "", t0, {}), step, partition=0)
    assert [o.value["step"] for o in sent if o.value["type"] == "contact_due"] == [0]
    quiet = Step(None, (), "processed")
    # Partition 1 runs 30 days ahead: d1's steps (partition 0) do not fall due on its clock.
    assert not [o for o in runner.after(Event("x", "d2", "call_rated", "", t0 + 30 * day, {}), quiet, partition=1) if o.value.get("debtor_id") == "d1"]
    due_now = runner.after(Event("y", "d3", "call_rated", "", t0 + 8 * day, {}), quiet, partition=0)
    assert [o.value["message_id"] for o in due_now if o.value.get("debtor_id") == "d1" and o.value["type"] == "contact_due"] == ["unburden-paylink-sms", "unburden-pay-later"]


def test_idle_time_sends_the_steps_that_fall_due_meanwhile_and_only_those() -> None:
    runner, sent = _run()
    assert runner.idle(7, 86_400.0) == []  # a partition without records has no clock
    clock = runner.clock  # the replay's one partition (0): the runner's clock is its clock
    # When each debtor next needs the clock: its next plan step or its earliest held step.
    pending = [min(state.next_due_ts, state.contact.next_release()) for state in runner.states.values()]
    assert any(ts < math.inf for ts in pending), "the portfolio ends with steps still to come"
    first_due = min(pending)
    assert runner.idle(0, max(0.0, first_due - clock - 3600.0)) == []  # not due yet
    later = runner.idle(0, 30 * 86_400.0)
    due_steps = [o.value for o in later if o.value["type"] == "contact_due"]
    assert due_steps
    from datetime import datetime

    moved = runner.clock
    assert moved > clock + 29 * 86_400.0
    assert all(datetime.fromisoformat(v["due_at"]).timestamp() <= moved for v in due_steps)
    sent_before = {o.value["event_id"] for _, o in sent}
    assert not sent_before & {v["event_id"] for v in due_steps}
    again = {o.value["event_id"] for o in runner.idle(0, 1.0)}
    assert not again & {v["event_id"] for v in due_steps}  # a step goes out once


def test_finished_plans_start_again_and_keep_their_experiment_follow_up() -> None:
    from datetime import datetime

    runner, sent = _run()
    values = [o.value for _, o in sent if o.value["type"] == "treatment_assigned"]
    renewed = [v for v in values if v["reason"] == "plan_finished"]
    assert renewed, "a six-month portfolio has debtors that finish an eight-week plan and stay"
    latest: dict[str, dict] = {}
    for value in values:  # in emission order: a renewal repeats the debtor's assignment in force
        before = latest.get(value["debtor_id"])
        if value["reason"] == "plan_finished":
            assert before is not None and (value["plan_id"], value["arm"]) == (before["plan_id"], before["arm"])
        latest[value["debtor_id"]] = value
    followed = [v for v in renewed if v["experiment_id"] and v["debtor_id"] in runner.book.debtors]
    assert followed
    for value in followed:
        started = runner.book.debtors[value["debtor_id"]].assigned_ts
        assert started < datetime.fromisoformat(value["occurred_at"]).timestamp()  # the first assignment's follow-up goes on
