"""Benchmarks of the contact guard (issue 16): best time to call, channel adaptation, what the rules block, the hot-path cost.

Every portfolio of simulated debtors (:mod:`streams.contact_simulation`: true answer
probabilities per local weekday/weekend x 3-hour band, time zones with and without DST, a
favourite channel) goes through the same closed loop five times, side by side in one run:
the :class:`~streams.treatment_runner.TreatmentRunner` with a call-heavy 60-day plan sends
``contact_due``; a simulated dialer calls

- ``random``: at a uniformly random allowed local hour of the due day (the baseline),
- ``best_window``: inside the due's ``best_window`` (what the guard suggests),
- ``oracle``: in the debtor's true best band (the ceiling no learner can beat),

and the debtor's answers go back in as ``contact_attempted`` / ``contact_responded``. The fourth
run is ``best_window`` with ``contact_rules.adapt_channels`` on (``adapt_after`` 3), the fifth
``best_window`` with ``contact_rules.supersede_held`` on (adaptation off).

- Best time: for debtors with >= 10 call attempts, the share whose suggested band (the
  best_window of the due of their latest call) is their true best band among the allowed
  bands for that day type (target >= 80%); the answer rate of calls in the suggested band
  over calls at random hours (target >= 1.5x), and over the oracle's.
- Adaptation: response rate (responses / contacts) and days to the first payment (the
  module's stated payment model), adapt_channels off vs on.
- Rules: decisions per reason and verdict, steps each rule blocked, skipped steps, the
  rescheduling delay (``due_at - planned_at`` of the steps sent), calls per debtor per local
  day, and calls the dialer placed in the quiet days after a conversation (dues decided
  before that conversation).
- Supersede: the same rule and burst figures and the response rate and days to the first
  payment, ``supersede_held`` off (the ``best_window`` run) vs on.
- Hot path: replay (:func:`agents.replay.replay_lines`) of a :func:`streams.simulation.simulate`
  portfolio through the engine and a runner with ``policies/default.yaml``, with the guard
  vs without it (:class:`_UnguardedRunner`), alternating order, same process.

Usage: ``nice .venv/bin/python -m bench.contacts [--quick] [--debtors 300] [--out bench/contacts.json]`` (about 3.5 minutes
on 2 cores; ``--quick``, about 25 s, writes ``out/bench/contacts-quick.json``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from debtor_segments.streams.contact_loop import START_TS, CallRecord, ContactRun, run_contacts
from debtor_segments.streams.contact_simulation import ContactDebtor, draw_debtors
from debtor_segments.streams.engine import Output
from debtor_segments.streams.local_time import local_datetime, start_of_local_day
from debtor_segments.streams.policy import load_policy
from debtor_segments.streams.treatment_runner import TreatmentRunner
from debtor_segments.streams.treatments import TreatmentState

ROOT = Path(__file__).resolve().parents[1]
DAY = 86_400.0
PLAN_DAYS = 60
MIN_CALLS = 10
#: (name, shape, seed) of the default run; --quick takes the ones marked in QUICK.
PORTFOLIOS: tuple[tuple[str, str, int], ...] = (
    ("peaked-1", "peaked", 1),
    ("peaked-2", "peaked", 2),
    ("bimodal-3", "bimodal", 3),
    ("flat-4", "flat", 4),
    ("weekend_shift-5", "weekend_shift", 5),
    ("workers_retirees-6", "workers_retirees", 6),
    ("workers_retirees-7", "workers_retirees", 7),
    ("mixed-8", "mixed", 8),
)
QUICK = ("peaked-1", "flat-4", "mixed-8")
#: (label, dialer mode, adapt_channels, supersede_held) of the runs of every portfolio.
RUNS: tuple[tuple[str, str, bool, bool], ...] = (
    ("random", "random", False, False),
    ("best_window", "best_window", False, False),
    ("oracle", "oracle", False, False),
    ("best_window_adapt", "best_window", True, False),
    ("best_window_supersede", "best_window", False, True),
)
#: The runs whose rule and burst figures are reported.
RULE_RUNS = ("random", "best_window", "best_window_adapt", "best_window_supersede")


def best_time(run: ContactRun, debtors: Sequence[ContactDebtor]) -> dict[str, Any]:
    """Hit rate of the suggested band at each debtor's latest call (debtors with >= MIN_CALLS calls)."""
    by_id = {debtor.debtor_id: debtor for debtor in debtors}
    calls: dict[str, list[CallRecord]] = defaultdict(list)
    for call in run.calls:
        calls[call.debtor_id].append(call)
    hits: dict[str, list[bool]] = {"weekday": [], "weekend": []}
    informed: list[bool] = []
    near, ratios = [], []
    for debtor_id, own in calls.items():
        if len(own) < MIN_CALLS:
            continue
        latest = max(own, key=lambda call: call.ts)
        if latest.window is None:
            continue
        band = latest.window[0] // 3
        suggested = by_id[debtor_id].answer[(8 if latest.weekend else 0) + band]
        hits["weekend" if latest.weekend else "weekday"].append(band == latest.true_best)
        if sum(call.answered for call in own) >= 5:
            informed.append(band == latest.true_best)
        ratios.append(suggested / latest.best_probability)
        near.append(suggested >= 0.9 * latest.best_probability)
    every = hits["weekday"] + hits["weekend"]
    return {
        "debtors": len(every),
        "hit_rate": _share(every),
        "hit_rate_weekday": _share(hits["weekday"]),
        "hit_rate_weekend": _share(hits["weekend"]),
        "debtors_with_5_answers": len(informed),
        "hit_rate_with_5_answers": _share(informed),
        "near_best_rate": _share(near),
        "true_rate_ratio": statistics.mean(ratios) if ratios else None,
    }


