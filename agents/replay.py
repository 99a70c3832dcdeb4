"""Feed raw records through the core: the loop shared by ``replay``, ``demo`` and benchmarks."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from streams.engine import REJECTED_OUTCOMES, Engine, Output
from streams.events import DEFAULT_LIMITS, DecodeError, Limits, decode_event
from streams.treatment_runner import TreatmentRunner

__all__ = ["DEAD_LETTER_DETAIL_MAX", "DEAD_LETTER_RAW_MAX", "ReplayStats", "dead_letter", "replay_lines"]


@dataclass(slots=True)
class ReplayStats:
    """What a replay did, by outcome."""

    lines: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    dead_letters: Counter[str] = field(default_factory=Counter)
    changes: int = 0
    treatments: int = 0  # treatment_assigned, contact_due and experiment_concluded sent


#: Raw bytes a dead letter keeps at most: with JSON escaping (at most 6 bytes a byte) the record
#: stays far below the producer's 1,000,000-byte request limit (issue 14, item 1).
DEAD_LETTER_RAW_MAX = 64 * 1024
#: Characters of ``detail`` kept at most (a decoder message may quote the input).
DEAD_LETTER_DETAIL_MAX = 1000


def dead_letter(reason: str, detail: str, raw: bytes, *, raw_max: int = DEAD_LETTER_RAW_MAX, **where: Any) -> dict[str, Any]:
    """A dead-letter record (schemas/dead_letter.json): reason, detail and the raw text.

    A raw value longer than ``raw_max`` bytes is cut to that length; the record then says so
    (``raw_truncated``) and keeps the original's size (``raw_bytes``) and SHA-256
    (``raw_sha256``), so the dead letter always fits the producer's size limit and the
    original can still be identified.

    >>> letter = dead_letter("invalid_json", "x" * 5000, b"0123456789", raw_max=4)
    >>> letter["raw"], letter["raw_truncated"], letter["raw_bytes"], len(letter["detail"])
    ('0123', True, 10, 1000)
    >>> "raw_truncated" in dead_letter("invalid_json", "bad", b"{")
    False
    """
    letter = {"reason": reason, "detail": detail[:DEAD_LETTER_DETAIL_MAX], **where}
    if len(raw) > raw_max:
        letter.update(raw=raw[:raw_max].decode("utf-8", "replace"), raw_truncated=True, raw_bytes=len(raw), raw_sha256=hashlib.sha256(raw).hexdigest())
    else:
        letter["raw"] = raw.decode("utf-8", "replace")
    return letter


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
    """Decode, process and route every line; bad and too-late lines become dead letters.

    ``now`` is the clock implausibly future events are judged by (none: only the fixed bounds).
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
            event = decode_event(line, max_amount_cents=max_amount_cents, limits=limits, now=None if now is None else now())
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
        elif step.outcome in REJECTED_OUTCOMES:
            reason, detail = REJECTED_OUTCOMES[step.outcome]
            stats.dead_letters[reason] += 1
            on_dead_letter(dead_letter(reason, detail, line, line=number, event_id=event.event_id))
        for output in step.outputs:
            stats.changes += 1
            on_output(output)
        if treatments is not None:
            for output in treatments.after(event, step, engine.states.get(event.debtor_id), emitted_at=stamp):
                stats.treatments += 1
                on_output(output)
    return stats
