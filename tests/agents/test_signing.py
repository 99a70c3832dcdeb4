"""Signed model snapshots and population summaries (issue 14, item 10): a writer of the topics
without the deployment's secret cannot set the model or the aggregates."""

from __future__ import annotations

from types import SimpleNamespace

import orjson

from debtor_segments.agents.metrics import ServiceMetrics
from debtor_segments.agents.model_sync import ModelHolder, ModelReader
from debtor_segments.agents.population import PopulationBoard
from debtor_segments.streams.model import SegmentModel
from debtor_segments.streams.population import summarize
from debtor_segments.streams.signing import sign

KEY = b"signing-secret-of-the-tests"


def _failures(metrics: ServiceMetrics, topic: str) -> float:
    return metrics.registry.get_sample_value("debtor_segments_signature_failures_total", {"topic": topic}) or 0.0


def _records(*values: bytes) -> list[SimpleNamespace]:
    return [SimpleNamespace(value=value, offset=n) for n, value in enumerate(values)]


def test_a_forged_model_snapshot_is_refused_and_counted() -> None:
    metrics, holder = ServiceMetrics(), ModelHolder()
    reader = ModelReader("127.0.0.1:1", "debtor.model", holder, metrics, "test", KEY)
    genuine = SegmentModel().snapshot()
    genuine["version"] = 5
    forged = {**genuine, "version": 10**12}
    reader.on_records(_records(orjson.dumps(forged)))  # unsigned
    reader.on_records(_records(orjson.dumps({**sign(genuine, KEY, "model"), "version": 10**12})))  # signature of another body
    reader.on_records(_records(orjson.dumps(sign(forged, b"another-secret", "model"))))
    assert holder.model.version == 0 and _failures(metrics, "model") == 3
    reader.on_records(_records(orjson.dumps(sign(genuine, KEY, "model"))))
    assert holder.model.version == 5 and "sig" not in (holder.snapshot or {})
    # Genuine snapshots after it are still taken (a forged one no longer blocks them).
    later = {**genuine, "version": 6}
    reader.on_records(_records(orjson.dumps(forged), orjson.dumps(sign(later, KEY, "model"))))
    assert holder.model.version == 6 and _failures(metrics, "model") == 4


def test_without_a_secret_nothing_is_checked() -> None:
    metrics, holder = ServiceMetrics(), ModelHolder()
    snapshot = SegmentModel().snapshot()
    snapshot["version"] = 7
    ModelReader("127.0.0.1:1", "debtor.model", holder, metrics, "test").on_records(_records(orjson.dumps(snapshot)))
    assert holder.model.version == 7 and _failures(metrics, "model") == 0


def test_population_summaries_must_be_signed() -> None:
    refused: list[int] = []
    board = PopulationBoard("127.0.0.1:1", "debtor.population", 4, "test", KEY, lambda: refused.append(1))
    summary = summarize(1, 4, [], published_at=1.0)
    board.offer(b"1", orjson.dumps({**summary, "debtors": 10**9}))
    board.offer(b"1", orjson.dumps(sign(summary, KEY, "model")))  # a model signature is not a summary's
    assert board.summaries == {} and len(refused) == 2
    board.offer(b"1", orjson.dumps(sign(summary, KEY, "population")))
    assert board.summaries[1]["debtors"] == 0 and "sig" not in board.summaries[1]
