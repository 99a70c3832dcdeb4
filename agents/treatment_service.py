"""Treatments in the Kafka worker: one call per handled record, a reload timer, two pages.

Kept apart from the worker so it changes in one call site (``agents/segment_agent.py``; the
timers are in ``agents/timers.py``): after the engine's record is handled,
:meth:`TreatmentService.after_record` runs the treatment step on its outputs (the same
:class:`~streams.treatment_runner.TreatmentRunner` as ``replay``) and returns what to send on
``debtor.treatments``, ``debtor.contact-due`` and, with the policy's
``channel_topics``, ``debtor.channel.<channel>``.

Each debtor's treatment state is also kept in the worker's state table, under a side key
(:func:`streams.treatments.stored_key`), written with the record that changed it (so after its
sends, in that partition's changelog): a restarted worker, or the new owner of a partition after
a rebalance, restores the partition's states at its first record and goes on with the plans
(tests/integration/test_treatments.py). Steps sent by the partition timer are written with the
partition's next record; a crash before it sends them again (same event ids). The experiment
book is still per worker and in memory: a restart starts its figures afresh.
Steps fall due in event time, as in ``replay``: as records advance the stream's clock, and on
the worker's partition timer (:meth:`TreatmentService.due_by_timer`) as a caught-up partition
sits idle, so a step falls due on time although no record arrives on its partition.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, cast

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge

from debtor_segments.agents.auth import AGGREGATES, authorize, parse_tokens
from debtor_segments.schemas import PERSONA_CHANGES_TOPIC, QUADRANT_CHANGES_TOPIC
from debtor_segments.streams.contact_state import OBSERVED_TYPES
from debtor_segments.streams.engine import Output, Step
from debtor_segments.streams.events import Event
from debtor_segments.streams.page import render_page
from debtor_segments.streams.policy import PolicyError, load_policy
from debtor_segments.streams.report import ALL_PERSONAS, ALL_QUADRANTS, distribution, row_shares
from debtor_segments.streams.state import DebtorState
from debtor_segments.streams.treatment_runner import DEFAULT_TIMEZONE, TreatmentRunner
from debtor_segments.streams.treatments import TreatmentState, read_stored, stored_key, stored_value

__all__ = ["TreatmentService"]

log = logging.getLogger(__name__)
_CHANGES = (PERSONA_CHANGES_TOPIC, QUADRANT_CHANGES_TOPIC)


class TreatmentService:
    """The policy file in force, its runner, and the glue to the worker's handled records."""

    def __init__(self, path: Path, registry: CollectorRegistry | None = None, *, default_timezone: str = DEFAULT_TIMEZONE) -> None:
        self.path = path
        policy = load_policy(path)  # PolicyError at start: the worker refuses to run
        self.runner = TreatmentRunner(policy, default_timezone=default_timezone)  # ValueError: an unknown zone
        self._mtime = self._stat()
        log.info("treatment policy %s in force (%s)", policy.version, path)
        reg = self.registry = CollectorRegistry() if registry is None else registry
        arm_labels = ["experiment", "arm", "horizon"]
        self.sent = Counter("debtor_segments_treatment_events", "Treatment events sent, by type, plan and experiment arm ('' outside experiments).", ["type", "plan", "arm"], registry=reg)
        self.arm_debtors = Gauge("debtor_segments_experiment_debtors", "Debtors of an experiment arm past the horizon (days).", arm_labels, registry=reg)
        self.arm_share = Gauge("debtor_segments_experiment_collected_share", "Collected share of an experiment arm at the horizon (days).", arm_labels, registry=reg)
        self.decisions = Counter(
            "debtor_segments_contact_decisions", "Decisions of the contact guard, by verdict, first reason and channel decided on.", ["verdict", "reason", "channel"], registry=reg
        )
        self.tombstones = Counter("debtor_segments_contact_decision_tombstones", "Tombstones sent for the contact decisions of erased debtors.", registry=reg)
        self.policy_info = Gauge("debtor_segments_policy_info", "The treatment policy in force (value 1).", ["version"], registry=reg)
        self.policy_info.labels(policy.version).set(1)
        # For the portfolio page: the mix of this worker's debtors every 30 days of event time,
        # and the persona changes it saw (previous -> new).
        self.persona_mix: list[tuple[str, dict[str, int]]] = []
        self.quadrant_mix: list[tuple[str, dict[str, int]]] = []
        self.transitions: dict[str, dict[str, int]] = {row: dict.fromkeys(ALL_PERSONAS, 0) for row in ALL_PERSONAS}
        self._next_snapshot = 0.0
        # partition -> monotonic time of its last record or timer tick: what the timer counts
        # as idle time.
        self._last_seen: dict[int, float] = {}
        # What the worker's table must hold for a restart or a rebalance to go on where this
        # worker was: debtors whose treatment state changed, per partition, not yet written.
        self._changed: dict[int, set[str]] = {}
        self._partition_of: dict[str, int] = {}
        self.restored: set[int] = set()

    def _snapshot(self, ts: float) -> None:
        label = time.strftime("%Y-%m-%d", time.gmtime(ts))
        states = self.runner.states.values()
        self.persona_mix.append((label, distribution((s.persona for s in states), ALL_PERSONAS)))
        self.quadrant_mix.append((label, distribution((s.quadrant for s in states), ALL_QUADRANTS)))
        del self.persona_mix[:-36], self.quadrant_mix[:-36]  # three years of months at most

    def page(self) -> str:
        """The read-only portfolio page (this worker's debtors), as ``demo`` writes it."""
        return render_page(f"Portfolio (policy {self.version})", self.persona_mix, self.quadrant_mix, row_shares(self.transitions), self.runner.book.report())

    def refresh_metrics(self) -> None:
        """Per-arm gauges from the experiment book (called by the worker's timer)."""
        for experiment_id, body in self.runner.book.report()["experiments"].items():
            for arm, figures in body["segments"]["all"].items():
                for horizon in ("d30", "d60", "d90"):
                    labels = (experiment_id, arm, horizon[1:])
                    self.arm_debtors.labels(*labels).set(figures[horizon]["debtors"])
                    self.arm_share.labels(*labels).set(figures[horizon]["collected_share"])

    @property
    def version(self) -> str:
        return self.runner.policy.version

    def _stat(self) -> float:
        try:
            return self.path.stat().st_mtime
        except OSError:
            return 0.0

    def reload_if_changed(self) -> bool:
        """Load the policy again if its file changed; a bad file keeps the one in force."""
        mtime = self._stat()
        if mtime == self._mtime:
            return False
        self._mtime = mtime
        try:
            policy = load_policy(self.path)
        except PolicyError as error:
            log.error("treatment policy %s refused, %s stays in force: %s", self.path, self.version, error)
            return False
        if policy.version != self.version:
            self.policy_info.clear()
            self.policy_info.labels(policy.version).set(1)
            self.runner.set_policy(policy)
            log.info("treatment policy %s in force (%s)", policy.version, self.path)
        return True

    def after_record(self, handled: Any, raw: bytes | None, emitted_at: str, partition: int = 0) -> list[tuple[str, bytes, bytes | None]]:
        """(unprefixed topic, key, value) to send after one handled inbound record."""
        self._last_seen[partition] = time.monotonic()
        if handled.event_ts is None or not handled.debtor_id:
            return []
        changes = [Output(topic, handled.debtor_id, orjson.loads(value)) for topic, _, value in handled.sends if topic in _CHANGES]
        data: dict[str, Any] = {}
        observed = handled.outcome == "processed" and handled.event_type in OBSERVED_TYPES
        if (observed or handled.event_type == "payment_received") and handled.outcome == "processed" and raw:
            data = orjson.loads(raw)
        # The event id names a recorded call attempt in the contact state (ContactState.add_call):
        # without it every attempt would replace the one before and the call limit count one.
        event = Event(str(data.get("event_id", "")), handled.debtor_id, handled.event_type, "", handled.event_ts, data)
        for change in changes:
            value = cast("dict[str, Any]", change.value)  # parsed from a sent change event: never a tombstone
            if value["type"] == "persona_changed" and value.get("reason") != "erased":
                self.transitions[value["previous"]][value["persona"]] += 1
        if handled.event_ts >= self._next_snapshot:
            if self._next_snapshot:
                self._snapshot(handled.event_ts)
            self._next_snapshot = handled.event_ts + 30 * 86_400.0
        state = DebtorState.from_bytes(handled.state) if changes and handled.state is not None else None
        outputs = self.runner.after(event, Step(None, tuple(changes), handled.outcome), state, emitted_at=emitted_at, partition=partition)
        if changes or observed:
            self._mark(partition, [handled.debtor_id])
        self._mark(partition, _debtors(outputs))
        return self._sends(outputs)

    def last_seen(self, partition: int) -> float | None:
        """When ``partition`` last had a record or a timer tick (monotonic seconds; None: never
        since its assignment)."""
        return self._last_seen.get(partition)

    def due_by_timer(self, partitions: Iterable[int], emitted_at: str, now: float | None = None) -> list[tuple[str, bytes, bytes | None]]:
        """(unprefixed topic, key, value) of the steps that fell due on ``partitions`` (the
        worker's assigned ones) while they had no record since the last call."""
        now = time.monotonic() if now is None else now
        outputs: list[Output] = []
        for partition in sorted(set(partitions)):
            last = self._last_seen.get(partition)
            if last is None:
                continue
            self._last_seen[partition] = now
            idle = self.runner.idle(partition, now - last, emitted_at=emitted_at)
            self._mark(partition, _debtors(idle))
            outputs += idle
        return self._sends(outputs)

    # --- the treatment states in the worker's table --------------------------------------------

    def _mark(self, partition: int, debtor_ids: Iterable[str]) -> None:
        for debtor_id in debtor_ids:
            self._changed.setdefault(partition, set()).add(debtor_id)
            self._partition_of[debtor_id] = partition

    def take_writes(self, partition: int) -> list[tuple[bytes, bytes | None]]:
        """(table key, stored state or None to delete) of the debtors of ``partition`` whose
        treatment changed since the last call: the worker writes them with its record of that
        partition (so they go to that partition's changelog, after the record's sends)."""
        changed = self._changed.pop(partition, None)
        if not changed:
            return []
        writes: list[tuple[bytes, bytes | None]] = []
        for debtor_id in sorted(changed):
            state = self.runner.states.get(debtor_id)
            writes.append((stored_key(debtor_id), stored_value(state, partition) if state is not None else None))
            if state is None:
                self._partition_of.pop(debtor_id, None)
        return writes

    def restore(self, partitions: Iterable[int], entries: Iterable[tuple[Any, Any]]) -> int:
        """Take back the treatment states of ``partitions`` from the table's (key, value)
        entries, in one scan, once per assignment; the number restored."""
        wanted = set(partitions) - self.restored
        states: dict[int, list[TreatmentState]] = {partition: [] for partition in wanted}
        for key, value in entries:
            stored = read_stored(key, value) if isinstance(key, bytes) else None
            if stored is not None and stored[0] in wanted and stored[1].debtor_id not in self.runner.states:
                states[stored[0]].append(stored[1])
                self._partition_of[stored[1].debtor_id] = stored[0]
        for partition, theirs in states.items():
            self.runner.restore(partition, theirs)
        self.restored |= wanted
        return sum(len(theirs) for theirs in states.values())

    def revoked(self, partitions: Iterable[int]) -> None:
        """Partitions this worker no longer serves: forget their treatments (the new owner
        restores them from the table); unwritten changes are lost with the unacked records,
        which the new owner processes again."""
        for partition in set(partitions):
            debtors = [d for d, p in self._partition_of.items() if p == partition]
            self.runner.forget(partition, debtors)
            for debtor_id in debtors:
                del self._partition_of[debtor_id]
            self._changed.pop(partition, None)
            self._last_seen.pop(partition, None)
            self.restored.discard(partition)

    def _sends(self, outputs: list[Output]) -> list[tuple[str, bytes, bytes | None]]:
        """(topic, key, value) to send; a value of None is a tombstone."""
        for o in outputs:
            if o.value is None:
                self.tombstones.inc()
            elif o.value["type"] == "contact_decision":
                self.decisions.labels(o.value["verdict"], o.value["reason"], o.value["channel"]).inc()
            elif o.value["type"] != "experiment_concluded":
                self.sent.labels(o.value["type"], o.value["plan_id"], o.value["arm"] or "").inc()
        return [(o.topic, o.key.encode(), None if o.value is None else orjson.dumps(o.value)) for o in outputs]

    def experiments(self) -> dict[str, Any]:
        """The body of ``GET /experiments``."""
        report = self.runner.book.report()
        return {
            "policy_version": report["policy_version"],
            "experiments": [
                {"experiment_id": eid, "segment": body["segment"], "mode": body["mode"], "decision": body["decision"]["decision"], "days": body["days"]} for eid, body in report["experiments"].items()
            ],
        }

    def experiment(self, experiment_id: str) -> dict[str, Any] | None:
        """The body of ``GET /experiments/{id}`` (None: no such experiment)."""
        experiments: dict[str, dict[str, Any]] = self.runner.book.report()["experiments"]
        return experiments.get(experiment_id)

    def install_pages(self, app: Any, api_tokens: str) -> None:
        """``GET /experiments``, ``GET /experiments/{id}`` and ``GET /portfolio`` (HTML), for ops and agent."""
        tokens = parse_tokens(api_tokens)

        def check(web: Any, request: Any) -> Any:
            decision = authorize(tokens, request.headers.get("Authorization"), AGGREGATES)
            if decision.allowed:
                return None
            return web.json(decision.body(), status=decision.status, headers=dict(decision.headers))

        @app.page("/experiments")
        async def experiments(web: Any, request: Any) -> Any:
            return check(web, request) or web.json(self.experiments())

        @app.page("/portfolio")
        async def portfolio(web: Any, request: Any) -> Any:
            return check(web, request) or web.html(self.page())

        @app.page("/experiments/{experiment_id}")
        async def experiment(web: Any, request: Any, experiment_id: str) -> Any:
            refused = check(web, request)
            if refused is not None:
                return refused
            body = self.experiment(experiment_id)
            if body is None:
                return web.json({"error": "not_found", "detail": "no such experiment"}, status=404)
            return web.json(body)


def _debtors(outputs: list[Output]) -> list[str]:
    """The debtors whose treatment state made ``outputs`` (an experiment's conclusion is about
    the experiment, not a debtor)."""
    # A contact decision is keyed <debtor>/<n>, a tombstone deletes one: the debtor is in the value
    # or was marked by the erasure that made it.
    return [o.value["debtor_id"] for o in outputs if o.value is not None and o.value["type"] != "experiment_concluded"]
