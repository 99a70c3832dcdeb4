"""A second generative story: a monthly ledger per claim, built from the published tables alone.

:mod:`streams.simulation` draws a debtor's behaviour week by week from hand-set chances. Here
the story is the agency's books instead, so that a benchmark does not only measure how well
an engine fits one simulator's habits:

* each persona's claims, creditors and arrangements a year follow the published cluster
  averages, and the share of principal collected within the year the published A/B figures
  (plan A: Tamara 18.5% ... Hendrik-Jan 81.9%);
* every open claim runs through a fixed dunning schedule (friendly letter, e-mail, SMS, call,
  then strict letter, e-mail, call, a home visit), so contact grows with the claims, and stops
  while an arrangement runs;
* each claim's month is one ledger line: paid in full, in part or not at all, more likely in
  the days after a reminder, and after a strict one for the well-off (Hendrik-Jan) or after any
  nudge for the forgetful (Saida);
* arrangements have monthly due dates and break after two missed installments;
* a debtor's persona changes with about the published year-on-year rates for the steady
  personas, and a share of Jobs, Saidas and Hendrik-Jans worsens to Tamara or Bryan (a life
  event: lower ability, new claims from new creditors).

The truth (persona, latent willingness and ability, change) and the delivery (late, re-sent,
broken lines, jitter) are as in :func:`streams.simulation.simulate`, which this shares the
knobs with.

>>> ledger = simulate_ledger(debtors=20, months=3, seed=4)
>>> len(ledger.truth), ledger.lines == simulate_ledger(debtors=20, months=3, seed=4).lines
(20, True)
>>> sorted({t.persona for t in simulate_ledger(debtors=60, months=1, seed=4, mix="cluster").truth.values()})
['bryan', 'hendrik-jan', 'job', 'saida', 'tamara']
"""

from __future__ import annotations

import calendar
import math
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from debtor_segments.streams.simulation import PERSONAS, EventEmitter, Portfolio, SimulatedDebtor, deliver, mix_shares

__all__ = ["simulate_ledger"]

_DAY = 86_400.0
_MONTH = 365.25 / 12 * _DAY


@dataclass(frozen=True, slots=True)
class _Profile:
    files: float  # claims a year (published cluster averages)
    creditors: float  # distinct creditors
    arrangements: float  # arrangements agreed a year
    collected: float  # share of principal collected within a year (A/B figures, plan A)
    willingness: float
    ability: float
    answer: float  # chance to answer or open one dunning contact
    inbound: float  # proactive contacts a month
    keep: float  # chance to pay an installment by its due date
    friendly: float  # payment chance multiplier in the two weeks after a friendly reminder
    strict: float  # the same after a strict one
    full: float  # chance that a payment outside an arrangement clears the claim


_PROFILES = {
    "tamara": _Profile(6.54, 4.87, 3.64, 0.185, 0.25, 0.20, 0.12, 0.05, 0.35, 1.0, 1.1, 0.10),
    "bryan": _Profile(4.93, 3.45, 2.82, 0.221, 0.55, 0.32, 0.30, 0.20, 0.50, 1.2, 1.3, 0.15),
    "job": _Profile(2.43, 1.10, 1.14, 0.478, 0.80, 0.60, 0.70, 0.80, 0.90, 1.5, 1.2, 0.35),
    "saida": _Profile(1.17, 1.01, 0.30, 0.634, 0.35, 0.75, 0.20, 0.05, 0.75, 3.0, 2.5, 0.85),
    "hendrik-jan": _Profile(1.01, 1.00, 0.10, 0.819, 0.40, 0.90, 0.20, 0.05, 0.95, 1.2, 6.0, 0.97),
}
#: Dunning steps per open claim: (days after opening, channel, tone); then a strict letter or
#: call every 30 days.
_SCHEDULE = (
    (3, "letter", "friendly"), (14, "email", "friendly"), (21, "sms", "neutral"), (30, "call", "neutral"),
    (45, "letter", "strict"), (60, "email", "strict"), (75, "call", "strict"), (90, "visit", "strict"),
)  # fmt: skip
_ANSWER = {"letter": 0.3, "email": 0.9, "sms": 0.6, "call": 0.7, "visit": 0.8, "whatsapp": 0.8}
_OUTCOME = {"letter": "replied", "email": "opened", "sms": "clicked", "call": "answered", "visit": "answered", "whatsapp": "replied"}
_INBOUND = ("call", "email", "portal", "whatsapp", "call")
#: Year-on-year changes of the steady personas (published: 97.3% of Tamaras stay, 1.8% become Bryan).
_DRIFT = {"tamara": ("bryan", 0.018), "bryan": ("job", 0.03)}


