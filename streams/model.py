"""The online clustering model: River k-means seeded with the persona prototypes.

River's :class:`~river.cluster.KMeans` starts from random centres; seeded that way on our
data it merged personas (two centres drifting into one group). Seeding each centre at a
persona prototype and learning with a small step keeps one centre per behaviour and lets the
centres follow the real population. Clusters are named by behaviour after every refresh
(:func:`streams.personas.name_clusters`).

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
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from river import cluster

from streams.features import FEATURES
from streams.personas import PERSONAS, PROTOTYPES, name_clusters

__all__ = ["Assignment", "SegmentModel", "SNAPSHOT_FORMAT"]

SNAPSHOT_FORMAT = 1


@dataclass(frozen=True, slots=True)
class Assignment:
    """The model's answer for one feature vector.

    ``confidence`` is the share of inverse squared distance that the nearest centre holds;
    ``margin`` is how much farther (relatively) the runner-up centre is.
    """

    persona: str
    confidence: float
    margin: float


class SegmentModel:
    """Persona clustering that learns one feature vector at a time.

    Parameters
    ----------
    halflife
        River's step size: how far a centre moves towards each learned vector.
    rename_every
        Re-derive cluster names after this many updates.
    """

    def __init__(self, halflife: float = 0.02, rename_every: int = 200) -> None:
        self.halflife = halflife
        self.rename_every = rename_every
        self.version = 0
        self._kmeans = cluster.KMeans(n_clusters=len(PERSONAS), halflife=halflife, seed=0)
        for i, persona in enumerate(PERSONAS):
            self._kmeans.centers[i] = collections.defaultdict(float, PROTOTYPES[persona])
        self._names = name_clusters(self._kmeans.centers)

    def learn_one(self, x: Mapping[str, float]) -> None:
        """Move the nearest centre towards ``x``."""
        self._kmeans.learn_one(x)
        self.version += 1
        if self.version % self.rename_every == 0:
            self._names = name_clusters(self._kmeans.centers)

    def predict_one(self, x: Mapping[str, float]) -> Assignment:
        """Persona of the nearest centre, with confidence and margin."""
        best_id, best, second, inverse_total = -1, float("inf"), float("inf"), 0.0
        for cid, center in self._kmeans.centers.items():
            d = 0.0
            for name in FEATURES:
                diff = center[name] - x[name]
                d += diff * diff
            inverse_total += 1.0 / (d + 1e-9)
            if d < best:
                best_id, best, second = cid, d, best
            elif d < second:
                second = d
        confidence = (1.0 / (best + 1e-9)) / inverse_total
        return Assignment(self._names[best_id], confidence, (second - best) / (second + 1e-9))

    def centers(self) -> dict[str, dict[str, float]]:
        """Current centre of every persona's cluster."""
        return {
            self._names[cid]: {name: center[name] for name in FEATURES}
            for cid, center in self._kmeans.centers.items()
        }

    def snapshot(self) -> dict[str, Any]:
        """A versioned, JSON-serialisable snapshot, so a restart does not start cold."""
        return {
            "format": SNAPSHOT_FORMAT,
            "version": self.version,
            "halflife": self.halflife,
            "rename_every": self.rename_every,
            "features": list(FEATURES),
            "personas": [name for _, name in sorted(self._names.items())],
            "centers": [
                {name: center[name] for name in FEATURES}
                for _, center in sorted(self._kmeans.centers.items())
            ],
        }

    @classmethod
    def restore(cls, snapshot: Mapping[str, Any]) -> SegmentModel:
        """Rebuild a model from :meth:`snapshot`; refuses snapshots it cannot read."""
        if snapshot.get("format") != SNAPSHOT_FORMAT:
            raise ValueError(f"unsupported model snapshot format {snapshot.get('format')!r}")
        if list(snapshot["features"]) != list(FEATURES):
            raise ValueError("model snapshot was trained on other features")
        model = cls(halflife=snapshot["halflife"], rename_every=snapshot["rename_every"])
        for i, center in enumerate(snapshot["centers"]):
            model._kmeans.centers[i] = collections.defaultdict(float, center)
        model._names = dict(enumerate(snapshot["personas"]))
        model.version = snapshot["version"]
        return model
