"""Benchmarks of the experiments (issue 15): A/A, A/B, adaptive vs fixed, and the hot-path cost.

Outcomes are simulated directly from the reaction model (:mod:`streams.reaction`, calibrated
on the published plan comparison: 27.9% vs 42.1% collected), through the same
:class:`~streams.experiments.ExperimentBook` and arm assignment the service uses; the book
checks every simulated day.

- A/A: two identical arms; how often the sequential test (mSPRT) declares a winner, against
  a fixed-horizon z-test checked every day ("peeking") and the same test once at the end.
- A/B: plan A vs plan B (the published effect) at about 3,000 debtors per arm: how often the
  test concludes for B, and after how many days.
- Adaptive: Thompson sampling vs the fixed split on the same portfolios: collected share of
  all debtors that entered the experiment.
- Hot path: replay of a simulated portfolio with the default policy vs without (same run,
  alternating order).

Usage: ``nice .venv/bin/python -m bench.experiments [--portfolios 20] [--out bench/experiments.json]``
"""

from __future__ import annotations

import argparse
import heapq
import math
import random
import statistics
import time
from pathlib import Path
from typing import Any

import orjson

from debtor_segments.streams.experiments import ExperimentBook
from debtor_segments.streams.policy import Policy, load_policy, parse_policy
from debtor_segments.streams.reaction import draw_outcome
from debtor_segments.streams.simulation import MIXES
from debtor_segments.streams.treatments import arm_for

DAY = 86_400.0
T0 = 1_767_225_600.0  # 2026-01-01
HORIZON = 60


def _policy(mode: str, *, max_days: int, promote: bool = True) -> Policy:
    step = {"day": 0, "channel": "letter", "tone": "neutral", "message_id": "m"}
    return parse_policy(
        {
            "version": "bench",
            "plans": {"a": [step], "b": [step]},
            "segments": {"unknown": "x"},
            "experiments": {
                "x": {
                    "segment": "unknown",
                    "arms": [{"plan": "a", "weight": 1}, {"plan": "b", "weight": 1}],
                    "mode": mode,
                    "horizon_days": HORIZON,
                    "min_debtors": 200,
                    "min_days": 30,
                    "max_days": max_days,
                    "alpha": 0.05,
                    "promote_winner": promote,
                    "exploration": 0.05,
                }
            },
        }
    )


def run_portfolio(seed: int, fits: dict[str, float], *, mode: str = "fixed", per_arm: int = 3000, intake_days: int = 90, days: int = 240) -> dict[str, Any]:
    """One simulated portfolio: debtors enter over ``intake_days``; the book checks daily."""
    rng = random.Random(seed)
    policy = _policy(mode, max_days=days)
    experiment = policy.experiments["x"]
    book = ExperimentBook(policy, seed=seed)
    mix = MIXES["retailer"]
    personas, weights = list(mix), list(mix.values())
    per_day = 2 * per_arm / intake_days
    payments: list[tuple[float, str, int]] = []
    placed_total = collected_total = 0.0
    concluded: dict[str, Any] | None = None
    peek_significant_day = None
    n = 0
    for day in range(days + 1):
        now = T0 + day * DAY
        while payments and payments[0][0] <= now:
            ts, debtor, amount = heapq.heappop(payments)
            book.paid(debtor, ts, amount)
        for output in book.tick(now):
            concluded = output.value
        if peek_significant_day is None and day >= experiment.min_days:
            z = _z(book)
            if z is not None and abs(z) > 1.959964:
                peek_significant_day = day
        if day < intake_days:
            arrivals = int(per_day * (day + 1)) - int(per_day * day)
            for _ in range(arrivals):
                n += 1
                debtor = f"p{seed}-{n}"
                arm, _ = arm_for(debtor, experiment, book.allocations.get("x"))
                persona = rng.choices(personas, weights)[0]
                outcome = draw_outcome(rng, persona, fits[arm])
                book.assigned({"debtor_id": debtor, "event_id": f"t{n}", "experiment_id": "x", "arm": arm, "persona": persona, "reason": "segment_changed"}, now, outcome.principal_cents)
                placed_total += outcome.principal_cents
                if outcome.paid_cents:
                    if outcome.paid_day <= HORIZON:
                        collected_total += outcome.paid_cents
                    heapq.heappush(payments, (now + outcome.paid_day * DAY, debtor, outcome.paid_cents))
    final_z = _z(book)
    return {
        "decision": concluded["decision"] if concluded else "running",
        "winner": concluded["winner"] if concluded else None,
        "days": concluded["days"] if concluded else None,
        "peeking_significant_day": peek_significant_day,
        "fixed_horizon_significant": final_z is not None and abs(final_z) > 1.959964,
        "collected_share": collected_total / placed_total,
        "debtors": n,
    }


def _z(book: ExperimentBook) -> float | None:
    """Fixed-horizon two-sample z of the collected share (delta method), as a dashboard shows it."""
    a = book.sums.get(("x", "all", "a", HORIZON))
    b = book.sums.get(("x", "all", "b", HORIZON))
    if a is None or b is None or a.n < 30 or b.n < 30:
        return None
    variance = a.ratio_variance() + b.ratio_variance()
    return (b.ratio() - a.ratio()) / math.sqrt(variance) if variance > 0 else None


