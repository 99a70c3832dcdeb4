"""The processing step: ``process(state, event) -> (state, outputs)``, and an embedded runner.

``process`` is pure: it never mutates the state or event it is given, reads the model
without changing it, and returns what the shell should send. Learning is the shell's job
(``Step.learn`` says what to learn), so the Kafka service can feed one shared model.

>>> from debtor_segments.streams.events import decode_object
>>> engine = Engine()
>>> event = decode_object({"event_id": "e1", "debtor_id": "d1", "type": "contact_initiated",
...     "occurred_at": "2026-02-01T12:00:00Z", "channel": "portal", "direction": "inbound"})
>>> engine.handle(event).outcome
'processed'
>>> engine.handle(event).outcome
'duplicate'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from hashlib import blake2b
from math import dist
from typing import Any, NamedTuple

import orjson

from debtor_segments.schemas import PERSONA_CHANGES_TOPIC, QUADRANT_CHANGES_TOPIC
from debtor_segments.streams.events import Event
from debtor_segments.streams.features import (
    FEATURES,
    ability,
    evidence,
    exposure_months,
    feature_variance,
    feature_vector,
    willingness,
)
from debtor_segments.streams.model import SegmentModel
from debtor_segments.streams.personas import UNKNOWN, separation
from debtor_segments.streams.quadrants import quadrant_of
from debtor_segments.streams.state import DebtorState, event_token, marker_key, needs_marker

__all__ = ["REJECTED_OUTCOMES", "Engine", "EngineConfig", "Output", "Step", "advance", "explain", "process"]

_DAY = 86_400.0
#: Outcomes of events that are not applied and go to the dead letters: (reason, detail).
REJECTED_OUTCOMES: dict[str, tuple[str, str]] = {
    "conflict": ("conflicting_duplicate", "this event_id was applied before with another body"),
    "before_erasure": ("erased", "occurred before this debtor's erasure: its data is not kept"),
    "undecidable": (
        "undecidable_duplicate",
        "inside the lateness window, but older than every event id still remembered for this debtor: whether it is a duplicate cannot be decided",
    ),
}


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Tuning of the core; defaults are what the quality benchmark was measured with.

    Parameters
    ----------
    half_life_days
        How fast old behaviour fades from the features.
    lateness_days
        Events up to this much older than the debtor's latest event are applied in event
        time and de-duplicated; older ones are rejected as too late (dead-lettered).
    max_remembered_ids
        Cap on remembered event ids per debtor (bounds state size).
    min_evidence
        Evidence (see :func:`streams.features.evidence`) before a persona is given.
    min_quadrant_evidence
        Evidence before a quadrant is given (star ratings and assessments speak early).
    switch_after
        Consecutive events that must favour another persona before it replaces the current one.
    switch_after_days
        ... and for at least this long (event time): personas are meant to be stable.
    min_move
        ... and only once the features moved this far (Euclidean) from where they were when
        the persona was given: a debtor whose behaviour did not change keeps the persona.
    margin_growth_days
        The margin needed grows by ``min_margin`` for every this many days a debtor has held
        the persona: an established persona takes clearer evidence to change.
    min_first_margin
        A debtor's first persona needs this margin over the runner-up, until the evidence is
        three times ``min_evidence``: a wrong first label costs a visible change later.
    min_first_separation
        ... and, until then, its features must lie this many standard errors (of their
        sampling noise) nearer one persona prototype than the next
        (:func:`streams.personas.separation`): early features that rest on a
        handful of installments or contacts are noisy, and a first label given on noise is
        corrected months later (most changes of steady debtors were such corrections).
    min_margin
        How clearly (relative distance) the new persona must win to replace the current one.
    learn_interval_days
        A debtor's features are learned by the model at most this often (event time), so
        debtors with many events do not dominate the centres.
    id_secret
        Key of the idempotency digests (:func:`streams.state.event_token`), secret per
        deployment, so a sender cannot craft event ids that collide.
    """

    half_life_days: float = 120.0
    lateness_days: float = 7.0
    max_remembered_ids: int = 24
    min_evidence: float = 90.0
    min_quadrant_evidence: float = 10.0
    switch_after: int = 3
    switch_after_days: float = 30.0
    min_move: float = 0.1
    margin_growth_days: float = 60.0
    min_first_margin: float = 0.3
    min_first_separation: float = 1.0
    min_margin: float = 0.15
    learn_interval_days: float = 60.0
    id_secret: bytes = field(default=b"", repr=False)


@dataclass(frozen=True, slots=True)
class Output:
    """A record for the shell to send: topic, key (the debtor id) and JSON value.

    A ``value`` of ``None`` is a tombstone: on a compacted topic it deletes the key's records
    (an erased debtor's contact decisions, :func:`streams.contact_guard.erasure_tombstones`).
    """

    topic: str
    key: str
    value: dict[str, Any] | None