def _latent(rng: random.Random, mean: float, concentration: float = 10.0) -> float:
    return rng.betavariate(mean * concentration, (1 - mean) * concentration)


def _count(rng: random.Random, mean: float) -> int:
    """A count with the given mean (Poisson by inversion; small means only)."""
    limit, k, p = math.exp(-mean), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


@dataclass(slots=True)
class _Claim:
    claim_id: str
    principal: int
    outstanding: int
    opened_ts: float
    creditor: str
    arrangement: str = ""
    due_ts: float = 0.0
    installment: int = 0
    installments_left: int = 0
    missed_in_row: int = 0
    nudge_ts: float = 0.0  # last reminder and its multiplier
    nudge: float = 1.0
    closed: bool = False


class _Ledger(EventEmitter):
    """One debtor's books, advanced a month at a time."""

    def __init__(self, rng: random.Random, truth: SimulatedDebtor, knobs: dict[str, Any]) -> None:
        self.rng, self.truth, self.k = rng, truth, knobs
        self.profile = _PROFILES[truth.persona]
        self.events: list[dict[str, Any]] = []
        self.claims: list[_Claim] = []
        self.counter = 0
        n = 1 + _count(rng, max(0.0, self.profile.creditors - 1))
        self.creditors = [f"cr-{rng.randrange(900):03d}" for _ in range(n)]

    def open_claim(self, ts: float) -> None:
        rng = self.rng
        amount = max(500, int(rng.lognormvariate(self.k["principal_mu"], 0.9)))
        claim = _Claim(f"{self.truth.debtor_id}-k{len(self.claims)}", amount, amount, ts, rng.choice(self.creditors))
        self.claims.append(claim)
        self.emit("claim_opened", ts, claim_id=claim.claim_id, creditor_id=claim.creditor, principal_cents=amount)

    def pay(self, claim: _Claim, amount: int, ts: float) -> None:
        amount = max(1, min(amount, claim.outstanding))
        claim.outstanding -= amount
        self.emit("payment_received", ts, claim_id=claim.claim_id, amount_cents=amount)
        if claim.outstanding == 0:
            claim.closed = True
            self.emit("claim_closed", ts + 7200, claim_id=claim.claim_id, outcome="paid")

    def rate(self, ts: float) -> None:
        rng, t = self.rng, self.truth
        if rng.random() >= self.k["rating_share"]:
            return
        fields: dict[str, Any] = {"stars": min(5, max(1, round(1 + 4 * t.willingness + rng.gauss(0, 1.0)))), "call_id": f"c-{self.counter}", "agent_id": f"ag-{rng.randrange(60)}"}
        if rng.random() < 0.6:
            seen = t.ability + rng.gauss(0, 0.2)
            fields["assessment"] = "can_pay" if seen > 0.6 else "cannot_pay" if seen < 0.4 else "partly"
        if t.ability < 0.35 and rng.random() < 0.5:
            fields["hardship"] = "life_event" if t.change == "worsened" else rng.choice(("budgetary", "overspending"))
        self.emit("call_rated", ts, **fields)

    def dun(self, claim: _Claim, month_start: float, month_end: float) -> None:
        """The claim's dunning steps that fall in this month (none while an arrangement runs)."""
        rng, p = self.rng, self.profile
        contact = self.k["contact"]
        steps = list(_SCHEDULE)
        age_days = (month_end - claim.opened_ts) / _DAY
        steps += [(d, rng.choice(("letter", "call")), "strict") for d in range(120, int(age_days) + 1, 30)]
        for day, channel, tone in steps:
            ts = claim.opened_ts + day * _DAY + rng.uniform(0, 0.5 * _DAY)
            if not month_start <= ts < month_end or claim.arrangement or claim.closed:
                continue
            if channel == "visit" and rng.random() < 0.7:  # a home visit is rare
                continue
            # Intensity c: each step with chance min(1, c), and for c > 1 a follow-up with chance c - 1.
            for extra, chance in ((0.0, min(1.0, contact)), (rng.uniform(2, 6) * _DAY, max(0.0, contact - 1.0))):
                if chance <= 0 or rng.random() >= chance:
                    continue
                cts = ts + extra
                self.emit("contact_attempted", cts, channel=channel, direction="outbound", tone=tone)
                multiplier = p.strict if tone == "strict" else p.friendly
                if multiplier >= claim.nudge or cts - claim.nudge_ts > 14 * _DAY:
                    claim.nudge_ts, claim.nudge = cts, multiplier
                if rng.random() < p.answer * _ANSWER[channel]:
                    rts = cts + rng.uniform(600, (0.2 if channel in ("call", "visit") else 2.0) * _DAY)
                    self.emit("contact_responded", rts, channel=channel, outcome=_OUTCOME[channel])
                    if channel == "call":
                        self.rate(rts + 600)

    def month(self, month_start: float) -> None:
        rng, p, k = self.rng, self.profile, self.k
        month_end = month_start + _MONTH
        if rng.random() < p.files * k["files_scale"] * 0.45 / 12:  # new claims during the year
            self.open_claim(month_start + rng.uniform(0, _MONTH))
        for _ in range(_count(rng, p.inbound)):
            its = month_start + rng.uniform(0, _MONTH)
            channel = rng.choice(_INBOUND)
            self.emit("contact_initiated", its, channel=channel, direction="inbound")
            if channel == "call":
                self.rate(its + 600)
        open_claims = [c for c in self.claims if not c.closed and c.opened_ts < month_end]
        if open_claims and rng.random() < min(0.9, p.arrangements / 12):
            free = [c for c in open_claims if not c.arrangement and c.opened_ts < month_start + 0.5 * _MONTH]
            if free:
                claim = rng.choice(free)
                n = rng.randint(*k["installments"])
                ats = max(month_start, claim.opened_ts) + rng.uniform(0, 0.5 * _MONTH)
                claim.arrangement = f"{claim.claim_id}-ar{self.counter}"
                claim.installment, claim.installments_left, claim.missed_in_row = max(1, -(-claim.outstanding // n)), n, 0
                claim.due_ts = ats + rng.uniform(7, 28) * _DAY
                self.emit("arrangement_agreed", ats, claim_id=claim.claim_id, arrangement_id=claim.arrangement, installments=n, installment_cents=claim.installment)
        # Monthly hazard that makes about the published share collected within a year.
        base = 1 - (1 - p.collected) ** (1 / 12)
        for claim in open_claims:
            self.dun(claim, month_start, month_end)
            if claim.arrangement:
                while claim.due_ts < month_end and claim.arrangement and not claim.closed:
                    if rng.random() < p.keep:
                        self.pay(claim, claim.installment, claim.due_ts + rng.uniform(-3, 2) * _DAY)
                        claim.missed_in_row = 0
                    else:
                        self.emit("installment_missed", claim.due_ts + _DAY, claim_id=claim.claim_id, arrangement_id=claim.arrangement, amount_cents=claim.installment)
                        claim.missed_in_row += 1
                    claim.installments_left -= 1
                    claim.due_ts += _MONTH
                    if claim.missed_in_row >= 2 or claim.installments_left <= 0:
                        claim.arrangement = ""  # broken, or run out: back to dunning
                continue
            nudged = claim.nudge_ts >= month_start - 14 * _DAY
            if not claim.closed and rng.random() < min(0.95, base * 1.6 * (claim.nudge if nudged else 0.7)):
                if nudged:
                    pts = claim.nudge_ts + rng.expovariate(1 / (3 * _DAY)) + 3600
                else:
                    pts = month_start + rng.uniform(0, _MONTH)
                amount = claim.outstanding if rng.random() < p.full else int(claim.outstanding * rng.uniform(0.15, 0.6))
                self.pay(claim, amount, max(pts, claim.opened_ts + 3600))
            if not claim.closed and month_end - claim.opened_ts > 9 * _MONTH and rng.random() < 0.05:
                claim.closed = True
                self.emit("claim_closed", month_end - _DAY, claim_id=claim.claim_id, outcome=rng.choice(("returned", "written_off")))

    def change(self, ts: float) -> None:
        rng, t = self.rng, self.truth
        t.change_ts = ts
        if t.change == "worsened":
            t.persona = "tamara" if rng.random() < 0.5 else "bryan"
            t.ability = _latent(rng, 0.18)
            t.willingness = min(t.willingness, _latent(rng, _PROFILES[t.persona].willingness))
            self.creditors += [f"cr-{rng.randrange(900):03d}" for _ in range(rng.randint(2, 4))]
            for _ in range(rng.randint(3, 6)):
                self.open_claim(ts + rng.uniform(0, 8 * 7 * _DAY))
        else:
            t.persona = _DRIFT[t.initial_persona][0]
            t.willingness = max(t.willingness, _latent(rng, _PROFILES[t.persona].willingness))
            t.ability = max(t.ability, _latent(rng, _PROFILES[t.persona].ability))
        self.profile = _PROFILES[t.persona]


def simulate_ledger(
    debtors: int = 3000,
    months: int = 12,
    seed: int = 11,
    *,
    mix: str | Mapping[str, float] = "cluster",
    start: str = "2026-01-01",
    change_share: float = 0.08,
    late_share: float = 0.03,
    duplicate_share: float = 0.01,
    bad_share: float = 0.003,
    contact: float = 1.0,
    rating_share: float = 0.6,
    principal_eur: float = 300.0,
    installments: tuple[int, int] = (2, 10),
    files_scale: float = 1.0,
    inflow_months: float = 0.0,
    jitter_hours: float = 0.0,
    late_days: float = 3.0,
) -> Portfolio:
    """Simulate a portfolio as monthly ledgers per claim; the same arguments give the same lines.

    The knobs mean what they mean for :func:`streams.simulation.simulate`, with this story's
    own defaults: the published cluster mix, 60% of answered calls rated, EUR 300 a claim (the
    insurer's average), arrangements of 2 to 10 installments. ``contact`` scales the dunning
    steps; ``change_share`` is the share of Jobs, Saidas and Hendrik-Jans that worsen (and
    Tamaras and Bryans change at about the published yearly rates), with 6 months or more.
    """
    if contact < 0 or files_scale <= 0 or not 1 <= installments[0] <= installments[1] or not 0 <= rating_share <= 1:
        raise ValueError("contact >= 0, files_scale > 0, 0 <= rating_share <= 1 and 1 <= installments[0] <= installments[1] are needed")
    rng = random.Random(seed)
    shares = mix_shares(mix)
    start_ts = float(calendar.timegm(time.strptime(start, "%Y-%m-%d")))
    end_ts = start_ts + months * _MONTH
    knobs = {"contact": contact, "rating_share": rating_share, "files_scale": files_scale, "principal_mu": math.log(principal_eur * 100) - 0.9**2 / 2, "installments": installments}
    truth: dict[str, SimulatedDebtor] = {}
    events: list[dict[str, Any]] = []
    for n in range(debtors):
        persona = rng.choices(PERSONAS, [shares[p] for p in PERSONAS])[0]
        profile = _PROFILES[persona]
        debtor = SimulatedDebtor(f"l{seed}-{n:06d}", persona, persona, _latent(rng, profile.willingness), _latent(rng, profile.ability))
        first = rng.randrange(max(1, round(inflow_months))) if inflow_months >= 1 else 0
        span = months - first
        if span >= 6:
            if persona in ("job", "saida", "hendrik-jan") and rng.random() < change_share:
                debtor.change = "worsened"
            elif persona in _DRIFT and rng.random() < _DRIFT[persona][1] * span / 12:
                debtor.change = "improved"
        truth[debtor.debtor_id] = debtor
        ledger = _Ledger(rng, debtor, knobs)
        arrived = start_ts + first * _MONTH
        # Files handed over at arrival: most of a year's, at least one.
        for _ in range(max(1, _count(rng, profile.files * files_scale * 0.55))):
            ledger.open_claim(arrived + rng.uniform(0, 21 * _DAY))
        change_month = first + rng.randint(span // 3, span * 2 // 3) if debtor.change != "none" else months + 1
        for month in range(first, months):
            if month == change_month:
                ledger.change(start_ts + month * _MONTH + rng.uniform(0, _MONTH / 2))
            ledger.month(start_ts + month * _MONTH)
        events.extend(ledger.events)
    return deliver(rng, events, truth, start_ts, end_ts, late_share, duplicate_share, bad_share, late_days, jitter_hours)
