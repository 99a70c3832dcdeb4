"""The partitions a worker serves: what changes when Faust assigns or revokes them, and on a
graceful stop.

:class:`PartitionSignals` holds the receivers of Faust's ``on_partitions_assigned``,
``on_partitions_revoked`` and ``on_before_shutdown`` signals (:meth:`PartitionSignals.connect`).
They keep :attr:`agents.service.Service.assigned` (what readiness, the treatment restore and the
partition timer read) and the partitions' progress, forget the treatments of revoked partitions
(their new owner restores them from the table), and commit what was acknowledged before a
partition is handed over (:func:`agents.commits.commit_acknowledged`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from faust.types import TP

from debtor_segments.agents.commits import commit_acknowledged
from debtor_segments.agents.service import Service

__all__ = ["PartitionSignals"]


class PartitionSignals:
    """Faust's rebalance and shutdown signals, for one service.

    Parameters
    ----------
    service
        The parts the signals update (``assigned``, ``assigned_once``, ``progress``, ``treatments``).
    learner
        The model learner, stopped on shutdown (anything with an async ``stop()``).
    commit
        Commits what was acknowledged (:func:`agents.commits.commit_acknowledged`; a fake in tests).
    """

    def __init__(self, service: Service, learner: Any, commit: Callable[[Any], Awaitable[None]] = commit_acknowledged) -> None:
        self.service = service
        self.learner = learner
        self.commit = commit

    def connect(self, app: Any) -> None:
        """Connect the receivers to ``app``'s signals."""
        app.on_partitions_revoked.connect(self.on_revoked)
        app.on_partitions_assigned.connect(self.on_assigned)
        app.on_before_shutdown.connect(self.on_shutdown)

    async def on_revoked(self, sender: Any, revoked: set[TP], **kwargs: Any) -> None:
        service = self.service
        service.assigned.difference_update(revoked)
        if service.treatments is not None:
            service.treatments.revoked(tp.partition for tp in revoked)
        await self.commit(service.app)

    async def on_assigned(self, sender: Any, assigned: set[TP], **kwargs: Any) -> None:
        service = self.service
        service.assigned = set(assigned)
        service.assigned_once = True
        service.progress.assigned(assigned)

    async def on_shutdown(self, sender: Any, **kwargs: Any) -> None:
        await self.commit(self.service.app)
        await self.learner.stop()
