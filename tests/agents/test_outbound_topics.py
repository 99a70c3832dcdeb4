"""The published map of outbound event types to topics (schemas.OUTBOUND_TYPES and
TREATMENT_TYPES) is the one the service sends by: other teams subscribe from it."""

from __future__ import annotations

from pathlib import Path

from debtor_segments.agents.replay import replay_lines
from debtor_segments.schemas import OUTBOUND_TYPES, TREATMENT_TYPES, load_schema
from debtor_segments.streams.engine import Engine, EngineConfig, Output
from debtor_segments.streams.policy import load_policy
from debtor_segments.streams.simulation import simulate
from debtor_segments.streams.treatment_runner import TreatmentRunner

POLICY = Path(__file__).resolve().parents[2] / "policies" / "default.yaml"


def test_every_outbound_type_has_its_schema() -> None:
    for event_type in (*OUTBOUND_TYPES, *TREATMENT_TYPES):
        assert load_schema(event_type)["properties"]["type"]["const"] == event_type


def test_outputs_go_to_the_published_topic_of_their_type() -> None:
    outputs: list[Output] = []
    replay_lines(
        simulate(debtors=80, months=4, seed=3).lines,
        Engine(EngineConfig()),
        outputs.append,
        lambda letter: None,
        max_amount_cents=10**9,
        emitted_at=lambda: "2026-01-01T00:00:00.000+00:00",
        treatments=TreatmentRunner(load_policy(POLICY)),
    )
    published = {**OUTBOUND_TYPES, **TREATMENT_TYPES}
    seen = {output.value["type"] for output in outputs if output.value is not None}
    assert {"persona_changed", "quadrant_changed", "treatment_assigned", "contact_due", "contact_decision"} <= seen
    for output in outputs:
        if output.value is not None:
            assert output.topic == published[output.value["type"]], output.value["type"]