class Step(NamedTuple):
    """Result of :func:`process`.

    ``state`` is ``None`` when the debtor's state must be deleted (erasure); ``learn`` holds
    the feature vector the model should learn, if any; ``outcome`` is one of processed,
    duplicate, conflict (the event id was applied with another body), late, undecidable
    (inside the lateness window, but older than the ids still remembered), before_erasure
    (occurred before the debtor's erasure), erased. ``marker`` is the erasure time the
    debtor's erasure marker must hold from now on (:func:`streams.state.erasure_marker`).
    """

    state: DebtorState | None
    outputs: tuple[Output, ...]
    outcome: str
    learn: dict[str, float] | None = None
    marker: float | None = None


def process(
    state: DebtorState | None,
    event: Event,
    model: SegmentModel,
    config: EngineConfig = EngineConfig(),
    *,
    emitted_at: str,
) -> Step:
    """Apply one event to one debtor's state; say what changed. The given state is not changed."""
    return advance(None if state is None else state.copy(), event, model, config, emitted_at=emitted_at)


def advance(
    state: DebtorState | None,
    event: Event,
    model: SegmentModel,
    config: EngineConfig = EngineConfig(),
    *,
    emitted_at: str,
    erased_at: float | None = None,
) -> Step:
    """Like :func:`process`, but updates ``state`` in place: for callers that own the state
    (the embedded :class:`Engine`; a worker that decoded it from its table for this event),
    which saves a copy per event. Duplicates and late events leave it untouched.

    ``erased_at`` is the time in the debtor's erasure marker, if it has one; callers read it
    when :func:`streams.state.needs_marker` says so.
    """
    if event.type == "erasure_requested":
        step = _erase(state, event, emitted_at)
        return step._replace(marker=event.ts if erased_at is None else max(erased_at, event.ts))
    if erased_at is not None and event.ts <= erased_at:
        return Step(state, (), "before_erasure")
    if state is None:
        state = DebtorState.new(event.debtor_id)
        if erased_at is not None:
            # Later events at or before the erasure must come back here (needs_marker).
            state.dedup_floor = erased_at
    # The body as received, keys sorted: a re-sent copy gives the same digest whatever its
    # key order or spacing.
    key = event_token(event.event_id, orjson.dumps(event.data, option=orjson.OPT_SORT_KEYS), config.id_secret)
    found = state.seen(key, event.event_id)
    if found:
        return Step(state, (), found)
    lateness_s = config.lateness_days * _DAY
    if state.undecidable(event.ts, lateness_s):
        return Step(state, (), "undecidable")
    if state.too_late(event.ts, lateness_s):
        return Step(state, (), "late")
    state.apply(event, half_life_days=config.half_life_days)
    state.remember(event.ts, key, lateness_s, config.max_remembered_ids)
    known = evidence(state)
    if known < config.min_quadrant_evidence:
        return Step(state, (), "processed")
    outputs: list[Output] = []
    months = exposure_months(state)
    if known >= config.min_evidence:
        x = feature_vector(state, months)
        _update_persona(state, x, months, known, model, config, event, emitted_at, outputs)
    _update_quadrant(state, event, months, emitted_at, outputs)
    if known < config.min_evidence or event.ts - state.last_learn_ts < config.learn_interval_days * _DAY:
        return Step(state, tuple(outputs), "processed")
    state.last_learn_ts = event.ts
    return Step(state, tuple(outputs), "processed", dict(zip(FEATURES, x, strict=True)))


def _update_persona(
    new: DebtorState,
    x: list[float],
    months: float,
    known: float,
    model: SegmentModel,
    config: EngineConfig,
    event: Event,
    emitted_at: str,
    outputs: list[Output],
) -> None:
    assignment = model.predict_vector(x, new.persona)
    if assignment.persona == new.persona:
        new.candidate, new.streak, new.confidence = "", 0, assignment.confidence
        return
    if new.persona == UNKNOWN:
        if known < 3 * config.min_evidence and (assignment.margin < config.min_first_margin or separation(x, feature_variance(new, x, months)) < config.min_first_separation):
            return
    else:
        # Hysteresis: a debtor keeps the persona until another one wins clearly, repeatedly.
        if assignment.persona == new.candidate:
            new.streak += 1
        else:
            new.candidate, new.streak, new.candidate_since = assignment.persona, 1, event.ts
        if (
            new.streak < config.switch_after
            or event.ts - new.candidate_since < config.switch_after_days * _DAY
            or assignment.margin < config.min_margin * (1.0 + (event.ts - new.persona_since) / (config.margin_growth_days * _DAY))
            or dist(x, new.anchor) < config.min_move
        ):
            return
    previous = new.previous_persona = new.persona
    new.persona, new.confidence, new.candidate, new.streak = (
        assignment.persona,
        assignment.confidence,
        "",
        0,
    )
    new.model_version = model.version
    new.persona_since = event.ts
    new.anchor = [round(v, 3) for v in x]
    value = _envelope("persona_changed", new, event, previous, model.version, emitted_at)
    value["persona"] = new.persona
    value["confidence"] = round(new.confidence, 4)
    value["explanation"] = explain(x, model)
    outputs.append(Output(PERSONA_CHANGES_TOPIC, new.debtor_id, value))


