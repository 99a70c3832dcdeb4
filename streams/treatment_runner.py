"""Embedded treatments: the treatment step, its due steps and the experiment book behind an engine.

``replay``, ``demo`` and the benchmarks put a :class:`TreatmentRunner` after the
:class:`~streams.engine.Engine`: :meth:`TreatmentRunner.after` takes each event with the
engine's step and returns what to send on ``debtor.treatments`` and ``debtor.contact-due``.
The stream's clock is the latest event time seen; steps and experiment checks fall due as
it passes them (a heap of due times, so an event with nothing due costs a comparison).

>>> from streams.engine import Engine
>>> from streams.events import DecodeError, decode_event
>>> from streams.policy import parse_policy
>>> from streams.simulation import simulate
>>> policy = parse_policy({"version": "v1", "segments": {"unknown": "p", "willing_able": "p"},
...     "plans": {"p": [{"day": 0, "channel": "letter", "tone": "neutral", "message_id": "m"}]}})
>>> engine, runner, sent = Engine(), TreatmentRunner(policy), []
>>> for line in simulate(debtors=20, months=3, seed=3).lines:
...     try:
...         event = decode_event(line)
...     except DecodeError:
...         continue
...     sent += runner.after(event, engine.handle(event), engine.states.get(event.debtor_id))
>>> sorted({o.value["type"] for o in sent})
['contact_due', 'treatment_assigned']
"""

from __future__ import annotations

import heapq
from typing import Any

from schemas import CONTACT_DUE_TOPIC, PERSONA_CHANGES_TOPIC, QUADRANT_CHANGES_TOPIC, TREATMENTS_TOPIC
from streams.engine import Output, Step
from streams.events import Event
from streams.experiments import ExperimentBook
from streams.policy import Policy
from streams.treatments import NEVER, TreatmentState, due, on_changes

__all__ = ["TreatmentRunner"]

_CHANGE_TOPICS = (PERSONA_CHANGES_TOPIC, QUADRANT_CHANGES_TOPIC)


