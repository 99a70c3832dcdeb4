"""The closed loop of the contact benchmarks: a treatment runner, a simulated dialer, simulated debtors.

Simulation only (``bench/contacts.py``). :func:`run_contacts` closes the loop around a
:class:`~streams.treatment_runner.TreatmentRunner` with a call-heavy plan
(:func:`contact_policy`; ``adapt_channels`` and ``supersede_held`` on or off) over debtors of
:mod:`streams.contact_simulation`: every ``contact_due`` it sends is carried out by a simulated
dialer (:func:`dial_at`), which calls at a random allowed local hour of the due day (mode
``random``), inside the due's ``best_window`` (``best_window``) or in the debtor's true best
band (``oracle``, the ceiling); the debtor answers with its true probability for the cell
called, and the outcome goes back in as ``contact_attempted`` (``cause_event_id``: the due) and
``contact_responded`` events, decoded by :func:`streams.events.decode_object`, in event-time
order (a heap of pending events; the runner's clock moves every half hour with
:meth:`~streams.treatment_runner.TreatmentRunner.idle` in between, so held steps go out on
time). Other channels are answered with the debtor's probability for them; a response leads to
a payment as :mod:`streams.contact_simulation` states.

>>> from debtor_segments.streams.contact_simulation import draw_debtors
>>> run = run_contacts(draw_debtors("peaked", 2, seed=1), seed=1, days=6, inflow_days=1)
>>> run.mode, sum(run.contacts.values()) == len(run.dues), all(c.due_id for c in run.calls)
('best_window', True, True)

See Also
--------
streams.contact_simulation : the simulated debtors and their true contact behaviour.
"""

from __future__ import annotations

import calendar
import heapq
import math
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from debtor_segments.schemas import CONTACT_DECISIONS_TOPIC, CONTACT_DUE_TOPIC, QUADRANT_CHANGES_TOPIC
from debtor_segments.streams.answer_rates import BAND_HOURS
from debtor_segments.streams.contact_simulation import PAY_AFTER_RESPONSE, ContactDebtor, fatigue
from debtor_segments.streams.engine import Output, Step
from debtor_segments.streams.events import Event, decode_object
from debtor_segments.streams.local_time import HourMask, local_datetime, zone
from debtor_segments.streams.policy import Policy, parse_policy
from debtor_segments.streams.treatment_runner import TreatmentRunner

__all__ = [
    "DIALER_MODES",
    "START_TS",
    "CallRecord",
    "ContactRun",
    "allowed_hours",
    "contact_policy",
    "dial_at",
    "run_contacts",
]

_DAY = 86_400.0
_BANDS = 24 // BAND_HOURS
#: 2026-02-23T00:00:00Z, a Monday: 60-day plans from here pass the US (8 March), EU (29 March)
#: and Australian (5 April) clock changes.
START_TS = 1_771_804_800.0
DIALER_MODES: tuple[str, ...] = ("random", "best_window", "oracle")
_OUTCOME = {"call": "answered", "visit": "answered", "email": "clicked", "sms": "replied", "whatsapp": "replied", "letter": "replied"}
#: The runner's clock moves at least this often (every zone in :data:`streams.contact_simulation.ZONES`
#: starts its hours on it).
_TICK_S = 1800.0
#: A call answered is known this long after it was placed (ringing).
_ANSWER_AFTER_S = 15.0


