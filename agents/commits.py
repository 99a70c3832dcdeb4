"""Commit handling: an offset is committed only once what its record sent is delivered and its
state written.

Faust commits the offsets its streams acknowledged. :class:`agents.pending.PendingWrites`
holds a record's acknowledgement until its write is applied, then releases it
(:meth:`WriteHooks.released`); a write that cannot complete stops the worker before any commit
past it (:meth:`WriteHooks.failed`). On a hand-over (partitions revoked, a graceful stop)
:func:`commit_acknowledged` commits everything acknowledged so far, so the next owner does not
process it again.

See Also
--------
agents.pending : the state writes and the acknowledgements they hold.
agents.assignment : the hand-overs that commit.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import faust

__all__ = ["WriteHooks", "commit_acknowledged"]

# The worker's logger: these records keep the name they had in agents/worker.py.
log = logging.getLogger("debtor_segments.worker")


async def commit_acknowledged(app: faust.App) -> None:
    """Commit every offset acknowledged so far, also while Faust's timer commit is running.

    Faust's last commit before a stop or a rebalance only waits for a commit under way and
    returns (``Consumer.maybe_wait_for_commit_to_finish``); that commit may predate the last
    acknowledgements, and the next owner processes those records again: their dead letters a
    second time, and their events, older than the debtor's lateness window by then, as too
    late. With ``exactly_once`` the transaction manager commits and ends the transactions: not
    touched here.
    """
    if app.in_transaction:
        return
    consumer = app.consumer
    if not await consumer.commit(start_new_transaction=False):
        await consumer.commit(start_new_transaction=False)


class WriteHooks:
    """What :class:`agents.pending.PendingWrites` calls back into the Faust app."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def failed(self, error: BaseException) -> None:
        """A state write could not complete: crash the app (its records are processed again
        after the restart)."""
        # Nothing after the record is written or committed: stop, and process it again on restart.
        log.error("a state write could not complete (%s: %s): the worker stops", type(error).__name__, error)
        asyncio.ensure_future(self.app.crash(error))

    def released(self, event: Any) -> None:
        """A record's held acknowledgement is released: Faust's ``on_message_out`` sensor, which
        the stream skipped while the offset was held."""
        message = event.message
        self.app.sensors.on_message_out(message.tp, message.offset, message)