def answer_rate(run: ContactRun) -> float:
    return sum(call.answered for call in run.calls) / len(run.calls) if run.calls else 0.0


def adaptation(run: ContactRun, debtors: Sequence[ContactDebtor]) -> dict[str, Any]:
    """Response rate and days to the first payment (censored at the plan's 60 days)."""
    contacts, responses = sum(run.contacts.values()), sum(run.responses.values())
    days = run.payment_days()
    within = sorted(day for day in days.values() if day <= PLAN_DAYS)
    restricted = statistics.mean(min(days.get(debtor.debtor_id, PLAN_DAYS), PLAN_DAYS) for debtor in debtors)
    adapted = sum(1 for due in run.dues if due.get("adapted_from"))
    first: dict[str, dict[str, Any]] = {}
    for decision in run.decisions:
        first.setdefault(decision["cause_event_id"], decision)
    to_call = [decision for decision in first.values() if decision["adapted_from"] and decision["channel"] == "call"]
    return {
        "contacts": contacts,
        "responses": responses,
        "response_rate": responses / contacts if contacts else 0.0,
        "contacts_by_channel": dict(sorted(run.contacts.items())),
        "paid_within_60_days": len(within) / len(debtors),
        "median_days_to_first_payment": statistics.median(within) if within else None,
        "restricted_mean_days_60": restricted,
        "adapted_steps": adapted,
        # A step moved to the call because the debtor last answered a call: that conversation
        # started the quiet days, so the guard holds the adapted step.
        "adapted_to_call": len(to_call),
        "adapted_to_call_held_by_quiet_days": sum(1 for decision in to_call if "after_conversation" in decision["reasons"]),
    }


