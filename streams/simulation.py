"""A simulated collection portfolio with known truth, built from the domain brief.

Each debtor has a persona and a latent willingness and ability; events follow from them:
claims from several creditors, reminders in friendly or strict tone, responses, proactive
contact, arrangements kept or broken, payments (some right after a nudge), and a star
rating after answered calls. Some debtors' situation changes mid-way (a life event makes a
Job, Saida or Hendrik-Jan struggle; a Bryan gets back on track). Delivery is realistic too:
a few events arrive days late, some are re-sent, and a few lines are broken.

Keyword arguments move the portfolio away from the one the engine was tuned on, each with a
default that reproduces it exactly: the persona mix, outbound contact intensity, the share of
answered calls that get a star rating, amounts, arrangement lengths, claims per debtor, a
staggered inflow of debtors, event-time jitter and late arrival (``streams.portfolios`` names a
family of such variants).

>>> portfolio = simulate(debtors=20, months=2, seed=3)
>>> len(portfolio.truth), portfolio.lines[0][:1]
(20, b'{')
>>> simulate(debtors=20, months=2, seed=3).lines == portfolio.lines
True
>>> busy = simulate(debtors=20, months=2, seed=3, contact=2.0)
>>> def outbound(p): return sum(b'"direction":"outbound"' in line for line in p.lines)
>>> outbound(busy) > 1.5 * outbound(portfolio)
True
"""

from __future__ import annotations

import calendar
import math
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

__all__ = ["MIXES", "PERSONAS", "EventEmitter", "Portfolio", "SimulatedDebtor", "deliver", "mix_shares", "simulate"]

#: The personas, in the order the simulator draws them (kept here, not imported from the
#: engine, so that a change to the engine never changes a simulated portfolio).
PERSONAS: tuple[str, ...] = ("tamara", "bryan", "job", "saida", "hendrik-jan")

#: Persona shares (domain brief), as fractions summing to 1.
MIXES: dict[str, dict[str, float]] = {
    # one retailer's portfolio, 6,312 debtors
    "retailer": {"tamara": 0.558, "bryan": 0.233, "job": 0.111, "saida": 0.065, "hendrik-jan": 0.034},
    # one insurer's monthly inflow, 12,927 debtors, without its 8.6% unknown
    "insurer": {"tamara": 0.404, "bryan": 0.170, "job": 0.092, "saida": 0.184, "hendrik-jan": 0.149},
    # the published K-means clusters 1-5, read as personas in order of files, creditors and
    # arrangements (cluster 1: most of all, Tamara; cluster 5: one file, Hendrik-Jan)
    "cluster": {"tamara": 0.438, "bryan": 0.245, "job": 0.149, "saida": 0.103, "hendrik-jan": 0.065},
    # an inflow almost without Hendrik-Jans (1%; the rest as the insurer's): a persona the
    # portfolio nearly lacks, which a namer must not force onto other debtors
    "few_hendrik_jans": {"tamara": 0.470, "bryan": 0.198, "job": 0.107, "saida": 0.215, "hendrik-jan": 0.010},
}

#: Average principal per claim of the default simulation, in EUR (log-normal, mu 10, sigma 0.7, in cents).
_DEFAULT_PRINCIPAL_EUR = math.exp(10.0 + 0.7**2 / 2) / 100


def mix_shares(mix: str | Mapping[str, float]) -> dict[str, float]:
    """Persona shares of a named mix, or of explicit weights (normalised to sum to 1).

    >>> mix_shares("cluster")["tamara"]
    0.438
    >>> mix_shares({"tamara": 3, "job": 1})
    {'tamara': 0.75, 'bryan': 0.0, 'job': 0.25, 'saida': 0.0, 'hendrik-jan': 0.0}
    """
    if isinstance(mix, str):
        if mix not in MIXES:
            raise ValueError(f"unknown mix {mix!r}; known: {', '.join(sorted(MIXES))}")
        return dict(MIXES[mix])
    unknown = set(mix) - set(PERSONAS)
    total = sum(mix.values())
    if unknown or total <= 0 or min(mix.values()) < 0:
        raise ValueError(f"a mix needs non-negative weights over {PERSONAS}, got {dict(mix)}")
    return {p: mix.get(p, 0.0) / total for p in PERSONAS}


