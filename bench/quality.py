"""Quality and speed of the embedded engine on a simulated portfolio, against its truth.

Run ``python bench/quality.py [--debtors 3000 --months 12 --seed 7] [--report docs/benchmarks.md]``.
Prints a markdown report; exits 1 when a target of the quality bar is missed (the report says
which). Everything is measured in one run, so speed is also given as a ratio to merely parsing
the same lines with orjson (these machines are noisy; ratios travel better than rates).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import orjson
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score
from sklearn.preprocessing import StandardScaler

from streams.engine import Engine, EngineConfig
from streams.events import DecodeError, Event, decode_event
from streams.model import SegmentModel
from streams.personas import PERSONAS, UNKNOWN
from streams.simulation import Portfolio, simulate

#: name -> (target, higher is better)
TARGETS: dict[str, tuple[float, bool]] = {
    "ari": (0.60, True),
    "known": (0.95, True),
    "named": (0.80, True),
    "quadrant": (0.85, True),
    "stable_switch": (0.03, False),
    "worsened_caught": (0.90, True),
    "share_gap": (0.05, False),
    "ari_ratio": (1.5, True),
    "speed_ratio": (1 / 20, True),
}
LABELS = {
    "ari": "adjusted Rand index vs simulated personas (known debtors)",
    "known": "debtors with a known persona at the end",
    "named": "named persona equals the simulated persona",
    "quadrant": "quadrant equals the simulated quadrant (all debtors)",
    "stable_switch": "steady debtors that switch persona in the second half",
    "worsened_caught": "worsened debtors with a change to tamara/bryan after it",
    "share_gap": "largest persona share gap (fraction)",
    "ari_ratio": "online ARI / offline batch k-means ARI",
    "speed_ratio": "replay rate / orjson parse rate",
}


@dataclass
class Run:
    """One replay of the portfolio through an engine."""

    engine: Engine
    changes: list[dict]
    seconds: float


def decode_all(lines: list[bytes]) -> list[Event]:
    events = []
    for line in lines:
        try:
            events.append(decode_event(line))
        except DecodeError:
            pass
    return events


def replay(lines: list[bytes], engine: Engine) -> Run:
    """Decode and process every line, as ``debtor-segments replay`` does."""
    changes: list[dict] = []
    started = time.perf_counter()
    for line in lines:
        try:
            event = decode_event(line)
        except DecodeError:
            continue
        for output in engine.handle(event).outputs:
            changes.append(output.value)
    return Run(engine, changes, time.perf_counter() - started)


def parse_seconds(lines: list[bytes]) -> float:
    started = time.perf_counter()
    for line in lines:
        try:
            orjson.loads(line)
        except orjson.JSONDecodeError:
            pass
    return time.perf_counter() - started


def decode_seconds(lines: list[bytes]) -> float:
    """Time to decode and validate every line, as the replay does before processing."""
    started = time.perf_counter()
    for line in lines:
        try:
            decode_event(line)
        except DecodeError:
            pass
    return time.perf_counter() - started


def score(portfolio: Portfolio, run: Run) -> dict[str, float]:
    """The quality bar's figures for one run."""
    truth, states = portfolio.truth, run.engine.states
    half = portfolio.start_ts + (portfolio.end_ts - portfolio.start_ts) / 2
    known = [d for d in truth if d in states and states[d].persona != UNKNOWN]
    y_true = [truth[d].persona for d in known]
    y_pred = [states[d].persona for d in known]
    switched, caught = set(), set()
    for change in run.changes:
        if change["type"] != "persona_changed":
            continue
        debtor, ts = change["debtor_id"], datetime.fromisoformat(change["occurred_at"]).timestamp()
        if change["previous"] != UNKNOWN and ts >= half:
            switched.add(debtor)
        if truth[debtor].change == "worsened" and ts >= truth[debtor].change_ts and change["persona"] in ("tamara", "bryan"):
            caught.add(debtor)
    steady = {d for d in truth if truth[d].change == "none"}
    worsened = {d for d in truth if truth[d].change == "worsened"}
    true_share = Counter(t.persona for t in truth.values())
    named_share = Counter(y_pred)
    return {
        "ari": adjusted_rand_score(y_true, y_pred),
        "known": len(known) / len(truth),
        "named": sum(a == b for a, b in zip(y_true, y_pred, strict=True)) / max(1, len(known)),
        "quadrant": sum(d in states and states[d].quadrant == truth[d].quadrant for d in truth) / len(truth),
        "stable_switch": len(switched & steady) / max(1, len(steady)),
        "worsened_caught": len(caught & worsened) / max(1, len(worsened)),
        "share_gap": max(abs(true_share[p] / len(truth) - named_share[p] / max(1, len(known))) for p in PERSONAS),
    }