def rules(run: ContactRun, debtors: Sequence[ContactDebtor]) -> dict[str, Any]:
    """What the rules did: decisions per reason, steps blocked per rule, delays, bursts."""
    decisions = run.decisions
    first_reason = Counter(decision["reason"] for decision in decisions)
    verdicts = Counter(decision["verdict"] for decision in decisions)
    blocked: dict[str, set[str]] = defaultdict(set)
    skipped: Counter[str] = Counter()
    per_step: Counter[str] = Counter()
    for decision in decisions:
        per_step[decision["cause_event_id"]] += 1
        for reason in decision["reasons"]:
            if reason not in ("within_rules", "adapted"):
                blocked[reason].add(decision["cause_event_id"])
        if decision["verdict"] == "skipped":
            skipped[decision["reason"]] += 1  # a skip's first reason is its cause
    delays = sorted((_ts(due["due_at"]) - _ts(due["planned_at"])) / 3600.0 for due in run.dues)
    moved = [delay for delay in delays if delay > 0]
    steps = len(per_step)
    sent_ids = {due["event_id"] for due in run.dues}
    return {
        "steps": steps,
        "steps_sent": len(sent_ids),
        "steps_still_held_at_end": sum(len(state.contact.held) for state in _states(run)),
        "decisions": len(decisions),
        "decisions_by_verdict": dict(verdicts.most_common()),
        "decisions_by_first_reason": dict(first_reason.most_common()),
        "steps_blocked_by_rule": {reason: len(ids) for reason, ids in sorted(blocked.items(), key=lambda item: -len(item[1]))},
        "skipped_by_reason": dict(skipped.most_common()),
        "decisions_per_step_max": max(per_step.values(), default=0),
        "steps_decided_more_than_5_times": sum(1 for count in per_step.values() if count > 5),
        "delay_hours": {
            "steps_delayed": len(moved),
            "share_delayed": len(moved) / len(delays) if delays else 0.0,
            "median": _quantile(moved, 0.5),
            "p90": _quantile(moved, 0.9),
            "max": max(moved, default=None),
        },
        **_bursts(run, debtors),
    }


def _bursts(run: ContactRun, debtors: Sequence[ContactDebtor]) -> dict[str, Any]:
    """Calls per debtor per local day, and calls placed in the quiet days after a conversation."""
    tz = {debtor.debtor_id: debtor.tz for debtor in debtors}
    per_day: Counter[tuple[str, Any]] = Counter()
    calls: dict[str, list[CallRecord]] = defaultdict(list)
    for call in run.calls:
        per_day[(call.debtor_id, local_datetime(call.ts, tz[call.debtor_id]).date())] += 1
        calls[call.debtor_id].append(call)
    # Dues of a debtor that went out at the same instant (held steps released together).
    released_with: Counter[tuple[str, float]] = Counter((call.debtor_id, call.due_ts) for call in run.calls)
    in_quiet = in_quiet_bunched = in_quiet_answered = 0
    for debtor_id, own in calls.items():
        own.sort(key=lambda call: call.ts)
        quiet_until = float("-inf")
        for call in own:
            if call.ts < quiet_until:
                in_quiet += 1
                in_quiet_bunched += released_with[(debtor_id, call.due_ts)] > 1
                in_quiet_answered += call.answered
            if call.answered:
                quiet_until = max(quiet_until, start_of_local_day(call.ts, tz[debtor_id], 7))
    days = list(per_day.values())
    return {
        "calls": len(run.calls),
        "calls_per_debtor_day_max": max(days, default=0),
        "debtor_days_with_3_or_more_calls": sum(1 for n in days if n >= 3),
        "share_of_calls_on_days_with_3_or_more": sum(n for n in days if n >= 3) / len(run.calls) if run.calls else 0.0,
        "calls_in_quiet_days_after_conversation": in_quiet,
        "of_which_due_together_with_another_call": in_quiet_bunched,
        # Each of them a response (and a chance to pay) in the simulation's payment model.
        "of_which_answered": in_quiet_answered,
        "calls_answered": sum(call.answered for call in run.calls),
        "calls_due_together_with_another_call": sum(n for n in released_with.values() if n > 1),
    }


def _states(run: ContactRun) -> list[TreatmentState]:
    return list(run.runner.states.values()) if run.runner is not None else []