def contact_policy(
    *,
    adapt_channels: bool = False,
    adapt_after: int = 3,
    supersede_held: bool = False,
    days: int = 60,
    call_every: int = 2,
    version: str = "contact-sim",
) -> Policy:
    """A call-heavy policy: a letter on day 0, a call every ``call_every`` days up to ``days``,
    an SMS and an e-mail every week and a WhatsApp message every two, for every quadrant
    (a plan has at most 64 steps: 60 days of a call every two days is 54 steps), with the
    default contact rules but for ``adapt_channels``, ``adapt_after`` and ``supersede_held``."""
    steps: list[dict[str, Any]] = [{"day": 0, "channel": "letter", "tone": "neutral", "message_id": "sim-letter"}]
    steps += [{"day": day, "channel": "call", "tone": "neutral", "message_id": f"sim-call-{day}"} for day in range(1, days, call_every)]
    steps += [{"day": day, "channel": "sms", "tone": "friendly", "message_id": f"sim-sms-{day}"} for day in range(2, days, 7)]
    steps += [{"day": day, "channel": "email", "tone": "friendly", "message_id": f"sim-email-{day}"} for day in range(4, days, 7)]
    steps += [{"day": day, "channel": "whatsapp", "tone": "friendly", "message_id": f"sim-whatsapp-{day}"} for day in range(6, days, 14)]
    quadrants = ("willing_able", "willing_unable", "unwilling_able", "unwilling_unable", "unknown")
    return parse_policy(
        {
            "version": version,
            "plans": {"calls": sorted(steps, key=lambda step: int(step["day"]))},
            "segments": dict.fromkeys(quadrants, "calls"),
            "contact_rules": {"adapt_channels": adapt_channels, "adapt_after": adapt_after, "supersede_held": supersede_held},
        }
    )


def allowed_hours(policy: Policy, inconvenient: Sequence[tuple[int, int]] = ()) -> HourMask:
    """The local hours the policy's contact rules allow a debtor with these inconvenient hours."""
    rules = policy.contact_rules
    return HourMask.between(rules.earliest_hour, rules.latest_hour).without(inconvenient)


