"""Faust's Prometheus sensors on the service's registry, and the one ``/metrics`` page.

The families Faust records are listed, with the service's own, in :mod:`agents.metrics`
(the metric contract); this module only installs them (:func:`attach_faust_sensors`) and
records them with cached label children (:class:`CachingPrometheusMonitor`).
"""

from __future__ import annotations

from typing import Any, Protocol, cast

from aiohttp.web import Response
from faust import web
from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor
from faust.types import TP, AppT
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from debtor_segments.agents.label_children import LabelChildren

__all__ = ["FAUST_PREFIX", "METRICS_PATH", "CachingPrometheusMonitor", "HasRegistry", "attach_faust_sensors"]

#: Name prefix of Faust's own families.  Fixed rather than derived from the
#: app name so that dashboards keep working whatever the app is called, and so
#: Faust's ``<prefix>_total_events`` can never be confused with
#: ``debtor_segments_events_total``.
FAUST_PREFIX = "faust"

#: URL path of the single page that serves the shared registry.
METRICS_PATH = "/metrics"


class HasRegistry(Protocol):
    """What :func:`attach_faust_sensors` needs of the service metrics: their registry."""

    @property
    def registry(self) -> CollectorRegistry:
        """The registry every family is registered on."""
        ...


def attach_faust_sensors(app: AppT, metrics: HasRegistry) -> None:
    """Install Faust's Prometheus monitor on `app`, sharing `metrics`' registry.

    This replaces ``app.monitor`` with a :class:`CachingPrometheusMonitor` (Faust's
    ``PrometheusMonitor``), registers its families (listed in :mod:`agents.metrics`)
    under :data:`FAUST_PREFIX` on ``metrics.registry``, and adds the page
    :data:`METRICS_PATH` to the app's web server, serving that whole registry, service
    families included. That page is the only one: the worker must not register another.
    It is what ``faust.sensors.prometheus.setup_prometheus_sensors`` does, with the
    caching monitor built on the families directly (Faust keeps its monitor's families
    in a private attribute).

    Parameters
    ----------
    app : faust.types.AppT
        The app, not yet started (the monitor must be in place before the
        app starts its sensors).
    metrics : HasRegistry
        Service metrics (:class:`agents.metrics.ServiceMetrics`) whose registry the
        Faust families join.

    Raises
    ------
    ValueError
        If Faust families are already on the registry (attached twice).
    RuntimeError
        If the app already has a GET page at :data:`METRICS_PATH` (raised by
        the aiohttp router).
    """
    registry = metrics.registry
    app.monitor = CachingPrometheusMonitor(metrics=FaustMetrics.create(registry, FAUST_PREFIX))

    @app.page(METRICS_PATH)
    async def metrics_handler(self: web.View, request: web.Request) -> web.Response:
        headers = {"Content-Type": CONTENT_TYPE_LATEST}
        return cast(web.Response, Response(body=generate_latest(registry), headers=headers, status=200))


