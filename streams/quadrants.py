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
    sides = _SIDES.get(previous)
    if sides is None or abs(willingness - _BORDER) > band:
        willing = willingness >= _BORDER
    else:
        willing = sides[0]
    if sides is None or abs(ability - _BORDER) > band:
        able = ability >= _BORDER
    else:
        able = sides[1]
    return _QUADRANT_OF[willing, able]


# (willing, able) of each quadrant, and back: the engine asks for every event.
_SIDES = {
    "willing_able": (True, True),
    "willing_unable": (True, False),
    "unwilling_able": (False, True),
    "unwilling_unable": (False, False),
}
_QUADRANT_OF = {sides: name for name, sides in _SIDES.items()}
