"""The online clustering model: k-means seeded with the persona prototypes, centres that converge.

River's :class:`~river.cluster.KMeans` starts from random centres; seeded that way on our
data it merged personas (two centres drifting into one group). Seeding each centre at a
persona prototype keeps one centre per behaviour. Clusters are named by behaviour after every
refresh (:func:`streams.personas.name_clusters`).

Each centre learns with a step that shrinks as ``1 / (prior_weight + n)`` after its ``n``-th
update (MacQueen's online k-means): the prototype counts as ``prior_weight`` debtors' features,
and the centre converges to the mean of the debtors it won. River's constant step (``halflife``)
kept every centre wandering all year, so the border between two personas kept moving under
debtors whose behaviour did not change: on the family of portfolios (``bench/quality.py
--family``) steady debtors switching in the second half went from 24% to 11% on the worst
variant, and the worst ARI from 0.48 to 0.55 (docs/benchmarks.md).

>>> model = SegmentModel()
>>> model.predict_one(PROTOTYPES["job"]).persona
'job'
>>> model.learn_one(PROTOTYPES["saida"])
>>> model.version
1
>>> SegmentModel.restore(model.snapshot()).centers() == model.centers()
True
"""

from __future__ import annotations

import collections
import random
from collections.abc import Mapping
from math import dist
from math import inf as _INF
from typing import Any, NamedTuple

from river import cluster

from debtor_segments.streams.features import FEATURES
from debtor_segments.streams.personas import PERSONAS, PROTOTYPES, name_clusters

__all__ = ["SNAPSHOT_FORMAT", "Assignment", "SegmentModel"]

SNAPSHOT_FORMAT = 2
#: Format 1 learned with River's constant step ``halflife``: read as ``prior_weight = 1 / halflife``
#: with no updates counted, which continues with the step it had.
_READABLE_FORMATS = (1, 2)
_PERSONA_INDEX = {persona: i for i, persona in enumerate(PERSONAS)}


class Assignment(NamedTuple):
    """The model's answer for one feature vector.

    ``confidence`` is the share of inverse squared distance that the nearest centre holds;
    ``margin`` is how much farther (relatively) the nearest centre of the compared persona is.
    """

    persona: str
    confidence: float
    margin: float


