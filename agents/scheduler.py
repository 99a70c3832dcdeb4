"""Delivery in Kafka timestamp order across the co-partitioned inbound topics.

The worker's inbound topics are consumed by one agent and delivered in Kafka timestamp order
across the co-partitioned topics (:class:`AligningScheduler`, Faust's ``ConsumerScheduler``): a
backlog of payments, contacts and ratings is applied to each debtor in the order it was
produced, as the embedded replay does, instead of one topic racing months ahead of the others
and making the rest "too late".

See Also
--------
agents.faust_internals.ConsumerView : what the scheduler reads of Faust's consumer.
agents.worker : the Faust app, which gives the scheduler its topics and settings.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import orjson
from faust.transport.utils import DefaultSchedulingStrategy
from faust.types import TP
from faust.types.transports import SchedulingStrategyT

from debtor_segments.agents.kafka_io import SEQUENCE_HEADER
from debtor_segments.streams.events import parse_time

__all__ = ["AligningScheduler"]

# The worker's logger: the scheduler's records keep the name they had in agents/worker.py.
log = logging.getLogger("debtor_segments.worker")


class AligningScheduler(SchedulingStrategyT):
    """Faust consumer scheduler that merges the inbound topics by Kafka record timestamp.

    Faust's default round-robin hands out whatever each partition fetched; on a backlog a
    sparse topic (ratings) then runs months ahead of a dense one (payments), and the debtor's
    later payments are rejected as too late. This scheduler holds records of the gated
    (inbound) topics and, per partition number (the topics are co-partitioned, a debtor lives
    on one partition number), releases the record with the smallest timestamp as long as no
    other topic of that partition number may still deliver an earlier one: one whose buffer is
    empty, that has not caught up with its high-water mark and whose last record is older.
    Such a topic is waited for at most ``max_wait_s`` (like Kafka Streams' max.task.idle.ms),
    counted once the client has handed out every record it fetched (``view.client_backlog``);
    an idle, caught-up topic holds a record back for ``grace_ms`` at most, and a *live* record
    not at all (see :meth:`_live`). Records with the same millisecond go by the publisher's
    sequence header, else by event time. Other topics (changelogs) pass straight through.

    Held records were never handed to Faust, so they are neither acknowledged nor committed:
    when the consumer seeks back (rebalance, recovery) they are fetched again and the held
    copies are dropped. Nothing is released while a rebalance settles or for a partition Faust
    would skip (``view.settling``, ``view.deliverable``; :class:`agents.faust_internals.ConsumerView`): Faust counts skipped offsets as a
    gap and would commit them unprocessed.

    Parameters
    ----------
    clock : callable, optional
        Seconds on a monotonic clock (default :func:`time.monotonic`): what the wait for a silent
        partition is measured on. Faust builds the scheduler without arguments; tests pass a fake.
    wall_clock : callable, optional
        POSIX seconds (default :func:`time.time`): what a record's Kafka timestamp is compared
        with (``grace_ms``).
    """

    gated_topics: frozenset[str] = frozenset()
    #: A silent partition that is not caught up is waited for this long, and for at least
    #: ``max_wait_calls`` fetches (time alone would also count time spent blocked downstream),
    #: counted from the last fetch that left the client with no records to hand out.
    max_wait_s: float = 5.0
    max_wait_calls: int = 5
    #: Records younger than this (Kafka timestamp vs. wall clock) wait for a silent partition
    #: to show it has nothing earlier; it bounds the latency such a partition adds.
    grace_ms: float = 2000.0
    #: A record whose event time is this close to its Kafka timestamp is live traffic and passes
    #: a caught-up partition at once (0: never); records of ``strict_topics`` always wait.
    live_window_ms: float = 60_000.0
    strict_topics: frozenset[str] = frozenset()
    #: The consumer as this scheduler reads it (:class:`agents.faust_internals.ConsumerView`),
    #: set per app by :func:`agents.faust_app.make_app`.
    view: Any = None

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, wall_clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._wall_clock = wall_clock
        self._default = DefaultSchedulingStrategy()  # type: ignore[abstract]
        self._buffers: dict[TP, deque[Any]] = {}
        self._next_offset: dict[TP, int] = {}
        self._last_ts: dict[TP, int] = {}
        # Partitions waited for: (since when, at which call of iterate).
        self._waiting: dict[TP, tuple[float, int]] = {}
        self._given_up: set[TP] = set()
        self._calls = 0
        self._backlog = False
        self._tie_keys: dict[tuple[TP, int], _TieKey] = {}
        #: How often a partition was given up on (it stayed silent though not caught up).
        self.gave_up = 0

    @property
    def held(self) -> int:
        """Records held back right now."""
        return sum(len(buffer) for buffer in self._buffers.values())

    def iterate(self, records: Mapping[TP, list[Any]]) -> Iterator[tuple[TP, Any]]:
        """One fetch's records (Faust's scheduler hook): buffer the gated topics' records, pass
        the others through, then release what can go (:meth:`drain`). Every call counts as a
        fetch towards ``max_wait_calls``; whether the client still holds fetched records
        (``view.client_backlog``) is read here, once per fetch."""
        self._calls += 1
        self._backlog = self.view.client_backlog(self.gated_topics)
        other: dict[TP, list[Any]] = {}
        for tp, batch in records.items():
            if tp.topic in self.gated_topics:
                self.add(tp, batch)
            else:
                other[tp] = batch
        if other:
            yield from self._default.iterate(other)
        yield from self.drain()

    def add(self, tp: TP, batch: list[Any]) -> None:
        """Buffer newly fetched records of a gated partition."""
        if not batch:
            return
        buffer = self._buffers.setdefault(tp, deque())
        first = batch[0].offset
        expected = self._next_offset.get(tp)
        if expected is not None and first < expected:
            # The consumer sought back: the new fetch supersedes what is held.
            while buffer and buffer[-1].offset >= first:
                buffer.pop()
        buffer.extend(batch)
        self._next_offset[tp] = batch[-1].offset + 1
        self._last_ts[tp] = batch[-1].timestamp
        self._waiting.pop(tp, None)
        self._given_up.discard(tp)

    def nothing_to_deliver(self, tp: TP) -> bool:
        """Whether ``tp`` has no record to hand out: none held here, none fetched beyond.

        For ``/ready``: a partition that resumed after recovery and has nothing to process
        counts as resumed (Faust internals, best effort: False when unknown)."""
        return not self._buffers.get(tp) and self.caught_up(tp)

    def caught_up(self, tp: TP) -> bool:
        highwater = self.view.highwater(tp)
        if highwater is None:
            return False
        position = self._next_offset.get(tp)
        if position is None:
            position = self.view.position(tp)
        return position is not None and position >= highwater

    def drain(self, now: float | None = None, wall_ms: float | None = None) -> Iterator[tuple[TP, Any]]:
        """Release every held record that can go now, in timestamp order per partition number
        (``now`` and ``wall_ms``: the scheduler's clocks unless given)."""
        if self.view.settling():
            return
        assignment = self.view.assignment(self.gated_topics)
        if assignment is not None:
            for tp in [tp for tp in self._buffers if tp not in assignment]:
                self._forget(tp)
            known = assignment | set(self._buffers)
        else:
            known = set(self._buffers)
        groups: dict[int, list[TP]] = {}
        for tp in sorted(known):
            groups.setdefault(tp.partition, []).append(tp)
        now = self._clock() if now is None else now
        wall_ms = self._wall_clock() * 1000.0 if wall_ms is None else wall_ms
        deliverable = self.view.deliverable()
        active = dict(groups)
        while active:
            for partition in list(active):
                tps = active[partition]
                released = 0
                while released < 100:
                    head = self._head(tps)
                    if head is None or not deliverable(head[1]) or self._blocked(head[1], head[0], tps, now, wall_ms):
                        active.pop(partition)
                        break
                    tp = head[1]
                    record = self._buffers[tp][0]
                    # Pop only once the consumer asks for the next record: if it stops
                    # iterating (rebalance), the record it did not take stays held.
                    yield tp, record
                    buffer = self._buffers.get(tp)
                    if buffer and buffer[0] is record:
                        buffer.popleft()
                    released += 1

    def _head(self, tps: list[TP]) -> tuple[int, TP] | None:
        """The partition whose next record goes first: smallest Kafka timestamp; on a tie (one
        millisecond holds many records of a bulk load) the publisher's sequence number
        (header :data:`SEQUENCE_HEADER`, as ``publish`` sets it), else the earlier event time."""
        best: tuple[int, TP] | None = None
        for tp in tps:
            buffer = self._buffers.get(tp)
            if not buffer:
                continue
            ts = buffer[0].timestamp
            if best is None or ts < best[0] or ts == best[0] and _before(self._tie_key(tp, buffer[0]), self._tie_key(best[1], self._buffers[best[1]][0])):
                best = (ts, tp)
        return best

    def _tie_key(self, tp: TP, record: Any) -> _TieKey:
        key = (tp, record.offset)
        cached = self._tie_keys.get(key)
        if cached is None:
            cached = _TieKey(_sequence(record), record.value)
            if len(self._tie_keys) > 10_000:
                self._tie_keys.clear()
            self._tie_keys[key] = cached
        return cached

    def _blocked(self, head: TP, ts: int, tps: list[TP], now: float, wall_ms: float) -> bool:
        # Whether the head may pass a caught-up partition: asked once, and only if one is met.
        passes_caught_up: bool | None = None
        for tp in tps:
            if self._buffers.get(tp):
                continue  # its head is not earlier: the candidate is the group's smallest
            last = self._last_ts.get(tp)
            passes = last is not None and last >= ts
            if not passes and self.caught_up(tp):
                if passes_caught_up is None:
                    passes_caught_up = ts <= wall_ms - self.grace_ms or self._live(head)
                passes = passes_caught_up
            if passes:
                # A partition keeps producer order, so nothing earlier can come from it once it
                # delivered something later. A caught-up partition may still get records its
                # high-water mark does not show yet (that mark is as old as the last fetch that
                # included it), hence the grace: only records at least that old pass on it,
                # and live ones.
                self._waiting.pop(tp, None)
                continue
            if tp in self._given_up:
                continue
            if self._backlog:
                # The client still holds fetched records it has not handed out: the consumer is
                # behind, not the partition, whose records may be queued behind the others'.
                # On a backlog on a busy machine that takes longer than the wait (CI: a topic
                # given up at start-up ran months ahead and made valid events too late).
                self._waiting[tp] = (now, self._calls)
                return True
            since, calls = self._waiting.setdefault(tp, (now, self._calls))
            if now - since >= self.max_wait_s and self._calls - calls >= self.max_wait_calls:
                log.info("no records from %s[%d] for %.1fs: not waiting for it any longer", tp.topic, tp.partition, now - since)
                self._given_up.add(tp)
                self.gave_up += 1
                continue
            return True
        return False

    def _live(self, tp: TP) -> bool:
        """Whether the head record of ``tp`` is live traffic: its event time is within
        ``live_window_ms`` of its Kafka timestamp (when its producer sent it).

        Why it need not wait for the grace: what the grace waits for are records still in a
        producer's queue, sent before this one. Live records sent before a live record are at
        most seconds older in event time, far inside the engine's lateness window, where the
        order of two events changes no counter of the state (they are kept in event time and
        commute). The grace matters for bulk loads, whose queued records may be months older in
        event time than the one in hand: those carry old event times and wait as before.
        Erasures (``strict_topics``) always wait: one must not overtake its debtor's events.
        """
        if not self.live_window_ms or tp.topic in self.strict_topics:
            return False
        record = self._buffers[tp][0]
        timestamp: float = record.timestamp  # the Kafka record's timestamp, ms
        return abs(timestamp - self._tie_key(tp, record).event_time * 1000.0) <= self.live_window_ms

    def _forget(self, tp: TP) -> None:
        for mapping in (self._buffers, self._next_offset, self._last_ts, self._waiting):
            mapping.pop(tp, None)
        self._given_up.discard(tp)


def _sequence(record: Any) -> int | None:
    for name, value in getattr(record, "headers", None) or ():
        if name == SEQUENCE_HEADER:
            try:
                return int(value)
            except (TypeError, ValueError):
                return None
    return None


class _TieKey:
    """What orders two records with the same Kafka timestamp: the sequence number a publisher
    gave it, and its event time, parsed from the value only when a tie needs it (records
    of one publisher compare by sequence alone)."""

    __slots__ = ("_event_time", "_value", "sequence")

    def __init__(self, sequence: int | None, value: bytes | None) -> None:
        self.sequence = sequence
        self._value = value
        self._event_time: float | None = None

    @property
    def event_time(self) -> float:
        if self._event_time is None:
            self._event_time = _occurred_at(self._value)
        return self._event_time


def _before(a: _TieKey, b: _TieKey) -> bool:
    """Tie-break of two records with the same Kafka timestamp: sequence numbers of one
    publisher if both have one, else event time.

    >>> late, early = b'{"occurred_at": "2026-01-02T00:00:00Z"}', b'{"occurred_at": "2026-01-01T00:00:00Z"}'
    >>> _before(_TieKey(2, late), _TieKey(3, early)), _before(_TieKey(None, early), _TieKey(3, late))
    (True, True)
    """
    if a.sequence is not None and b.sequence is not None:
        return a.sequence < b.sequence
    return a.event_time < b.event_time


def _occurred_at(value: bytes | None) -> float:
    """An inbound record's event time in POSIX seconds, or -inf if it has none.

    >>> _occurred_at(b'{"occurred_at": "2026-01-01T00:00:01Z"}'), _occurred_at(b"oops")
    (1767225601.0, -inf)
    """
    try:
        return parse_time(orjson.loads(value or b"")["occurred_at"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, OverflowError, OSError):
        return float("-inf")
