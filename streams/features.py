"""Behavioural features of a debtor, each scaled to [0, 1].

Debt trend and collected share are kept in the state (and shown by the API) but are not
clustering features: for a debtor whose behaviour is steady they still drift all year as
claims age and get paid, and with them in, steady debtors changed persona about four times
as often in the quality benchmark.

Scaling is fixed by domain knowledge rather than learned (a running scaler would let two
workers disagree about the same debtor, and k-means on unscaled money amounts collapses to
one cluster).

>>> state = DebtorState.new("d1")
>>> x = features(state)
>>> sorted(x) == sorted(FEATURES)
True
>>> all(0.0 <= value <= 1.0 for value in x.values())
True
>>> round(willingness(state), 2), round(ability(state), 2)
(0.42, 0.91)
"""

from __future__ import annotations

import math

from debtor_segments.streams.state import (
    ABILITY_N,
    ABILITY_SUM,
    ARRANGEMENTS,
    HARDSHIP,
    INBOUND,
    KEPT,
    MISSED,
    OUTBOUND,
    RESPONDED,
    STARS_N,
    STARS_SUM,
    DebtorState,
)

__all__ = [
    "FEATURES",
    "ability",
    "evidence",
    "exposure_months",
    "feature_variance",
    "feature_vector",
    "features",
    "willingness",
]

#: Feature names, in a fixed order shared by the model and the prototypes.
FEATURES: tuple[str, ...] = (
    "files",  # claims (files) handed over, log-scaled
    "creditors",  # distinct creditors, log-scaled
    "debt",  # outstanding principal, log-scaled
    "kept_share",  # payments on arrangements vs missed installments
    "proactive",  # contacts the debtor initiated
    "responsiveness",  # responses per outbound contact
    "stars",  # average agent rating, 1 star -> 0, 5 stars -> 1
    "assessed_ability",  # agents' assessment of payment capacity
    "arrangements",  # arrangements agreed recently
)

_LOG_FILES = math.log1p(12)
_LOG_CREDITORS = math.log1p(8)
_LOG_DEBT_EUR = math.log1p(15_000)


def _creditors(bits: int) -> float:
    """Distinct creditors from a 64-bit bitmap by linear counting."""
    empty = 64 - bits.bit_count()
    return 64 * math.log(64 / max(empty, 0.5))


# Both count features take few values: look them up instead of taking logs for every event.
_FILES_FEATURE = tuple(min(1.0, math.log1p(claims) / _LOG_FILES) for claims in range(13))
_CREDITORS_FEATURE = tuple(min(1.0, math.log1p(_creditors((1 << ones) - 1)) / _LOG_CREDITORS) for ones in range(65))


def features(state: DebtorState) -> dict[str, float]:
    """The feature vector of a debtor as a dict (as River models expect)."""
    return dict(zip(FEATURES, feature_vector(state), strict=True))


def exposure_months(state: DebtorState, half_life_days: float = 120.0) -> float:
    """Decayed length of the debtor's history, in months (floor: two weeks).

    Dividing a decayed count by it gives a rate that does not ramp up while a new debtor's
    counters fill, so a debtor whose behaviour is steady has steady features from the start.
    """
    age_days = (state.watermark - state.first_ts) / 86_400
    decayed_days: float = half_life_days / math.log(2) * (1.0 - 2.0 ** (-age_days / half_life_days))
    return max(decayed_days, 14.0) / 30.4


def feature_vector(state: DebtorState, months: float | None = None) -> list[float]:
    """The features of a debtor in ``FEATURES`` order (the hot path uses lists, not dicts).

    ``months`` is :func:`exposure_months` of the state, if the caller has it already.
    """
    d = state.decayed
    if months is None:
        months = exposure_months(state)
    kept, missed, arrangements = d[KEPT], d[MISSED], d[ARRANGEMENTS]
    outbound, responded, inbound = d[OUTBOUND], d[RESPONDED], d[INBOUND]
    stars_sum, stars_n, ability_sum, ability_n = d[STARS_SUM], d[STARS_N], d[ABILITY_SUM], d[ABILITY_N]
    debt = math.log1p(state.outstanding_cents / 100) / _LOG_DEBT_EUR
    return [
        _FILES_FEATURE[state.claims if state.claims < 12 else 12],
        _CREDITORS_FEATURE[state.creditor_bits.bit_count()],
        debt if debt < 1.0 else 1.0,
        (kept + 1.0) / (kept + missed + 2.0),
        inbound / (inbound + 0.5 * months),
        (responded + 0.5) / (outbound + 1.0) if outbound >= responded else 1.0,
        # One pseudo-rating of 3 stars keeps a single rating from deciding alone.
        (stars_sum - stars_n + 2.0) / (4.0 * (stars_n + 1.0)),
        (ability_sum + 0.5) / (ability_n + 1.0),
        arrangements / (arrangements + 0.1 * months),
    ]