class CachingPrometheusMonitor(PrometheusMonitor):
    """Faust's ``PrometheusMonitor`` with its label children cached.

    Faust looks the children up with ``labels()`` several times per message (message in,
    stream event in, table get/set, every send); each lookup checks and stringifies the
    label values under a lock, and the stream label is normalised with a regular expression
    every time. This subclass records exactly the same samples on the same families, keeping
    the children it used in dicts. Faust removes the per-topic and per-partition series on
    every rebalance (``_clear_partition_related_metrics``); the caches of those families
    are emptied at the same moment, so a removed series is re-created on its next use, as
    before.

    Parameters
    ----------
    metrics : faust.sensors.prometheus.FaustMetrics
        Faust's families, as ``FaustMetrics.create(registry, FAUST_PREFIX)`` makes them.
    **kwargs
        Passed on to Faust's ``Monitor``.
    """

    def __init__(self, metrics: FaustMetrics, **kwargs: Any) -> None:
        super().__init__(metrics, **kwargs)
        m = metrics
        self._received_by_topic = LabelChildren(m.messages_received_per_topics)
        self._read_offset_by_tp = LabelChildren(m.messages_received_per_topics_partition)
        self._end_offset_by_tp = LabelChildren(m.topic_partition_end_offset)
        self._committed_by_tp = LabelChildren(m.topic_partition_offset_commited)
        self._sent_by_topic = LabelChildren(m.topic_messages_sent)
        self._table_ops = LabelChildren(m.table_operations)
        self._by_name = LabelChildren(m.count_metrics_by_name)
        # By stream object: its label is normalised with a regular expression.
        self._events_by_stream: dict[Any, Any] = {}

    def on_message_in(self, tp: TP, offset: int, message: Any) -> None:
        """Call before message is delegated to streams."""
        # Monitor.on_message_in (PrometheusMonitor's super), then the same samples as
        # PrometheusMonitor.on_message_in.
        super(PrometheusMonitor, self).on_message_in(tp, offset, message)
        m = self._metrics
        m.messages_received.inc()
        m.active_messages.inc()
        self._received_by_topic(tp.topic).inc()
        self._read_offset_by_tp(tp.topic, tp.partition).set(offset)

    def on_stream_event_in(self, tp: TP, offset: int, stream: Any, event: Any) -> dict[Any, Any] | None:
        """Call when stream starts processing an event."""
        state = super(PrometheusMonitor, self).on_stream_event_in(tp, offset, stream, event)
        m = self._metrics
        m.total_events.inc()
        m.total_active_events.inc()
        child = self._events_by_stream.get(stream)
        if child is None:
            child = self._events_by_stream[stream] = m.total_events_per_stream.labels(stream=f"stream.{self._stream_label(stream)}.events")
        child.inc()
        return state

    def _table_op(self, table: Any, operation: str) -> Any:
        return self._table_ops(f"table.{table.name}", operation)

    def on_table_get(self, table: Any, key: Any) -> None:
        """Call when value in table is retrieved."""
        super(PrometheusMonitor, self).on_table_get(table, key)
        self._table_op(table, self.KEYS_RETRIEVED).inc()

    def on_table_set(self, table: Any, key: Any, value: Any) -> None:
        """Call when new value for key in table is set."""
        super(PrometheusMonitor, self).on_table_set(table, key, value)
        self._table_op(table, self.KEYS_UPDATED).inc()

    def on_table_del(self, table: Any, key: Any) -> None:
        """Call when key in a table is deleted."""
        super(PrometheusMonitor, self).on_table_del(table, key)
        self._table_op(table, self.KEYS_DELETED).inc()

    def on_send_initiated(self, producer: Any, topic: str, message: Any, keysize: int, valsize: int) -> Any:
        """Call when message added to producer buffer."""
        self._sent_by_topic(f"topic.{topic}").inc()
        return super(PrometheusMonitor, self).on_send_initiated(producer, topic, message, keysize, valsize)

    def count(self, metric_name: str, count: int = 1) -> None:
        """Count metric by name."""
        super(PrometheusMonitor, self).count(metric_name, count=count)
        self._by_name(metric_name).inc(count)

    def on_tp_commit(self, tp_offsets: Any) -> None:
        """Call when offset in topic partition is committed."""
        super(PrometheusMonitor, self).on_tp_commit(tp_offsets)
        for tp, offset in tp_offsets.items():
            self._committed_by_tp(tp.topic, tp.partition).set(offset)

    def track_tp_end_offset(self, tp: TP, offset: int) -> None:
        """Track new topic partition end offset for monitoring lags."""
        super(PrometheusMonitor, self).track_tp_end_offset(tp, offset)
        self._end_offset_by_tp(tp.topic, tp.partition).set(offset)

    def clear_partition_series(self) -> None:
        """Remove the per-topic and per-partition series, as Faust does at every rebalance."""
        self._clear_partition_related_metrics()

    def _clear_partition_related_metrics(self) -> None:
        super()._clear_partition_related_metrics()
        # Faust just removed these series from their families: forget the children.
        for cache in (self._received_by_topic, self._read_offset_by_tp, self._end_offset_by_tp, self._committed_by_tp, self._sent_by_topic):
            cache.clear()
