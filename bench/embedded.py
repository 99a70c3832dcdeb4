"""Embedded throughput and the cost of state, side by side with their ceilings.

Run ``python bench/embedded.py [--debtors 10000 --months 15] [--report docs/bench-embedded.md]``.
Measured in one run: orjson parse of the lines (the ceiling), decode + validation alone, the full
replay; serialized bytes per debtor; model learn/predict cost; process RSS.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

from quality import decode_seconds, parse_seconds, replay  # bench/ is on sys.path when run as a script

from debtor_segments.streams.engine import Engine
from debtor_segments.streams.features import FEATURES, feature_vector
from debtor_segments.streams.simulation import simulate


def _rate(count: int, seconds: float) -> str:
    return f"{count / seconds:,.0f}/s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--debtors", type=int, default=10_000)
    parser.add_argument("--months", type=int, default=15)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--report", type=Path)
    args = parser.parse_args(argv)

    started = time.perf_counter()
    lines = simulate(args.debtors, args.months, args.seed).lines
    simulate_s = time.perf_counter() - started

    parse_s = parse_seconds(lines)

    decode_s = decode_seconds(lines)

    run = replay(lines, Engine())
    engine, replay_s = run.engine, run.seconds
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    sizes = sorted(len(state.to_bytes()) for state in engine.states.values())
    vectors = [feature_vector(state) for state in list(engine.states.values())[:5000]]
    model = engine.model
    started = time.perf_counter()
    for vector in vectors:
        model.predict_vector(vector)
    predict_us = (time.perf_counter() - started) / len(vectors) * 1e6
    dicts = [dict(zip(FEATURES, v, strict=True)) for v in vectors]
    started = time.perf_counter()
    for x in dicts:
        model.learn_one(x)
    learn_us = (time.perf_counter() - started) / len(dicts) * 1e6
    learns_per_event = model.version / len(lines)

    n = len(lines)
    ratio = parse_s / replay_s
    report = f"""# Embedded throughput and cost of state

`python bench/embedded.py --debtors {args.debtors} --months {args.months} --seed {args.seed}`: {n:,} lines, {len(engine.states):,} debtors (simulated in {simulate_s:.0f} s).

| measure | figure | ratio to the orjson parse ceiling |
|---|---|---|
| orjson parse only (ceiling) | {_rate(n, parse_s)} | 1 |
| decode + JSON Schema validation | {_rate(n, decode_s)} | 1/{decode_s / parse_s:.0f} |
| full replay (decode, process, learn) | {_rate(n, replay_s)} | 1/{1 / ratio:.0f} (goal >= 1/20) |

| cost of state | figure | goal |
|---|---|---|
| serialized bytes per debtor: mean / p99 / max | {statistics.fmean(sizes):.0f} / {sizes[int(len(sizes) * 0.99)]} / {sizes[-1]} | <= 1024 |
| process peak RSS (the input lines and all states in memory) | {rss_mib:,.0f} MiB | |
| model predict per call | {predict_us:.1f} µs | |
| model learn per call (River KMeans.learn_one) | {learn_us:.1f} µs | |
| model learns per event (learn every 60 days per debtor) | {learns_per_event:.3f} -> {learn_us * learns_per_event:.1f} µs per event | |
"""
    print(report)
    if args.report:
        args.report.write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
