"""How simulated debtors react to a treatment: an outcome model per persona x plan.

Calibrated on the published two-plan comparison (domain brief: collected share of
principal, plan A vs plan B, per persona; overall 27.9% vs 42.1%). A plan's *fit* for a
persona (0 = the published plan A, a one-size path; 1 = the published plan B) comes from the
tone and channel of its steps; the expected collected share at 60 days is then
``a + fit * (b - a)`` for that persona. Each debtor pays (or not) once, a share of the
principal, after a delay: enough for 30/60/90-day figures, payer rates and sequential tests.
Simulation only: nothing here is used to treat real debtors.

>>> round(expected_share("tamara", 0.0), 3), round(expected_share("tamara", 1.0), 3)
(0.185, 0.321)
>>> import random
>>> outcome = draw_outcome(random.Random(1), "job", 1.0)
>>> outcome.principal_cents > 0 and 0 <= outcome.paid_cents <= outcome.principal_cents
True
"""

from __future__ import annotations

import math
import random
from typing import NamedTuple

from debtor_segments.streams.policy import Plan

__all__ = ["PUBLISHED", "Outcome", "draw_outcome", "expected_share", "plan_fit"]

#: Published collected shares per persona, plan A vs plan B (3,000 vs 3,312 debtors).
PUBLISHED: dict[str, tuple[float, float]] = {
    "tamara": (0.185, 0.321),
    "bryan": (0.221, 0.396),
    "job": (0.478, 0.628),
    "saida": (0.634, 0.754),
    "hendrik-jan": (0.819, 0.956),
    "unknown": (0.279, 0.421),
}
# What each persona responds to (assumed from the persona descriptions, not published):
# problem and struggling payers to a friendly tone and a conversation; the engaged payer to
# friendly digital contact; the nonchalant and the well-off late payer to a firm nudge.
_TONE = {
    "tamara": {"friendly": 1.0, "neutral": 0.5, "strict": 0.0},
    "bryan": {"friendly": 1.0, "neutral": 0.6, "strict": 0.1},
    "job": {"friendly": 1.0, "neutral": 0.7, "strict": 0.2},
    "saida": {"friendly": 0.3, "neutral": 0.6, "strict": 1.0},
    "hendrik-jan": {"friendly": 0.2, "neutral": 0.6, "strict": 1.0},
    "unknown": {"friendly": 0.6, "neutral": 0.6, "strict": 0.4},
}
_CHANNEL = {
    "tamara": {"call": 1.0, "visit": 1.0, "whatsapp": 0.6, "sms": 0.5, "email": 0.3, "letter": 0.2},
    "bryan": {"call": 1.0, "visit": 0.8, "whatsapp": 0.8, "sms": 0.6, "email": 0.5, "letter": 0.3},
    "job": {"email": 1.0, "whatsapp": 1.0, "sms": 0.8, "call": 0.7, "letter": 0.4, "visit": 0.3},
    "saida": {"sms": 1.0, "whatsapp": 1.0, "email": 0.8, "call": 0.6, "letter": 0.3, "visit": 0.3},
    "hendrik-jan": {"letter": 1.0, "email": 0.9, "call": 0.6, "sms": 0.5, "whatsapp": 0.4, "visit": 0.2},
    "unknown": dict.fromkeys(("letter", "email", "sms", "call", "whatsapp", "visit"), 0.5),
}
_PAID_SHARE = 0.8  # mean share of the principal a payer pays
_DELAY_DAYS = 18.0  # mean delay of a payment after assignment


class Outcome(NamedTuple):
    """One debtor's simulated result: principal, what it paid and when (days after assignment)."""

    principal_cents: int
    paid_cents: int
    paid_day: float


def plan_fit(plan: Plan, persona: str) -> float:
    """How well a plan's tone and channel mix suits a persona, in [0, 1] (earlier steps weigh more)."""
    tone, channel = _TONE.get(persona, _TONE["unknown"]), _CHANNEL.get(persona, _CHANNEL["unknown"])
    weights = [1.0 / (1.0 + step.day / 14.0) for step in plan.steps]
    score = sum(w * (0.5 * tone[s.tone] + 0.5 * channel[s.channel]) for w, s in zip(weights, plan.steps, strict=True))
    return max(0.0, min(1.0, score / sum(weights)))


def expected_share(persona: str, fit: float) -> float:
    """Expected collected share at 60 days for a persona under a plan of this fit."""
    a, b = PUBLISHED.get(persona, PUBLISHED["unknown"])
    return a + fit * (b - a)


def draw_outcome(rng: random.Random, persona: str, fit: float, principal_cents: int | None = None) -> Outcome:
    """One debtor's outcome; the share collected by day 60 averages :func:`expected_share`."""
    if principal_cents is None:
        principal_cents = max(500, int(rng.lognormvariate(math.log(30_000) - 0.245, 0.7)))
    by_60 = 1.0 - math.exp(-60.0 / _DELAY_DAYS)
    payer = min(0.99, expected_share(persona, fit) / (_PAID_SHARE * by_60))
    mean_paid = min(0.999, expected_share(persona, fit) / (payer * by_60))
    if rng.random() >= payer:
        return Outcome(principal_cents, 0, math.inf)
    concentration = 3.0
    paid = rng.betavariate(mean_paid * concentration, (1.0 - mean_paid) * concentration)
    return Outcome(principal_cents, max(1, int(principal_cents * paid)), rng.expovariate(1.0 / _DELAY_DAYS))
