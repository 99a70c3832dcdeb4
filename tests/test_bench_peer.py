"""The peer benchmark's code paths that need no quixstreams (it is in the ``bench`` extra only,
so CI, which installs ``dev``, cannot run the Quix application itself): the per-event step of
``bench/peer_quix.py`` on simulated events, the py-spy split, and the report's peer rows."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson

from debtor_segments.agents.kafka_io import route_line
from debtor_segments.streams.simulation import simulate

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.append(str(BENCH))  # appended: bench/ must not shadow anything installed

import peer_quix  # noqa: E402 - bench/ is no package
import profile_split  # noqa: E402
import report  # noqa: E402


class FakeState(dict):  # type: ignore[type-arg]
    """Quix's ``State`` for one message key: get / set / delete."""

    def set(self, key: str, value: Any) -> None:
        self[key] = value

    def delete(self, key: str) -> None:
        self.pop(key, None)


def test_peer_step_consumes_every_event_and_emits_changes() -> None:
    lines = [line for line in simulate(40, 3, 7).lines if not route_line(line).reason][:400]
    states: dict[bytes, FakeState] = {}
    segmenter = peer_quix.Segmenter()
    changes = []
    for line in lines:
        key = route_line(line).key
        event = orjson.loads(line)
        change = peer_quix.process(event, states.setdefault(key, FakeState()), segmenter)
        if change is not None:
            changes.append(change)
    counted = sum(s[peer_quix.STATE_KEY]["n"] for s in states.values() if peer_quix.STATE_KEY in s)
    assert counted == len(lines)  # every event reached its debtor's state (none are erasures)
    assert changes, "no change records"
    # a debtor's first event always assigns a cluster, so every debtor emits at least once
    assert {c["debtor_id"] for c in changes} == {orjson.loads(line)["debtor_id"] for line in lines}
    assert all(c["cluster"] != c["previous"] for c in changes)
    assert all(orjson.dumps(c) for c in changes)  # what to_topic sends must serialise


def test_peer_tolerates_malformed_numbers() -> None:
    state = peer_quix.update_state(None, {"type": "payment_received", "amount_cents": "ten"})
    assert state["paid"] == 0 and state["payments"] == 1


def test_profile_split_buckets_sum_to_one() -> None:
    raw = "\n".join(
        [
            "main (faust/app.py:1);on_message (faust/transport/conductor.py:307) 30",
            "main (faust/app.py:1);handle (agents/worker.py:5);decode_event (streams/events.py:74) 20",
            "main (faust/app.py:1);handle (agents/worker.py:5) 10",
            "main (faust/app.py:1);EpollSelector.select (selectors.py:468) 40",
        ]
    )
    s = profile_split.split(raw, root="")
    assert s["samples"] == 100
    assert abs(sum(s["buckets"].values()) - 1) < 1e-9
    assert s["buckets"]["idle (waiting)"] == 0.4
    assert s["busy_buckets"]["Faust (faust, mode)"] == 0.5
    assert s["busy_buckets"]["core (streams/)"] == round(20 / 60, 3)


def _run(rate: float, cpu: float) -> dict[str, Any]:
    return {"events_per_s": rate, "events_per_s_to_95": rate * 1.1, "cpu_us_per_event": cpu}


def _section(text: str, heading: str) -> str:
    """The part of a rendered report from ``heading`` to the next heading."""
    start = text.index(heading)
    end = text.find("\n#", start + len(heading))
    return text[start : end if end >= 0 else None]


def test_report_has_the_peer_row_and_ratios(tmp_path: Path) -> None:
    tp = {
        "events": 1000, "debtors": 10, "months": 2, "measured_at": "2026-12-03T08:00:00+00:00",
        "raw": _run(90000, 4), "ceiling": _run(4000, 300), "worker": _run(3000, 500),
        "peer": {**_run(6000, 150), "change_events": 400},
        "worker_profiled": {**_run(2800, 520), "profile": profile_split.split("a (streams/x.py:1) 1", root="")},
    }  # fmt: skip
    # The report as `report` renders it, from these runs alone (every other section has no data).
    rendered = report.render({"throughput": tp}.get, tmp_path)
    peer = _section(rendered, "### Side by side with the peer")
    assert "peer: Quix Streams + River" in peer
    assert "| 0.50 | 0.50 |" in peer  # worker / peer, both rates
    assert "core (streams/)" in _section(rendered, "### Profile of the worker")
    unmeasured = report.render({"throughput": {**tp, "peer": None}}.get, tmp_path)
    assert "(peer not measured" in _section(unmeasured, "## 2. Kafka path") and "### Side by side" not in unmeasured
    earlier = {**tp, "measured_at": "2026-12-03T07:00:00+00:00", "peer": {**_run(4000, 150)}}
    both = _section(report.render({"throughput": tp, "throughput-peer-1": earlier}.get, tmp_path), "### Side by side with the peer")
    assert "Every side-by-side run" in both and "| 0.75 |" in both  # the earlier run's worker / peer
