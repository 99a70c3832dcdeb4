"""The persona model: names tied to behaviour, not to cluster indices."""

from __future__ import annotations

import pytest

from streams.model import SegmentModel
from streams.personas import PERSONAS, PROTOTYPES


def test_each_prototype_is_named_after_its_persona() -> None:
    model = SegmentModel()
    assert [model.predict_one(PROTOTYPES[p]).persona for p in PERSONAS] == list(PERSONAS)


def test_names_follow_behaviour_when_centres_move() -> None:
    model = SegmentModel(rename_every=10)
    for _ in range(300):
        model.learn_one({k: v + 0.03 for k, v in PROTOTYPES["job"].items()})
    assert model.predict_one(PROTOTYPES["job"]).persona == "job"
    assert model.predict_one(PROTOTYPES["tamara"]).persona == "tamara"


def test_restore_refuses_foreign_snapshots() -> None:
    snapshot = SegmentModel().snapshot()
    with pytest.raises(ValueError, match="format"):
        SegmentModel.restore({**snapshot, "format": 99})
    with pytest.raises(ValueError, match="features"):
        SegmentModel.restore({**snapshot, "features": ["files"]})


def test_confidence_is_a_probability() -> None:
    a = SegmentModel().predict_one(PROTOTYPES["saida"])
    assert 0.0 <= a.confidence <= 1.0 and a.margin > 0
