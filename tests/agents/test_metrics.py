"""Tests of the Prometheus contract in :mod:`agents.metrics` and :mod:`agents.faust_metrics`."""

from __future__ import annotations

import asyncio
import math
import os
import shutil
import subprocess
import warnings

import faust
import pytest
from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor
from faust.types import TP
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from debtor_segments.agents.faust_metrics import FAUST_PREFIX, METRICS_PATH, CachingPrometheusMonitor, attach_faust_sensors
from debtor_segments.agents.metrics import ServiceMetrics

# Family name (as the text parser reports it: counters without ``_total``)
# -> (type, label names).  This is the contract the dashboard is built on.
SERVICE_FAMILIES: dict[str, tuple[str, frozenset[str]]] = {
    "debtor_segments_events": ("counter", frozenset({"topic", "type", "outcome"})),
    "debtor_segments_processing_seconds": ("histogram", frozenset()),
    "debtor_segments_event_age_seconds": ("histogram", frozenset()),
    "debtor_segments_persona_changes": ("counter", frozenset({"from", "to"})),
    "debtor_segments_quadrant_changes": ("counter", frozenset({"from", "to"})),
    "debtor_segments_debtors": ("gauge", frozenset({"persona"})),
    "debtor_segments_debtors_by_quadrant": ("gauge", frozenset({"quadrant"})),
    "debtor_segments_dead_letters": ("counter", frozenset({"reason"})),
    "debtor_segments_model_updates": ("counter", frozenset()),
    "debtor_segments_model_version": ("gauge", frozenset()),
    "debtor_segments_model_drift_psi": ("gauge", frozenset()),
    "debtor_segments_info": ("gauge", frozenset({"version"})),
    "debtor_segments_partition_idle_seconds": ("gauge", frozenset({"topic", "partition"})),
    "debtor_segments_send_failures": ("counter", frozenset({"topic"})),
    "debtor_segments_signature_failures": ("counter", frozenset({"topic"})),
}

# The Faust families the dashboard relies on for lag, commits and rebalances.
FAUST_FAMILIES_USED: dict[str, str] = {
    "faust_topic_partition_end_offset": "gauge",
    "faust_topic_partition_offset_commited": "gauge",
    "faust_consumer_commit_latency": "histogram",
    "faust_total_rebalances": "gauge",
    "faust_total_rebalances_recovering": "gauge",
    "faust_rebalance_done_latency": "histogram",
    "faust_messages_received": "counter",
}


def require_promtool() -> str:
    """Return the path of ``promtool``; skip (or fail on CI) without it."""
    path = shutil.which("promtool")
    if path is not None:
        return path
    message = "promtool NOT FOUND: this Prometheus check was NOT run. Install it with `apt-get install prometheus`."
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    # A skip alone is easy to miss in -q output; the warning summary is not.
    warnings.warn(message, stacklevel=2)
    pytest.skip(message)


def promtool_lint(exposition: bytes) -> list[str]:
    """Problems ``promtool check metrics`` reports for `exposition`."""
    result = subprocess.run(
        [require_promtool(), "check", "metrics"],
        input=exposition,
        capture_output=True,
        check=False,
        timeout=60,
    )
    output = (result.stdout + result.stderr).decode()
    problems = [line for line in output.splitlines() if line.strip()]
    assert (result.returncode == 0) == (not problems), output
    return problems


def families(metrics: ServiceMetrics) -> dict[str, Metric]:
    text = metrics.exposition().decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def samples(metrics: ServiceMetrics, name: str) -> list[Sample]:
    """Samples named exactly `name`, across all families."""
    return [sample for family in families(metrics).values() for sample in family.samples if sample.name == name]


def value(metrics: ServiceMetrics, name: str, **labels: str) -> float:
    matching = [s.value for s in samples(metrics, name) if s.labels == labels]
    assert len(matching) == 1, (name, labels, samples(metrics, name))
    return matching[0]


def bucket(metrics: ServiceMetrics, name: str, le: float) -> float:
    matching = [s.value for s in samples(metrics, f"{name}_bucket") if float(s.labels["le"]) == le]
    assert len(matching) == 1, (name, le)
    return matching[0]


@pytest.fixture
def metrics() -> ServiceMetrics:
    return ServiceMetrics(version="1.2.3")


@pytest.fixture
def app() -> faust.App:
    # Never started: constructing an app and its web driver needs no broker.
    return faust.App("t", broker="kafka://127.0.0.1:9092", store="memory://")


