"""The treatment step: a segment change assigns a plan (or an experiment's arm); steps fall due.

Pure like :func:`streams.engine.process`: :func:`on_changes` takes a debtor's treatment state
and the change events one engine step emitted, and returns the new state and what to send
(``treatment_assigned`` on ``debtor.treatments``, and the plan steps already due on
``debtor.contact-due``); :func:`due` sends the steps the stream's clock has passed. Event ids
derive from the cause, as the change events' do, so replay and service agree and a re-run
sends the same ids.

In ``fixed`` mode a keyed hash of (debtor, experiment) picks the arm: the same debtor gets
the same arm in replay and in the service, and again when it comes back to the segment.
In ``adaptive`` mode the same hash draws from the probabilities of an :class:`Allocation`
(Thompson sampling, computed by :mod:`streams.experiments`); the probability used is on the
event, for unbiased offline evaluation.

>>> from debtor_segments.streams.policy import parse_policy
>>> policy = parse_policy({"version": "v1",
...     "plans": {"p": [{"day": 0, "channel": "email", "tone": "friendly", "message_id": "m0"},
...                     {"day": 7, "channel": "call", "tone": "neutral", "message_id": "m1"}]},
...     "segments": {"willing_able": "p"}})
>>> change = {"type": "quadrant_changed", "quadrant": "willing_able", "event_id": "q1",
...           "cause_event_id": "e9", "occurred_at": "2026-03-01T00:00:00Z"}
>>> step = on_changes(None, "d1", [change], 1772323200.0, policy, emitted_at="now")
>>> [(o.topic, o.value["type"]) for o in step.outputs]
[('debtor.treatments', 'treatment_assigned'), ('debtor.contact-due', 'contact_due')]
>>> step.state.next_step, step.state.next_due_ts - step.state.assigned_ts
(1, 604800.0)
>>> [o.value["message_id"] for o in due(step.state, 1772323200.0 + 8 * 86400, policy, emitted_at="now").outputs]
['m1']
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from hashlib import blake2b
from typing import Any, NamedTuple

import orjson

from debtor_segments.schemas import CONTACT_DUE_TOPIC, TREATMENTS_TOPIC
from debtor_segments.streams.contact_state import ContactState
from debtor_segments.streams.engine import Output
from debtor_segments.streams.policy import Experiment, PlanStep, Policy

__all__ = [
    "Allocation",
    "TreatmentState",
    "TreatmentStep",
    "arm_for",
    "due",
    "on_changes",
    "read_stored",
    "stored_key",
    "stored_value",
    "unit_hash",
]

_DAY = 86_400.0
#: Never due (a plan with no step left).
NEVER = float("inf")
#: Table keys of stored treatment states start with NUL, which no debtor id may contain
#: (:func:`streams.state.is_debtor_key`), so they never collide with a debtor's state.
_STORED_PREFIX = b"\x00treatment:"


def stored_key(debtor_id: str) -> bytes:
    """Table key of a debtor's stored treatment state.

    >>> stored_key("d42")
    b'\\x00treatment:d42'
    """
    return _STORED_PREFIX + debtor_id.encode()


def stored_value(state: TreatmentState, partition: int) -> bytes:
    """A treatment state as stored, with the partition it belongs to (its key is not the
    debtor's, so the key does not say)."""
    return orjson.dumps({**state.to_dict(), "partition": partition})


def read_stored(key: bytes, value: bytes | None) -> tuple[int, TreatmentState] | None:
    """(partition, state) of a stored treatment state; ``None`` for any other table entry.

    >>> partition, state = read_stored(stored_key("d1"), stored_value(TreatmentState("d1", plan_id="p"), 3))
    >>> partition, state == TreatmentState("d1", plan_id="p"), read_stored(b"d1", b"{}")
    (3, True, None)
    """
    if value is None or not key.startswith(_STORED_PREFIX):
        return None
    data = orjson.loads(value)
    partition = data.pop("partition")
    return int(partition), TreatmentState.from_dict(data)


@dataclass(frozen=True, slots=True)
class Allocation:
    """How new debtors of an experiment are split now.

    ``probabilities`` (arm -> probability, in the policy's arm order) overrides the fixed
    weights (adaptive mode); ``winner`` set means the experiment concluded and promoted it:
    every new assignment gets it.
    """

    probabilities: Mapping[str, float] = field(default_factory=dict)
    winner: str = ""


@dataclass(slots=True)
class TreatmentState:
    """One debtor's treatment: a few scalars, whatever the plan's length."""

    debtor_id: str
    persona: str = "unknown"
    quadrant: str = "unknown"
    segment: str = ""
    plan_id: str = ""
    experiment_id: str = ""
    arm: str = ""
    probability: float = 1.0
    assigned_ts: float = 0.0
    assignment_id: str = ""
    next_step: int = 0
    next_due_ts: float = NEVER
    policy_version: str = ""
    #: What the contact guard knows about the debtor (streams.contact_state).
    contact: ContactState = field(default_factory=ContactState)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (for a table); ``next_due_ts`` infinity is stored as -1."""
        out = {name: getattr(self, name) for name in _PLAIN}
        if out["next_due_ts"] == NEVER:
            out["next_due_ts"] = -1.0
        out["contact"] = self.contact.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TreatmentState:
        """Inverse of :meth:`to_dict`.

        >>> TreatmentState.from_dict(TreatmentState("d1").to_dict()) == TreatmentState("d1")
        True
        """
        values = {name: data[name] for name in _PLAIN if name in data}
        state = cls(debtor_id=data["debtor_id"], contact=ContactState.from_dict(data.get("contact") or {}), **{k: v for k, v in values.items() if k != "debtor_id"})
        if state.next_due_ts < 0:
            state.next_due_ts = NEVER
        return state


class TreatmentStep(NamedTuple):
    """Result of :func:`on_changes` / :func:`due`; ``state`` ``None`` means delete it (erasure)."""

    state: TreatmentState | None
    outputs: tuple[Output, ...]


def unit_hash(debtor_id: str, experiment: Experiment) -> float:
    """A uniform number in [0, 1) from a hash of (debtor, experiment) keyed by the salt.

    >>> from debtor_segments.streams.policy import Arm, Experiment
    >>> e = Experiment("x", "job", (Arm("a", 1), Arm("b", 1)), salt="s1")
    >>> unit_hash("d1", e) == unit_hash("d1", e), 0 <= unit_hash("d1", e) < 1
    (True, True)
    """
    digest = blake2b(f"{debtor_id}\x00{experiment.experiment_id}".encode(), digest_size=8, key=experiment.salt.encode()[:64])
    return int.from_bytes(digest.digest(), "big") / 2**64


def arm_for(debtor_id: str, experiment: Experiment, allocation: Allocation | None = None) -> tuple[str, float]:
    """The arm (plan id) of a debtor and the probability it had of getting it.

    >>> from debtor_segments.streams.policy import Arm, Experiment
    >>> e = Experiment("x", "job", (Arm("a", 3), Arm("b", 1)))
    >>> arm_for("d1", e, Allocation(winner="b"))
    ('b', 1.0)
    >>> arm_for("d1", e)[1] in (0.75, 0.25)
    True
    """
    if allocation is not None and allocation.winner:
        return allocation.winner, 1.0
    shares = allocation.probabilities if allocation is not None and allocation.probabilities else experiment.weights
    u = unit_hash(debtor_id, experiment)
    cumulative = 0.0
    arm = experiment.arms[-1].plan_id
    for candidate in experiment.arms:
        cumulative += shares.get(candidate.plan_id, 0.0)
        if u < cumulative:
            arm = candidate.plan_id
            break
    return arm, float(shares.get(arm, 0.0))


def on_changes(
    state: TreatmentState | None,
    debtor_id: str,
    changes: Iterable[Mapping[str, Any]],
    cause_ts: float,
    policy: Policy,
    allocations: Mapping[str, Allocation] | None = None,
    *,
    emitted_at: str,
) -> TreatmentStep:
    """Apply the persona_changed / quadrant_changed values one engine step emitted.

    A change that leaves the debtor in the same segment keeps the plan and arm; one that
    moves it ends the plan and assigns the new segment's (or nothing, if no label matches).
    An erasure (reason ``erased``) deletes the state and sends nothing more.
    """
    new = TreatmentState(debtor_id) if state is None else TreatmentState(**{k: getattr(state, k) for k in _FIELDS})
    cause: Mapping[str, Any] | None = None
    for change in changes:
        kind = change.get("type")
        if kind == "persona_changed":
            new.persona = change["persona"]
        elif kind == "quadrant_changed":
            new.quadrant = change["quadrant"]
        else:
            continue
        if change.get("reason") == "erased":
            return TreatmentStep(None, ())
        cause = change
    if cause is None:
        return TreatmentStep(state, ())
    segment = policy.segment_of(new.persona, new.quadrant) or ""
    if segment == new.segment:
        # Same segment: the debtor keeps its plan and arm (a reloaded policy is followed by due).
        return TreatmentStep(new, due(new, cause_ts, policy, allocations, emitted_at=emitted_at).outputs)
    outputs: list[Output] = []
    if segment:
        seed = f"treatment_assigned\x00{debtor_id}\x00{cause['cause_event_id']}"
        _assign(new, segment, policy, allocations, cause_ts, cause, seed, "segment_changed", emitted_at, outputs)
    else:
        _clear(new, policy)
    return TreatmentStep(new, tuple(outputs) + due(new, cause_ts, policy, allocations, emitted_at=emitted_at).outputs)


def due(
    state: TreatmentState,
    now_ts: float,
    policy: Policy,
    allocations: Mapping[str, Allocation] | None = None,
    *,
    emitted_at: str,
) -> TreatmentStep:
    """Send the steps whose ``due_at`` the clock (``now_ts``, event time) has reached.

    ``state`` is updated in place (callers own it: the step that just assigned it, or a
    runner's table). A debtor assigned under an older policy whose segment now resolves to
    another plan or experiment, or whose experiment promoted another arm, moves to that plan
    first (``policy_changed`` / ``winner_promoted``), keeping its day count: the new plan
    goes on where the debtor is, so nobody gets the first weeks twice.
    """
    outputs: list[Output] = []
    if state.segment and state.policy_version != policy.version:
        _follow_policy(state, now_ts, policy, allocations, emitted_at, outputs)
    elif state.experiment_id and allocations:
        allocation = allocations.get(state.experiment_id)
        if allocation is not None and allocation.winner and allocation.winner != state.arm:
            seed = f"treatment_assigned\x00{state.debtor_id}\x00{state.assignment_id}\x00winner"
            _reassign(state, policy, allocations, now_ts, seed, "winner_promoted", emitted_at, outputs)
    if state.next_due_ts > now_ts:
        return TreatmentStep(state, tuple(outputs))
    plan = policy.plans.get(state.plan_id)
    steps = plan.steps if plan is not None else ()
    if state.segment and steps and state.next_step >= len(steps):
        # The plan finished and the rest after it passed: the segment's plan starts again,
        # at the time it fell due (not the clock's), so replay and the service agree.
        seed = f"treatment_assigned\x00{state.debtor_id}\x00{state.assignment_id}\x00finished"
        _assign(state, state.segment, policy, allocations, state.next_due_ts, None, seed, "plan_finished", emitted_at, outputs)
        steps = policy.plans[state.plan_id].steps
    while state.next_step < len(steps) and state.assigned_ts + steps[state.next_step].day * _DAY <= now_ts:
        number = state.next_step
        step = steps[number]
        digest = blake2b(f"contact_due\x00{state.debtor_id}\x00{state.assignment_id}\x00{number}".encode(), digest_size=12)
        due_at = state.assigned_ts + step.day * _DAY
        value = {
            "event_id": f"contact_due-{digest.hexdigest()}",
            "debtor_id": state.debtor_id,
            "type": "contact_due",
            "occurred_at": _rfc3339(due_at),
            "emitted_at": emitted_at,
            "cause_event_id": state.assignment_id,
            "due_at": _rfc3339(due_at),
            "plan_id": state.plan_id,
            "step": number,
            "day": step.day,
            "channel": step.channel,
            "tone": step.tone,
            "message_id": step.message_id,
            "experiment_id": state.experiment_id or None,
            "arm": state.arm or None,
            "policy_version": state.policy_version,
            "persona": state.persona,
            "quadrant": state.quadrant,
        }
        # The contact guard (streams.contact_guard) decides when and on which channel it goes,
        # and routes it to its channel topic.
        outputs.append(Output(CONTACT_DUE_TOPIC, state.debtor_id, value))
        state.next_step += 1
    state.next_due_ts = _next_due(state, steps, policy)
    return TreatmentStep(state, tuple(outputs))


def _next_due(state: TreatmentState, steps: tuple[PlanStep, ...], policy: Policy) -> float:
    """When the debtor's next step falls due; after the last one, when the plan starts again
    (``restart_after_days``), or never."""
    if state.next_step < len(steps):
        return state.assigned_ts + steps[state.next_step].day * _DAY
    if state.segment and steps and policy.restart_after_days:
        return state.assigned_ts + (steps[-1].day + policy.restart_after_days) * _DAY
    return NEVER


_FIELDS = tuple(TreatmentState.__dataclass_fields__)
_PLAIN = tuple(name for name in _FIELDS if name != "contact")


def _assign(
    state: TreatmentState,
    segment: str,
    policy: Policy,
    allocations: Mapping[str, Allocation] | None,
    at_ts: float,
    cause: Mapping[str, Any] | None,
    seed: str,
    reason: str,
    emitted_at: str,
    outputs: list[Output],
) -> None:
    target = policy.segments[segment]
    experiment = policy.experiments.get(target)
    if experiment is not None:
        plan_id, probability = arm_for(state.debtor_id, experiment, (allocations or {}).get(target))
        state.experiment_id, state.arm, state.probability = target, plan_id, probability
    else:
        plan_id = target
        state.experiment_id, state.arm, state.probability = "", "", 1.0
    digest = blake2b(seed.encode(), digest_size=12)
    state.segment, state.plan_id, state.policy_version = segment, plan_id, policy.version
    state.assignment_id = f"treatment_assigned-{digest.hexdigest()}"
    state.assigned_ts, state.next_step, state.next_due_ts = at_ts, 0, at_ts
    value = {
        "event_id": state.assignment_id,
        "debtor_id": state.debtor_id,
        "type": "treatment_assigned",
        "occurred_at": cause["occurred_at"] if cause is not None else _rfc3339(at_ts),
        "emitted_at": emitted_at,
        "cause_event_id": cause["cause_event_id"] if cause is not None else state.assignment_id,
        "policy_version": policy.version,
        "persona": state.persona,
        "quadrant": state.quadrant,
        "segment": segment,
        "plan_id": plan_id,
        "experiment_id": state.experiment_id or None,
        "arm": state.arm or None,
        "assignment_probability": round(state.probability, 6),
        "reason": reason,
    }
    outputs.append(Output(TREATMENTS_TOPIC, state.debtor_id, value))


def _reassign(
    state: TreatmentState,
    policy: Policy,
    allocations: Mapping[str, Allocation] | None,
    now_ts: float,
    seed: str,
    reason: str,
    emitted_at: str,
    outputs: list[Output],
) -> None:
    started = state.assigned_ts
    _assign(state, state.segment, policy, allocations, now_ts, None, seed, reason, emitted_at, outputs)
    # Keep the debtor's day count: steps of the new plan before today are skipped.
    plan = policy.plans[state.plan_id]
    state.assigned_ts = started
    state.next_step = sum(1 for step in plan.steps if started + step.day * _DAY < now_ts)
    state.next_due_ts = _next_due(state, plan.steps, policy)


def _follow_policy(
    state: TreatmentState,
    now_ts: float,
    policy: Policy,
    allocations: Mapping[str, Allocation] | None,
    emitted_at: str,
    outputs: list[Output],
) -> None:
    segment = policy.segment_of(state.persona, state.quadrant) or ""
    target = policy.segments.get(segment, "")
    same = segment == state.segment and (
        (state.experiment_id and target == state.experiment_id and state.arm in policy.plans) or (not state.experiment_id and target == state.plan_id and target in policy.plans)
    )
    if same:
        state.policy_version = policy.version
        return
    if not segment:
        _clear(state, policy)
        return
    seed = f"treatment_assigned\x00{state.debtor_id}\x00{state.assignment_id}\x00{policy.version}"
    state.segment = segment
    _reassign(state, policy, allocations, now_ts, seed, "policy_changed", emitted_at, outputs)


def _clear(state: TreatmentState, policy: Policy) -> None:
    state.segment = state.plan_id = state.experiment_id = state.arm = state.assignment_id = ""
    state.probability, state.next_step, state.next_due_ts = 1.0, 0, NEVER
    state.policy_version = policy.version


def _rfc3339(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
