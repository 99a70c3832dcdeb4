"""Tests of the population stability index in :mod:`streams.drift`."""

from __future__ import annotations

import math

import pytest

from debtor_segments.streams.drift import population_stability_index


def test_population_stability_index_identical_is_zero() -> None:
    mix = {"tamara": 120, "bryan": 80, "job": 40, "saida": 30, "hendrik-jan": 10}
    assert population_stability_index(mix, mix) == 0.0
    doubled = {persona: 2 * n for persona, n in mix.items()}
    assert population_stability_index(mix, doubled) == pytest.approx(0.0, abs=1e-12)


def test_population_stability_index_shift_is_large() -> None:
    before = {"tamara": 40, "bryan": 30, "job": 20, "saida": 10}
    after = {"tamara": 15, "bryan": 30, "job": 20, "saida": 35}
    assert population_stability_index(before, after) > 0.1


def test_population_stability_index_missing_category_is_finite() -> None:
    psi = population_stability_index({"tamara": 1}, {"tamara": 1, "job": 1})
    assert math.isfinite(psi)
    assert psi > 0.25


@pytest.mark.parametrize(
    ("expected", "actual", "epsilon"),
    [
        ({}, {"tamara": 1}, 1e-4),
        ({"tamara": 0}, {"tamara": 1}, 1e-4),
        ({"tamara": -1, "job": 2}, {"tamara": 1}, 1e-4),
        ({"tamara": math.nan}, {"tamara": 1}, 1e-4),
        ({"tamara": 1}, {"tamara": 1}, 0.0),
    ],
)
def test_population_stability_index_rejects_bad_input(expected: dict[str, float], actual: dict[str, float], epsilon: float) -> None:
    with pytest.raises(ValueError):
        population_stability_index(expected, actual, epsilon)


def test_population_stability_index_is_symmetric_in_its_terms() -> None:
    # (a - e) * ln(a / e) is the same with the sides swapped: so is their sum.
    before = {"tamara": 40, "bryan": 30, "job": 20, "saida": 10}
    after = {"tamara": 15, "bryan": 30, "job": 20, "saida": 35}
    assert population_stability_index(before, after) == pytest.approx(population_stability_index(after, before))