def portfolio(name: str, shape: str, seed: int, debtors: int) -> dict[str, Any]:
    """The five runs of one portfolio and their figures."""
    population = draw_debtors(shape, debtors, seed)
    started = time.perf_counter()
    runs = {label: run_contacts(population, mode=mode, adapt_channels=adapt, supersede_held=supersede, seed=seed) for label, mode, adapt, supersede in RUNS}
    rates = {label: answer_rate(run) for label, run in runs.items()}
    bw = runs["best_window"]
    tz = {debtor.debtor_id: debtor.tz for debtor in population}
    in_window = sum(1 for call in bw.calls if call.window is not None and call.window[0] <= local_datetime(call.ts, tz[call.debtor_id]).hour < call.window[1])
    off, on = adaptation(bw, population), adaptation(runs["best_window_adapt"], population)
    superseding = adaptation(runs["best_window_supersede"], population)
    lift_ceiling = rates["oracle"] - rates["random"]
    result = {
        "name": name,
        "shape": shape,
        "seed": seed,
        "debtors": debtors,
        "zones": dict(Counter(debtor.timezone for debtor in population).most_common()),
        "events_in": {label: run.events for label, run in runs.items()},
        "best_time": {
            "best_window_run": best_time(bw, population),
            "random_run": best_time(runs["random"], population),
            "oracle_run": best_time(runs["oracle"], population),
            "answer_rate": rates,
            "lift": rates["best_window"] / rates["random"] if rates["random"] else None,
            "oracle_lift": rates["oracle"] / rates["random"] if rates["random"] else None,
            "share_of_oracle_gain": (rates["best_window"] - rates["random"]) / lift_ceiling if lift_ceiling > 0 else None,
            "best_window_calls_inside_window": in_window / len(bw.calls) if bw.calls else None,
        },
        "adaptation": {
            "off": off,
            "on": on,
            "response_rate_ratio": on["response_rate"] / off["response_rate"] if off["response_rate"] else None,
            "paid_within_60_days_difference": on["paid_within_60_days"] - off["paid_within_60_days"],
            "restricted_mean_days_difference": on["restricted_mean_days_60"] - off["restricted_mean_days_60"],
        },
        "supersede": {
            # "off" is the best_window run (adaptation.off); "on" the same with supersede_held.
            "on": superseding,
            "response_rate_ratio": superseding["response_rate"] / off["response_rate"] if off["response_rate"] else None,
            "paid_within_60_days_difference": superseding["paid_within_60_days"] - off["paid_within_60_days"],
            "restricted_mean_days_difference": superseding["restricted_mean_days_60"] - off["restricted_mean_days_60"],
        },
        "rules": {label: rules(runs[label], population) for label in RULE_RUNS},
        "seconds": round(time.perf_counter() - started, 1),
    }
    return result


class _UnguardedRunner(TreatmentRunner):
    """Benchmark only, for the hot-path measurement: the runner with the contact guard taken
    out (every plan step goes out as the plan has it, nothing is held). It still folds contact
    events into the contact state; never use it to send anything."""

    def _guard(self, state: TreatmentState, outputs: tuple[Output, ...] | list[Output], now_ts: float, emitted_at: str) -> list[Output]:
        return list(outputs)

    def _release(self, state: TreatmentState, now_ts: float, emitted_at: str) -> list[Output]:
        return []