class TreatmentRunner:
    """All debtors' treatment states in a dict, the due heap, and one :class:`ExperimentBook`."""

    def __init__(self, policy: Policy, book: ExperimentBook | None = None, *, payments_from_events: bool = True) -> None:
        self.policy = policy
        self.payments_from_events = payments_from_events
        self.book = book if book is not None else ExperimentBook(policy)
        self.states: dict[str, TreatmentState] = {}
        # One due heap and one clock per partition: in the service a partition's steps fall due
        # as *its* records pass them (another partition may run ahead); replay has one.
        self._heaps: dict[int, list[tuple[float, str]]] = {}
        self._clocks: dict[int, float] = {}
        self.clock = float("-inf")  # the latest event time of all partitions (experiment checks)
        self._next_tick = float("-inf")

    def set_policy(self, policy: Policy) -> None:
        """Put a reloaded policy in force: debtors follow it at their next due step or change."""
        self.policy = policy
        self.book.policy = policy
        # Debtors with steps to come follow it at their partition's next record; the others at
        # their next change.
        for partition, heap in self._heaps.items():
            for debtor_id in {debtor_id for _, debtor_id in heap}:
                heapq.heappush(heap, (self._clocks.get(partition, self.clock), debtor_id))

    def restore(self, partition: int, states: list[TreatmentState]) -> None:
        """Take back the treatment states of ``partition`` (from the worker's table after a
        restart or a rebalance): their next steps fall due again as the partition's clock passes."""
        heap = self._heaps.setdefault(partition, [])
        for state in states:
            self.states[state.debtor_id] = state
            if state.next_due_ts < NEVER:
                heapq.heappush(heap, (state.next_due_ts, state.debtor_id))

    def forget(self, partition: int, debtor_ids: list[str]) -> None:
        """Drop a partition this worker no longer serves: its due steps are another's now."""
        self._heaps.pop(partition, None)
        self._clocks.pop(partition, None)
        for debtor_id in debtor_ids:
            self.states.pop(debtor_id, None)

    def after(self, event: Event, step: Step, engine_state: Any = None, *, emitted_at: str = "", partition: int = 0) -> list[Output]:
        """What the treatments send after the engine processed ``event`` (of ``partition``) into ``step``."""
        outputs: list[Output] = []
        heap = self._heaps.get(partition)
        if heap is None:
            heap = self._heaps[partition] = []
        if self.payments_from_events and step.outcome == "processed" and event.type == "payment_received":
            self.book.paid(event.debtor_id, event.ts, event.data["amount_cents"])
        # Most events change nothing: no list, no call.
        changes = [o.value for o in step.outputs if o.topic in _CHANGE_TOPICS] if step.outputs else None
        if changes:
            stamp = emitted_at or event.occurred_at
            previous = self.states.get(event.debtor_id)
            if previous is not None and previous.next_due_ts <= event.ts:
                # Steps of the old plan due by this event's time go first. In replay the clock
                # sent them already; in the service another partition may have moved the
                # clock ahead of this one, and the change would otherwise replace them unsent.
                earlier = due(previous, event.ts, self.policy, self.book.allocations, emitted_at=stamp).outputs
                self._record(earlier, event.ts, 0)
                outputs.extend(earlier)
            result = on_changes(previous, event.debtor_id, changes, event.ts, self.policy, self.book.allocations, emitted_at=stamp)
            if result.state is None:
                self.states.pop(event.debtor_id, None)
                self.book.forget(event.debtor_id)
            else:
                self.states[event.debtor_id] = result.state
                if result.state.next_due_ts < NEVER:
                    heapq.heappush(heap, (result.state.next_due_ts, event.debtor_id))
            placed = getattr(engine_state, "outstanding_cents", 0) if engine_state is not None else 0
            self._record(result.outputs, event.ts, placed)
            outputs.extend(result.outputs)
        if event.ts > self._clocks.get(partition, float("-inf")):
            self._clocks[partition] = event.ts
            self.clock = max(self.clock, event.ts)
            if heap and heap[0][0] <= event.ts or self.clock >= self._next_tick:
                outputs.extend(self.advance(event.ts, emitted_at=emitted_at, partition=partition))
        return outputs

    def idle(self, partition: int, elapsed_s: float, *, emitted_at: str = "") -> list[Output]:
        """Time passed on ``partition`` without a record: its clock moves on by ``elapsed_s``
        and the steps due by then go out (the service's partition timer).

        A caught-up partition's records carry about the current time, so idle time is event
        time passing; a partition that never had a record has no clock and sends nothing.
        Records are still applied in event time: one older than the moved clock changes its
        debtor's plan, it just cannot send a step again that the clock sent already.
        """
        clock = self._clocks.get(partition)
        if clock is None or elapsed_s <= 0.0:
            return []
        now_ts = clock + elapsed_s
        self._clocks[partition] = now_ts
        self.clock = max(self.clock, now_ts)
        return self.advance(now_ts, emitted_at=emitted_at or _iso(now_ts), partition=partition)

    def advance(self, now_ts: float, *, emitted_at: str = "", partition: int = 0) -> list[Output]:
        """Send the partition's steps due by ``now_ts``; mature outcomes, run the daily checks."""
        outputs: list[Output] = []
        heap = self._heaps.setdefault(partition, [])
        if heap and heap[0][0] <= now_ts:
            emitted_at = emitted_at or _iso(now_ts)
        while heap and heap[0][0] <= now_ts:
            _, debtor_id = heapq.heappop(heap)
            state = self.states.get(debtor_id)
            if state is None or state.next_due_ts > now_ts and state.policy_version == self.policy.version:
                continue  # a stale entry: the debtor was reassigned or erased since
            placed_before = state.assignment_id
            result = due(state, now_ts, self.policy, self.book.allocations, emitted_at=emitted_at)
            if state.assignment_id != placed_before:
                placed = self.book.debtors[debtor_id].placed if debtor_id in self.book.debtors else 0
                self._record(result.outputs, now_ts, placed)
            else:
                self._record(result.outputs, now_ts, 0)
            outputs.extend(result.outputs)
            if state.next_due_ts < NEVER:
                heapq.heappush(heap, (state.next_due_ts, debtor_id))
        if self.clock >= self._next_tick:
            self._next_tick = self.clock + 3600.0  # the book checks daily; maturing hourly is plenty
            outputs.extend(self.book.tick(self.clock, emitted_at=emitted_at or _iso(self.clock)))
        return outputs

    def _record(self, outputs: tuple[Output, ...], at_ts: float, placed: int) -> None:
        for output in outputs:
            if output.topic == TREATMENTS_TOPIC and output.value["type"] == "treatment_assigned":
                self.book.assigned(output.value, at_ts, placed)
            elif output.topic == CONTACT_DUE_TOPIC:
                self.book.contacted(output.value)


def _iso(ts: float) -> str:
    import time

    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
