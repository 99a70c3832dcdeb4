"""The worker's timers: the local store's maintenance, and the treatments' reload and partition timer.

* :class:`StoreMaintenance` (RocksDB store only, every ``store_maintenance_s``): compacts the
  partitions that processed an erasure a while ago, so the erased state leaves the files on
  disk (:class:`RecentErasures`), and removes the local state of partitions this worker
  neither serves nor keeps a standby of.
* :class:`TreatmentTimers` (with a policy): reloads the policy file when it changes and
  refreshes the experiment gauges (every 5 s), and sends the treatment steps that fell due on
  idle partitions (every second).

Each tick is a method, called by the Faust timer :meth:`install` sets up, and by the tests with
fakes of the app, the table's store and the sender.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import Callable, Iterable
from typing import Any

from debtor_segments.agents import faust_internals
from debtor_segments.agents.records import now_iso
from debtor_segments.agents.service import Service
from debtor_segments.agents.treatment_service import TreatmentService

__all__ = ["RecentErasures", "StoreMaintenance", "TreatmentTimers"]

# The worker's logger: the timers' records keep the name they had in agents/worker.py.
log = logging.getLogger("debtor_segments.worker")


class RecentErasures:
    """Partitions that processed an erasure, and when (monotonic seconds).

    >>> erasures = RecentErasures(clock=lambda: 10.0)
    >>> erasures.erased(3)
    >>> erasures.due(min_age=2.0, now=11.0), erasures.due(min_age=2.0, now=12.0)
    (set(), {3})
    >>> erasures.forget({3}); erasures.due(min_age=0.0)
    set()
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.at: dict[int, float] = {}  # partition -> when its last erasure was processed

    def erased(self, partition: int) -> None:
        self.at[partition] = self.clock()

    def due(self, min_age: float, now: float | None = None) -> set[int]:
        """Partitions whose last erasure is at least ``min_age`` seconds old."""
        now = self.clock() if now is None else now
        return {partition for partition, at in self.at.items() if now - at >= min_age}

    def forget(self, partitions: Iterable[int]) -> None:
        for partition in partitions:
            self.at.pop(partition, None)


class StoreMaintenance:
    """The local RocksDB store's upkeep (:meth:`tick`): compaction after erasures, files of
    partitions no longer served removed."""

    #: Seconds after an erasure before its partition is compacted: its delete is applied by then
    #: (agents/pending.py).
    ERASURE_AGE_S = 2.0

    def __init__(self, service: Service, erasures: RecentErasures, tracked_topics: Iterable[str]) -> None:
        self.service = service
        self.erasures = erasures
        self.tracked_topics = set(tracked_topics)  # the changelog and the inbound topics

    def install(self, app: Any, interval: float) -> None:
        app.timer(interval)(self.tick)

    async def tick(self) -> None:
        service, app = self.service, self.service.app
        if app.rebalancing or app.in_recovery or not service.assigned_once:
            return
        table = service.table
        # Erasures processed a while ago: their deletes are applied by now (agents/pending.py).
        due = self.erasures.due(self.ERASURE_AGE_S)
        if due:
            done = await asyncio.get_running_loop().run_in_executor(None, faust_internals.compact_partitions, table, due)
            self.erasures.forget(due)
            log.info("compacted the local store of partitions %s after erasures", done)
        assignor = app.assignor
        owned = {tp.partition for tp in (*assignor.assigned_actives(), *assignor.assigned_standbys()) if tp.topic in self.tracked_topics}
        for path in faust_internals.unowned_partition_paths(table, owned, service.config.settings.partitions):
            shutil.rmtree(path, ignore_errors=True)
            log.info("removed the local state of a partition this worker no longer serves: %s", path.name)


class TreatmentTimers:
    """The treatments' timers: the policy reload (:meth:`policy_tick`) and the partition timer
    (:meth:`steps_due`)."""

    def __init__(self, service: Service, treatments: TreatmentService, sender: Any, outbound: Any) -> None:
        self.service = service
        self.treatments = treatments
        self.sender = sender
        self.outbound = outbound

    def install(self, app: Any) -> None:
        app.timer(interval=5.0)(self.policy_tick)
        app.timer(interval=1.0)(self.steps_due)

    async def policy_tick(self) -> None:
        self.treatments.reload_if_changed()
        self.treatments.refresh_metrics()

    async def steps_due(self) -> None:
        # The partition timer: steps fall due on idle partitions too. What it sends is not
        # tied to a record's offset (the states it changes are written with the partition's
        # next record), so a failed send is logged and counted by the sender and awaited
        # here, not left to PendingWrites.
        service = self.service
        if service.app.rebalancing or not service.assigned_once:
            return
        partitions = {tp.partition for tp in service.assigned}
        deliveries = []
        for name, key, value in self.treatments.due_by_timer(partitions, now_iso()):
            deliveries.append(await self.sender.send(self.outbound[name], name, key, value))
        for outcome in await asyncio.gather(*deliveries, return_exceptions=True):
            if isinstance(outcome, BaseException):
                log.error("a due treatment step could not be delivered: %s", type(outcome).__name__)
