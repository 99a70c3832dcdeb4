"""Treatments in the real worker across a restart (issue 15): the treatment states live in the
worker's table, so a restarted worker neither assigns plans again nor forgets the steps to come."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from debtor_segments.agents.kafka_io import ensure_topics
from debtor_segments.agents.settings import Settings
from debtor_segments.agents.topics import WorkerConfig, topic_plan
from debtor_segments.schemas import CONTACT_DECISIONS_TOPIC, CONTACT_DUE_TOPIC, TREATMENTS_TOPIC
from debtor_segments.streams.policy import load_policy
from debtor_segments.streams.simulation import simulate
from tests.integration.test_service import Worker, delete_topics, new_prefix, produce, read_all, start_workers, wait_caught_up

ROOT = Path(__file__).resolve().parents[2]
POLICY_PATH = ROOT / "policies" / "default.yaml"
POLICY = load_policy(POLICY_PATH)
DAY = 86_400.0
PREFIXES: list[str] = []


@pytest.fixture(scope="module", autouse=True)
def _delete_topics(kafka_bootstrap: str) -> Iterator[None]:
    yield
    delete_topics(kafka_bootstrap, PREFIXES)


def _ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def test_a_restarted_worker_goes_on_with_the_plans_it_had(kafka_bootstrap: str, tmp_path: Path) -> None:
    portfolio = simulate(debtors=80, months=6, seed=21)
    lines = portfolio.lines
    prefix = new_prefix("treatments")
    PREFIXES.append(prefix)
    ensure_topics(kafka_bootstrap, topic_plan(WorkerConfig(Settings(partitions=4, topic_prefix=prefix, policy=str(POLICY_PATH)))))
    data = tmp_path / "data"
    split = len(lines) // 2
    first = Worker(kafka_bootstrap, prefix, data, "--store", "rocksdb", "--policy", str(POLICY_PATH))
    start_workers([first])
    try:
        produce(kafka_bootstrap, prefix, lines[:split])
        wait_caught_up(kafka_bootstrap, first.group, prefix, workers=[first])
    finally:
        assert first.stop() == 0, first.log_tail()
    second = Worker(kafka_bootstrap, prefix, data, "--store", "rocksdb", "--policy", str(POLICY_PATH))
    start_workers([second])
    try:
        produce(kafka_bootstrap, prefix, lines[split:])
        wait_caught_up(kafka_bootstrap, second.group, prefix, workers=[second])
    finally:
        assert second.stop() == 0, second.log_tail()
    assert "restored" in second.log_path.read_text(errors="replace"), second.log_tail()

    records = read_all(kafka_bootstrap, [prefix + TREATMENTS_TOPIC, prefix + CONTACT_DUE_TOPIC, prefix + CONTACT_DECISIONS_TOPIC])
    # A step the contact rules held past the debtor's next assignment is not sent (its plan
    # ended), but it is not forgotten either: its last decision says so (issue 16).
    ended = {
        (r.value["assignment_id"], r.value["step"])
        for r in records
        if r.value is not None and r.value["type"] == "contact_decision" and r.value["verdict"] == "skipped" and r.value["reason"] == "plan_ended"
    }
    timeline = sorted(
        (r.value for r in records if r.value is not None and r.value["type"] in ("treatment_assigned", "contact_due")),
        key=lambda v: (_ts(v["occurred_at"]), v["type"] != "treatment_assigned"),
    )
    assignments: dict[str, list[dict]] = {}
    steps: dict[str, set[int]] = {}
    for value in timeline:
        if value["type"] == "treatment_assigned":
            assignments.setdefault(value["debtor_id"], []).append(value)
        else:
            steps.setdefault(value["cause_event_id"], set()).add(value["step"])
    assert sum(len(a) for a in assignments.values()) > len(assignments) > 40
    # 1. Nobody is assigned the plan in force again because the worker restarted: a new
    #    segment_changed assignment always moves the debtor to another segment.
    for debtor, theirs in assignments.items():
        for before, after in zip(theirs, theirs[1:], strict=False):
            if after["reason"] == "segment_changed" and before["event_id"] != after["event_id"]:
                assert after["segment"] != before["segment"], (debtor, before, after)
    # 2. No plan is forgotten: every step of an assignment that fell due before the debtor's
    #    next assignment, and a week before the portfolio's end, was sent (or, held by the
    #    contact rules until that assignment, recorded as plan_ended).
    end = portfolio.end_ts - 7 * DAY
    checked = 0
    for theirs in assignments.values():
        unique = list({v["event_id"]: v for v in theirs}.values())
        for this, following in zip(unique, [*unique[1:], None], strict=True):
            started = _ts(this["occurred_at"])
            until = min(end, _ts(following["occurred_at"]) if following else end)
            wanted = {n for n, step in enumerate(POLICY.plans[this["plan_id"]].steps) if started + step.day * DAY < until}
            missing = wanted - steps.get(this["event_id"], set()) - {n for assignment, n in ended if assignment == this["event_id"]}
            assert not missing, (this, sorted(missing))
            checked += len(wanted)
    assert checked > 100
