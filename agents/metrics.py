"""Prometheus metrics of the debtor-segments worker.

The metric names below are an interface: the Grafana dashboard
(``grafana/dashboards/debtor-segments.json``) and any alerting rules query them
by name, and ``tests/test_deploy.py`` fails when the dashboard references a
series that this module does not export.

Service families (owned by :class:`ServiceMetrics`):

``debtor_segments_events_total{topic, type, outcome}``
    Counter of consumed events; ``outcome`` is one of :data:`OUTCOMES`.
``debtor_segments_processing_seconds``
    Histogram of per-event processing time, decode to outputs sent.
``debtor_segments_event_age_seconds``
    Histogram of ``now - occurred_at`` when an event is processed.
``debtor_segments_persona_changes_total{from, to}``
    Counter of persona transitions.
``debtor_segments_quadrant_changes_total{from, to}``
    Counter of quadrant transitions.
``debtor_segments_debtors{persona}``
    Gauge of debtors currently in each persona.
``debtor_segments_debtors_by_quadrant{quadrant}``
    Gauge of debtors currently in each quadrant.
``debtor_segments_dead_letters_total{reason}``
    Counter of events sent to the dead-letter topic.
``debtor_segments_model_updates_total``
    Counter of segmentation model updates.
``debtor_segments_model_version``
    Gauge of the model version in use.
``debtor_segments_model_drift_psi``
    Gauge of the population stability index of the persona mix against the
    previous window (see :func:`streams.drift.population_stability_index`).
``debtor_segments_info{version}``
    Constant 1, labelled with the installed package version.
``debtor_segments_partition_idle_seconds{topic, partition}``
    Gauge, per owned inbound partition, of seconds since it last processed a record
    (:mod:`agents.progress`): a stall is idle time growing while the partition has lag.
``debtor_segments_send_failures_total{topic}``
    Counter of sends (change events, dead letters, model updates) that failed; the first
    failure stops the partition's commits and the worker (agents/pending.py).
``debtor_segments_signature_failures_total{topic}``
    Model snapshots (``model``) and population summaries (``population``) refused for a
    missing or invalid signature (``DEBTOR_SEGMENTS_SIGNING_SECRET``, streams/signing.py).

Faust families (added by :func:`agents.faust_metrics.attach_faust_sensors`, prefix
:data:`agents.faust_metrics.FAUST_PREFIX`, as defined by ``faust.sensors.prometheus.FaustMetrics``
in faust-streaming 0.15.3; counters are exposed with a ``_total`` suffix,
histograms with ``_bucket``/``_sum``/``_count``, latencies in milliseconds):

- messages: ``faust_messages_received_total``, ``faust_active_messages``,
  ``faust_messages_received_per_topic_total{topic}``,
  ``faust_messages_received_per_topics_partition{topic, partition}`` (last
  offset read), ``faust_events_runtime_ms``;
- stream events: ``faust_total_events_total``,
  ``faust_total_active_events``,
  ``faust_total_events_per_stream_total{stream}``;
- tables: ``faust_table_operations_total{table, operation}``;
- producer: ``faust_topic_messages_sent_total{topic}``,
  ``faust_total_sent_messages_total``, ``faust_producer_send_latency``,
  ``faust_total_error_messages_sent_total``,
  ``faust_producer_error_send_latency``;
- partition assignment: ``faust_assignment_operations_total{operation}``,
  ``faust_assign_latency``;
- rebalances: ``faust_total_rebalances`` and
  ``faust_total_rebalances_recovering`` (gauges of rebalances *in progress*,
  not running totals), ``faust_rebalance_done_consumer_latency``,
  ``faust_rebalance_done_latency`` (its ``_count`` counts completed
  rebalances);
- offsets and commits: ``faust_topic_partition_end_offset{topic, partition}``,
  ``faust_topic_partition_offset_commited{topic, partition}`` (sic),
  ``faust_consumer_commit_latency`` (its ``_count`` counts commits);
- misc: ``faust_metrics_by_name{metric}``,
  ``faust_http_status_codes_total{status_code}``, ``faust_http_latency``.

Faust exports no lag family; consumer lag is
``faust_topic_partition_end_offset - faust_topic_partition_offset_commited``.
The prometheus_client default ``*_created`` gauges accompany every counter and
histogram of both groups.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily

# Re-exported: the worker and the deployment checks take the whole contract from here.
from debtor_segments.agents.label_children import LabelChildren

__all__ = ["OUTCOMES", "ServiceMetrics"]

#: What became of a consumed event: the outcomes of ``streams.engine.process``
#: (processed, duplicate, late, erased) plus dead_lettered for records that
#: never reached it (undecodable).
OUTCOMES: tuple[str, ...] = ("processed", "duplicate", "dead_lettered", "late", "erased")

# Per-event work is in-memory state updates plus a produce call: sub-100µs
# when warm, up to around a second when the producer buffer blocks.
_PROCESSING_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005,
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0,
)  # fmt: skip

_MINUTE, _HOUR, _DAY = 60.0, 3600.0, 86400.0

# Live traffic is milliseconds to seconds old, but replaying a portfolio's
# history from the start of a topic processes events that are weeks old, so
# the buckets run up to 30 days.
_EVENT_AGE_BUCKETS = (
    0.01, 0.05, 0.25, 1.0, 5.0, 15.0,
    _MINUTE, 5 * _MINUTE, 15 * _MINUTE,
    _HOUR, 6 * _HOUR,
    _DAY, 3 * _DAY, 7 * _DAY, 14 * _DAY, 30 * _DAY,
)  # fmt: skip

_DISTRIBUTION_NAME = "debtor-segments"


def _installed_version() -> str:
    try:
        return package_version(_DISTRIBUTION_NAME)
    except PackageNotFoundError:
        # Running from a source checkout that was never pip-installed.
        return "unknown"


class ServiceMetrics:
    """The service's Prometheus families, registered on one registry.

    Parameters
    ----------
    registry : CollectorRegistry, optional
        Registry to register the families on.  Defaults to a new registry
        rather than the process-global one, so that several instances (tests,
        multiple apps in one process) never collide.
    version : str, optional
        Value of the ``version`` label of ``debtor_segments_info``.  Defaults
        to the installed ``debtor-segments`` distribution version, or
        ``"unknown"``.

    Notes
    -----
    Label values must come from small closed sets (topics, event types,
    personas, quadrants, dead-letter reasons); never pass a debtor id, since
    every distinct label value is a new time series kept forever.

    Examples
    --------
    >>> metrics = ServiceMetrics(version="1.0.0")
    >>> metrics.count_event("payments", "payment_received", "processed")
    >>> b'debtor_segments_events_total{' in metrics.exposition()
    True
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        version: str | None = None,
    ) -> None:
        self.registry = CollectorRegistry() if registry is None else registry
        reg = self.registry
        # One line a family, in registration (and exposition) order.
        self._events = Counter("debtor_segments_events_total", "Consumed events by topic, event type and outcome.", ("topic", "type", "outcome"), registry=reg)
        self._processing = Histogram("debtor_segments_processing_seconds", "Time to process one event, from decode to outputs sent.", buckets=_PROCESSING_BUCKETS, registry=reg)
        self._event_age = Histogram("debtor_segments_event_age_seconds", "Age of an event (now minus occurred_at) when it is processed.", buckets=_EVENT_AGE_BUCKETS, registry=reg)
        self._persona_changes = Counter("debtor_segments_persona_changes_total", "Debtor persona transitions.", ("from", "to"), registry=reg)
        self._quadrant_changes = Counter("debtor_segments_quadrant_changes_total", "Debtor quadrant transitions.", ("from", "to"), registry=reg)
        self._debtors = Gauge("debtor_segments_debtors", "Debtors currently in each persona.", ("persona",), registry=reg)
        self._debtors_by_quadrant = Gauge("debtor_segments_debtors_by_quadrant", "Debtors currently in each quadrant.", ("quadrant",), registry=reg)
        self._dead_letters = Counter("debtor_segments_dead_letters_total", "Events sent to the dead-letter topic, by reason.", ("reason",), registry=reg)
        self._model_updates = Counter("debtor_segments_model_updates_total", "Segmentation model updates applied.", registry=reg)
        self._model_version = Gauge("debtor_segments_model_version", "Version of the segmentation model in use.", registry=reg)
        self._model_drift = Gauge("debtor_segments_model_drift_psi", "Population stability index of the persona mix against the previous window.", registry=reg)
        self._send_failures = Counter("debtor_segments_send_failures_total", "Sends to Kafka that failed, by topic; the worker stops at the first (no commit past it).", ("topic",), registry=reg)
        self._idle = _IdleCollector()
        reg.register(self._idle)
        self._signature_failures = Counter(
            "debtor_segments_signature_failures_total",
            "Model snapshots and population summaries refused: no valid signature (DEBTOR_SEGMENTS_SIGNING_SECRET).",
            ("topic",),
            registry=reg,
        )
        self._event_children = LabelChildren(self._events)
        self._dead_letter_children = LabelChildren(self._dead_letters)
        self._persona_children = LabelChildren(self._persona_changes)
        self._quadrant_children = LabelChildren(self._quadrant_changes)
        Info(
            "debtor_segments",
            "Build information of the debtor-segments service.",
            registry=reg,
        ).info({"version": _installed_version() if version is None else version})

    def count_event(self, topic: str, event_type: str, outcome: str) -> None:
        """Count one consumed event.

        Parameters
        ----------
        topic : str
            Topic the event was read from.
        event_type : str
            Event type, exported as the ``type`` label.
        outcome : {"processed", "duplicate", "dead_lettered", "late", "erased"}
            What became of the event.

        Raises
        ------
        ValueError
            If `outcome` is not one of :data:`OUTCOMES`; rejected so that a
            typo cannot silently start a new series the dashboard never shows.
        """
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}; expected one of {OUTCOMES}")
        self._event_children(topic, event_type, outcome).inc()

    def observe_processing(self, seconds: float) -> None:
        """Record the time taken to process one event.

        Parameters
        ----------
        seconds : float
            Wall time from decode to outputs sent.
        """
        self._processing.observe(seconds)

    def observe_event_age(self, seconds: float) -> None:
        """Record how old an event was when it was processed.

        Parameters
        ----------
        seconds : float
            Processing time minus the event's ``occurred_at``.  Negative
            values are recorded as 0.
        """
        # Producer clocks run slightly ahead of ours at times; a negative age
        # would lower the histogram's _sum and distort the mean.
        self._event_age.observe(max(seconds, 0.0))

    def count_persona_change(self, previous: str, persona: str) -> None:
        """Count a debtor moving from persona `previous` to `persona`.

        Parameters
        ----------
        previous : str
            Persona before the event (``"unknown"`` for a new debtor).
        persona : str
            Persona after the event.  Equal to `previous` is not a change and
            is not counted.
        """
        _count_change(self._persona_children, previous, persona)

    def count_quadrant_change(self, previous: str, quadrant: str) -> None:
        """Count a debtor moving from quadrant `previous` to `quadrant`, as :meth:`count_persona_change` does."""
        _count_change(self._quadrant_children, previous, quadrant)

    def set_persona_counts(self, counts: Mapping[str, int]) -> None:
        """Set the number of debtors per persona.

        Parameters
        ----------
        counts : Mapping[str, int]
            Debtors per persona.  A persona reported earlier but missing here
            is set to 0, so that an emptied persona does not keep its last
            count on the dashboard.
        """
        _set_distribution(self._debtors, "persona", counts)

    def set_quadrant_counts(self, counts: Mapping[str, int]) -> None:
        """Set the number of debtors per quadrant.

        Parameters
        ----------
        counts : Mapping[str, int]
            Debtors per quadrant; missing quadrants seen before are set to 0.
        """
        _set_distribution(self._debtors_by_quadrant, "quadrant", counts)

    def count_dead_letter(self, reason: str) -> None:
        """Count one event sent to the dead-letter topic.

        Parameters
        ----------
        reason : str
            Short machine-readable reason, e.g. ``"schema_invalid"``.  Never
            an exception message, which would be unbounded.
        """
        self._dead_letter_children(reason).inc()

    def count_signature_failure(self, topic: str) -> None:
        """Count one record refused for its signature.

        Parameters
        ----------
        topic : {"model", "population"}
            Which kind of record it was.
        """
        self._signature_failures.labels(topic).inc()

    def count_model_update(self, version: int) -> None:
        """Count a model update and record the version now in use.

        Parameters
        ----------
        version : int
            Version of the model after the update.
        """
        self._model_updates.inc()
        self._model_version.set(version)

    def set_drift(self, psi: float) -> None:
        """Record the persona-mix drift of the latest window.

        Parameters
        ----------
        psi : float
            Population stability index, as returned by
            :func:`streams.drift.population_stability_index`.

        Raises
        ------
        ValueError
            If `psi` is negative or not finite, which a PSI cannot be.
        """
        if not (math.isfinite(psi) and psi >= 0.0):
            raise ValueError(f"PSI must be a finite non-negative number, got {psi!r}")
        self._model_drift.set(psi)

    def watch_partitions(self, source: Callable[[], Mapping[tuple[str, int], float]]) -> None:
        """Report ``source()`` ((topic, partition) -> idle seconds) at every scrape.

        >>> metrics = ServiceMetrics(version="1.0.0")
        >>> metrics.watch_partitions(lambda: {("debtor.payments", 3): 1.5})
        >>> b'debtor_segments_partition_idle_seconds{partition="3",topic="debtor.payments"} 1.5' in metrics.exposition()
        True
        """
        self._idle.source = source

    def count_send_failure(self, topic: str) -> None:
        """Count a send that failed (its record's offset is never committed)."""
        self._send_failures.labels(topic=topic).inc()

    def exposition(self) -> bytes:
        """Render the registry in the Prometheus text format.

        Returns
        -------
        bytes
            Every family on :attr:`registry`, including Faust's once
            :func:`agents.faust_metrics.attach_faust_sensors` has run.
        """
        return generate_latest(self.registry)


