"""The five personas, described as behaviour in feature space.

A persona is tied to the behaviour it stands for (``PROTOTYPES``), never to a cluster index:
the model names each of its clusters after the prototype it resembles most, so names stay put
when clusters move.

>>> PERSONAS
('tamara', 'bryan', 'job', 'saida', 'hendrik-jan')
>>> name_clusters({0: PROTOTYPES["job"], 1: PROTOTYPES["tamara"], 2: PROTOTYPES["saida"],
...                3: PROTOTYPES["bryan"], 4: PROTOTYPES["hendrik-jan"]})
{0: 'job', 1: 'tamara', 2: 'saida', 3: 'bryan', 4: 'hendrik-jan'}
"""

from __future__ import annotations

from collections.abc import Mapping
from math import dist, inf, sqrt

from debtor_segments.streams.features import FEATURES

__all__ = ["PERSONAS", "PROTOTYPES", "UNKNOWN", "name_clusters", "separation"]

UNKNOWN = "unknown"
PERSONAS: tuple[str, ...] = ("tamara", "bryan", "job", "saida", "hendrik-jan")

_PROTOTYPE_ROWS = {
    #                tamara bryan  job   saida  hendrik-jan
    "files":            (0.80, 0.66, 0.45, 0.32, 0.28),
    "creditors":        (0.72, 0.60, 0.35, 0.32, 0.32),
    "debt":             (0.75, 0.60, 0.30, 0.25, 0.15),
    "kept_share":       (0.30, 0.60, 0.85, 0.55, 0.55),
    "proactive":        (0.10, 0.40, 0.70, 0.05, 0.10),
    "responsiveness":   (0.15, 0.40, 0.75, 0.25, 0.30),
    "stars":            (0.35, 0.55, 0.75, 0.45, 0.50),
    "assessed_ability": (0.35, 0.35, 0.65, 0.65, 0.75),
    "arrangements":     (0.65, 0.55, 0.30, 0.05, 0.02),
}  # fmt: skip
#: Behaviour each persona stands for (domain brief), as a point in feature space.
PROTOTYPES: dict[str, dict[str, float]] = {persona: {name: _PROTOTYPE_ROWS[name][i] for name in FEATURES} for i, persona in enumerate(PERSONAS)}


def _distance(a: Mapping[str, float], b: Mapping[str, float]) -> float:
    return sum((a.get(k, 0.0) - b.get(k, 0.0)) ** 2 for k in FEATURES)


def name_clusters(centers: Mapping[int, Mapping[str, float]]) -> dict[int, str]:
    """Give each cluster the persona whose prototype it resembles most.

    Several clusters may take one name (the model keeps two centres per persona); a name is
    never tied to a cluster index.
    """
    ids = sorted(centers)
    cost = {(c, p): _distance(centers[c], PROTOTYPES[p]) for c in ids for p in PERSONAS}
    return {c: min(PERSONAS, key=lambda p: cost[c, p]) for c in ids}


_PROTOTYPE_VECTORS = [tuple(PROTOTYPES[persona][name] for name in FEATURES) for persona in PERSONAS]


def separation(vector: list[float], variance: list[float]) -> float:
    """How many standard errors of ``vector`` separate its two nearest persona prototypes.

    With ``w`` the nearest prototype and ``r`` the runner-up, ``|x - r|^2 - |x - w|^2`` is
    linear in ``x``; with per-feature sampling ``variance`` its standard error is
    ``2 sqrt(sum((w - r)^2 variance))``. Only features in which the two personas differ count.
    Measured against the fixed prototypes, not the learned centres, so every worker judges a
    debtor's noise alike whichever model snapshot it holds.

    >>> x = [PROTOTYPES["job"][name] for name in FEATURES]
    >>> separation(x, [0.0] * len(FEATURES))
    inf
    >>> round(separation(x, [0.01] * len(FEATURES)), 2)
    4.07
    """
    nearest = sorted((dist(prototype, vector), prototype) for prototype in _PROTOTYPE_VECTORS)
    (d_w, w), (d_r, r) = nearest[0], nearest[1]
    spread = 2.0 * sqrt(sum((a - b) ** 2 * v for a, b, v in zip(w, r, variance, strict=True)))
    return (d_r * d_r - d_w * d_w) / spread if spread > 0.0 else inf
