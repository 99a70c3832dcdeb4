"""Embedded treatments: the treatment step, its due steps and the experiment book behind an engine.

``replay``, ``demo`` and the benchmarks put a :class:`TreatmentRunner` after the
:class:`~streams.engine.Engine`: :meth:`TreatmentRunner.after` takes each event with the
engine's step and returns what to send on ``debtor.treatments`` and ``debtor.contact-due``.
The stream's clock is the latest event time seen; steps and experiment checks fall due as
it passes them (a heap of due times, so an event with nothing due costs a comparison).

>>> from debtor_segments.streams.engine import Engine
>>> from debtor_segments.streams.events import DecodeError, decode_event
>>> from debtor_segments.streams.policy import parse_policy
>>> from debtor_segments.streams.simulation import simulate
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
['contact_decision', 'contact_due', 'treatment_assigned']
"""

from __future__ import annotations

import calendar
import heapq
import time
from typing import Any

from debtor_segments.schemas import CHANNEL_TOPIC_PREFIX, CONTACT_DUE_TOPIC, PERSONA_CHANGES_TOPIC, QUADRANT_CHANGES_TOPIC, TREATMENTS_TOPIC
from debtor_segments.streams.answer_rates import PortfolioRates
from debtor_segments.streams.contact_guard import erasure_tombstones, guard_step, skip_step
from debtor_segments.streams.contact_state import OBSERVED_TYPES, observe
from debtor_segments.streams.engine import Output, Step
from debtor_segments.streams.events import Event
from debtor_segments.streams.experiments import ExperimentBook
from debtor_segments.streams.local_time import zone
from debtor_segments.streams.policy import Policy
from debtor_segments.streams.treatments import NEVER, TreatmentState, due, on_changes

__all__ = ["TreatmentRunner"]

_CHANGE_TOPICS = (PERSONA_CHANGES_TOPIC, QUADRANT_CHANGES_TOPIC)


#: The deployment default time zone of debtors who gave none (agents.settings overrides it).
DEFAULT_TIMEZONE = "Europe/Amsterdam"