def feature_variance(state: DebtorState, x: list[float], months: float | None = None) -> list[float]:
    """Rough sampling variance of each feature in ``x`` (:func:`feature_vector` of ``state``).

    A share estimated from few observations is noisy: a Bryan who has not called in yet in
    his first months looks as unwilling as a Tamara, and a Tamara whose first installments
    were paid looks like a Bryan. Shares get the variance ``p (1 - p) / (n + ...)`` of a
    share seen ``n`` times; counts of files and creditors and the debt are exact. ``months``
    as for :func:`feature_vector`.
    """
    d = state.decayed
    if months is None:
        months = exposure_months(state)
    kept, missed, arrangements, outbound, inbound, stars_n, ability_n = d[KEPT], d[MISSED], d[ARRANGEMENTS], d[OUTBOUND], d[INBOUND], d[STARS_N], d[ABILITY_N]
    return [
        0.0,
        0.0,
        0.0,
        x[3] * (1.0 - x[3]) / (kept + missed + 3.0),
        x[4] * (1.0 - x[4]) / (inbound + 0.5 * months + 1.0),
        x[5] * (1.0 - x[5]) / (outbound + 2.0),
        0.04 / (stars_n + 1.0),  # ratings spread about a star (0.2 on this scale)
        x[7] * (1.0 - x[7]) / (ability_n + 2.0),
        x[8] * (1.0 - x[8]) / (arrangements + 0.1 * months + 1.0),
    ]


def evidence(state: DebtorState) -> float:
    """Days of history times a saturating count of events: 0 for a debtor never seen."""
    if state.applied == 0:
        return 0.0
    days = (state.watermark - state.first_ts) / 86_400
    return min(days, 365.0) * state.applied / (state.applied + 4.0)


def willingness(state: DebtorState, months: float | None = None) -> float:
    """Willingness to work towards a solution, in [0, 1].

    Star ratings weigh most, as agents rate exactly this; proactive contact and kept
    arrangements fill in for debtors who were rarely rated.
    """
    d = state.decayed
    stars_n = d[STARS_N]
    stars = (d[STARS_SUM] - stars_n) / (4.0 * stars_n) if stars_n else 0.5
    star_weight = stars_n / (stars_n + 1.0)
    inbound, responded, outbound = d[INBOUND], d[RESPONDED], d[OUTBOUND]
    kept, missed = d[KEPT], d[MISSED]
    if months is None:
        months = exposure_months(state)
    behaviour = 0.4 * inbound / (inbound + 0.5 * months) + 0.3 * (responded + 0.5) / (outbound + 1.0) + 0.3 * (kept + 1.0) / (kept + missed + 2.0)
    return _clip(star_weight * stars + (1.0 - star_weight) * min(1.0, behaviour * 1.4))


def ability(state: DebtorState) -> float:
    """Ability to pay, in [0, 1]: assessments, hardship, what was paid, and the debt load."""
    d = state.decayed
    ability_n = d[ABILITY_N]
    assessed = d[ABILITY_SUM] / ability_n if ability_n else 0.5
    assess_weight = ability_n / (ability_n + 0.5)
    hardship = d[HARDSHIP] / (d[STARS_N] + 1.0)
    collected = state.paid_cents / state.principal_cents if state.principal_cents else 0.5
    load = min(1.0, math.log1p(state.outstanding_cents / 100) / _LOG_DEBT_EUR)
    # The debt load says more about capacity than what was paid, which willingness drives too.
    behaviour = 0.25 * min(1.0, collected * 1.3) + 0.75 * (1.0 - load)
    value = assess_weight * assessed + (1.0 - assess_weight) * behaviour
    return _clip(value - 0.25 * hardship)


def _clip(value: float) -> float:
    return 0.0 if value < 0.0 else 1.0 if value > 1.0 else value
