"""Persona prototypes and the noise gate on a debtor's first persona."""

from __future__ import annotations

from debtor_segments.streams.features import FEATURES
from debtor_segments.streams.personas import PROTOTYPES, separation


def _between(a: str, b: str, share_of_a: float) -> list[float]:
    return [share_of_a * PROTOTYPES[a][k] + (1 - share_of_a) * PROTOTYPES[b][k] for k in FEATURES]


def test_separation_counts_noise_only_where_the_two_personas_differ() -> None:
    x = _between("bryan", "tamara", 2 / 3)
    exact = separation(x, [0.0] * len(FEATURES))
    noisy = separation(x, [0.05] * len(FEATURES))
    assert exact == float("inf") and 0.0 < noisy < separation(x, [0.01] * len(FEATURES))
    # Noise in a feature in which bryan and tamara agree (assessed ability) does not count.
    shared = [0.0] * len(FEATURES)
    shared[FEATURES.index("assessed_ability")] = 0.05
    assert separation(x, shared) == float("inf")


def test_separation_shrinks_towards_the_border_between_two_personas() -> None:
    variance = [0.01] * len(FEATURES)
    assert separation(_between("job", "saida", 0.9), variance) > separation(_between("job", "saida", 0.6), variance) > 0.0