class TreatmentRunner:
    """All debtors' treatment states in a dict, the due heap, one :class:`ExperimentBook`, and
    the contact guard (:mod:`streams.contact_guard`) in front of every step."""

    def __init__(
        self,
        policy: Policy,
        book: ExperimentBook | None = None,
        *,
        payments_from_events: bool = True,
        default_timezone: str = DEFAULT_TIMEZONE,
    ) -> None:
        if zone(default_timezone) is None:
            raise ValueError(f"default time zone {default_timezone!r} is not an IANA time zone name")
        self.policy = policy
        self.default_timezone = default_timezone
        self.payments_from_events = payments_from_events
        self.book = book if book is not None else ExperimentBook(policy)
        self.states: dict[str, TreatmentState] = {}
        #: The answer rates of this runner's debtors: the prior of each debtor's best time to call.
        self.portfolio = PortfolioRates()
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
            self.portfolio.add(state.contact.rates)
            if _pending(state) < NEVER:
                heapq.heappush(heap, (_pending(state), state.debtor_id))

    def forget(self, partition: int, debtor_ids: list[str]) -> None:
        """Drop a partition this worker no longer serves: its due steps are another's now."""
        self._heaps.pop(partition, None)
        self._clocks.pop(partition, None)
        for debtor_id in debtor_ids:
            state = self.states.pop(debtor_id, None)
            if state is not None:
                self.portfolio.add(state.contact.rates, -1)

    def after(self, event: Event, step: Step, engine_state: Any = None, *, emitted_at: str = "", partition: int = 0) -> list[Output]:
        """What the treatments send after the engine processed ``event`` (of ``partition``) into ``step``."""
        outputs: list[Output] = []
        heap = self._heaps.get(partition)
        if heap is None:
            heap = self._heaps[partition] = []
        if step.outcome == "processed":
            if self.payments_from_events and event.type == "payment_received":
                self.book.paid(event.debtor_id, event.ts, event.data["amount_cents"])
            elif event.type in OBSERVED_TYPES:
                # Known before any step at or after this event's time is decided.
                self.observe(event)
        # Most events change nothing: no list, no call.
        changes = [o.value for o in step.outputs if o.topic in _CHANGE_TOPICS and o.value is not None] if step.outputs else None
        if changes:
            stamp = emitted_at or event.occurred_at
            previous = self.states.get(event.debtor_id)
            if previous is not None and previous.next_due_ts <= event.ts:
                # Steps of the old plan due by this event's time go first. In replay the clock
                # sent them already; in the service another partition may have moved the
                # clock ahead of this one, and the change would otherwise replace them unsent.
                earlier = self._guard(previous, due(previous, event.ts, self.policy, self.book.allocations, emitted_at=stamp).outputs, event.ts, stamp)
                self._record(earlier, event.ts, 0)
                outputs.extend(earlier)
            result = on_changes(previous, event.debtor_id, changes, event.ts, self.policy, self.book.allocations, emitted_at=stamp)
            if result.state is None:
                self.states.pop(event.debtor_id, None)
                self.book.forget(event.debtor_id)
                if previous is not None:
                    self.portfolio.add(previous.contact.rates, -1)
                    outputs.extend(erasure_tombstones(event.debtor_id, previous.contact))
            else:
                self.states[event.debtor_id] = result.state
                sent = self._guard(result.state, result.outputs, event.ts, stamp)
                if _pending(result.state) < NEVER:
                    heapq.heappush(heap, (_pending(result.state), event.debtor_id))
                placed = getattr(engine_state, "outstanding_cents", 0) if engine_state is not None else 0
                self._record(sent, event.ts, placed)
                outputs.extend(sent)
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
            if state is None or _pending(state) > now_ts and state.policy_version == self.policy.version:
                continue  # a stale entry: the debtor was reassigned or erased since
            placed_before = state.assignment_id
            sent = self._guard(state, due(state, now_ts, self.policy, self.book.allocations, emitted_at=emitted_at).outputs, now_ts, emitted_at)
            sent += self._release(state, now_ts, emitted_at)
            if state.assignment_id != placed_before:
                placed = self.book.debtors[debtor_id].placed if debtor_id in self.book.debtors else 0
                self._record(sent, now_ts, placed)
            else:
                self._record(sent, now_ts, 0)
            outputs.extend(sent)
            if _pending(state) < NEVER:
                heapq.heappush(heap, (_pending(state), debtor_id))
        if self.clock >= self._next_tick:
            self._next_tick = self.clock + 3600.0  # the book checks daily; maturing hourly is plenty
            outputs.extend(self.book.tick(self.clock, emitted_at=emitted_at or _iso(self.clock)))
        return outputs

    def observe(self, event: Event) -> None:
        """Fold a processed contact, preference or claim event into its debtor's contact state
        (a debtor without a treatment yet gets one, so its history counts from the start)."""
        state = self.states.get(event.debtor_id)
        if state is None:
            state = self.states[event.debtor_id] = TreatmentState(event.debtor_id, policy_version=self.policy.version)
        observe(state.contact, event, self.portfolio, self.default_timezone)

    def _guard(self, state: TreatmentState, outputs: tuple[Output, ...] | list[Output], now_ts: float, emitted_at: str) -> list[Output]:
        """``outputs`` with every contact_due replaced by what the contact guard decides."""
        guarded: list[Output] = []
        for output in outputs:
            if output.topic != CONTACT_DUE_TOPIC or output.value is None:
                guarded.append(output)
                continue
            planned_ts = _utc_ts(output.value["due_at"])
            guarded += self._decide(state, output.value, planned_ts, planned_ts, now_ts, emitted_at)
        return guarded

    def _release(self, state: TreatmentState, now_ts: float, emitted_at: str) -> list[Output]:
        """Decide again the held steps whose time the clock reached (in release order).

        A held step of a plan the debtor has left is not sent (``plan_ended``: its message was
        for the old segment); with ``supersede_held``, one that a later step of its plan on the
        same channel has fallen due after is not sent either (``superseded``).
        """
        outputs: list[Output] = []
        contact = state.contact
        while contact.held and contact.next_release() <= now_ts:
            entry = min(contact.held, key=lambda held: held[0])
            contact.held.remove(entry)
            release_ts, value, planned_ts = entry
            plan = self.policy.plans.get(value["plan_id"])
            # Superseded: a later step of the plan on the same channel has fallen due since.
            later = self.policy.contact_rules.supersede_held and plan is not None and any(step.channel == value["channel"] for step in plan.steps[value["step"] + 1 : state.next_step])
            reason = "plan_ended" if value["cause_event_id"] != state.assignment_id else "superseded" if later else ""
            if reason:
                outputs.append(
                    skip_step(
                        contact,
                        value,
                        planned_ts,
                        release_ts,
                        reason,
                        self.policy.contact_rules,
                        self.default_timezone,
                        emitted_at=emitted_at,
                        policy_version=self.policy.version,
                    )
                )
                continue
            outputs += self._decide(state, value, planned_ts, release_ts, now_ts, emitted_at)
        return outputs

    def _decide(self, state: TreatmentState, value: dict[str, Any], planned_ts: float, at_ts: float, now_ts: float, emitted_at: str) -> list[Output]:
        plan = self.policy.plans.get(value["plan_id"])
        later = tuple(step.channel for step in plan.steps[value["step"] + 1 :]) if plan is not None else ()
        outputs = guard_step(
            state.contact,
            value,
            planned_ts,
            at_ts,
            self.policy.contact_rules,
            later,
            self.default_timezone,
            emitted_at=emitted_at,
            now_ts=now_ts,
            portfolio=self.portfolio,
            policy_version=self.policy.version,
        )
        if self.policy.channel_topics:
            outputs += [Output(CHANNEL_TOPIC_PREFIX + o.value["channel"], o.key, o.value) for o in outputs if o.topic == CONTACT_DUE_TOPIC and o.value]
        return outputs

    def _record(self, outputs: list[Output], at_ts: float, placed: int) -> None:
        for output in outputs:
            if output.value is None:
                continue
            if output.topic == TREATMENTS_TOPIC and output.value["type"] == "treatment_assigned":
                self.book.assigned(output.value, at_ts, placed)
            elif output.topic == CONTACT_DUE_TOPIC:
                self.book.contacted(output.value)


def _pending(state: TreatmentState) -> float:
    """When the debtor next needs the clock: its next plan step or its earliest held step."""
    return min(state.next_due_ts, state.contact.next_release())


def _utc_ts(text: str) -> float:
    """Seconds since the epoch of a ``YYYY-MM-DDTHH:MM:SSZ`` time (as streams.treatments
    writes ``due_at``); strptime cost a tenth of the guard.

    >>> _utc_ts("2026-03-01T10:00:00Z")
    1772359200.0
    """
    day = (int(text[0:4]), int(text[5:7]), int(text[8:10]), int(text[11:13]), int(text[14:16]), int(text[17:19]))
    return float(calendar.timegm(day))


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
