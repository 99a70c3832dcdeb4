"""Outcomes, intervals, the sequential test, conclusion and Thompson sampling of the book."""

from __future__ import annotations

import random
from typing import Any

from jsonschema import Draft202012Validator

from debtor_segments.schemas import TREATMENTS_TOPIC, load_schema
from debtor_segments.streams.experiments import ExperimentBook, Sums, msprt_lambda, ratio_interval, wilson
from debtor_segments.streams.policy import parse_policy
from debtor_segments.streams.reaction import draw_outcome
from debtor_segments.streams.treatments import arm_for

T0 = 1_772_323_200.0
DAY = 86_400.0


def _policy(mode: str = "fixed", **more: Any):
    step = {"day": 0, "channel": "email", "tone": "neutral", "message_id": "m"}
    return parse_policy(
        {
            "version": "t",
            "plans": {"a": [step], "b": [step]},
            "segments": {"tamara": "x"},
            "experiments": {
                "x": {
                    "segment": "tamara",
                    "arms": [{"plan": "a", "weight": 1}, {"plan": "b", "weight": 1}],
                    "mode": mode,
                    "min_debtors": 100,
                    "min_days": 20,
                    "max_days": 200,
                    "horizon_days": 30,
                    "promote_winner": True,
                    **more,
                }
            },
        }
    )


def _run(book: ExperimentBook, fits: dict[str, float], per_day: int, days: int, seed: int) -> list[dict[str, Any]]:
    """Debtors arrive daily, pay per the reaction model; the book ticks every day."""
    rng, concluded, n = random.Random(seed), [], 0
    experiment = book.policy.experiments["x"]
    payments: list[tuple[float, str, int]] = []
    for day in range(days):
        now = T0 + day * DAY
        payments.sort()
        while payments and payments[0][0] <= now:
            ts, debtor, amount = payments.pop(0)
            book.paid(debtor, ts, amount)
        concluded += [o.value for o in book.tick(now)]
        for _ in range(per_day):
            n += 1
            debtor = f"d{seed}-{n}"
            arm, p = arm_for(debtor, experiment, book.allocations.get("x"))
            outcome = draw_outcome(rng, "tamara", fits[arm])
            book.assigned({"debtor_id": debtor, "event_id": f"t{n}", "experiment_id": "x", "arm": arm, "persona": "tamara", "reason": "segment_changed"}, now, outcome.principal_cents)
            book.contacted({"debtor_id": debtor, "experiment_id": "x", "arm": arm, "channel": "email"})
            if outcome.paid_cents:
                payments.append((now + outcome.paid_day * DAY, debtor, outcome.paid_cents))
    return concluded


def test_intervals() -> None:
    lo, hi = wilson(0, 10)
    assert lo == 0.0 and 0.2 < hi < 0.35
    sums = Sums()
    for placed, collected in ((100, 50), (200, 0), (100, 100), (300, 150)):
        sums.add(placed, collected)
    assert sums.ratio() == 300 / 700 and sums.payers == 3
    lo, hi = ratio_interval(sums)
    assert lo < sums.ratio() < hi
    assert msprt_lambda(0.0, 1e-4, 0.1) < 1.0


def test_a_clear_difference_concludes_for_the_better_arm_and_promotes_it() -> None:
    book = ExperimentBook(_policy())
    concluded = _run(book, {"a": 0.0, "b": 1.0}, per_day=40, days=150, seed=1)
    [event] = concluded
    assert event["decision"] == "winner" and event["winner"] == "b" and event["promoted"]
    assert event["days"] >= 20
    assert book.allocations["x"].winner == "b"
    report = book.report()["experiments"]["x"]
    figures = report["segments"]["tamara"]["b"]["d30"]
    assert figures["debtors"] >= 100 and figures["collected_share_ci95"][0] <= figures["collected_share"] <= figures["collected_share_ci95"][1]
    assert report["contacts"]["a"]["email"] > 0
    assert report["differences"]["b"]["difference"] > 0
    assert report["decision"]["decision"] == "winner"
    assert {"event_id", "experiment_id", "occurred_at", "policy_version", "decision", "winner", "arms"} <= event.keys()


def test_identical_arms_end_without_a_difference_at_max_days() -> None:
    book = ExperimentBook(_policy(max_days=120))
    [event] = _run(book, {"a": 0.5, "b": 0.5}, per_day=20, days=140, seed=2)
    assert event["decision"] == "no_difference" and event["winner"] is None and event["days"] == 120


def test_no_decision_before_the_minimum_volume_and_duration() -> None:
    book = ExperimentBook(_policy(min_debtors=5000))
    assert _run(book, {"a": 0.0, "b": 1.0}, per_day=20, days=100, seed=3) == []


def test_thompson_sampling_favours_the_better_arm_with_a_floor() -> None:
    book = ExperimentBook(_policy("adaptive", exploration=0.1, min_debtors=100000, max_days=1000))
    _run(book, {"a": 0.0, "b": 1.0}, per_day=30, days=90, seed=4)
    probabilities = book.allocations["x"].probabilities
    assert probabilities["b"] > 0.8 and probabilities["a"] >= 0.05 - 1e-9


def test_the_concluded_event_goes_to_the_treatments_topic() -> None:
    book = ExperimentBook(_policy())
    rng = random.Random(5)
    outputs = []
    for n in range(400):
        debtor = f"z{n}"
        arm = "a" if n % 2 else "b"
        book.assigned({"debtor_id": debtor, "event_id": f"t{n}", "experiment_id": "x", "arm": arm, "persona": "tamara", "reason": "segment_changed"}, T0, 10_000)
        if arm == "b" or rng.random() < 0.1:
            book.paid(debtor, T0 + DAY, 10_000)
    for day in range(1, 40):
        outputs += book.tick(T0 + day * DAY)
    assert [o.topic for o in outputs] == [TREATMENTS_TOPIC] and outputs[0].key == "x"
    assert not list(Draft202012Validator(load_schema("experiment_concluded")).iter_errors(outputs[0].value))