def _update_quadrant(new: DebtorState, event: Event, months: float, emitted_at: str, outputs: list[Output]) -> None:
    new.willingness, new.ability = willingness(new, months), ability(new)
    quadrant = quadrant_of(new.willingness, new.ability, previous=new.quadrant)
    if quadrant == new.quadrant:
        return
    previous, new.quadrant = new.quadrant, quadrant
    # The quadrant does not depend on the model. Its event names the model version behind the
    # debtor's persona, not the one in use now: a record processed again after a crash then
    # gives the same event, whatever the shared model learned meanwhile.
    value = _envelope("quadrant_changed", new, event, previous, new.model_version, emitted_at)
    value["quadrant"] = quadrant
    value["willingness"] = round(new.willingness, 4)
    value["ability"] = round(new.ability, 4)
    # Distance from the nearest border, scaled to [0, 1].
    value["confidence"] = round(min(1.0, 2 * min(abs(new.willingness - 0.5), abs(new.ability - 0.5))), 4)
    value["explanation"] = {"willingness": value["willingness"], "ability": value["ability"]}
    outputs.append(Output(QUADRANT_CHANGES_TOPIC, new.debtor_id, value))


def _erase(state: DebtorState | None, event: Event, emitted_at: str) -> Step:
    # A debtor without state was never seen, or is erased already: the erasure was processed
    # again after a crash (its tombstone follows the delivery of its events). Its events then
    # say "unknown -> unknown" under ids of their own, so they never clash with those of the
    # erasure that deleted the state (same cause, another previous persona).
    stateless = state is None
    if state is None:
        state = DebtorState.new(event.debtor_id)
    outputs = []
    for kind, topic, previous, label in (
        ("persona_changed", PERSONA_CHANGES_TOPIC, state.persona, "persona"),
        ("quadrant_changed", QUADRANT_CHANGES_TOPIC, state.quadrant, "quadrant"),
    ):
        value = _envelope(kind, state, event, previous, state.model_version, emitted_at, stateless=stateless)
        value[label] = UNKNOWN
        value.update(confidence=0.0, explanation={}, reason="erased")
        if kind == "quadrant_changed":
            value.update(willingness=0.5, ability=0.5)
        outputs.append(Output(topic, state.debtor_id, value))
    return Step(None, tuple(outputs), "erased")


def _envelope(
    kind: str,
    state: DebtorState,
    cause: Event,
    previous: str,
    model_version: int,
    emitted_at: str,
    *,
    stateless: bool = False,
) -> dict[str, Any]:
    # A JSON array: unambiguous whatever the ids contain (fields joined with NUL let debtor
    # "a\x00b" + event "c" and debtor "a" + event "b\x00c" share an id).
    seed = orjson.dumps([kind, state.debtor_id, cause.event_id, *(["stateless"] if stateless else [])])
    digest = blake2b(seed, digest_size=12)
    return {
        "event_id": f"{kind}-{digest.hexdigest()}",
        "debtor_id": state.debtor_id,
        "type": kind,
        "occurred_at": cause.occurred_at,
        "emitted_at": emitted_at,
        "previous": previous,
        "cause_event_id": cause.event_id,
        "model_version": model_version,
        "reason": "behaviour",
    }


def explain(x: list[float], model: SegmentModel, top: int = 4) -> dict[str, float]:
    """The features in which this debtor stands out most from the average centre."""
    centers = [center for _, center in model.centers()]
    named = dict(zip(FEATURES, x, strict=True))
    mean = {name: sum(c[name] for c in centers) / len(centers) for name in FEATURES}
    ranked = sorted(FEATURES, key=lambda name: -abs(named[name] - mean[name]))
    return {name: round(named[name], 3) for name in ranked[:top]}


class Engine:
    """Embedded runner: all debtor states in a dict, one model learned in place.

    This is what ``debtor-segments replay`` and ``demo`` use; the Kafka service runs the
    same :func:`process` with states in Faust tables.
    """

    def __init__(self, config: EngineConfig = EngineConfig(), model: SegmentModel | None = None) -> None:
        self.config = config
        self.model = model if model is not None else SegmentModel()
        self.states: dict[str, DebtorState] = {}
        #: Erasure markers: keyed digest of the debtor id -> erasure time.
        self.markers: dict[bytes, float] = {}

    def handle(self, event: Event, *, emitted_at: str = "") -> Step:
        """Process one event, keep the new state, learn if asked to."""
        state = self.states.get(event.debtor_id)
        key = marker_key(event.debtor_id, self.config.id_secret) if needs_marker(state, event.ts) or event.type == "erasure_requested" else None
        step = advance(
            state,
            event,
            self.model,
            self.config,
            emitted_at=emitted_at or event.occurred_at,
            erased_at=None if key is None else self.markers.get(key),
        )
        if step.marker is not None and key is not None:
            self.markers[key] = step.marker
        if step.outcome == "before_erasure":
            return step
        if step.state is None:
            self.states.pop(event.debtor_id, None)
        else:
            self.states[event.debtor_id] = step.state
        if step.learn is not None:
            self.model.learn_one(step.learn)
        return step