def dial_at(not_before: float, hours: Sequence[int], tz: ZoneInfo, rng: random.Random) -> float:
    """When a dialer places a call in one of the local ``hours``: one of them drawn at random,
    the first time it comes at or after ``not_before`` (that local day or a later one), at a
    random second into the hour (whole seconds).

    >>> ny, rng = zone("America/New_York"), random.Random(4)
    >>> morning = 1_773_064_800.0  # 2026-03-09T14:00:00Z, 10:00 in New York
    >>> local_datetime(dial_at(morning, [8], ny, rng), ny).strftime("%d %H")  # 08:00 has passed that day
    '10 08'
    >>> local_datetime(dial_at(morning, [19], ny, rng), ny).strftime("%d %H")
    '09 19'
    """
    if not hours:
        raise ValueError("no hour to call in")
    hour = rng.choice(list(hours))
    day = local_datetime(not_before, tz).date()
    for offset in range(3):
        when = day + timedelta(days=offset)
        start = datetime(when.year, when.month, when.day, hour, tzinfo=tz).timestamp()
        if local_datetime(start, tz).hour != hour:
            continue  # the hour does not exist that day (the clocks went forward over it)
        end = start + 3600.0
        if end - 1.0 > not_before:
            lo = max(start, not_before)
            return float(math.ceil(lo + rng.random() * (end - 1.0 - lo)))
    raise ValueError(f"local hour {hour} does not come within three days")  # pragma: no cover


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One call the dialer placed."""

    debtor_id: str
    #: The event_id of the contact_due the call carried out.
    due_id: str
    ts: float
    due_ts: float
    #: Whether the due's local day (which its best_window is for) is a weekend day.
    weekend: bool
    #: The band (0-7) the call was placed in, local time.
    band: int
    answered: bool
    #: The due's best_window (from_hour, to_hour), if it had one.
    window: tuple[int, int] | None
    #: The debtor's true best band for the due's day type under the hours allowed then.
    true_best: int
    #: True answer probability of the cell called, and of the debtor's best band that day type.
    probability: float
    best_probability: float


@dataclass(slots=True)
class ContactRun:
    """What one closed-loop run produced."""

    mode: str
    adapt_channels: bool
    supersede_held: bool = False
    calls: list[CallRecord] = field(default_factory=list)
    #: Contacts carried out and responses, per channel.
    contacts: Counter[str] = field(default_factory=Counter)
    responses: Counter[str] = field(default_factory=Counter)
    #: The contact_decision and contact_due values the runner sent.
    decisions: list[dict[str, Any]] = field(default_factory=list)
    dues: list[dict[str, Any]] = field(default_factory=list)
    assigned_ts: dict[str, float] = field(default_factory=dict)
    first_payment_ts: dict[str, float] = field(default_factory=dict)
    #: Inbound events fed to the runner (their number; the events themselves with ``keep_events``).
    events: int = 0
    inbound: list[Event] = field(default_factory=list)
    end_ts: float = 0.0
    #: The runner after the run (its debtors' contact states and the portfolio's answer rates).
    runner: TreatmentRunner | None = None

    def payment_days(self) -> dict[str, float]:
        """Days from assignment to the first payment, per debtor that paid by the end."""
        return {d: (ts - self.assigned_ts[d]) / _DAY for d, ts in self.first_payment_ts.items() if ts <= self.end_ts}


def run_contacts(
    debtors: Sequence[ContactDebtor],
    *,
    mode: str = "best_window",
    adapt_channels: bool = False,
    supersede_held: bool = False,
    seed: int = 0,
    days: int = 60,
    call_every: int = 2,
    inflow_days: int = 14,
    start_ts: float = START_TS,
    keep_events: bool = False,
) -> ContactRun:
    """Run the closed loop over ``debtors``: plans assigned over ``inflow_days`` (each at 08:00
    local time), every contact_due carried out by the dialer in ``mode``, until the last plan
    ends. ``adapt_channels`` and ``supersede_held`` are the policy's contact rules of those
    names (:func:`contact_policy`). The same ``seed`` and debtors give the same run; the
    debtors' answers are drawn from a stream of their own per debtor. ``keep_events`` keeps the
    decoded inbound events fed in (:attr:`ContactRun.inbound`)."""
    if mode not in DIALER_MODES:
        raise ValueError(f"unknown dialer mode {mode!r}; known: {', '.join(DIALER_MODES)}")
    policy = contact_policy(adapt_channels=adapt_channels, supersede_held=supersede_held, days=days, call_every=call_every)
    loop = _Loop(policy, mode, seed, TreatmentRunner(policy))
    loop.keep = keep_events
    by_id = {debtor.debtor_id: debtor for debtor in debtors}
    loop.debtors = by_id
    placement = random.Random(f"contact-inflow\x00{seed}")
    for debtor in debtors:
        loop.onboard(debtor, start_ts + placement.randrange(inflow_days) * _DAY)
    end_ts = start_ts + (inflow_days + days + 2) * _DAY
    loop.run(end_ts)
    loop.result.end_ts, loop.result.runner = end_ts, loop.runner
    return loop.result


class _Loop:
    """The pending simulated events, the runner and the dialer of one run."""

    def __init__(self, policy: Policy, mode: str, seed: int, runner: TreatmentRunner) -> None:
        self.policy, self.mode, self.seed, self.runner = policy, mode, seed, runner
        self.debtors: dict[str, ContactDebtor] = {}
        self.result = ContactRun(mode, policy.contact_rules.adapt_channels, policy.contact_rules.supersede_held)
        self.pending: list[tuple[float, int, dict[str, Any], Step | None]] = []
        self.sequence = 0
        self.clock = -math.inf
        self.dialer = random.Random(f"contact-dialer\x00{mode}\x00{seed}")
        self.own: dict[str, random.Random] = {}
        self.counts: Counter[str] = Counter()
        self.contacted: Counter[str] = Counter()
        self.keep = False

    def push(self, ts: float, body: dict[str, Any], step: Step | None = None) -> None:
        body["occurred_at"] = _iso(ts)
        heapq.heappush(self.pending, (ts, self.sequence, body, step))
        self.sequence += 1

    def new_id(self, debtor_id: str, kind: str) -> str:
        self.counts[debtor_id] += 1
        return f"{debtor_id}-{kind}-{self.counts[debtor_id]}"

    def onboard(self, debtor: ContactDebtor, day_ts: float) -> None:
        """The debtor's zone, its claim and its plan at 08:00 local on the day of ``day_ts``."""
        tz = debtor.tz
        day = local_datetime(day_ts + 12 * 3600.0, tz).date()
        assign_ts = datetime(day.year, day.month, day.day, 8, tzinfo=tz).timestamp()
        self.result.assigned_ts[debtor.debtor_id] = assign_ts
        self.own[debtor.debtor_id] = random.Random(f"contact-debtor\x00{debtor.debtor_id}\x00{self.seed}")
        d = debtor.debtor_id
        if debtor.zone_source == "preference":
            self.push(assign_ts - 3600.0, {"event_id": self.new_id(d, "pref"), "debtor_id": d, "type": "contact_preference_set", "timezone": debtor.timezone})
        claim: dict[str, Any] = {"event_id": self.new_id(d, "claim"), "debtor_id": d, "type": "claim_opened", "claim_id": f"{d}-claim", "creditor_id": "sim", "principal_cents": 30_000}
        if debtor.zone_source == "claim":
            claim["timezone"] = debtor.timezone
        change = {
            "event_id": f"{d}-quadrant",
            "debtor_id": d,
            "type": "quadrant_changed",
            "occurred_at": _iso(assign_ts),
            "emitted_at": _iso(assign_ts),
            "previous": "unknown",
            "cause_event_id": claim["event_id"],
            "model_version": 1,
            "confidence": 1.0,
            "explanation": {},
            "quadrant": "unwilling_unable",
            "willingness": 0.3,
            "ability": 0.3,
            "reason": "behaviour",
        }
        self.push(assign_ts, claim, Step(None, (Output(QUADRANT_CHANGES_TOPIC, d, change),), "processed"))
        if debtor.preference_day < math.inf:
            preference: dict[str, Any] = {"event_id": self.new_id(d, "pref"), "debtor_id": d, "type": "contact_preference_set"}
            if debtor.inconvenient:
                preference["inconvenient_hours"] = [{"from_hour": a, "to_hour": b} for a, b in debtor.inconvenient]
            if debtor.opt_out:
                preference["opt_out_channels"] = list(debtor.opt_out)
            self.push(self.preference_ts(debtor), preference)

    def run(self, end_ts: float) -> None:
        quiet = Step(None, (), "processed")
        while True:
            target = min(self.pending[0][0] if self.pending else math.inf, end_ts)
            self.tick_to(target)
            if not self.pending or self.pending[0][0] > end_ts:
                return
            ts, _, body, step = heapq.heappop(self.pending)
            event = decode_object(body)
            self.result.events += 1
            if self.keep:
                self.result.inbound.append(event)
            self.clock = max(self.clock, ts)
            self.handle(self.runner.after(event, step or quiet, None, emitted_at=_iso(ts)))

    def tick_to(self, target: float) -> None:
        """Move the runner's clock towards ``target`` in half-hour steps (the steps due meanwhile
        go out), stopping before any pending event: a step sent on the way is carried out at
        once, and its attempt and answer must reach the runner before its clock passes them
        (else the runner decides later steps without the conversation, and calls in its quiet
        days)."""
        if self.clock == -math.inf:
            return
        while True:
            boundary = (math.floor(self.clock / _TICK_S) + 1) * _TICK_S
            if boundary > target or self.pending and boundary > self.pending[0][0]:
                return
            elapsed, self.clock = boundary - self.clock, boundary
            self.handle(self.runner.idle(0, elapsed, emitted_at=_iso(boundary)))

    def handle(self, outputs: list[Output]) -> None:
        for output in outputs:
            if output.value is None:
                continue
            if output.topic == CONTACT_DECISIONS_TOPIC:
                self.result.decisions.append(output.value)
            elif output.topic == CONTACT_DUE_TOPIC:
                self.result.dues.append(output.value)
                self.carry_out(output.value)

    def carry_out(self, due: dict[str, Any]) -> None:
        """The dialer (a call) or the channel (anything else) makes the contact; the debtor answers or not."""
        debtor = self.debtors[due["debtor_id"]]
        rng = self.own[debtor.debtor_id]
        due_ts = _parse(due["due_at"])
        channel = due["channel"]
        not_before = max(due_ts, self.clock)
        if channel == "call":
            tz = zone(due.get("timezone") or debtor.timezone) or debtor.tz
            allowed = allowed_hours(self.policy, self.inconvenient(debtor, not_before))
            weekend = local_datetime(due_ts, tz).weekday() >= 5
            best = debtor.true_best_band(weekend=weekend, allowed=allowed)
            window = due.get("best_window")
            span = (int(window["from_hour"]), int(window["to_hour"])) if window else None
            if self.mode == "best_window" and span is not None:
                hours = list(range(*span))
            elif self.mode == "oracle":
                hours = [h for h in range(best * BAND_HOURS, (best + 1) * BAND_HOURS) if allowed.allowed[h]]
            else:
                hours = [h for h in range(24) if allowed.allowed[h]]
            ts = dial_at(not_before, hours, tz, self.dialer)
            probability = debtor.answer_probability(ts)
            answered = rng.random() < probability
            local = local_datetime(ts, debtor.tz)
            self.result.calls.append(
                CallRecord(
                    debtor.debtor_id,
                    due["event_id"],
                    ts,
                    due_ts,
                    weekend,
                    local.hour // BAND_HOURS,
                    answered,
                    span,
                    best,
                    probability,
                    debtor.answer[(_BANDS if weekend else 0) + best],
                )
            )
            respond_ts = ts + _ANSWER_AFTER_S if answered else None
        else:
            ts = float(math.ceil(not_before))
            respond_ts = ts + min(72 * 3600.0, rng.expovariate(1 / (6 * 3600.0))) if rng.random() < debtor.respond.get(channel, 0.0) else None
        d = debtor.debtor_id
        self.contacted[d] += 1
        self.result.contacts[channel] += 1
        attempt = {"event_id": self.new_id(d, "attempt"), "debtor_id": d, "type": "contact_attempted", "channel": channel, "direction": "outbound", "tone": due["tone"]}
        self.push(ts, {**attempt, "cause_event_id": due["event_id"]})
        if respond_ts is None:
            return
        respond_ts = float(math.ceil(respond_ts))
        self.result.responses[channel] += 1
        self.push(respond_ts, {"event_id": self.new_id(d, "response"), "debtor_id": d, "type": "contact_responded", "channel": channel, "outcome": _OUTCOME[channel]})
        if rng.random() < PAY_AFTER_RESPONSE * fatigue(self.contacted[d]):
            paid_ts = respond_ts + rng.uniform(0.0, 3.0) * _DAY
            if paid_ts < self.result.first_payment_ts.get(d, math.inf):
                self.result.first_payment_ts[d] = paid_ts

    def inconvenient(self, debtor: ContactDebtor, ts: float) -> tuple[tuple[int, int], ...]:
        """The debtor's inconvenient hours as set by ``ts``."""
        return debtor.inconvenient if ts >= self.preference_ts(debtor) else ()

    def preference_ts(self, debtor: ContactDebtor) -> float:
        """When the debtor sets its preferences (infinity: never)."""
        if debtor.preference_day == math.inf:
            return math.inf
        return float(math.floor(self.result.assigned_ts[debtor.debtor_id] + debtor.preference_day * _DAY))


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _parse(text: str) -> float:
    return float(calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ")))
