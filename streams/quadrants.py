"""Willingness x ability quadrant, with a dead band so a debtor near a border does not flap.

>>> quadrant_of(0.8, 0.2, previous=UNKNOWN)
'willing_unable'
>>> quadrant_of(0.52, 0.2, previous="unwilling_unable")  # inside the band: keep the side
'unwilling_unable'
"""

from __future__ import annotations

__all__ = ["QUADRANTS", "UNKNOWN", "quadrant_of"]

UNKNOWN = "unknown"
QUADRANTS: tuple[str, ...] = ("willing_able", "willing_unable", "unwilling_able", "unwilling_unable")
_BORDER = 0.5


def quadrant_of(willingness: float, ability: float, *, previous: str, band: float = 0.04) -> str:
    """Quadrant for the two scores; within ``band`` of a border the previous side is kept."""
    was_willing = previous.startswith("willing") if previous != UNKNOWN else None
    was_able = previous.endswith("_able") if previous != UNKNOWN else None
    willing = _side(willingness, was_willing, band)
    able = _side(ability, was_able, band)
    return f"{'willing' if willing else 'unwilling'}_{'able' if able else 'unable'}"


def _side(score: float, previous: bool | None, band: float) -> bool:
    if previous is None or abs(score - _BORDER) > band:
        return score >= _BORDER
    return previous