def test_families_names_types_and_labels(metrics: ServiceMetrics) -> None:
    found = families(metrics)
    service = {name: f for name, f in found.items() if not name.endswith("_created")}
    assert set(service) == set(SERVICE_FAMILIES)
    metrics.count_event("payments", "payment_received", "processed")
    metrics.count_persona_change("unknown", "tamara")
    metrics.count_quadrant_change("unknown", "willing_able")
    metrics.set_persona_counts({"tamara": 1})
    metrics.set_quadrant_counts({"willing_able": 1})
    metrics.count_dead_letter("schema_invalid")
    for name, family in families(metrics).items():
        if name not in SERVICE_FAMILIES:
            continue
        kind, labelnames = SERVICE_FAMILIES[name]
        assert family.type == kind, name
        for sample in family.samples:
            assert set(sample.labels) - {"le"} == labelnames, (name, sample)


def test_default_registry_is_private() -> None:
    first, second = ServiceMetrics(), ServiceMetrics()
    assert first.registry is not second.registry
    assert first.registry is not REGISTRY


def test_uses_given_registry() -> None:
    registry = CollectorRegistry()
    metrics = ServiceMetrics(registry)
    assert metrics.registry is registry
    assert metrics.exposition() == generate_latest(registry)


def test_info_version(metrics: ServiceMetrics) -> None:
    assert value(metrics, "debtor_segments_info", version="1.2.3") == 1.0


def test_count_event(metrics: ServiceMetrics) -> None:
    assert samples(metrics, "debtor_segments_events_total") == []
    metrics.count_event("payments", "payment_received", "processed")
    metrics.count_event("payments", "payment_received", "processed")
    metrics.count_event("payments", "payment_received", "duplicate")
    metrics.count_event("contacts", "call_made", "late")
    metrics.count_event("contacts", "call_made", "dead_lettered")
    metrics.count_event("erasures", "erasure_requested", "erased")
    name = "debtor_segments_events_total"
    payments = {"topic": "payments", "type": "payment_received"}
    contacts = {"topic": "contacts", "type": "call_made"}
    assert value(metrics, name, **payments, outcome="processed") == 2.0
    assert value(metrics, name, **payments, outcome="duplicate") == 1.0
    assert value(metrics, name, **contacts, outcome="late") == 1.0
    assert value(metrics, name, **contacts, outcome="dead_lettered") == 1.0
    erasures = {"topic": "erasures", "type": "erasure_requested"}
    assert value(metrics, name, **erasures, outcome="erased") == 1.0
    assert len(samples(metrics, name)) == 5


def test_count_event_rejects_unknown_outcome(metrics: ServiceMetrics) -> None:
    with pytest.raises(ValueError, match="unknown outcome"):
        metrics.count_event("payments", "payment_received", "procesed")
    assert samples(metrics, "debtor_segments_events_total") == []


def test_observe_processing(metrics: ServiceMetrics) -> None:
    name = "debtor_segments_processing_seconds"
    metrics.observe_processing(0.00007)
    metrics.observe_processing(0.3)
    assert bucket(metrics, name, 0.00005) == 0.0
    assert bucket(metrics, name, 0.0001) == 1.0
    assert bucket(metrics, name, 0.25) == 1.0
    assert bucket(metrics, name, 0.5) == 2.0
    assert bucket(metrics, name, 1.0) == 2.0
    assert value(metrics, f"{name}_count") == 2.0
    assert math.isclose(value(metrics, f"{name}_sum"), 0.30007)


def test_observe_event_age(metrics: ServiceMetrics) -> None:
    name = "debtor_segments_event_age_seconds"
    metrics.observe_event_age(0.005)
    metrics.observe_event_age(20 * 86400.0)
    metrics.observe_event_age(40 * 86400.0)
    assert bucket(metrics, name, 0.01) == 1.0
    assert bucket(metrics, name, 14 * 86400.0) == 1.0
    assert bucket(metrics, name, 30 * 86400.0) == 2.0
    assert bucket(metrics, name, math.inf) == 3.0


def test_observe_event_age_clamps_clock_skew(metrics: ServiceMetrics) -> None:
    name = "debtor_segments_event_age_seconds"
    metrics.observe_event_age(-2.5)
    assert bucket(metrics, name, 0.01) == 1.0
    assert value(metrics, f"{name}_sum") == 0.0


def test_count_persona_change(metrics: ServiceMetrics) -> None:
    name = "debtor_segments_persona_changes_total"
    metrics.count_persona_change("unknown", "tamara")
    metrics.count_persona_change("tamara", "hendrik-jan")
    metrics.count_persona_change("tamara", "hendrik-jan")
    metrics.count_persona_change("bryan", "bryan")
    assert value(metrics, name, **{"from": "unknown", "to": "tamara"}) == 1.0
    assert value(metrics, name, **{"from": "tamara", "to": "hendrik-jan"}) == 2.0
    assert len(samples(metrics, name)) == 2


