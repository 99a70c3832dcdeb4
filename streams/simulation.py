"""A simulated collection portfolio with known truth, built from the domain brief.

Each debtor has a persona and a latent willingness and ability; events follow from them:
claims from several creditors, reminders in friendly or strict tone, responses, proactive
contact, arrangements kept or broken, payments (some right after a nudge), and a star
rating after answered calls. Some debtors' situation changes mid-way (a life event makes a
Job, Saida or Hendrik-Jan struggle; a Bryan gets back on track). Delivery is realistic too:
a few events arrive days late, some are re-sent, and a few lines are broken.

>>> portfolio = simulate(debtors=20, months=2, seed=3)
>>> len(portfolio.truth), portfolio.lines[0][:1]
(20, b'{')
>>> simulate(debtors=20, months=2, seed=3).lines == portfolio.lines
True
"""

from __future__ import annotations

import calendar
import random
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from streams.personas import PERSONAS

__all__ = ["MIXES", "Portfolio", "SimulatedDebtor", "simulate"]

#: Published persona shares (domain brief), as fractions.
MIXES: dict[str, dict[str, float]] = {
    "retailer": {"tamara": 0.558, "bryan": 0.233, "job": 0.111, "saida": 0.065, "hendrik-jan": 0.034},
    "insurer": {"tamara": 0.404, "bryan": 0.170, "job": 0.092, "saida": 0.184, "hendrik-jan": 0.149},
}


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


class _DebtorSim:
    """Generates one debtor's events week by week."""

    def __init__(self, rng: random.Random, truth: SimulatedDebtor, start_ts: float) -> None:
        self.rng = rng
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

    def emit(self, event_type: str, ts: float, **fields: Any) -> None:
        self.counter += 1
        self.events.append({
            "event_id": f"{self.truth.debtor_id}-{self.counter:05d}",
            "debtor_id": self.truth.debtor_id,
            "type": event_type,
            "occurred_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts)),
            **fields,
            "_ts": ts,
        })

    def open_claim(self, ts: float) -> None:
        rng = self.rng
        claim = _Claim(f"{self.truth.debtor_id}-c{len(self.claims) + self.closed}", max(2000, int(rng.lognormvariate(10.0, 0.7))), ts)
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
        # Reminders: friendly at first, strict once a claim is old.
        if rng.random() < 0.55:
            cts = ts + rng.uniform(0, _WEEK)
            oldest = min(c.opened_ts for c in self.claims)
            tone = "strict" if cts - oldest > 8 * _WEEK and rng.random() < 0.6 else rng.choice(("friendly", "neutral"))
            channel = rng.choices([c for c, _ in _CHANNELS], [w for _, w in _CHANNELS])[0]
            self.emit("contact_attempted", cts, channel=channel, direction="outbound", tone=tone)
            self.last_contact_ts, self.last_tone = cts, tone
            if rng.random() < b.respond:
                self.emit("contact_responded", cts + rng.uniform(600, 86_400), channel=channel, outcome=_RESPONSE[channel])
                if channel == "call" and rng.random() < 0.9:
                    self.rate(cts + 900)
        if rng.random() < b.inbound:
            its = ts + rng.uniform(0, _WEEK)
            channel = rng.choice(_INBOUND)
            self.emit("contact_initiated", its, channel=channel, direction="inbound")
            if channel == "call" and rng.random() < 0.8:
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
                n = rng.randint(3, 12)
                claim.arrangement = f"{claim.claim_id}-a{self.counter}"
                claim.installments_left, claim.installment = n, max(1, -(-claim.outstanding // n))
                self.emit("arrangement_agreed", ts + rng.uniform(0, _WEEK), claim_id=claim.claim_id,
                          arrangement_id=claim.arrangement, installments=n, installment_cents=claim.installment)
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
    mix: str = "retailer",
    start: str = "2026-01-01",
    change_share: float = 0.08,
    late_share: float = 0.03,
    duplicate_share: float = 0.01,
    bad_share: float = 0.003,
) -> Portfolio:
    """Simulate a portfolio; the same arguments always give the same lines."""
    rng = random.Random(seed)
    start_ts = float(calendar.timegm(time.strptime(start, "%Y-%m-%d")))
    weeks = max(1, round(months * 52 / 12))
    end_ts = start_ts + weeks * _WEEK
    shares = MIXES[mix]
    events: list[dict[str, Any]] = []
    truth: dict[str, SimulatedDebtor] = {}
    for n in range(debtors):
        persona = rng.choices(PERSONAS, [shares[p] for p in PERSONAS])[0]
        b = _BEHAVIOUR[persona]
        debtor = SimulatedDebtor(f"d{seed}-{n:06d}", persona, persona, _latent(rng, b.willingness), _latent(rng, b.ability))
        if rng.random() < change_share * 2 and weeks >= 20:
            if persona in ("job", "saida", "hendrik-jan"):
                debtor.change = "worsened"
            elif persona == "bryan" and rng.random() < 0.5:
                debtor.change = "improved"
        truth[debtor.debtor_id] = debtor
        sim = _DebtorSim(rng, debtor, start_ts)
        initial = max(1, round(rng.gauss(b.files * 0.6, 0.6)))
        for _ in range(initial):
            sim.open_claim(start_ts + rng.uniform(0, 4 * _WEEK))
        change_week = rng.randint(weeks * 4 // 12, weeks * 7 // 12) if debtor.change != "none" else weeks + 1
        for week in range(weeks):
            ts = start_ts + week * _WEEK
            if week == change_week:
                sim.behaviour, debtor.change_ts = _change(rng, debtor, sim, ts)
            sim.week(ts, sim.behaviour.files * 0.4 / 52)
        events.extend(sim.events)
    return _deliver(rng, events, truth, start_ts, end_ts, late_share, duplicate_share, bad_share)


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


def _deliver(
    rng: random.Random,
    events: list[dict[str, Any]],
    truth: dict[str, SimulatedDebtor],
    start_ts: float,
    end_ts: float,
    late_share: float,
    duplicate_share: float,
    bad_share: float,
) -> Portfolio:
    """Order events as an upstream system would deliver them, with its imperfections."""
    timed: list[tuple[float, bytes]] = []
    injected = {"late": 0, "duplicates": 0, "bad": 0}
    for event in events:
        ts = event.pop("_ts")
        if ts >= end_ts:
            continue
        line = orjson.dumps(event)
        delivered = ts
        if rng.random() < late_share:
            delivered += rng.uniform(3600, 3 * 86_400)
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