def hot_path(debtors: int = 2000, months: int = 12, rounds: int = 2) -> dict[str, Any]:
    """Replay speed (events/s) with the default policy vs without, alternating, same process."""
    from debtor_segments.agents.replay import replay_lines
    from debtor_segments.streams.engine import Engine
    from debtor_segments.streams.simulation import simulate
    from debtor_segments.streams.treatment_runner import TreatmentRunner

    policy = load_policy(Path(__file__).resolve().parents[1] / "policies" / "default.yaml")
    lines = simulate(debtors, months, seed=7).lines
    rates: dict[str, list[float]] = {"without": [], "with_policy": []}
    sent: dict[str, int] = {}
    for _ in range(rounds):
        for name in ("without", "with_policy"):
            runner = TreatmentRunner(policy) if name == "with_policy" else None
            outputs: list[object] = []
            started = time.perf_counter()
            stats = replay_lines(lines, Engine(), outputs.append, lambda _d: None, max_amount_cents=10**9, emitted_at=lambda: "x", treatments=runner)
            rates[name].append(stats.lines / (time.perf_counter() - started))
            sent[name] = len(outputs)
    best = {name: max(values) for name, values in rates.items()}
    return {"lines": len(lines), "events_per_s": best, "ratio": best["with_policy"] / best["without"], "outputs": sent, "rounds": rounds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--portfolios", type=int, default=20)
    parser.add_argument("--extra-aa", type=int, default=0, help="More A/A portfolios for a tighter false-positive estimate.")
    parser.add_argument("--per-arm", type=int, default=3000)
    parser.add_argument("--skip-hot-path", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("bench/experiments.json"))
    args = parser.parse_args()
    started = time.perf_counter()
    results: dict[str, Any] = {"per_arm": args.per_arm, "horizon_days": HORIZON, "intake_days": 90, "checked": "daily, 240 days"}

    aa = [run_portfolio(1000 + s, {"a": 0.5, "b": 0.5}, per_arm=args.per_arm) for s in range(args.portfolios + args.extra_aa)]
    first = aa[: args.portfolios]

    def aa_rates(rows: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "portfolios": len(rows),
            "sequential_winner_rate": sum(r["decision"] == "winner" for r in rows) / len(rows),
            "peeking_fixed_horizon_rate": sum(r["peeking_significant_day"] is not None for r in rows) / len(rows),
            "single_fixed_horizon_rate": sum(r["fixed_horizon_significant"] for r in rows) / len(rows),
        }

    results["aa"] = aa_rates(first)
    if args.extra_aa:
        results["aa_all"] = aa_rates(aa)
    print("A/A", results["aa"], results.get("aa_all", ""), flush=True)

    ab = [run_portfolio(2000 + s, {"a": 0.0, "b": 1.0}, per_arm=args.per_arm) for s in range(args.portfolios)]
    days = [r["days"] for r in ab if r["winner"] == "b"]
    results["ab"] = {
        "portfolios": len(ab),
        "concluded_for_b": sum(r["winner"] == "b" for r in ab) / len(ab),
        "concluded_for_a": sum(r["winner"] == "a" for r in ab) / len(ab),
        "days_median": statistics.median(days) if days else None,
        "days_range": [min(days), max(days)] if days else None,
        "collected_share": statistics.mean(r["collected_share"] for r in ab),
    }
    print("A/B", results["ab"], flush=True)

    # A smaller effect: 30% of the way from plan A to plan B (about +4 points collected).
    small = [run_portfolio(3000 + s, {"a": 0.0, "b": 0.3}, per_arm=args.per_arm) for s in range(args.portfolios)]
    small_days = [r["days"] for r in small if r["winner"] == "b"]
    results["ab_small_effect"] = {
        "fit_b": 0.3,
        "portfolios": len(small),
        "concluded_for_b": sum(r["winner"] == "b" for r in small) / len(small),
        "concluded_for_a": sum(r["winner"] == "a" for r in small) / len(small),
        "no_difference": sum(r["decision"] == "no_difference" for r in small) / len(small),
        "days_median": statistics.median(small_days) if small_days else None,
        "peeking_significant": sum(r["peeking_significant_day"] is not None for r in small) / len(small),
    }
    print("A/B small", results["ab_small_effect"], flush=True)

    adaptive = [run_portfolio(2000 + s, {"a": 0.0, "b": 1.0}, mode="adaptive", per_arm=args.per_arm) for s in range(args.portfolios)]
    results["adaptive_vs_fixed"] = {
        "fixed_collected_share": statistics.mean(r["collected_share"] for r in ab),
        "adaptive_collected_share": statistics.mean(r["collected_share"] for r in adaptive),
        "adaptive_concluded_for_b": sum(r["winner"] == "b" for r in adaptive) / len(adaptive),
        "adaptive_days_median": statistics.median([r["days"] for r in adaptive if r["winner"] == "b"] or [0]),
    }
    print("adaptive", results["adaptive_vs_fixed"], flush=True)
    if not args.skip_hot_path:
        results["hot_path"] = hot_path()
        print("hot path", results["hot_path"], flush=True)
    results["seconds"] = round(time.perf_counter() - started, 1)
    args.out.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    print(f"-> {args.out} in {results['seconds']}s")


if __name__ == "__main__":
    main()