def test_count_quadrant_change(metrics: ServiceMetrics) -> None:
    name = "debtor_segments_quadrant_changes_total"
    metrics.count_quadrant_change("willing_able", "unwilling_unable")
    metrics.count_quadrant_change("unknown", "unknown")
    labels = {"from": "willing_able", "to": "unwilling_unable"}
    assert value(metrics, name, **labels) == 1.0
    assert len(samples(metrics, name)) == 1


def test_set_persona_counts_zeroes_vanished(metrics: ServiceMetrics) -> None:
    name = "debtor_segments_debtors"
    metrics.set_persona_counts({"tamara": 10, "job": 3, "saida": 1})
    metrics.set_persona_counts({"tamara": 12, "bryan": 2})
    assert value(metrics, name, persona="tamara") == 12.0
    assert value(metrics, name, persona="bryan") == 2.0
    assert value(metrics, name, persona="job") == 0.0
    assert value(metrics, name, persona="saida") == 0.0


def test_set_quadrant_counts(metrics: ServiceMetrics) -> None:
    name = "debtor_segments_debtors_by_quadrant"
    metrics.set_quadrant_counts({"willing_able": 5, "unknown": 1})
    metrics.set_quadrant_counts({"willing_able": 4})
    assert value(metrics, name, quadrant="willing_able") == 4.0
    assert value(metrics, name, quadrant="unknown") == 0.0


def test_count_dead_letter(metrics: ServiceMetrics) -> None:
    metrics.count_dead_letter("schema_invalid")
    metrics.count_dead_letter("schema_invalid")
    metrics.count_dead_letter("unknown_type")
    name = "debtor_segments_dead_letters_total"
    assert value(metrics, name, reason="schema_invalid") == 2.0
    assert value(metrics, name, reason="unknown_type") == 1.0


def test_count_model_update(metrics: ServiceMetrics) -> None:
    metrics.count_model_update(3)
    metrics.count_model_update(4)
    assert value(metrics, "debtor_segments_model_updates_total") == 2.0
    assert value(metrics, "debtor_segments_model_version") == 4.0


def test_set_drift(metrics: ServiceMetrics) -> None:
    metrics.set_drift(0.17)
    assert value(metrics, "debtor_segments_model_drift_psi") == 0.17


@pytest.mark.parametrize("psi", [-0.1, math.nan, math.inf])
def test_set_drift_rejects_impossible(metrics: ServiceMetrics, psi: float) -> None:
    with pytest.raises(ValueError):
        metrics.set_drift(psi)


def test_exposition_is_the_registry(metrics: ServiceMetrics) -> None:
    metrics.count_event("payments", "payment_received", "processed")
    assert metrics.exposition() == generate_latest(metrics.registry)


def test_exposition_passes_promtool_lint(metrics: ServiceMetrics) -> None:
    metrics.count_event("payments", "payment_received", "processed")
    metrics.observe_processing(0.001)
    metrics.observe_event_age(3.0)
    metrics.count_persona_change("unknown", "saida")
    metrics.count_quadrant_change("unknown", "willing_unable")
    metrics.set_persona_counts({"saida": 1})
    metrics.set_quadrant_counts({"willing_unable": 1})
    metrics.count_dead_letter("schema_invalid")
    metrics.count_model_update(1)
    metrics.set_drift(0.01)
    assert promtool_lint(metrics.exposition()) == []


def test_attach_faust_sensors_shares_registry(app: faust.App, metrics: ServiceMetrics) -> None:
    attach_faust_sensors(app, metrics)
    assert isinstance(app.monitor, PrometheusMonitor)
    found = families(metrics)
    for name, kind in FAUST_FAMILIES_USED.items():
        assert found[name].type == kind, name
    assert all(name in SERVICE_FAMILIES or name.startswith(f"{FAUST_PREFIX}_") or name.endswith("_created") for name in found), sorted(found)
    # The monitor writes into the shared registry.
    app.monitor.track_tp_end_offset(TP("payments", 0), 100)
    app.monitor.on_tp_commit({TP("payments", 0): 60})
    labels = {"topic": "payments", "partition": "0"}
    assert value(metrics, "faust_topic_partition_end_offset", **labels) == 100.0
    assert value(metrics, "faust_topic_partition_offset_commited", **labels) == 60.0


