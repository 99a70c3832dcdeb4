"""The persona model: names tied to behaviour, not to cluster indices."""

from __future__ import annotations

import pytest

from debtor_segments.streams.model import SegmentModel
from debtor_segments.streams.personas import PERSONAS, PROTOTYPES


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


def test_a_centre_converges_on_what_it_learns_with_a_shrinking_step() -> None:
    model = SegmentModel(prior_weight=10.0, per_persona=1)
    target = {k: v + 0.05 for k, v in PROTOTYPES["bryan"].items()}
    start = dict(model.centers()[PERSONAS.index("bryan")][1])
    model.learn_one(target)
    first = dict(model.centers()[PERSONAS.index("bryan")][1])
    assert first["kept_share"] == pytest.approx(start["kept_share"] + 0.05 / 11)  # the first step: 1 / (10 + 1)
    for _ in range(990):
        model.learn_one(target)
    final = dict(model.centers()[PERSONAS.index("bryan")][1])
    # After n updates the centre is (10 * prototype + n * target) / (10 + n): 1% of the way short.
    assert final["kept_share"] == pytest.approx(target["kept_share"] - 0.05 * 10 / 1001, abs=1e-9)
    restored = SegmentModel.restore(model.snapshot())
    assert restored.snapshot() == model.snapshot()
    model.learn_one(target), restored.learn_one(target)
    assert restored.centers() == model.centers()  # the update counts travel in the snapshot


def test_a_format_1_snapshot_is_read_and_continues_with_its_constant_step() -> None:
    current = SegmentModel().snapshot()
    old = {k: v for k, v in current.items() if k not in ("prior_weight", "updates")}
    old.update(format=1, halflife=0.02)
    model = SegmentModel.restore(old)
    assert model.prior_weight == pytest.approx(50.0) and model.centers() == SegmentModel().centers()
    assert model.snapshot()["format"] == 2
    with pytest.raises(ValueError, match="update counts"):
        SegmentModel.restore({**current, "updates": [0]})
    with pytest.raises(ValueError, match="prior_weight"):
        SegmentModel(prior_weight=0.0)
