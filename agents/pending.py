"""State writes that wait for their record's change events without stalling the agent.

A record's change events must be on the broker before its new state is in the changelog: else a
crash can keep the state and lose the events, and the record, processed again after the
restart, is then a duplicate that emits nothing. The agent used to await that delivery for every
record that emits, one broker round trip each, and could do nothing else meanwhile; at a steady
1,000 events/s those waits took ~40 % of its time and it fell behind (docs/performance.md).

:class:`PendingWrites` keeps the order without the stall. The agent hands it each record's
outcome and goes on with the next record:

* a write waits until the change events of its own record *and of every record before it* are
  delivered, then it is applied (in the record's Faust event context, as if the agent wrote
  it); writes are applied in record order, so a debtor's newest state is the one that stays;
* meanwhile :meth:`PendingWrites.get` answers with the newest state, written or not, so the
  next record of the same debtor sees it;
* the record's offset is held until its write is applied: an extra reference on its Faust
  message (``Message.incref``, as Faust counts a message delivered to several streams) keeps
  the stream's ack from marking it done, so Faust commits no offset past a state
  that is not written. A rebalance or a graceful stop waits for those acks (Faust's
  ``wait_empty``), so what was processed is written and committed together;
* a delivery that fails, or a write that raises, stops the writes for good (nothing after it is
  applied or committed) and calls ``on_failure``: the worker stops and its records are
  processed again after restart.

Nothing here blocks: writes are applied from the delivery futures' callbacks. The agent awaits
:meth:`PendingWrites.room` only when ``limit`` writes are pending (the broker is slow or gone).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from debtor_segments.agents.records import Handled, apply_state

__all__ = ["PendingWrites"]


@dataclass(slots=True, eq=False)
class _Write:
    event: Any  # the Faust event; holds an extra reference on its message until applied
    handled: Handled
    context: contextvars.Context  # the agent's context for the record (Faust's current event)
    waiting: int = 0  # deliveries not done yet
    error: BaseException | None = None
    key: bytes = field(init=False)

    def __post_init__(self) -> None:
        self.key = self.handled.debtor_id.encode()


class PendingWrites:
    """Debtor-state writes applied in record order once the change events before them are delivered.

    Parameters
    ----------
    table
        The state table (UTF-8 debtor id -> state bytes); a dict in tests.
    on_failure
        Called once with the error of the first delivery (or write) that fails.
    on_acked
        Called with every event whose held offset is released (Faust's ``on_message_out``
        sensor, which the stream skipped while the offset was held).
    limit
        Pending writes at most; beyond it :meth:`room` waits.

    Examples
    --------
    >>> import asyncio
    >>> from debtor_segments.agents.records import Handled
    >>> class Message:
    ...     refcount = 1
    ...     def incref(self): self.refcount += 1
    >>> class Event:
    ...     def __init__(self): self.message = Message()
    ...     def ack(self):
    ...         self.message.refcount -= 1
    ...         return self.message.refcount == 0
    >>> async def demo():
    ...     table, acked = {}, []
    ...     writes = PendingWrites(table, on_failure=print, on_acked=acked.append)
    ...     delivery = asyncio.get_running_loop().create_future()
    ...     first, second = Event(), Event()
    ...     writes.submit(first, Handled("processed", "x", debtor_id="d1", state=b"v1"), [delivery])
    ...     writes.submit(second, Handled("processed", "x", debtor_id="d1", state=b"v2"), [])
    ...     before = (writes.get(b"d1"), dict(table), len(writes))
    ...     first.message.refcount -= 1; second.message.refcount -= 1  # the stream's own acks
    ...     delivery.set_result(None)
    ...     await asyncio.sleep(0)
    ...     return before, table, len(writes), acked == [first, second]
    >>> asyncio.run(demo())
    ((b'v2', {}, 2), {b'd1': b'v2'}, 0, True)
    """

    def __init__(
        self,
        table: MutableMapping[bytes, bytes],
        *,
        on_failure: Callable[[BaseException], None],
        on_acked: Callable[[Any], None] = lambda event: None,
        limit: int = 1000,
    ) -> None:
        self._table = table
        self._on_failure = on_failure
        self._on_acked = on_acked
        self.limit = limit
        self._queue: deque[_Write] = deque()
        # Debtor key -> its newest pending write (state None: erased).
        self._newest: dict[bytes, _Write] = {}
        self._room: asyncio.Future[None] | None = None
        self.failed: BaseException | None = None

    def __len__(self) -> int:
        return len(self._queue)

    def get(self, key: bytes, default: bytes | None = None) -> bytes | None:
        """The debtor's newest state: that of its latest pending write, else the table's."""
        write = self._newest.get(key)
        if write is None:
            return self._table.get(key, default)
        handled = write.handled
        if handled.marker is not None and key == handled.marker[0]:
            return handled.marker[1]
        return default if handled.erase else handled.state

    def submit(self, event: Any, handled: Handled, deliveries: Sequence[Awaitable[Any]]) -> None:
        """Apply ``handled``'s state change once ``deliveries`` and every earlier write are done.

        Call it from the agent, while ``event`` is its current event; with nothing pending and
        nothing to wait for the write is applied at once.
        """
        if not deliveries and not self._queue and self.failed is None:
            apply_state(self._table, handled)
            return
        write = _Write(event, handled, contextvars.copy_context(), waiting=len(deliveries))
        event.message.incref()
        self._queue.append(write)
        if handled.erase or handled.state is not None:
            self._newest[write.key] = write
        if handled.marker is not None:
            self._newest[handled.marker[0]] = write
        for delivery in deliveries:
            asyncio.ensure_future(delivery).add_done_callback(functools.partial(self._delivered, write))
        self._release()

    async def room(self) -> None:
        """Wait while ``limit`` writes are pending."""
        while len(self._queue) >= self.limit and self.failed is None:
            if self._room is None or self._room.done():
                self._room = asyncio.get_running_loop().create_future()
            await self._room

    def _delivered(self, write: _Write, delivery: asyncio.Future[Any]) -> None:
        write.waiting -= 1
        if write.error is None:
            write.error = delivery.exception() if not delivery.cancelled() else asyncio.CancelledError()
        self._release()

    def _release(self) -> None:
        while self._queue and self.failed is None:
            write = self._queue[0]
            if write.error is not None:
                # Nothing after it may be written: those states may build on this one.
                self.failed = write.error
                self._on_failure(write.error)
                break
            if write.waiting:
                break
            try:
                write.context.run(apply_state, self._table, write.handled)
            except Exception as error:  # noqa: BLE001 - a bug or a store failure: stop, never stall silently
                write.error = error
                continue
            self._queue.popleft()
            if self._newest.get(write.key) is write:
                del self._newest[write.key]
            marker = write.handled.marker
            if marker is not None and self._newest.get(marker[0]) is write:
                del self._newest[marker[0]]
            if write.event.ack():
                self._on_acked(write.event)
        if self._room is not None and not self._room.done() and (len(self._queue) < self.limit or self.failed is not None):
            self._room.set_result(None)