@dataclass(frozen=True, slots=True)
class _Behaviour:
    files: float  # claims over the year (published cluster averages, indicative)
    creditors: float
    willingness: float  # mean of the latent scores
    ability: float
    respond: float  # chance to respond to one outbound contact
    inbound: float  # proactive contacts per week
    arrange: float  # weekly chance to agree an arrangement when there is debt
    keep: float  # chance to pay an installment
    pay: float  # weekly chance of a spontaneous payment
    nudge: float  # multiplier of that chance in the days after a reminder
    full: float  # chance that a spontaneous payment clears the claim


_BEHAVIOUR = {
    "tamara": _Behaviour(6.5, 4.9, 0.27, 0.22, 0.15, 0.02, 0.07, 0.30, 0.010, 1.2, 0.10),
    "bryan": _Behaviour(4.9, 3.4, 0.62, 0.30, 0.40, 0.08, 0.08, 0.60, 0.030, 1.5, 0.15),
    "job": _Behaviour(2.4, 1.2, 0.80, 0.62, 0.75, 0.25, 0.06, 0.92, 0.035, 1.5, 0.40),
    "saida": _Behaviour(1.3, 1.0, 0.32, 0.75, 0.25, 0.02, 0.01, 0.80, 0.015, 6.0, 0.80),
    "hendrik-jan": _Behaviour(1.0, 1.0, 0.42, 0.88, 0.25, 0.03, 0.005, 0.90, 0.010, 8.0, 0.95),
}
_CHANNELS = (("letter", 0.25), ("email", 0.30), ("sms", 0.20), ("call", 0.20), ("whatsapp", 0.04), ("visit", 0.01))
_RESPONSE = {"letter": "replied", "email": "opened", "sms": "clicked", "call": "answered", "whatsapp": "replied", "visit": "answered"}
_INBOUND = ("call", "email", "portal", "whatsapp", "letter")
_HARDSHIP = ("budgetary", "life_event", "overspending")
_WEEK = 7 * 86_400


@dataclass(slots=True)
class SimulatedDebtor:
    """Truth about one simulated debtor (what the engine should find)."""

    debtor_id: str
    persona: str  # at the end of the simulation
    initial_persona: str
    willingness: float
    ability: float
    change: str = "none"  # none, worsened, improved
    change_ts: float = 0.0

    @property
    def quadrant(self) -> str:
        """Quadrant of the latent scores (at the end)."""
        willing = "willing" if self.willingness >= 0.5 else "unwilling"
        return f"{willing}_{'able' if self.ability >= 0.5 else 'unable'}"


@dataclass(slots=True)
class Portfolio:
    """JSON lines in delivery order, the truth per debtor, and what was injected."""

    lines: list[bytes]
    truth: dict[str, SimulatedDebtor]
    start_ts: float
    end_ts: float
    injected: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class _Claim:
    claim_id: str
    outstanding: int
    opened_ts: float
    arrangement: str = ""
    installments_left: int = 0
    installment: int = 0


@dataclass(frozen=True, slots=True)
class _Knobs:
    """How a portfolio departs from the default one (every default reproduces it)."""

    contact: float = 1.0  # multiplier of the weekly outbound contact attempts
    rating_outbound: float = 0.9  # chance that an answered outbound call gets a star rating
    rating_inbound: float = 0.8  # the same for an inbound call
    principal_mu: float = 10.0  # log-normal mu of a claim's principal in cents
    principal_floor: int = 2000
    installments: tuple[int, int] = (3, 12)


