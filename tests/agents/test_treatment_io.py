"""The demo's reacting runner keeps the runner's interface (found by mypy --strict on agents/)."""

from __future__ import annotations

from pathlib import Path

from debtor_segments.agents.treatment_io import ReactingRunner
from debtor_segments.streams.engine import Output, Step
from debtor_segments.streams.events import Event
from debtor_segments.streams.policy import load_policy

POLICY = load_policy(Path(__file__).resolve().parents[2] / "policies" / "default.yaml")


def test_reacting_runner_passes_the_partition_to_the_runner() -> None:
    # TreatmentRunner.after takes the record's partition (each partition has its own clock):
    # the override accepts it and hands it on, as the service's TreatmentService calls it.
    runner = ReactingRunner(POLICY, {"d1": "tamara"})
    day = 86_400.0
    change = {"type": "quadrant_changed", "quadrant": "willing_able", "cause_event_id": "c1", "occurred_at": "2026-03-01T10:00:00Z", "reason": "behaviour"}
    t0 = 1_772_359_200.0  # 2026-03-01T10:00:00Z: inside the contact hours
    step = Step(None, (Output("debtor.quadrant-changes", "d1", change),), "processed")
    sent = runner.after(Event("c1", "d1", "call_rated", "", t0, {}), step, partition=0)
    assert [o.value["step"] for o in sent if o.value is not None and o.value["type"] == "contact_due"] == [0]
    quiet = Step(None, (), "processed")
    # Partition 1 runs 30 days ahead: d1's steps (partition 0) do not fall due on its clock.
    assert not [o for o in runner.after(Event("x", "d2", "call_rated", "", t0 + 30 * day, {}), quiet, partition=1) if o.value is not None and o.value.get("debtor_id") == "d1"]
    due_now = runner.after(Event("y", "d3", "call_rated", "", t0 + 8 * day, {}), quiet, partition=0)
    assert [o.value["message_id"] for o in due_now if o.value is not None and o.value.get("debtor_id") == "d1" and o.value["type"] == "contact_due"] == ["unburden-paylink-sms", "unburden-pay-later"]
    assert runner.decisions  # the reacting part still counts the guard's decisions