def hot_path(debtors: int, months: int, rounds: int) -> dict[str, Any]:
    """Replay events/s with the guard vs without, alternating which goes first, same process."""
    from debtor_segments.agents.replay import replay_lines
    from debtor_segments.streams.engine import Engine
    from debtor_segments.streams.simulation import simulate

    policy = load_policy(ROOT / "policies" / "default.yaml")
    lines = simulate(debtors, months, seed=7).lines
    rates: dict[str, list[float]] = {"with_guard": [], "without_guard": []}
    outputs: dict[str, Counter[str]] = {}
    paired = []
    for number in range(rounds):
        order = ("with_guard", "without_guard") if number % 2 == 0 else ("without_guard", "with_guard")
        this_round = {}
        for name in order:
            runner = TreatmentRunner(policy) if name == "with_guard" else _UnguardedRunner(policy)
            sent: list[Output] = []
            started = time.perf_counter()
            stats = replay_lines(lines, Engine(), sent.append, lambda _d: None, max_amount_cents=10**9, emitted_at=lambda: "x", treatments=runner)
            this_round[name] = stats.lines / (time.perf_counter() - started)
            rates[name].append(this_round[name])
            outputs[name] = Counter(o.value["type"] for o in sent if o.value is not None)
        paired.append(this_round["with_guard"] / this_round["without_guard"])
    median = {name: statistics.median(values) for name, values in rates.items()}
    return {
        "debtors": debtors,
        "months": months,
        "lines": len(lines),
        "rounds": rounds,
        "events_per_s": rates,
        "events_per_s_median": median,
        "ratio_of_medians": median["with_guard"] / median["without_guard"],
        "paired_ratios": paired,
        "paired_ratio_median": statistics.median(paired),
        "outputs": {name: dict(sorted(counts.items())) for name, counts in outputs.items()},
    }


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Pooled figures and the worst portfolio for each."""

    def worst(path: Sequence[str], *, low: bool = True) -> dict[str, Any]:
        values = [(_get(row, path), row["name"]) for row in rows if _get(row, path) is not None]
        value, name = (min if low else max)(values)
        return {"value": value, "portfolio": name}

    pooled_hits = sum(row["best_time"]["best_window_run"]["hit_rate"] * row["best_time"]["best_window_run"]["debtors"] for row in rows)
    pooled_debtors = sum(row["best_time"]["best_window_run"]["debtors"] for row in rows)
    mean_rate = {label: statistics.mean(row["best_time"]["answer_rate"][label] for row in rows) for label, *_ in RUNS}

    def pooled(run: str, rate: str, count: str) -> float | None:
        numerator = sum((row["best_time"][run][rate] or 0.0) * row["best_time"][run][count] for row in rows)
        denominator = sum(row["best_time"][run][count] for row in rows)
        return numerator / denominator if denominator else None

    def mean(path: Sequence[str]) -> float:
        return statistics.mean(_get(row, path) for row in rows)

    return {
        "portfolios": len(rows),
        "hit_rate_pooled": pooled_hits / pooled_debtors if pooled_debtors else None,
        "hit_rate_with_5_answers_pooled": pooled("best_window_run", "hit_rate_with_5_answers", "debtors_with_5_answers"),
        "hit_rate_random_run_pooled": pooled("random_run", "hit_rate", "debtors"),
        "hit_rate_oracle_run_pooled": pooled("oracle_run", "hit_rate", "debtors"),
        "near_best_rate_pooled": pooled("best_window_run", "near_best_rate", "debtors"),
        "hit_rate_worst": worst(("best_time", "best_window_run", "hit_rate")),
        "near_best_rate_worst": worst(("best_time", "best_window_run", "near_best_rate")),
        "true_rate_ratio_worst": worst(("best_time", "best_window_run", "true_rate_ratio")),
        "answer_rate_mean": mean_rate,
        "lift_of_means": mean_rate["best_window"] / mean_rate["random"],
        # Answered over placed calls of all portfolios together.
        "lift_pooled": _pooled_rate(rows, "best_window") / _pooled_rate(rows, "random"),
        "lift_worst": worst(("best_time", "lift")),
        "lift_best": worst(("best_time", "lift"), low=False),
        "oracle_lift_of_means": mean_rate["oracle"] / mean_rate["random"],
        "share_of_oracle_gain_mean": statistics.mean(row["best_time"]["share_of_oracle_gain"] for row in rows if row["best_time"]["share_of_oracle_gain"] is not None),
        "response_rate_mean": {"off": mean(("adaptation", "off", "response_rate")), "on": mean(("adaptation", "on", "response_rate"))},
        "paid_within_60_days_mean": {"off": mean(("adaptation", "off", "paid_within_60_days")), "on": mean(("adaptation", "on", "paid_within_60_days"))},
        "restricted_mean_days_60_mean": {"off": mean(("adaptation", "off", "restricted_mean_days_60")), "on": mean(("adaptation", "on", "restricted_mean_days_60"))},
        "median_days_to_first_payment_mean": {"off": mean(("adaptation", "off", "median_days_to_first_payment")), "on": mean(("adaptation", "on", "median_days_to_first_payment"))},
        "adapted_to_call": sum(row["adaptation"]["on"]["adapted_to_call"] for row in rows),
        "adapted_to_call_held_by_quiet_days": sum(row["adaptation"]["on"]["adapted_to_call_held_by_quiet_days"] for row in rows),
        "response_rate_ratio_worst": worst(("adaptation", "response_rate_ratio")),
        "response_rate_ratio_best": worst(("adaptation", "response_rate_ratio"), low=False),
        "paid_within_60_days_difference_worst": worst(("adaptation", "paid_within_60_days_difference")),
        "restricted_mean_days_difference_worst": worst(("adaptation", "restricted_mean_days_difference"), low=False),
        "delay_p90_hours_worst": worst(("rules", "best_window", "delay_hours", "p90"), low=False),
        "delay_max_hours_worst": worst(("rules", "best_window", "delay_hours", "max"), low=False),
        "calls_per_debtor_day_max": worst(("rules", "best_window", "calls_per_debtor_day_max"), low=False),
        "steps_blocked_by_rule": _add(row["rules"]["best_window"]["steps_blocked_by_rule"] for row in rows),
        "steps_blocked_by_rule_adapt": _add(row["rules"]["best_window_adapt"]["steps_blocked_by_rule"] for row in rows),
        "decisions_by_first_reason": _add(row["rules"]["best_window"]["decisions_by_first_reason"] for row in rows),
        "decisions_by_verdict": _add(row["rules"]["best_window"]["decisions_by_verdict"] for row in rows),
        "skipped_by_reason": _add(row["rules"]["best_window"]["skipped_by_reason"] for row in rows),
        "steps": sum(row["rules"]["best_window"]["steps"] for row in rows),
        "delay_median_hours_mean": mean(("rules", "best_window", "delay_hours", "median")),
        "share_delayed_mean": mean(("rules", "best_window", "delay_hours", "share_delayed")),
        "delay_hours_adapt_worst": {
            "p90": worst(("rules", "best_window_adapt", "delay_hours", "p90"), low=False),
            "max": worst(("rules", "best_window_adapt", "delay_hours", "max"), low=False),
        },
        "decisions_per_step_max_adapt": worst(("rules", "best_window_adapt", "decisions_per_step_max"), low=False),
        "steps_still_held_at_end": {label: sum(row["rules"][label]["steps_still_held_at_end"] for row in rows) for label in RULE_RUNS},
        "share_of_calls_on_days_with_3_or_more_mean": {label: mean(("rules", label, "share_of_calls_on_days_with_3_or_more")) for label in RULE_RUNS},
        "calls": {label: sum(row["rules"][label]["calls"] for row in rows) for label in RULE_RUNS},
        "calls_in_quiet_days_after_conversation": {label: sum(row["rules"][label]["calls_in_quiet_days_after_conversation"] for row in rows) for label in RULE_RUNS},
        "calls_in_quiet_days_answered": {label: sum(row["rules"][label]["of_which_answered"] for row in rows) for label in RULE_RUNS},
        "of_which_due_together_with_another_call": {label: sum(row["rules"][label]["of_which_due_together_with_another_call"] for row in rows) for label in RULE_RUNS},
        "supersede": supersede_summary(rows),
    }


def supersede_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """``supersede_held`` off (the best_window run) and on, side by side: rule and burst
    figures, and the outcomes as in the adaptation figures."""

    def side(label: str, outcomes: Sequence[str]) -> dict[str, Any]:
        figures = [row["rules"][label] for row in rows]
        worst_day = max((figure["calls_per_debtor_day_max"], row["name"]) for figure, row in zip(figures, rows, strict=True))
        worst_p90 = max((figure["delay_hours"]["p90"] or 0.0, row["name"]) for figure, row in zip(figures, rows, strict=True))
        worst_max = max((figure["delay_hours"]["max"] or 0.0, row["name"]) for figure, row in zip(figures, rows, strict=True))
        results = [_get(row, outcomes) for row in rows]
        return {
            "calls": sum(figure["calls"] for figure in figures),
            "answer_rate_mean": statistics.mean(row["best_time"]["answer_rate"][label] for row in rows),
            "calls_per_debtor_day_max": {"value": worst_day[0], "portfolio": worst_day[1]},
            "debtor_days_with_3_or_more_calls": sum(figure["debtor_days_with_3_or_more_calls"] for figure in figures),
            "share_of_calls_on_days_with_3_or_more_mean": statistics.mean(figure["share_of_calls_on_days_with_3_or_more"] for figure in figures),
            "calls_in_quiet_days_after_conversation": sum(figure["calls_in_quiet_days_after_conversation"] for figure in figures),
            "of_which_due_together_with_another_call": sum(figure["of_which_due_together_with_another_call"] for figure in figures),
            "of_which_answered": sum(figure["of_which_answered"] for figure in figures),
            "calls_answered": sum(figure["calls_answered"] for figure in figures),
            "calls_due_together_with_another_call": sum(figure["calls_due_together_with_another_call"] for figure in figures),
            "steps_sent": sum(figure["steps_sent"] for figure in figures),
            "skipped_by_reason": _add(figure["skipped_by_reason"] for figure in figures),
            "steps_still_held_at_end": sum(figure["steps_still_held_at_end"] for figure in figures),
            "steps_blocked_by_rule": _add(figure["steps_blocked_by_rule"] for figure in figures),
            "share_delayed_mean": statistics.mean(figure["delay_hours"]["share_delayed"] for figure in figures),
            "delay_median_hours_mean": statistics.mean(figure["delay_hours"]["median"] or 0.0 for figure in figures),
            "delay_p90_hours_worst": {"value": worst_p90[0], "portfolio": worst_p90[1]},
            "delay_max_hours_worst": {"value": worst_max[0], "portfolio": worst_max[1]},
            "contacts": sum(result["contacts"] for result in results),
            "responses": sum(result["responses"] for result in results),
            "response_rate_mean": statistics.mean(result["response_rate"] for result in results),
            "paid_within_60_days_mean": statistics.mean(result["paid_within_60_days"] for result in results),
            "restricted_mean_days_60_mean": statistics.mean(result["restricted_mean_days_60"] for result in results),
            "contacts_by_channel": _add(result["contacts_by_channel"] for result in results),
        }

    def extreme(field: str, *, low: bool) -> dict[str, Any]:
        value, name = (min if low else max)((row["supersede"][field], row["name"]) for row in rows if row["supersede"][field] is not None)
        return {"value": value, "portfolio": name}

    return {
        "best_window": side("best_window", ("adaptation", "off")),
        "best_window_supersede": side("best_window_supersede", ("supersede", "on")),
        "response_rate_ratio_worst": extreme("response_rate_ratio", low=True),
        "response_rate_ratio_best": extreme("response_rate_ratio", low=False),
        "paid_within_60_days_difference_worst": extreme("paid_within_60_days_difference", low=True),
        "paid_within_60_days_difference_best": extreme("paid_within_60_days_difference", low=False),
        "restricted_mean_days_difference_worst": extreme("restricted_mean_days_difference", low=False),
        "restricted_mean_days_difference_best": extreme("restricted_mean_days_difference", low=True),
    }


def _pooled_rate(rows: list[dict[str, Any]], label: str) -> float:
    return sum(row["rules"][label]["calls_answered"] for row in rows) / sum(row["rules"][label]["calls"] for row in rows)


def _add(counters: Any) -> dict[str, int]:
    total: Counter[str] = Counter()
    for counter in counters:
        total.update(counter)
    return dict(total.most_common())


def _get(row: dict[str, Any], path: Sequence[str]) -> Any:
    value: Any = row
    for part in path:
        value = value[part]
    return value


def _share(values: Sequence[bool]) -> float | None:
    return sum(values) / len(values) if values else None


def _quantile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank quantile of sorted ``values``."""
    if not values:
        return None
    return values[min(len(values) - 1, max(0, int(q * len(values) + 0.5) - 1))]


