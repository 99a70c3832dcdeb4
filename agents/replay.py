"""Feed raw records through the core: the loop shared by ``replay``, ``demo`` and benchmarks."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from debtor_segments.streams.engine import Engine, Output, Step
from debtor_segments.streams.events import DEFAULT_LIMITS, Event, Limits
from debtor_segments.streams.pipeline import run_record
from debtor_segments.streams.treatment_runner import TreatmentRunner

__all__ = ["ReplayStats", "replay_lines"]


@dataclass(slots=True)
class ReplayStats:
    """What a replay did, by outcome."""

    lines: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    dead_letters: Counter[str] = field(default_factory=Counter)
    changes: int = 0
    treatments: int = 0  # treatment_assigned, contact_due and experiment_concluded sent


def replay_lines(
    lines: Iterable[bytes],
    engine: Engine,
    on_output: Callable[[Output], None],
    on_dead_letter: Callable[[dict[str, Any]], None],
    *,
    max_amount_cents: int,
    emitted_at: Callable[[], str],
    stats: ReplayStats | None = None,
    limits: Limits = DEFAULT_LIMITS,
    now: Callable[[], float] | None = None,
    treatments: TreatmentRunner | None = None,
) -> ReplayStats:
    """Run every line through the record pipeline (:func:`streams.pipeline.run_record`) and
    route what comes out; bad and too-late lines become dead letters.

    ``now`` is the clock implausibly future events are judged by (none: only the fixed bounds).
    With ``treatments`` (a policy), what the treatment step sends after each event follows
    the engine's outputs, in emission order. An exception of the engine is raised, not
    dead-lettered: :class:`streams.engine.Engine` advances its states in place.
    """
    stats = stats if stats is not None else ReplayStats()
    stamp = ""

    def step(event: Event) -> Step:
        nonlocal stamp
        stamp = emitted_at()  # read once per decoded event: the outputs' and treatments' emitted_at
        return engine.handle(event, emitted_at=stamp)

    for number, raw in enumerate(lines, start=stats.lines + 1):
        stats.lines = number
        line = raw.strip()
        if not line:
            continue
        verdict = run_record(
            line,
            step,
            engine.config,
            where={"line": number},
            event_fields=("event_id",),
            max_amount_cents=max_amount_cents,
            limits=limits,
            now=None if now is None else now(),
            contain_errors=False,
        )
        if verdict.letter is not None:
            stats.dead_letters[verdict.reason] += 1
            on_dead_letter(verdict.letter)
        event, result = verdict.event, verdict.step
        if event is None or result is None:  # it did not decode
            continue
        stats.outcomes[result.outcome] += 1
        for output in result.outputs:
            stats.changes += 1
            on_output(output)
        if treatments is not None:
            for output in treatments.after(event, result, engine.states.get(event.debtor_id), emitted_at=stamp):
                stats.treatments += 1
                on_output(output)
    return stats