def test_cached_faust_sensors_record_what_faust_records(app: faust.App, metrics: ServiceMetrics) -> None:
    """The caching monitor writes the same series as Faust's, and re-creates the per-topic and
    per-partition series Faust removes on a rebalance."""
    attach_faust_sensors(app, metrics)
    monitor = app.monitor
    assert isinstance(monitor, CachingPrometheusMonitor)
    reference = ServiceMetrics(version="test")

    class _PlainMonitor(PrometheusMonitor):
        """Faust's monitor as it is, with the rebalance's series removal callable."""

        def clear_partition_series(self) -> None:
            self._clear_partition_related_metrics()

    plain = _PlainMonitor(metrics=FaustMetrics.create(reference.registry, FAUST_PREFIX))

    class _Message:
        time_in: float = 0.0

    class _Table:
        name = "debtor-state"

    def exercise(m: PrometheusMonitor) -> None:
        for offset in range(3):
            m.on_message_in(TP("payments", 1), offset, _Message())  # type: ignore[arg-type]
        m.on_table_get(_Table(), b"k")  # type: ignore[arg-type]
        m.on_table_set(_Table(), b"k", b"v")  # type: ignore[arg-type]
        m.on_table_del(_Table(), b"k")  # type: ignore[arg-type]
        m.on_send_initiated(None, "out", None, 1, 2)  # type: ignore[arg-type]
        m.count("commits", 2)
        m.on_tp_commit({TP("payments", 1): 2})
        m.track_tp_end_offset(TP("payments", 1), 9)

    def faust_samples(registry_metrics: ServiceMetrics) -> set[tuple[str, tuple[tuple[str, str], ...], float]]:
        return {
            (s.name, tuple(sorted(s.labels.items())), s.value)
            for family in registry_metrics.registry.collect()
            if family.name.startswith(f"{FAUST_PREFIX}_")
            for s in family.samples
            if not s.name.endswith("_created")
        }

    exercise(monitor)
    exercise(plain)
    assert faust_samples(metrics) == faust_samples(reference)
    monitor.clear_partition_series()
    plain.clear_partition_series()
    assert faust_samples(metrics) == faust_samples(reference)
    exercise(monitor)  # the removed series come back, as with Faust's monitor
    exercise(plain)
    assert faust_samples(metrics) == faust_samples(reference)
    labels = {"topic": "payments", "partition": "1"}
    assert value(metrics, "faust_messages_received_per_topics_partition", **labels) == 2.0
    assert value(metrics, "faust_messages_received_per_topic_total", topic="payments") == 3.0


def test_service_metrics_cache_children_but_still_reject_unknown_outcomes(metrics: ServiceMetrics) -> None:
    for _ in range(2):
        metrics.count_event("payments", "payment_received", "processed")
        metrics.count_dead_letter("schema_invalid")
        metrics.count_persona_change("unknown", "tamara")
    assert value(metrics, "debtor_segments_events_total", topic="payments", type="payment_received", outcome="processed") == 2.0
    assert value(metrics, "debtor_segments_dead_letters_total", reason="schema_invalid") == 2.0
    with pytest.raises(ValueError):
        metrics.count_event("payments", "payment_received", "lost")


def test_attach_faust_sensors_serves_one_metrics_page(app: faust.App, metrics: ServiceMetrics) -> None:
    attach_faust_sensors(app, metrics)
    metrics.count_event("payments", "payment_received", "processed")
    view = app.web.views[METRICS_PATH]
    response = asyncio.run(view.get(None))
    assert response.status == 200
    assert b'outcome="processed"' in response.body
    assert b"faust_messages_received_total" in response.body
    with pytest.raises(RuntimeError):

        @app.page(METRICS_PATH)
        async def another(self: faust.web.View, request: faust.web.Request) -> faust.web.Response:
            raise AssertionError("unreachable")


def test_attach_faust_sensors_twice_fails(app: faust.App, metrics: ServiceMetrics) -> None:
    attach_faust_sensors(app, metrics)
    with pytest.raises(ValueError, match="Duplicated"):
        attach_faust_sensors(app, metrics)


def test_faust_lint_problems_are_faust_own(app: faust.App, metrics: ServiceMetrics) -> None:
    # Faust's families are not ours to rename (e.g. ``faust_events_runtime_ms``
    # trips the abbreviated-unit rule); only make sure ours stay clean.
    attach_faust_sensors(app, metrics)
    problems = promtool_lint(metrics.exposition())
    assert all(problem.startswith(f"{FAUST_PREFIX}_") for problem in problems), problems
