"""The worker's sends: each one retried if it raises at once, and tracked until delivered.

Every send of the ``segment`` agent (change events, dead letters, treatments, feature vectors)
goes through :meth:`TrackedSender.send`, which never raises: it returns the delivery to wait for,
or a failed future when every attempt raised. :class:`agents.pending.PendingWrites` waits for
those deliveries before it writes the record's state and releases its offset; a failed one
stops the writes and the worker, so nothing the record depended on is lost (at-least-once).

See Also
--------
agents.segment_agent : the agent that sends what a record's handler returns.
agents.pending : the state writes that wait for these deliveries.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, cast

from debtor_segments.agents.metrics import ServiceMetrics
from debtor_segments.agents.topics import OUTBOUND_TOPICS, WorkerConfig

__all__ = ["SEND_ATTEMPTS", "OutboundTopics", "TrackedSender"]

# The worker's logger: the send failures keep the name they had in agents/worker.py.
log = logging.getLogger("debtor_segments.worker")

#: Attempts of a send that raises at once (the client's own retries are inside each attempt).
SEND_ATTEMPTS = 3


class OutboundTopics:
    """The worker's outbound Faust topics by unprefixed name; a name first seen (a policy's
    ``debtor.channel.<channel>`` topics) is created on first use, with the inbound partitions."""

    def __init__(self, app: Any, config: WorkerConfig) -> None:
        self.app = app
        self.config = config
        self.topics: dict[str, Any] = {name: self._create(name) for name in OUTBOUND_TOPICS}

    def __getitem__(self, name: str) -> Any:
        topic = self.topics.get(name)
        if topic is None:
            topic = self.topics[name] = self._create(name)
        return topic

    def _create(self, name: str) -> Any:
        return self.app.topic(self.config.topic(name), key_type=bytes, value_type=bytes, partitions=self.config.settings.partitions)


class TrackedSender:
    """Sends that retry what raises at once and count what is not delivered.

    Examples
    --------
    >>> import asyncio
    >>> class Topic:
    ...     def __init__(self, fails): self.fails = fails
    ...     async def send(self, key, value):
    ...         if self.fails:
    ...             self.fails -= 1
    ...             raise OSError("closed")
    ...         done = asyncio.get_running_loop().create_future()
    ...         done.set_result((key, value))
    ...         return done
    >>> async def no_wait(seconds): pass
    >>> sender = TrackedSender(ServiceMetrics(), sleep=no_wait)
    >>> async def send(fails):
    ...     return await (await sender.send(Topic(fails), "debtor.dead-letters", b"k", b"v"))
    >>> asyncio.run(send(2))
    (b'k', b'v')
    >>> asyncio.run(send(3))
    Traceback (most recent call last):
    OSError: closed
    """

    def __init__(self, metrics: ServiceMetrics, *, attempts: int = SEND_ATTEMPTS, sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> None:
        self.metrics = metrics
        self.attempts = attempts
        self.sleep = sleep

    async def send(self, topic: Any, name: str, key: bytes | None, value: bytes | None) -> Awaitable[Any]:
        """Send, retrying a send that raises at once; the delivery to wait for, or a failed
        future if every attempt raised (PendingWrites then stops the writes and the worker).
        Never raises: an exception here would let Faust ack the record and restart the agent
        (offset committed, nothing sent)."""
        error: BaseException | None = None
        for attempt in range(self.attempts):
            try:
                delivery = await topic.send(key=key, value=value)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - e.g. MessageSizeTooLargeError, a closed producer
                error = exc
                if attempt + 1 < self.attempts:
                    await self.sleep(0.25 * 2**attempt)
                continue
            delivery.add_done_callback(functools.partial(self.count_failed_delivery, name))
            return cast(Awaitable[Any], delivery)
        assert error is not None
        # No key or value in the log: they may hold personal data.
        log.error("sending to %s failed %d times (%s: %s): the record is not committed, the worker stops", name, self.attempts, type(error).__name__, str(error)[:200])
        self.metrics.count_send_failure(name)
        failed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        failed.set_exception(error)
        return failed

    def count_failed_delivery(self, name: str, delivery: Any) -> None:
        """A delivery's done callback: count and log one that failed or was cancelled."""
        if delivery.cancelled() or delivery.exception() is not None:
            self.metrics.count_send_failure(name)
            log.error("a send to %s was not delivered (%s): the record is not committed, the worker stops", name, "cancelled" if delivery.cancelled() else type(delivery.exception()).__name__)
