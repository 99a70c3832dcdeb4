"""The worker's treatment glue, without Kafka: handled records in, treatment sends out."""

from __future__ import annotations

import shutil
from pathlib import Path

import orjson
from prometheus_client import generate_latest

from debtor_segments.agents.treatment_service import TreatmentService
from debtor_segments.streams.simulation import simulate
from tests.agents.conftest import HandleLines

ROOT = Path(__file__).resolve().parents[2]


def _service(tmp_path: Path) -> TreatmentService:
    path = tmp_path / "policy.yaml"
    shutil.copy(ROOT / "policies" / "default.yaml", path)
    return TreatmentService(path)


def test_handled_records_give_the_same_treatments_as_replay(tmp_path: Path, handle_lines: HandleLines) -> None:
    from debtor_segments.agents.replay import replay_lines
    from debtor_segments.streams.engine import Engine
    from debtor_segments.streams.policy import load_policy
    from debtor_segments.streams.treatment_runner import TreatmentRunner

    lines = simulate(debtors=60, months=4, seed=5).lines
    service, sent = _service(tmp_path), []
    for line, handled in handle_lines(lines):
        sent += [orjson.loads(value) for _, _, value in service.after_record(handled, line, "x")]
    assert {v["type"] for v in sent} >= {"treatment_assigned", "contact_due"}
    embedded: list[dict] = []
    runner = TreatmentRunner(load_policy(ROOT / "policies" / "default.yaml"))
    replay_lines(lines, Engine(), lambda o: embedded.append(o.value), lambda _: None, max_amount_cents=10**9, emitted_at=lambda: "x", treatments=runner)
    treatment_ids = [v["event_id"] for v in embedded if v["type"] in ("treatment_assigned", "contact_due", "contact_decision")]
    assert [v["event_id"] for v in sent if v["type"] != "experiment_concluded"] == treatment_ids
    assert service.experiments()["experiments"][0]["experiment_id"] == "strict-vs-fair"
    assert service.experiment("strict-vs-fair")["segment"] == "unwilling_able" and service.experiment("nope") is None
    html = service.page()
    assert 'id="mix"' in html and 'id="transitions"' in html and "strict-vs-fair" in html and len(service.persona_mix) >= 2
    service.refresh_metrics()
    text = generate_latest(service.registry).decode()
    assert 'debtor_segments_treatment_events_total{arm="",plan="' in text
    assert 'debtor_segments_experiment_debtors{arm="strict",experiment="strict-vs-fair",horizon="60"}' in text
    assert f'debtor_segments_policy_info{{version="{service.version}"}} 1.0' in text


def test_a_changed_policy_file_is_reloaded_and_a_bad_one_refused(tmp_path: Path) -> None:
    service = _service(tmp_path)
    old = service.version
    text = service.path.read_text().replace(old, "v-next")
    service.path.write_text("version: broken\nplans: {}\nsegments: {}\n")
    import os

    os.utime(service.path, (1, 1))
    assert service.reload_if_changed() is False and service.version == old
    service.path.write_text(text)
    os.utime(service.path, (2, 2))
    assert service.reload_if_changed() is True and service.version == "v-next"


def test_the_partition_timer_sends_steps_due_while_a_partition_is_idle(tmp_path: Path, handle_lines: HandleLines) -> None:
    service = _service(tmp_path)
    sent: list[dict] = []
    for line, handled in handle_lines(simulate(debtors=60, months=4, seed=5).lines):
        sent += [orjson.loads(value) for _, _, value in service.after_record(handled, line, "x")]
    last = service.last_seen(0)
    assert last is not None
    assert service.due_by_timer({3}, "t") == []  # no record on that partition: nothing to tell
    assert [orjson.loads(v)["type"] for _, _, v in service.due_by_timer({0}, "t", now=last + 1.0)] == []
    month_later = service.due_by_timer({0}, "t", now=last + 1.0 + 30 * 86_400.0)
    steps = [orjson.loads(value) for topic, _, value in month_later if topic == "debtor.contact-due"]
    assert steps and all(step["emitted_at"] == "t" for step in steps)
    assert not {s["event_id"] for s in steps} & {v["event_id"] for v in sent}


def test_a_new_worker_goes_on_from_the_stored_treatment_states(tmp_path: Path, handle_lines: HandleLines) -> None:
    """Issue 15: treatment states live in the worker's table, so a restart or a rebalance neither
    assigns plans again nor forgets the steps to come."""
    lines = simulate(debtors=60, months=6, seed=8).lines
    handled = list(handle_lines(lines))

    def ids(values: list[dict]) -> list[str]:
        return [v["event_id"] for v in values if v["type"] != "experiment_concluded"]

    reference = _service(tmp_path)
    expected = ids([orjson.loads(v) for line, h in handled for _, _, v in reference.after_record(h, line, "x")])
    split = len(handled) * 3 // 5
    table: dict[bytes, bytes] = {}
    first, second = _service(tmp_path), _service(tmp_path)
    sent: list[dict] = []
    for line, h in handled[:split]:
        sent += [orjson.loads(v) for _, _, v in first.after_record(h, line, "x")]
        for key, value in first.take_writes(0):
            if value is None:
                table.pop(key, None)
            else:
                table[key] = value
    stored = [key for key in table if key.startswith(b"\x00treatment:")]
    assert len(stored) == len(first.runner.states) > 10
    assert second.restore({1}, table.items()) == 0  # another partition's: not taken
    assert second.restore({0}, table.items()) == len(stored)
    for line, h in handled[split:]:
        sent += [orjson.loads(v) for _, _, v in second.after_record(h, line, "x")]
    assert ids(sent) == expected
    # A partition given away is forgotten, to be restored by its next owner.
    second.revoked([0])
    assert not second.runner.states and 0 not in second.restored
