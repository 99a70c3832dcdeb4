"""How far the pure-Python replay is from its goal: the step with parts switched off.

Run ``python bench/embedded_floor.py [--debtors 2000 --months 15]``. In one run it measures the
orjson parse of the lines (the ceiling), decoding alone, the full replay, and the replay with the
persona step, then also the quadrant step, replaced by no-ops. What is left in the last row is
decoding, validation, idempotency and the state update: the floor of a pure-Python event step
whatever the segmentation does. The goal of issue 2/6 is 1/20 of the parse rate.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from quality import decode_seconds, parse_seconds, replay  # bench/ is on sys.path when run as a script

from debtor_segments.streams import engine as engine_module
from debtor_segments.streams.engine import Engine
from debtor_segments.streams.simulation import simulate


@contextmanager
def switched_off(*names: str) -> Iterator[None]:
    """Replace engine-internal steps by no-ops for the duration (a measurement, not a mode)."""
    saved = {name: getattr(engine_module, name) for name in names}
    try:
        for name in names:
            setattr(engine_module, name, lambda *args: None)
        yield
    finally:
        for name, step in saved.items():
            setattr(engine_module, name, step)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--debtors", type=int, default=2000)
    parser.add_argument("--months", type=int, default=15)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)

    lines = simulate(args.debtors, args.months, args.seed).lines
    n = len(lines)
    parse_s = parse_seconds(lines)
    decode_s = decode_seconds(lines)

    rows = [("orjson parse only (ceiling)", parse_s), ("decode + JSON Schema validation only", decode_s)]
    rows.append(("full replay", replay(lines, Engine()).seconds))
    with switched_off("_update_persona"):
        rows.append(("replay without the persona step", replay(lines, Engine()).seconds))
    with switched_off("_update_persona", "_update_quadrant"):
        rows.append(("replay without the persona and quadrant steps", replay(lines, Engine()).seconds))

    print(f"{n:,} lines, {args.debtors:,} debtors, {args.months} months, seed {args.seed}; goal 1/20 = {parse_s / n * 20e6:.1f} µs per event\n")
    print("| run | µs per event | ratio to parse |")
    print("|---|---|---|")
    for label, seconds in rows:
        print(f"| {label} | {seconds / n * 1e6:.1f} | 1/{seconds / parse_s:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
