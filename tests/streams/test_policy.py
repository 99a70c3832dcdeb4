"""Policy files: the default one loads; invalid ones are refused with every problem listed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from debtor_segments.streams.policy import PolicyError, load_policy, parse_policy

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "policies" / "default.yaml"


def _minimal() -> dict[str, Any]:
    return {
        "version": "t1",
        "plans": {
            "a": [{"day": 7, "channel": "sms", "tone": "neutral", "message_id": "a2"}, {"day": 0, "channel": "email", "tone": "friendly", "message_id": "a1"}],
            "b": [{"day": 0, "channel": "letter", "tone": "strict", "message_id": "b1"}],
        },
        "segments": {"willing_able": "a", "tamara": "x", "unknown": "b"},
        "experiments": {"x": {"segment": "tamara", "arms": [{"plan": "a", "weight": 3}, {"plan": "b", "weight": 1}]}},
    }


def test_default_policy_has_the_four_approaches_and_one_experiment() -> None:
    policy = load_policy(DEFAULT)
    assert policy.version
    assert {policy.segments[q] for q in ("willing_unable", "willing_able", "unwilling_unable")} == {"social", "unburden", "consult"}
    [experiment] = policy.experiments.values()
    assert experiment.segment == "unwilling_able" and {a.plan_id for a in experiment.arms} == {"strict", "fair"}
    for plan in policy.plans.values():
        assert plan.steps[-1].day <= 56  # eight weeks
        assert [s.day for s in plan.steps] == sorted(s.day for s in plan.steps)


def test_parse_sorts_steps_and_normalises_weights() -> None:
    policy = parse_policy(_minimal())
    assert [s.message_id for s in policy.plans["a"].steps] == ["a1", "a2"]
    assert policy.experiments["x"].weights == {"a": 0.75, "b": 0.25}
    assert policy.experiments["x"].salt == "x"


@pytest.mark.parametrize(
    ("persona", "quadrant", "label"),
    [("tamara", "willing_able", "tamara"), ("job", "willing_able", "willing_able"), ("job", "unwilling_able", "unknown"), ("unknown", "unknown", "unknown")],
)
def test_most_specific_segment_wins(persona: str, quadrant: str, label: str) -> None:
    doc = _minimal()
    assert parse_policy(doc).segment_of(persona, quadrant) == label


def test_no_matching_segment_means_no_treatment() -> None:
    doc = _minimal()
    del doc["segments"]["unknown"]
    assert parse_policy(doc).segment_of("job", "unwilling_unable") is None


def test_every_problem_is_listed_with_its_path() -> None:
    doc = _minimal()
    doc["plans"]["a"][0]["channel"] = "pigeon"
    doc["plans"]["b"][0]["day"] = -1
    doc["segments"]["willing_able"] = "missing"
    doc["segments"]["martian"] = "a"
    doc["experiments"]["x"]["arms"].append({"plan": "zzz", "weight": 0})
    doc["experiments"]["x"]["mode"] = "greedy"
    del doc["version"]
    with pytest.raises(PolicyError) as caught:
        parse_policy(doc)
    where = {p.path: p.reason for p in caught.value.problems}
    assert "plans.a.0.channel" in where and "pigeon" in where["plans.a.0.channel"]
    assert "plans.b.0.day" in where
    assert "segments.willing_able" in where
    assert "segments" in where or "segments.martian" in where  # an unknown label
    assert "experiments.x.arms.2.weight" in where
    assert where["experiments.x.arms.2.plan"] == "no plan 'zzz'"
    assert "experiments.x.mode" in where
    assert any("version" in reason for reason in where.values())
    assert len(caught.value.problems) >= 8
    assert str(caught.value).startswith(f"{len(caught.value.problems)} problems")


def test_experiment_must_belong_to_the_segment_that_uses_it() -> None:
    doc = _minimal()
    doc["experiments"]["x"]["segment"] = "willing_able"
    with pytest.raises(PolicyError) as caught:
        parse_policy(doc)
    paths = {p.path for p in caught.value.problems}
    assert {"segments.tamara", "experiments.x.segment"} <= paths


def test_json_files_and_unreadable_files(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps(_minimal()))
    assert load_policy(path).version == "t1"
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: [unclosed")
    with pytest.raises(PolicyError, match="cannot parse"):
        load_policy(bad)
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(tmp_path / "absent.yaml")