def _ts(text: str) -> float:
    import calendar

    return float(calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ")))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="A smoke run of about 25 s: 3 portfolios of 80 debtors, a small hot path.")
    parser.add_argument("--debtors", type=int, default=None, help="Debtors per portfolio (default 300; 80 with --quick).")
    parser.add_argument("--skip-hot-path", action="store_true")
    parser.add_argument("--out", type=Path, default=None, help="Default bench/contacts.json; out/bench/contacts-quick.json with --quick (a smoke run never overwrites the figures).")
    args = parser.parse_args()
    debtors = args.debtors or (80 if args.quick else 300)
    out = args.out or (ROOT / "out" / "bench" / "contacts-quick.json" if args.quick else ROOT / "bench" / "contacts.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    chosen = [p for p in PORTFOLIOS if not args.quick or p[0] in QUICK]
    started = time.perf_counter()
    results: dict[str, Any] = {
        "plan": f"{PLAN_DAYS} days: a letter on day 0, a call every 2 days, an SMS and an e-mail every week, a WhatsApp every 2 weeks",
        "start": time.strftime("%Y-%m-%d", time.gmtime(START_TS)),
        "min_calls": MIN_CALLS,
        "portfolios": [],
    }
    for name, shape, seed in chosen:
        row = portfolio(name, shape, seed, debtors)
        results["portfolios"].append(row)
        bt, ad, su = row["best_time"], row["adaptation"], row["supersede"]
        bursts = {label: row["rules"][label]["share_of_calls_on_days_with_3_or_more"] for label in ("best_window", "best_window_supersede")}
        print(
            f"{name:20s} hit {bt['best_window_run']['hit_rate']:.3f} (near {bt['best_window_run']['near_best_rate']:.3f}, n {bt['best_window_run']['debtors']})"
            f"  answer random {bt['answer_rate']['random']:.3f} window {bt['answer_rate']['best_window']:.3f} oracle {bt['answer_rate']['oracle']:.3f}"
            f"  lift {bt['lift']:.2f}x (oracle {bt['oracle_lift']:.2f}x)  response {ad['off']['response_rate']:.3f} -> {ad['on']['response_rate']:.3f}"
            f"  paid60 {ad['off']['paid_within_60_days']:.3f} -> {ad['on']['paid_within_60_days']:.3f}"
            f"  supersede: 3+/day {bursts['best_window']:.3f} -> {bursts['best_window_supersede']:.3f}"
            f" paid60 -> {su['on']['paid_within_60_days']:.3f}  [{row['seconds']}s]",
            flush=True,
        )
    results["summary"] = summary(results["portfolios"])
    print("summary", orjson.dumps(results["summary"]).decode(), flush=True)
    if not args.skip_hot_path:
        results["hot_path"] = hot_path(*((150, 3, 2) if args.quick else (800, 6, 4)))
        hp = results["hot_path"]
        print(f"hot path {hp['events_per_s_median']} ratio {hp['ratio_of_medians']:.3f} (paired median {hp['paired_ratio_median']:.3f})", flush=True)
    results["seconds"] = round(time.perf_counter() - started, 1)
    out.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    print(f"-> {out} in {results['seconds']}s")


if __name__ == "__main__":
    main()