class _IdleCollector:
    """``debtor_segments_partition_idle_seconds``, computed at scrape time from :attr:`source`."""

    def __init__(self) -> None:
        #: (topic, partition) -> idle seconds; set by :meth:`ServiceMetrics.watch_partitions`.
        self.source: Callable[[], Mapping[tuple[str, int], float]] = dict

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "debtor_segments_partition_idle_seconds",
            "Seconds since an owned inbound partition last processed a record (or was assigned).",
            labels=("topic", "partition"),
        )
        try:
            idle = dict(self.source())
        except Exception:  # noqa: BLE001 - a scrape must not fail because the worker is stopping
            idle = {}
        for (topic, partition), seconds in sorted(idle.items()):
            family.add_metric((topic, str(partition)), round(seconds, 3))
        yield family

    def describe(self) -> list[GaugeMetricFamily]:
        # Without describe() the registry would call collect() at registration.
        return [GaugeMetricFamily("debtor_segments_partition_idle_seconds", "", labels=("topic", "partition"))]


def _count_change(children: LabelChildren, previous: str, current: str) -> None:
    if previous != current:
        children(previous, current).inc()


def _set_distribution(gauge: Gauge, label: str, counts: Mapping[str, int]) -> None:
    # Zero rather than remove the stale children: a vanished series makes
    # stacked panels interpolate across the gap instead of dropping to 0.
    stale = {sample.labels[label] for family in gauge.collect() for sample in family.samples} - counts.keys()
    for value in stale:
        gauge.labels(value).set(0)
    for value, count in counts.items():
        gauge.labels(value).set(count)
