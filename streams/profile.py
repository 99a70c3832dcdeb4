"""What an agent in the contact centre sees about one debtor, and population views.

>>> from streams.model import SegmentModel
>>> from streams.state import DebtorState
>>> view = profile(DebtorState.new("d1"), SegmentModel())
>>> view["persona"], view["quadrant"], view["ratings"]
('unknown', 'unknown', 0)
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from streams.engine import explain
from streams.features import FEATURES, feature_vector
from streams.model import SegmentModel
from streams.report import (
    ALL_PERSONAS,
    ALL_QUADRANTS,
    distribution,
    row_shares,
    transition_matrix,
)
from streams.state import DebtorState

__all__ = ["population", "profile", "transitions"]


def _iso(ts: float) -> str | None:
    # Out of datetime's range (a state written before event times were bounded): null.
    if not ts or not math.isfinite(ts):
        return None
    try:
        return datetime.fromtimestamp(ts, UTC).isoformat()
    except (OverflowError, ValueError, OSError):
        return None


def profile(state: DebtorState, model: SegmentModel) -> dict[str, Any]:
    """The debtor's segment with the figures behind it (no raw events, no amounts per claim)."""
    x = feature_vector(state)
    new_debt, paid = state.decayed_value("new_debt"), state.decayed_value("paid")
    return {
        "debtor_id": state.debtor_id,
        "persona": state.persona,
        "quadrant": state.quadrant,
        "willingness": round(state.willingness, 4),
        "ability": round(state.ability, 4),
        "confidence": round(state.confidence, 4),
        "explanation": explain(x, model) if state.applied else {},
        "average_stars": round(state.stars_total / state.ratings, 2) if state.ratings else None,
        "ratings": state.ratings,
        "features": {
            **{name: round(value, 4) for name, value in zip(FEATURES, x, strict=True)},
            "open_claims": state.open_claims,
            "open_arrangements": state.open_arrangements,
            "outstanding_eur": round(state.outstanding_cents / 100, 2),
            "collected_share": round(state.paid_cents / state.principal_cents, 4) if state.principal_cents else None,
            "debt_trend": round((new_debt - paid) / (new_debt + paid), 4) if new_debt + paid > 0 else 0.0,
        },
        "response_rates": {channel: round(rate, 4) for channel, rate in state.response_rates().items()},
        "persona_since": _iso(state.persona_since),
        "last_update": _iso(state.watermark),
        "model_version": state.model_version,
    }


def population(states: Iterable[DebtorState]) -> dict[str, Any]:
    """Distribution of debtors by persona and by quadrant."""
    states = list(states)
    return {
        "debtors": len(states),
        "personas": distribution((s.persona for s in states), ALL_PERSONAS),
        "quadrants": distribution((s.quadrant for s in states), ALL_QUADRANTS),
    }


def transitions(states: Iterable[DebtorState], since_ts: float) -> dict[str, Any]:
    """Persona at ``since_ts`` -> persona now, counts and row shares.

    Each debtor remembers its previous persona and when the current one began, so a debtor
    that changed more than once since ``since_ts`` counts from its previous persona.
    """
    before, after = {}, {}
    for state in states:
        if state.first_ts > since_ts or not math.isfinite(state.persona_since):
            continue
        before[state.debtor_id] = state.previous_persona if state.persona_since > since_ts else state.persona
        after[state.debtor_id] = state.persona
    matrix = transition_matrix(before, after)
    return {"since": _iso(since_ts), "counts": matrix, "row_shares": row_shares(matrix)}
