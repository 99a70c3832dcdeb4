"""What an agent in the contact centre sees about one debtor: the segment with the figures
behind it (:func:`profile`) and, with a treatment policy, the contact facts (:func:`contact_facts`).
Views of the whole population are in :mod:`streams.population`.

>>> from debtor_segments.streams.model import SegmentModel
>>> from debtor_segments.streams.state import DebtorState
>>> view = profile(DebtorState.new("d1"), SegmentModel())
>>> view["persona"], view["quadrant"], view["ratings"]
('unknown', 'unknown', 0)
"""

from __future__ import annotations

from typing import Any

from debtor_segments.streams.answer_rates import PortfolioRates, best_band
from debtor_segments.streams.contact_guard import quiet_until
from debtor_segments.streams.contact_state import ContactState
from debtor_segments.streams.engine import explain
from debtor_segments.streams.features import FEATURES, feature_vector
from debtor_segments.streams.local_time import HourMask, local_datetime, local_iso, zone
from debtor_segments.streams.model import SegmentModel
from debtor_segments.streams.policy import CHANNELS, ContactRules
from debtor_segments.streams.report import utc_iso
from debtor_segments.streams.state import DebtorState

__all__ = ["contact_facts", "profile"]

_DAY = 86_400.0


def _iso(ts: float) -> str | None:
    # Out of datetime's range (a state written before event times were bounded): null.
    return utc_iso(ts, before_epoch=True)


def profile(state: DebtorState, model: SegmentModel) -> dict[str, Any]:
    """The debtor's segment with the figures behind it (no raw events, no amounts per claim):
    the body of ``GET /debtors/{debtor_id}``.

    Examples
    --------
    >>> from debtor_segments.streams.model import SegmentModel
    >>> profile(DebtorState.new("d1"), SegmentModel())["features"]["open_claims"]
    0
    """
    x = feature_vector(state)
    new_debt, paid = state.decayed_value("new_debt"), state.decayed_value("paid")
    return {
        "debtor_id": state.debtor_id,
        "persona": state.persona,
        "quadrant": state.quadrant,
        "willingness": round(state.willingness, 4),
        "ability": round(state.ability, 4),
        "confidence": round(state.confidence, 4),
        "explanation": explain(x, model) if state.applied else {},
        "average_stars": round(state.stars_total / state.ratings, 2) if state.ratings else None,
        "ratings": state.ratings,
        "features": {
            **{name: round(value, 4) for name, value in zip(FEATURES, x, strict=True)},
            "open_claims": state.open_claims,
            "open_arrangements": state.open_arrangements,
            "outstanding_eur": round(state.outstanding_cents / 100, 2),
            "collected_share": round(state.paid_cents / state.principal_cents, 4) if state.principal_cents else None,
            "debt_trend": round((new_debt - paid) / (new_debt + paid), 4) if new_debt + paid > 0 else 0.0,
        },
        "response_rates": {channel: round(rate, 4) for channel, rate in state.response_rates().items()},
        "persona_since": _iso(state.persona_since),
        "last_update": _iso(state.watermark),
        "model_version": state.model_version,
    }


def contact_facts(contact: ContactState, rules: ContactRules, portfolio: PortfolioRates, default_tz: str, now: float) -> dict[str, Any]:
    """What the contact guard knows about one debtor and would apply at ``now`` (wall clock):
    the ``contact`` member of ``GET /debtors/{debtor_id}`` with a treatment policy.

    ``best_window`` is the contact_due's (:func:`streams.contact_guard.guard_step`): the best
    band of the debtor's answer rates shrunk to ``portfolio``'s, within the rules' hours
    minus the debtor's inconvenient hours, for a weekday or a weekend as ``now`` is one in
    the debtor's time zone. Call counts are those of the rolling window ending at ``now``.

    Examples
    --------
    >>> facts = contact_facts(ContactState(tz_name="America/New_York", opt_out=["sms"], inconvenient=[[8, 10]]),
    ...                       ContactRules(), PortfolioRates(), "Europe/Amsterdam", 1772449200.0)
    >>> facts["timezone"], facts["timezone_source"], facts["local_time"], facts["opted_out_channels"]
    ('America/New_York', 'preference', '2026-03-02T06:00:00-05:00', ['sms'])
    >>> facts["best_window"], facts["allowed_hours"]
    ({'from_hour': 10, 'to_hour': 12, 'timezone': 'America/New_York'}, [{'from_hour': 10, 'to_hour': 21}])
    """
    tz_name, tz_source = contact.timezone(default_tz)
    tz = zone(tz_name)
    if tz is None:  # as the guard does: a stored name this zone database no longer has
        tz_name, tz_source, tz = default_tz, "default", zone(default_tz)
    if tz is None:
        raise ValueError(f"unknown default time zone {default_tz!r}")
    mask = HourMask.between(rules.earliest_hour, rules.latest_hour).without((span[0], span[1]) for span in contact.inconvenient)
    local = local_datetime(now, tz)
    band = best_band(contact.rates, portfolio, weekend=local.weekday() >= 5, allowed=mask)
    window_s = rules.call_window_days * _DAY
    answered, attempts = contact.rates.overall()
    quiet = quiet_until(contact, now, tz, rules.quiet_days_after_conversation)
    return {
        "timezone": tz_name,
        "timezone_source": tz_source,
        "local_time": local_iso(now, tz),
        "weekend": local.weekday() >= 5,
        "allowed_hours": [{"from_hour": start, "to_hour": end} for start, end in mask.windows()],
        "inconvenient_hours": [{"from_hour": span[0], "to_hour": span[1]} for span in contact.inconvenient],
        "best_window": None if band is None else {"from_hour": band[0], "to_hour": band[1], "timezone": tz_name},
        "opted_out_channels": [channel for channel in CHANNELS if contact.opted_out(channel)],
        "calls": {
            "in_window": sum(1 for entry in contact.calls if now - window_s < entry[0] <= now),
            "max_calls": rules.max_calls,
            "window_days": rules.call_window_days,
            "last_call_at": utc_iso(contact.calls[-1][0]) if contact.calls else None,
            "recorded_attempts": attempts,
            "answered": answered,
        },
        "last_conversation_at": utc_iso(contact.conversations[-1]) if contact.conversations else None,
        "quiet_until": utc_iso(quiet),
        "held_steps": len(contact.held),
        "decisions": contact.decisions,
        "rule_version": rules.version,
    }
