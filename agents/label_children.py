"""The children of a labelled Prometheus family, cached by label values.

Shared by the service's families (:mod:`agents.metrics`) and Faust's
(:mod:`agents.faust_metrics`), which look children up several times per event.
"""

from __future__ import annotations

from typing import Any

__all__ = ["LabelChildren"]


class LabelChildren:
    """The children of one labelled metric family, kept by label values.

    ``labels()`` checks and stringifies every value under a lock, microseconds a call, and
    the service and Faust's sensors call it several times per event. Values go in the order
    of the family's label names.

    Parameters
    ----------
    family : prometheus_client.metrics.MetricWrapperBase
        A labelled family (``Counter``, ``Gauge``, ...).

    Examples
    --------
    >>> from prometheus_client import CollectorRegistry, Counter
    >>> family = Counter("things_total", "Things.", ("kind",), registry=CollectorRegistry())
    >>> children = LabelChildren(family)
    >>> children("red") is children("red"), children("red") is family.labels("red")
    (True, True)
    """

    __slots__ = ("_by_values", "_family")

    def __init__(self, family: Any) -> None:
        self._family = family
        self._by_values: dict[tuple[Any, ...], Any] = {}

    def __call__(self, *values: Any) -> Any:
        """The child of `values` (created on first use)."""
        child = self._by_values.get(values)
        if child is None:
            child = self._by_values[values] = self._family.labels(*values)
        return child

    def clear(self) -> None:
        """Forget the children (after the family removed its series)."""
        self._by_values.clear()