def offline_anchor(portfolio: Portfolio, events: list[Event], seed: int) -> float:
    """Batch k-means (k=5) on per-debtor aggregates of the same events, as the published study:
    files, arrangements, distinct creditors, outstanding principal (standardised)."""
    rows: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0, 0.0])
    creditors: dict[str, set[str]] = defaultdict(set)
    seen: set[str] = set()
    for event in events:
        if event.event_id in seen:
            continue
        seen.add(event.event_id)
        row = rows[event.debtor_id]
        if event.type == "claim_opened":
            row[0] += 1
            row[3] += event.data["principal_cents"]
            creditors[event.debtor_id].add(event.data["creditor_id"])
        elif event.type == "arrangement_agreed":
            row[1] += 1
        elif event.type == "payment_received":
            row[3] -= event.data["amount_cents"]
    ids = sorted(rows)
    x = np.array([[rows[d][0], rows[d][1], len(creditors[d]), max(0.0, rows[d][3])] for d in ids])
    labels = KMeans(n_clusters=5, n_init=10, random_state=seed).fit_predict(StandardScaler().fit_transform(x))
    return float(adjusted_rand_score([portfolio.truth[d].persona for d in ids], labels))


class _FrozenModel(SegmentModel):
    """Ablation: the prototypes alone, never learning."""

    def learn_one(self, x: dict[str, float]) -> None:
        pass


def _confusion(portfolio: Portfolio, engine: Engine) -> str:
    counts = Counter((portfolio.truth[d].persona, s.persona) for d, s in engine.states.items())
    columns = [*PERSONAS, UNKNOWN]
    lines = ["| simulated \\ named | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    lines += [f"| {t} | " + " | ".join(str(counts[t, p]) for p in columns) + " |" for t in PERSONAS]
    return "\n".join(lines)


def _fmt(value: float) -> str:
    return f"{value:.3f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--debtors", type=int, default=3000)
    parser.add_argument("--months", type=int, default=12)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--mix", default="retailer")
    parser.add_argument("--report", type=Path, help="also write the markdown report here")
    parser.add_argument("--no-ablations", action="store_true", help="skip the ablation runs (faster)")
    args = parser.parse_args(argv)

    portfolio = simulate(args.debtors, args.months, args.seed, mix=args.mix)
    lines = portfolio.lines
    parse_s = parse_seconds(lines)
    main_run = replay(lines, Engine())
    parse_s = min(parse_s, parse_seconds(lines))  # best of two: parsing is the ceiling
    figures = score(portfolio, main_run)
    events = decode_all(lines)
    figures["offline_ari"] = offline_anchor(portfolio, events, args.seed)
    figures["ari_ratio"] = figures["ari"] / figures["offline_ari"] if figures["offline_ari"] > 0 else float("inf")
    figures["replay_eps"] = len(lines) / main_run.seconds
    figures["parse_eps"] = len(lines) / parse_s
    figures["speed_ratio"] = figures["replay_eps"] / figures["parse_eps"]

    out = [
        "# Quality and speed benchmark\n",
        f"`python bench/quality.py --debtors {args.debtors} --months {args.months} --seed {args.seed} --mix {args.mix}`: "
        f"{len(lines):,} lines ({portfolio.injected['late']:,} delivered late, {portfolio.injected['duplicates']:,} re-sent, "
        f"{portfolio.injected['bad']:,} broken), {args.debtors:,} debtors.\n",
        "| figure | measured | target | met |",
        "|---|---|---|---|",
    ]
    missed = []
    for name, (target, higher) in TARGETS.items():
        value = figures[name]
        met = value >= target if higher else value <= target
        if not met:
            missed.append(name)
        out.append(f"| {LABELS[name]} | {_fmt(value)} | {'>=' if higher else '<='} {_fmt(target)} | {'yes' if met else '**no**'} |")
    out.append(f"\nOffline anchor ARI {_fmt(figures['offline_ari'])}. Replay {figures['replay_eps']:,.0f} events/s; "
               f"orjson parse alone {figures['parse_eps']:,.0f} lines/s (same run).\n")
    out.append("## Simulated vs named persona at the end\n")
    out.append(_confusion(portfolio, main_run.engine))
    if not args.no_ablations:
        out.append("\n## Ablations (same portfolio)\n")
        out.append("| variant | ARI | named | steady switch | worsened caught | replay events/s |")
        out.append("|---|---|---|---|---|---|")
        variants: dict[str, Callable[[], Engine]] = {
            "default (learn every 60 days per debtor)": Engine,
            "learn on every event": lambda: Engine(EngineConfig(learn_interval_days=0.0)),
            "no learning (prototypes only)": lambda: Engine(model=_FrozenModel()),
            "one centre per persona": lambda: Engine(model=SegmentModel(per_persona=1)),
        }
        for label, factory in variants.items():
            run = main_run if factory is Engine else replay(lines, factory())
            f = score(portfolio, run)
            out.append(f"| {label} | {_fmt(f['ari'])} | {_fmt(f['named'])} | {_fmt(f['stable_switch'])} | {_fmt(f['worsened_caught'])} | {len(lines) / run.seconds:,.0f} |")
    if missed:
        out.append(f"\nMissed: {', '.join(missed)}.")
    report = "\n".join(out) + "\n"
    print(report)
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(report)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
