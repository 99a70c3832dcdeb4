"""Feed raw records through the core: the loop shared by ``replay``, ``demo`` and benchmarks."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from streams.engine import Engine, Output
from streams.events import DecodeError, decode_event
from streams.treatment_runner import TreatmentRunner

__all__ = ["ReplayStats", "dead_letter", "replay_lines"]


@dataclass(slots=True)
class ReplayStats:
    """What a replay did, by outcome."""

    lines: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    dead_letters: Counter[str] = field(default_factory=Counter)
    changes: int = 0
    treatments: int = 0  # treatment_assigned, contact_due and experiment_concluded sent


def dead_letter(reason: str, detail: str, raw: bytes, **where: Any) -> dict[str, Any]:
    """A dead-letter record (schemas/dead_letter.json): reason, detail and the raw text."""
    return {"reason": reason, "detail": detail, **where, "raw": raw.decode("utf-8", "replace")}


def replay_lines(
    lines: Iterable[bytes],
    engine: Engine,
    on_output: Callable[[Output], None],
    on_dead_letter: Callable[[dict[str, Any]], None],
    *,
    max_amount_cents: int,
    emitted_at: Callable[[], str],
    stats: ReplayStats | None = None,
    treatments: TreatmentRunner | None = None,
) -> ReplayStats:
    """Decode, process and route every line; bad and too-late lines become dead letters.

    With ``treatments`` (a policy), what the treatment step sends after each event follows
    the engine's outputs, in emission order.
    """
    stats = stats if stats is not None else ReplayStats()
    for number, raw in enumerate(lines, start=stats.lines + 1):
        stats.lines = number
        line = raw.strip()
        if not line:
            continue
        try:
            event = decode_event(line, max_amount_cents=max_amount_cents)
        except DecodeError as error:
            stats.dead_letters[error.reason] += 1
            on_dead_letter(dead_letter(error.reason, error.detail, line, line=number))
            continue
        stamp = emitted_at()
        step = engine.handle(event, emitted_at=stamp)
        stats.outcomes[step.outcome] += 1
        if step.outcome == "late":
            stats.dead_letters["too_late"] += 1
            detail = f"older than the {engine.config.lateness_days:g}-day lateness window"
            on_dead_letter(dead_letter("too_late", detail, line, line=number, event_id=event.event_id))
        for output in step.outputs:
            stats.changes += 1
            on_output(output)
        if treatments is not None:
            for output in treatments.after(event, step, engine.states.get(event.debtor_id), emitted_at=stamp):
                stats.treatments += 1
                on_output(output)
    return stats