class SegmentModel:
    """Persona clustering that learns one feature vector at a time.

    Parameters
    ----------
    prior_weight
        How many debtors' features a prototype counts as: a centre's ``n``-th update moves it
        ``1 / (prior_weight + n)`` of the way towards the learned vector.
    rename_every
        Re-derive cluster names after this many updates.
    per_persona
        Centres seeded per persona.
    """

    def __init__(self, prior_weight: float = 50.0, rename_every: int = 200, per_persona: int = 2) -> None:
        if prior_weight <= 0:
            raise ValueError(f"prior_weight must be positive, got {prior_weight!r}")
        self.prior_weight = prior_weight
        self.rename_every = rename_every
        self.per_persona = per_persona
        self.version = 0
        n_clusters = len(PERSONAS) * per_persona
        # River holds the centres and finds the nearest one; the step is ours (see above).
        self._kmeans = cluster.KMeans(n_clusters=n_clusters, seed=0)
        self._updates = [0] * n_clusters
        # Extra centres per persona start near its prototype: the big personas need several
        # centres, or the small personas' centres get dragged into their mass.
        rng = random.Random(0)
        for i in range(n_clusters):
            jitter = 0.0 if i < len(PERSONAS) else 0.05
            prototype = PROTOTYPES[PERSONAS[i % len(PERSONAS)]]
            self._kmeans.centers[i] = collections.defaultdict(float, {k: v + rng.uniform(-jitter, jitter) for k, v in prototype.items()})
        self._names = name_clusters(self._kmeans.centers)
        self._refresh()

    def _refresh(self) -> None:
        ids = sorted(self._kmeans.centers)
        self._vectors = [(self._names[cid], self._vector(cid)) for cid in ids]
        # Centres grouped by persona, in PERSONAS order (a persona may have none after
        # renaming: it is then infinitely far); ``_slots`` finds a centre's place in both.
        self._by_persona: list[list[tuple[float, ...]]] = [[] for _ in PERSONAS]
        self._slots: dict[int, tuple[int, int, int]] = {}
        for position, cid in enumerate(ids):
            group = self._by_persona[_PERSONA_INDEX[self._names[cid]]]
            self._slots[cid] = (position, _PERSONA_INDEX[self._names[cid]], len(group))
            group.append(tuple(self._vectors[position][1]))

    def _vector(self, cid: int) -> list[float]:
        center = self._kmeans.centers[cid]
        return [center[name] for name in FEATURES]

    def learn_one(self, x: Mapping[str, float]) -> None:
        """Move the nearest centre towards ``x``, by less the more it has learned."""
        moved = self._kmeans.predict_one(x)
        self._updates[moved] += 1
        step = 1.0 / (self.prior_weight + self._updates[moved])
        center = self._kmeans.centers[moved]
        for name in FEATURES:
            center[name] += step * (x[name] - center[name])
        self.version += 1
        if self.version % self.rename_every == 0:
            self._names = name_clusters(self._kmeans.centers)
            self._refresh()
            return
        # Only the moved centre changed: update it alone (a full refresh cost ~10 µs).
        position, group, slot = self._slots[moved]
        vector = self._vector(moved)
        self._vectors[position] = (self._names[moved], vector)
        self._by_persona[group][slot] = tuple(vector)

    def predict_one(self, x: Mapping[str, float], current: str = "") -> Assignment:
        """Persona whose nearest centre is nearest to ``x``; see :meth:`predict_vector`."""
        return self.predict_vector([x[name] for name in FEATURES], current)

    def predict_vector(self, vector: list[float], current: str = "") -> Assignment:
        """Like :meth:`predict_one` for a vector in ``FEATURES`` order (the hot path).

        ``margin`` compares the winner with ``current`` (the debtor's persona) when given,
        else with the runner-up persona.
        """
        squared = []
        for centers in self._by_persona:
            nearest = _INF
            for center in centers:
                d = dist(center, vector)
                if d < nearest:
                    nearest = d
            squared.append(nearest * nearest)
        best = min(squared)
        winner = squared.index(best)
        current_index = _PERSONA_INDEX.get(current, winner)
        if current_index != winner:
            other = squared[current_index]
        else:
            squared[winner] = _INF
            other = min(squared)
            squared[winner] = best
        inverse = 0.0
        for d in squared:
            inverse += 1.0 / (d + 1e-9)
        return Assignment(PERSONAS[winner], 1.0 / (best + 1e-9) / inverse, (other - best) / (other + 1e-9))

    def centers(self) -> list[tuple[str, dict[str, float]]]:
        """Every cluster centre with the persona it is named after."""
        return [(persona, dict(zip(FEATURES, center, strict=True))) for persona, center in self._vectors]

    def snapshot(self) -> dict[str, Any]:
        """A versioned, JSON-serialisable snapshot, so a restart does not start cold."""
        return {
            "format": SNAPSHOT_FORMAT,
            "version": self.version,
            "prior_weight": self.prior_weight,
            "updates": list(self._updates),
            "rename_every": self.rename_every,
            "per_persona": self.per_persona,
            "features": list(FEATURES),
            "personas": [name for _, name in sorted(self._names.items())],
            "centers": [{name: center[name] for name in FEATURES} for _, center in sorted(self._kmeans.centers.items())],
        }

    @classmethod
    def restore(cls, snapshot: Mapping[str, Any]) -> SegmentModel:
        """Rebuild a model from :meth:`snapshot`; refuses snapshots it cannot read."""
        snapshot_format = snapshot.get("format")
        if snapshot_format not in _READABLE_FORMATS:
            raise ValueError(f"unsupported model snapshot format {snapshot_format!r}")
        if list(snapshot["features"]) != list(FEATURES):
            raise ValueError("model snapshot was trained on other features")
        prior_weight = snapshot["prior_weight"] if snapshot_format == 2 else 1.0 / snapshot["halflife"]
        model = cls(prior_weight, snapshot["rename_every"], snapshot["per_persona"])
        if snapshot_format == 2:
            if len(snapshot["updates"]) != len(model._updates):
                raise ValueError("model snapshot has another number of centres than of update counts")
            model._updates = [int(n) for n in snapshot["updates"]]
        for i, center in enumerate(snapshot["centers"]):
            model._kmeans.centers[i] = collections.defaultdict(float, center)
        model._names = dict(enumerate(snapshot["personas"]))
        model.version = snapshot["version"]
        model._refresh()
        return model
