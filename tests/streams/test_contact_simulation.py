"""The contact simulation does what it says: true best bands, dialers in their hours, determinism, valid events."""

from __future__ import annotations

import calendar
import math
import random
import time
from collections import Counter

import pytest
from jsonschema import Draft202012Validator

from debtor_segments.schemas import load_schema
from debtor_segments.streams.contact_loop import ContactRun, allowed_hours, contact_policy, dial_at, run_contacts
from debtor_segments.streams.contact_simulation import SHAPES, ZONES, draw_debtors, fatigue
from debtor_segments.streams.events import decode_object
from debtor_segments.streams.local_time import HourMask, local_datetime, start_of_local_day, zone

_POLICY = contact_policy()
_ALLOWED = allowed_hours(_POLICY)


def _run(mode: str, *, seed: int = 3, debtors: int = 24, shape: str = "mixed", **options: object) -> tuple[list, ContactRun]:
    population = draw_debtors(shape, debtors, seed, preference_share=0.4)
    return population, run_contacts(population, mode=mode, seed=seed, days=30, inflow_days=5, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize("shape", [*SHAPES, "mixed"])
def test_every_debtor_has_a_true_best_band_among_the_allowed_ones(shape: str) -> None:
    for debtor in draw_debtors(shape, 40, seed=5):
        assert len(debtor.answer) == 16 and all(0.0 < p < 1.0 for p in debtor.answer)
        assert zone(debtor.timezone) is not None and debtor.timezone in ZONES
        for weekend in (False, True):
            base = 8 if weekend else 0
            best = debtor.true_best_band(weekend=weekend, allowed=_ALLOWED)
            assert 2 <= best <= 6  # 08:00-21:00 touches bands 6-9 .. 18-21
            assert all(debtor.answer[base + best] >= debtor.answer[base + band] for band in range(2, 7))
        # Inconvenient hours over the best band take it out of the running.
        best = debtor.true_best_band(weekend=False, allowed=_ALLOWED)
        without = _ALLOWED.without([(best * 3, best * 3 + 3)])
        if any(without.allowed):
            assert debtor.true_best_band(weekend=False, allowed=without) != best


def test_shapes_differ_as_described() -> None:
    def contrast(shape: str) -> float:
        """Mean ratio of the best to the median allowed weekday band."""
        ratios = []
        for debtor in draw_debtors(shape, 200, seed=1):
            rates = sorted(debtor.answer[2:7])
            ratios.append(rates[-1] / rates[2])
        return sum(ratios) / len(ratios)

    assert contrast("flat") < 1.2 < 2.0 < contrast("peaked")
    weekend_shift = draw_debtors("weekend_shift", 50, seed=1)
    assert all(d.true_best_band(weekend=False, allowed=_ALLOWED) != d.true_best_band(weekend=True, allowed=_ALLOWED) for d in weekend_shift)
    kinds = Counter(d.true_best_band(weekend=False, allowed=_ALLOWED) for d in draw_debtors("workers_retirees", 300, seed=2))
    assert kinds[6] > kinds[3] > 60  # workers in the evening, retirees in the morning
    with pytest.raises(ValueError, match="unknown shape"):
        draw_debtors("spiky", 1, seed=1)


def test_debtors_are_drawn_the_same_for_the_same_seed() -> None:
    assert draw_debtors("mixed", 30, seed=9) == draw_debtors("mixed", 30, seed=9)
    assert draw_debtors("mixed", 30, seed=9) != draw_debtors("mixed", 30, seed=10)


def test_dial_at_calls_in_an_existing_local_hour_at_or_after_its_start() -> None:
    rng = random.Random(1)
    for name in ZONES:
        tz = zone(name)
        assert tz is not None
        for start in (1_772_841_600.0, 1_774_746_000.0, 1_775_347_200.0):  # around the US, EU and Sydney clock changes
            for _ in range(20):
                hours = sorted(rng.sample(range(8, 21), 3))
                ts = dial_at(start, hours, tz, rng)
                assert ts >= start and ts == math.floor(ts)
                assert local_datetime(ts, tz).hour in hours
                assert ts - start < 2 * 86_400.0
    with pytest.raises(ValueError):
        dial_at(0.0, [], zone("UTC"), rng)  # type: ignore[arg-type]


def test_best_window_dialer_calls_inside_the_window_of_each_due() -> None:
    population, run = _run("best_window")
    by_id = {d.debtor_id: d for d in population}
    dues = {due["event_id"]: due for due in run.dues}
    assert len(run.calls) > 200
    for call in run.calls:
        due = dues[call.due_id]
        window = due["best_window"]
        assert window is not None and (window["from_hour"], window["to_hour"]) == call.window
        assert window["timezone"] == by_id[call.debtor_id].timezone  # the guard knows every debtor's zone
        local = local_datetime(call.ts, by_id[call.debtor_id].tz)
        assert window["from_hour"] <= local.hour < window["to_hour"]
        assert call.ts >= call.due_ts
        assert call.band == local.hour // 3


def test_random_and_oracle_dialers_keep_to_the_allowed_hours() -> None:
    population, random_run = _run("random")
    by_id = {d.debtor_id: d for d in population}
    for call in random_run.calls:
        debtor = by_id[call.debtor_id]
        hour = local_datetime(call.ts, debtor.tz).hour
        assert 8 <= hour < 21
        if debtor.inconvenient and call.due_ts >= random_run.assigned_ts[debtor.debtor_id] + debtor.preference_day * 86_400.0 + 1:
            assert not any(a <= hour < b for a, b in debtor.inconvenient)
    hours = Counter(local_datetime(c.ts, by_id[c.debtor_id].tz).hour for c in random_run.calls)
    assert len(hours) == 13  # every allowed hour gets calls
    _, oracle = _run("oracle")
    same_day_type = [call for call in oracle.calls if (local_datetime(call.ts, by_id[call.debtor_id].tz).weekday() >= 5) == call.weekend]
    assert len(same_day_type) > 0.9 * len(oracle.calls)
    assert all(call.band == call.true_best for call in same_day_type)


def test_answers_follow_the_true_probabilities() -> None:
    _, run = _run("random", debtors=60, shape="peaked")
    expected = sum(call.probability for call in run.calls)
    spread = math.sqrt(sum(call.probability * (1 - call.probability) for call in run.calls))
    answered = sum(call.answered for call in run.calls)
    assert abs(answered - expected) < 4 * spread
    assert run.responses["call"] == answered


def test_a_run_is_deterministic_per_seed() -> None:
    _, first = _run("best_window", adapt_channels=True)
    _, again = _run("best_window", adapt_channels=True)
    assert first.calls == again.calls and first.decisions == again.decisions and first.dues == again.dues
    assert first.first_payment_ts == again.first_payment_ts
    _, other = _run("best_window", adapt_channels=True, seed=4)
    assert other.calls != first.calls


def test_events_are_valid_in_time_order_and_attempts_name_their_due() -> None:
    _, run = _run("best_window", keep_events=True)
    assert len(run.inbound) == run.events > 500
    kinds = Counter(event.type for event in run.inbound)
    assert {"contact_attempted", "contact_responded", "claim_opened", "contact_preference_set"} <= set(kinds)
    times = [event.ts for event in run.inbound]
    assert times == sorted(times)
    due_ids = {due["event_id"] for due in run.dues}
    for event in run.inbound:
        assert decode_object(dict(event.data)) == event
        if event.type == "contact_attempted":
            assert event.data["cause_event_id"] in due_ids
    assert kinds["contact_attempted"] == sum(run.contacts.values()) == len(run.dues)
    # The guard counted every call at the time it was placed (the attempt replaced its own count).
    placed = {call.due_id: call.ts for call in run.calls}
    assert run.runner is not None
    for state in run.runner.states.values():
        for ts, call_id in state.contact.calls:
            assert placed[call_id] == ts


def test_the_runner_knows_every_conversation_before_its_clock_passes_it() -> None:
    # A call the clock sends while moving is carried out at once; its answer must reach the
    # runner before the clock moves past it. (It once did not: the clock ran on to the next
    # event pending before the call, and later calls went out in the call's quiet days.)
    population, run = _run("best_window")
    tz = {d.debtor_id: d.tz for d in population}
    answers: dict[str, list[float]] = {}
    for call in run.calls:
        if call.answered:
            answers.setdefault(call.debtor_id, []).append(call.ts + 15.0)
    calls = [due for due in run.dues if due["channel"] == "call"]
    assert len(calls) > 200 and len(answers) > 10
    for due in calls:
        due_ts = float(calendar.timegm(time.strptime(due["due_at"], "%Y-%m-%dT%H:%M:%SZ")))
        for answer in answers.get(due["debtor_id"], []):
            assert not answer <= due_ts < start_of_local_day(answer, tz[due["debtor_id"]], 7), due


def test_outputs_follow_their_contracts() -> None:
    _, run = _run("best_window", adapt_channels=True)
    validators = {name: Draft202012Validator(load_schema(name)) for name in ("contact_due", "contact_decision")}
    for value in [*run.dues, *run.decisions]:
        errors = list(validators[value["type"]].iter_errors(value))
        assert not errors, (value, errors[0].message)
    reasons = Counter(reason for decision in run.decisions for reason in decision["reasons"])
    assert reasons["after_conversation"] and reasons["adapted"] and reasons["within_rules"]


def test_supersede_held_sends_a_held_backlog_of_calls_as_one() -> None:
    assert contact_policy(supersede_held=True).contact_rules.supersede_held and not _POLICY.contact_rules.supersede_held
    population, off = _run("best_window")
    _, on = _run("best_window", supersede_held=True)
    assert on.supersede_held and not off.supersede_held
    assert not any(decision["verdict"] == "skipped" for decision in off.decisions)
    skipped = [decision for decision in on.decisions if decision["verdict"] == "skipped"]
    assert skipped and {(d["reason"], d["planned_channel"]) for d in skipped} == {("superseded", "call")}
    assert not {d["cause_event_id"] for d in skipped} & {due["event_id"] for due in on.dues}
    # Fewer calls and fewer on a debtor's busiest day; calls due at the same instant are at
    # most a plan call and an SMS or e-mail step the opt-out replaced by the call (a step is
    # superseded by a later step on its plan's channel, not on the channel it went out on).
    tz = {d.debtor_id: d.tz for d in population}

    def busiest_day(run: ContactRun) -> int:
        return max(Counter((c.debtor_id, local_datetime(c.ts, tz[c.debtor_id]).date()) for c in run.calls).values())

    assert len(on.calls) < len(off.calls) and busiest_day(on) < busiest_day(off)
    released_together = Counter((c.debtor_id, c.due_ts) for c in on.calls)
    assert max(released_together.values()) <= 2


def test_the_policy_and_the_payment_model() -> None:
    steps = contact_policy().plans["calls"].steps
    assert len(steps) <= 64 and sum(step.channel == "call" for step in steps) == 30
    assert contact_policy(adapt_channels=True).contact_rules.adapt_channels
    assert allowed_hours(_POLICY, [(12, 14)]) == HourMask.between(8, 21).without([(12, 14)])
    assert [fatigue(n) for n in (1, 2, 4, 6, 9, 12, 100)] == [1.0, 0.767, 0.591, 0.457, 0.44, 0.213, 0.213]
    _, run = _run("best_window")
    days = run.payment_days()
    assert days and all(0.0 <= day for day in days.values())
    with pytest.raises(ValueError, match="dialer mode"):
        run_contacts([], mode="psychic")
