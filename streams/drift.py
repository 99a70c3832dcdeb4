"""Drift of a categorical mix between two windows: the population stability index.

Pure arithmetic on counts per category; the shell exports the result as
``debtor_segments_model_drift_psi`` (:meth:`agents.metrics.ServiceMetrics.set_drift`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

__all__ = ["population_stability_index"]


def population_stability_index(
    expected: Mapping[str, float | int],
    actual: Mapping[str, float | int],
    epsilon: float = 1e-4,
) -> float:
    """Population stability index of `actual` against `expected`.

    ``PSI = sum((a_i - e_i) * ln(a_i / e_i))`` over the union of categories,
    where ``e_i`` and ``a_i`` are the shares of category ``i`` in each
    distribution.  Rules of thumb: below 0.1 stable, 0.1 to 0.25 moderate
    shift, above 0.25 significant shift.

    Parameters
    ----------
    expected : Mapping[str, float | int]
        Counts (or weights) per category in the reference window.
    actual : Mapping[str, float | int]
        Counts (or weights) per category in the current window.
    epsilon : float, default 1e-4
        Floor for a category's share, so that a category absent from one
        side contributes a large but finite term instead of infinity.

    Returns
    -------
    float
        Non-negative index; 0.0 for identical distributions.

    Raises
    ------
    ValueError
        If a count is negative or not finite, a side sums to zero, or
        `epsilon` is not positive.

    Examples
    --------
    >>> population_stability_index({"tamara": 50, "bryan": 50},
    ...                             {"tamara": 5, "bryan": 5})
    0.0
    >>> round(population_stability_index({"tamara": 90, "bryan": 10},
    ...                                   {"tamara": 50, "bryan": 50}), 3)
    0.879
    >>> population_stability_index({}, {"tamara": 1})
    Traceback (most recent call last):
    ...
    ValueError: expected distribution is empty
    """
    if epsilon <= 0.0:
        raise ValueError(f"epsilon must be positive, got {epsilon!r}")
    expected_shares = _shares(expected, "expected")
    actual_shares = _shares(actual, "actual")
    psi = 0.0
    for category in expected_shares.keys() | actual_shares.keys():
        e = max(expected_shares.get(category, 0.0), epsilon)
        a = max(actual_shares.get(category, 0.0), epsilon)
        psi += (a - e) * math.log(a / e)
    return psi


def _shares(counts: Mapping[str, float | int], side: str) -> dict[str, float]:
    """Each category's share of the total of `counts` (`side` names it in errors)."""
    if not all(math.isfinite(count) and count >= 0 for count in counts.values()):
        raise ValueError(f"{side} has a negative or non-finite count: {dict(counts)!r}")
    total = math.fsum(counts.values())
    if total <= 0.0:
        raise ValueError(f"{side} distribution is empty")
    return {category: count / total for category, count in counts.items()}
