"""Per-partition processing progress: what ``/ready`` and the idle-seconds metric report.

After a restart or a rebalance Faust recovers the tables, seeks the partitions to their committed
offsets and resumes the streams; only then does the worker process records again. A worker is
*ready* once every inbound partition it owns has either processed a record since it was
assigned or has nothing to process (caught up), so ``/ready`` stays false during recovery and
turns true when processing has resumed, not merely when the group assigned the partitions.

``debtor_segments_partition_idle_seconds{topic, partition}`` is the time since a partition last
processed a record (since its assignment in this process, if none yet): a stall is a partition
whose idle time grows while its lag (``faust_topic_partition_end_offset`` minus
``faust_topic_partition_offset_commited``) is above zero.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["PartitionProgress"]


class PartitionProgress:
    """Last processed time of every inbound partition and which ones resumed since assignment.

    Partitions are any hashable with ``topic`` and ``partition`` (Faust's ``TP``).

    Examples
    --------
    >>> from collections import namedtuple
    >>> TP = namedtuple("TP", "topic partition")
    >>> clock = iter([10.0, 11.0, 14.0, 15.0]).__next__
    >>> progress = PartitionProgress(lambda tp: tp.topic.startswith("in"), clock=clock)
    >>> progress.assigned({TP("in", 0), TP("in", 1), TP("changelog", 0)})   # at 10
    >>> progress.processed(TP("in", 0))                                     # at 11
    >>> sorted(progress.waiting(caught_up=lambda tp: False))
    [TP(topic='in', partition=1)]
    >>> progress.waiting(caught_up=lambda tp: tp.partition == 1)
    []
    >>> sorted(progress.idle_seconds().items())                             # at 14
    [(('in', 0), 3.0), (('in', 1), 4.0)]
    """

    def __init__(self, tracked: Callable[[Any], bool], *, clock: Callable[[], float] = time.monotonic) -> None:
        self._tracked = tracked
        self._clock = clock
        self._last: dict[Any, float] = {}
        self._assigned_at: dict[Any, float] = {}
        self._resumed: set[Any] = set()

    def assigned(self, tps: Iterable[Any]) -> None:
        """The consumer's new assignment: every partition must resume again."""
        now = self._clock()
        tps = {tp for tp in tps if self._tracked(tp)}
        self._assigned_at = {tp: self._assigned_at.get(tp, now) for tp in tps}
        self._resumed.clear()

    def processed(self, tp: Any) -> None:
        """A record of ``tp`` was processed just now (called for every record: kept cheap)."""
        self._last[tp] = self._clock()
        self._resumed.add(tp)

    def waiting(self, caught_up: Callable[[Any], bool]) -> list[Any]:
        """Assigned partitions that neither processed a record since their assignment nor are
        caught up (``caught_up(tp)``: nothing to process)."""
        return [tp for tp in self._assigned_at if tp not in self._resumed and not caught_up(tp)]

    def idle_seconds(self) -> dict[tuple[str, int], float]:
        """Seconds since each assigned partition last processed a record (or was assigned)."""
        now = self._clock()
        return {(tp.topic, tp.partition): now - self._last.get(tp, since) for tp, since in self._assigned_at.items()}