class EventEmitter:
    """Numbers and records a simulated debtor's events (both simulators' debtors are one)."""

    truth: SimulatedDebtor
    events: list[dict[str, Any]]
    counter: int

    def emit(self, event_type: str, ts: float, **fields: Any) -> None:
        """Record one event; ``_ts`` keeps its exact time for delivery (dropped on output)."""
        self.counter += 1
        self.events.append(
            {
                "event_id": f"{self.truth.debtor_id}-{self.counter:05d}",
                "debtor_id": self.truth.debtor_id,
                "type": event_type,
                "occurred_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts)),
                **fields,
                "_ts": ts,
            }
        )


class _DebtorSim(EventEmitter):
    """Generates one debtor's events week by week."""

    def __init__(self, rng: random.Random, truth: SimulatedDebtor, start_ts: float, knobs: _Knobs = _Knobs()) -> None:
        self.rng = rng
        self.knobs = knobs
        self.truth = truth
        self.events: list[dict[str, Any]] = []
        self.claims: list[_Claim] = []
        self.closed = 0
        self.behaviour = _BEHAVIOUR[truth.initial_persona]
        self.creditors = [f"cr-{rng.randrange(400):03d}" for _ in range(max(1, round(rng.gauss(self.behaviour.creditors, 0.7))))]
        self.last_contact_ts = 0.0
        self.last_tone = "friendly"
        self.counter = 0
        self.start_ts = start_ts

    def open_claim(self, ts: float) -> None:
        rng = self.rng
        k = self.knobs
        claim = _Claim(f"{self.truth.debtor_id}-c{len(self.claims) + self.closed}", max(k.principal_floor, int(rng.lognormvariate(k.principal_mu, 0.7))), ts)
        self.claims.append(claim)
        self.emit("claim_opened", ts, claim_id=claim.claim_id, creditor_id=rng.choice(self.creditors), principal_cents=claim.outstanding)

    def pay(self, claim: _Claim, amount: int, ts: float) -> None:
        amount = max(1, min(amount, claim.outstanding))
        claim.outstanding -= amount
        self.emit("payment_received", ts, claim_id=claim.claim_id, amount_cents=amount)
        if claim.outstanding == 0:
            self.claims.remove(claim)
            self.closed += 1
            self.emit("claim_closed", ts + 3600, claim_id=claim.claim_id, outcome="paid")

    def rate(self, ts: float) -> None:
        rng, t = self.rng, self.truth
        stars = min(5, max(1, round(1 + 4 * t.willingness + rng.gauss(0, 0.7))))
        seen = t.ability + rng.gauss(0, 0.12)
        assessment = "can_pay" if seen > 0.62 else "cannot_pay" if seen < 0.38 else "partly"
        fields: dict[str, Any] = {"stars": stars, "call_id": f"call-{self.counter}", "agent_id": f"agent-{rng.randrange(40)}"}
        if rng.random() < 0.8:
            fields["assessment"] = assessment
        if t.ability < 0.4 and rng.random() < 0.6:
            fields["hardship"] = "life_event" if t.change == "worsened" else rng.choice(_HARDSHIP)
        elif rng.random() < 0.5:
            fields["hardship"] = "none"
        self.emit("call_rated", ts, **fields)

    def week(self, ts: float, files_per_week: float) -> None:
        rng, b = self.rng, self.behaviour
        if rng.random() < files_per_week:
            self.open_claim(ts + rng.uniform(0, _WEEK))
        if not self.claims:
            return
        k = self.knobs
        # Reminders: friendly at first, strict once a claim is old. An intensity of c gives
        # ceil(c) chances a week (the last one scaled), so the expected number is c times
        # today's and c = 1 draws exactly as before.
        for attempt in range(math.ceil(k.contact)):
            if not rng.random() < 0.55 * min(1.0, k.contact - attempt):
                continue
            cts = ts + rng.uniform(0, _WEEK)
            oldest = min(c.opened_ts for c in self.claims)
            tone = "strict" if cts - oldest > 8 * _WEEK and rng.random() < 0.6 else rng.choice(("friendly", "neutral"))
            channel = rng.choices([c for c, _ in _CHANNELS], [w for _, w in _CHANNELS])[0]
            self.emit("contact_attempted", cts, channel=channel, direction="outbound", tone=tone)
            if cts > self.last_contact_ts:  # with several a week, the latest one is the nudge
                self.last_contact_ts, self.last_tone = cts, tone
            if rng.random() < b.respond:
                self.emit("contact_responded", cts + rng.uniform(600, 86_400), channel=channel, outcome=_RESPONSE[channel])
                if channel == "call" and rng.random() < k.rating_outbound:
                    self.rate(cts + 900)
        if rng.random() < b.inbound:
            its = ts + rng.uniform(0, _WEEK)
            channel = rng.choice(_INBOUND)
            self.emit("contact_initiated", its, channel=channel, direction="inbound")
            if channel == "call" and rng.random() < k.rating_inbound:
                self.rate(its + 900)
        for claim in list(self.claims):
            if claim.arrangement:
                if rng.random() < 0.25:  # roughly monthly installments
                    dts = ts + rng.uniform(0, _WEEK)
                    if rng.random() < b.keep:
                        self.pay(claim, claim.installment, dts)
                    else:
                        self.emit("installment_missed", dts, claim_id=claim.claim_id, arrangement_id=claim.arrangement, amount_cents=claim.installment)
                    claim.installments_left -= 1
                    if claim.installments_left <= 0 and claim in self.claims:
                        claim.arrangement = ""
            elif rng.random() < b.arrange:
                n = rng.randint(*k.installments)
                claim.arrangement = f"{claim.claim_id}-a{self.counter}"
                claim.installments_left, claim.installment = n, max(1, -(-claim.outstanding // n))
                self.emit("arrangement_agreed", ts + rng.uniform(0, _WEEK), claim_id=claim.claim_id, arrangement_id=claim.arrangement, installments=n, installment_cents=claim.installment)
        chance = b.pay * (b.nudge if ts - self.last_contact_ts < 10 * 86_400 and self.last_contact_ts else 1.0)
        if self.claims and rng.random() < chance:
            claim = rng.choice(self.claims)
            amount = claim.outstanding if rng.random() < b.full else int(claim.outstanding * rng.uniform(0.1, 0.5))
            self.pay(claim, amount, max(ts, self.last_contact_ts) + rng.uniform(3600, 5 * 86_400))
        for claim in list(self.claims):
            if ts - claim.opened_ts > 40 * _WEEK and rng.random() < 0.03:
                self.claims.remove(claim)
                self.closed += 1
                self.emit("claim_closed", ts, claim_id=claim.claim_id, outcome=rng.choice(("written_off", "returned")))


def _latent(rng: random.Random, mean: float, concentration: float = 14.0) -> float:
    return rng.betavariate(mean * concentration, (1 - mean) * concentration)


def simulate(
    debtors: int = 3000,
    months: int = 12,
    seed: int = 7,
    *,
    mix: str | Mapping[str, float] = "retailer",
    start: str = "2026-01-01",
    change_share: float = 0.08,
    late_share: float = 0.03,
    duplicate_share: float = 0.01,
    bad_share: float = 0.003,
    contact: float = 1.0,
    rating_share: float | None = None,
    principal_eur: float | None = None,
    installments: tuple[int, int] = (3, 12),
    files_scale: float = 1.0,
    inflow_months: float = 0.0,
    jitter_hours: float = 0.0,
    late_days: float = 3.0,
) -> Portfolio:
    """Simulate a portfolio; the same arguments always give the same lines.

    Parameters
    ----------
    debtors, months, seed
        Size, length and the seed of the only random generator.
    mix
        Persona shares: a name in :data:`MIXES` or weights per persona.
    start
        First day (UTC) of the simulated calendar.
    change_share
        About this share of Jobs, Saidas and Hendrik-Jans worsens mid-way (to Tamara or
        Bryan), and half of it of the Bryans improves (to Job); only with 20 weeks or more.
    late_share, late_days
        Share of events delivered late, by 1 hour to ``late_days`` days.
    duplicate_share, bad_share
        Share of events re-sent, and of broken lines injected after one.
    contact
        Outbound contact intensity: expected outbound contact attempts are ``contact`` times
        the default's (0.55 a week while a claim is open).
    rating_share
        Share of answered calls (outbound and inbound) the agent gives a star rating; ``None``
        keeps the default's 90% of outbound and 80% of inbound answered calls.
    principal_eur
        Average principal of a claim in EUR; ``None`` keeps the default's (about EUR 282).
    installments
        Smallest and largest number of installments of an arrangement (about monthly).
    files_scale
        Multiplier of the claims per debtor (at the start and opened later).
    inflow_months
        Debtors arrive evenly over the first ``inflow_months`` months (a monthly inflow)
        instead of all at the start; their first claims open when they arrive.
    jitter_hours
        Standard deviation of the error of each event's ``occurred_at`` (source systems'
        clocks and batch stamps); delivery follows the true time, so stamps go out of order.

    Returns
    -------
    Portfolio
        Lines in delivery order and the truth per debtor (persona, quadrant, change).
    """
    rng = random.Random(seed)
    start_ts = float(calendar.timegm(time.strptime(start, "%Y-%m-%d")))
    weeks = max(1, round(months * 52 / 12))
    end_ts = start_ts + weeks * _WEEK
    shares = mix_shares(mix)
    if contact < 0 or files_scale <= 0 or not 1 <= installments[0] <= installments[1]:
        raise ValueError("contact >= 0, files_scale > 0 and 1 <= installments[0] <= installments[1] are needed")
    knobs = _Knobs(
        contact=contact,
        rating_outbound=0.9 if rating_share is None else rating_share,
        rating_inbound=0.8 if rating_share is None else rating_share,
        # mu such that the log-normal's mean is the asked average; the floor scales alike
        principal_mu=10.0 if principal_eur is None else math.log(principal_eur * 100) - 0.7**2 / 2,
        principal_floor=2000 if principal_eur is None else max(1, round(2000 * principal_eur / _DEFAULT_PRINCIPAL_EUR)),
        installments=(installments[0], installments[1]),
    )
    inflow_weeks = min(weeks - 1, round(inflow_months * 52 / 12)) if inflow_months > 0 else 0
    events: list[dict[str, Any]] = []
    truth: dict[str, SimulatedDebtor] = {}
    for n in range(debtors):
        persona = rng.choices(PERSONAS, [shares[p] for p in PERSONAS])[0]
        b = _BEHAVIOUR[persona]
        debtor = SimulatedDebtor(f"d{seed}-{n:06d}", persona, persona, _latent(rng, b.willingness), _latent(rng, b.ability))
        # Only drawn with an inflow, so the default draws exactly as before.
        first = rng.randint(0, inflow_weeks) if inflow_weeks else 0
        span = weeks - first
        if rng.random() < change_share * 2 and span >= 20:
            if persona in ("job", "saida", "hendrik-jan"):
                debtor.change = "worsened"
            elif persona == "bryan" and rng.random() < 0.5:
                debtor.change = "improved"
        truth[debtor.debtor_id] = debtor
        arrived_ts = start_ts + first * _WEEK
        sim = _DebtorSim(rng, debtor, arrived_ts, knobs)
        initial = max(1, round(rng.gauss(b.files * 0.6 * files_scale, 0.6)))
        for _ in range(initial):
            sim.open_claim(arrived_ts + rng.uniform(0, 4 * _WEEK))
        change_week = first + rng.randint(span * 4 // 12, span * 7 // 12) if debtor.change != "none" else weeks + 1
        for week in range(first, weeks):
            ts = start_ts + week * _WEEK
            if week == change_week:
                sim.behaviour, debtor.change_ts = _change(rng, debtor, sim, ts)
            sim.week(ts, sim.behaviour.files * 0.4 / 52 * files_scale)
        events.extend(sim.events)
    return deliver(rng, events, truth, start_ts, end_ts, late_share, duplicate_share, bad_share, late_days, jitter_hours)


def _change(rng: random.Random, debtor: SimulatedDebtor, sim: _DebtorSim, ts: float) -> tuple[_Behaviour, float]:
    """Apply a mid-way change of situation; new claims arrive when things get worse."""
    if debtor.change == "worsened":
        debtor.persona = "tamara" if rng.random() < 0.5 else "bryan"
        target = _BEHAVIOUR[debtor.persona]
        debtor.ability = _latent(rng, 0.2)
        debtor.willingness = min(debtor.willingness, _latent(rng, target.willingness))
        sim.creditors += [f"cr-{rng.randrange(400):03d}" for _ in range(3)]
        for _ in range(rng.randint(3, 6)):
            sim.open_claim(ts + rng.uniform(0, 6 * _WEEK))
    else:
        debtor.persona = "job"
        debtor.willingness = max(debtor.willingness, _latent(rng, 0.8))
        debtor.ability = _latent(rng, 0.62)
    return _BEHAVIOUR[debtor.persona], ts


_BAD_LINES = (
    b"this is not json",
    b'{"event_id": "x", "debtor_id": "d", "type": "payment_received"',
    b'{"event_id": "bad-1", "type": "payment_received", "occurred_at": "2026-02-01T00:00:00Z", "claim_id": "c", "amount_cents": 10}',
    b'{"event_id": "bad-2", "debtor_id": "d0", "type": "payment_received", "occurred_at": "2026-02-01T00:00:00Z", "claim_id": "c", "amount_cents": "ten"}',
    b'{"event_id": "bad-3", "debtor_id": "d0", "type": "refund_issued", "occurred_at": "2026-02-01T00:00:00Z"}',
    b'{"event_id": "bad-4", "debtor_id": "d0", "type": "payment_received", "occurred_at": "2026-02-01 00:00:00", "claim_id": "c", "amount_cents": 10}',
    b'{"event_id": "bad-5", "debtor_id": "d0", "type": "payment_received", "occurred_at": "2026-02-01T00:00:00Z", "claim_id": "c", "amount_cents": -500}',
    b"[1, 2, 3]",
)


def deliver(
    rng: random.Random,
    events: list[dict[str, Any]],
    truth: dict[str, SimulatedDebtor],
    start_ts: float,
    end_ts: float,
    late_share: float,
    duplicate_share: float,
    bad_share: float,
    late_days: float = 3.0,
    jitter_hours: float = 0.0,
) -> Portfolio:
    """Order events as an upstream system would deliver them, with its imperfections.

    Each event is a dict of its wire fields plus ``_ts`` (its true time, removed here); events
    at or after ``end_ts`` are dropped. Shared by every generative story of the package.
    """
    timed: list[tuple[float, bytes]] = []
    injected = {"late": 0, "duplicates": 0, "bad": 0}
    if jitter_hours > 0:
        injected["jittered"] = 0
    for event in events:
        ts = event.pop("_ts")
        if ts >= end_ts:
            continue
        if jitter_hours > 0:
            # The stamp is off, the delivery is not: keep the stamp inside the calendar.
            stamped = min(end_ts - 1, max(start_ts, ts + rng.gauss(0.0, jitter_hours * 3600)))
            event["occurred_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamped))
            injected["jittered"] += 1
        line = orjson.dumps(event)
        delivered = ts
        if rng.random() < late_share:
            delivered += rng.uniform(3600, late_days * 86_400)
            injected["late"] += 1
        timed.append((delivered, line))
        if rng.random() < duplicate_share:
            timed.append((delivered + rng.uniform(1, 2 * 86_400), line))
            injected["duplicates"] += 1
        if rng.random() < bad_share:
            timed.append((delivered + 1, rng.choice(_BAD_LINES)))
            injected["bad"] += 1
    timed.sort(key=lambda pair: pair[0])
    return Portfolio([line for _, line in timed], truth, start_ts, end_ts, injected)
