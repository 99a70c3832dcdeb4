"""The simulator's knobs move a portfolio in the intended direction; the defaults do not move it."""

from __future__ import annotations

import hashlib
from collections import Counter
from datetime import datetime

import orjson
import pytest

from debtor_segments.streams.simulation import MIXES, PERSONAS, Portfolio, mix_shares, simulate

_DAY = 86_400.0


def _events(portfolio: Portfolio) -> list[dict]:
    """Decoded events, each once (re-sent and broken lines dropped)."""
    seen, events = set(), []
    for line in portfolio.lines:
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(event, dict) and "debtor_id" in event and event.get("event_id") not in seen:
            seen.add(event["event_id"])
            events.append(event)
    return events


def _ts(event: dict) -> float:
    return datetime.fromisoformat(event["occurred_at"]).timestamp()


def _count(portfolio: Portfolio, event_type: str, **fields: str) -> int:
    return sum(e["type"] == event_type and all(e.get(k) == v for k, v in fields.items()) for e in _events(portfolio))


def test_defaults_reproduce_todays_portfolio() -> None:
    # A fingerprint of the default output, taken before the knobs existed: tests and figures
    # elsewhere depend on these exact lines.
    portfolio = simulate(debtors=60, months=6, seed=11)
    digest = hashlib.sha256(b"\n".join(portfolio.lines)).hexdigest()[:16]
    assert (len(portfolio.lines), digest) == (2353, "fd726408073cc05f")
    assert portfolio.injected == {"late": 70, "duplicates": 18, "bad": 7}


def test_explicit_defaults_equal_implicit_ones() -> None:
    implicit = simulate(debtors=40, months=6, seed=5)
    explicit = simulate(
        debtors=40,
        months=6,
        seed=5,
        mix="retailer",
        contact=1.0,
        rating_share=None,
        principal_eur=None,
        installments=(3, 12),
        files_scale=1.0,
        inflow_months=0.0,
        jitter_hours=0.0,
        late_days=3.0,
    )
    assert explicit.lines == implicit.lines
    assert {d: (t.persona, t.quadrant, t.change) for d, t in explicit.truth.items()} == {d: (t.persona, t.quadrant, t.change) for d, t in implicit.truth.items()}


@pytest.mark.parametrize(("contact", "low", "high"), [(2.0, 1.7, 2.2), (0.5, 0.42, 0.58)])
def test_contact_intensity_scales_outbound_contacts(contact: float, low: float, high: float) -> None:
    base = _count(simulate(debtors=200, months=6, seed=21), "contact_attempted")
    moved = _count(simulate(debtors=200, months=6, seed=21, contact=contact), "contact_attempted")
    # Not exactly c times: more contact means more nudged payments, so claims close sooner.
    assert low <= moved / base <= high


@pytest.mark.parametrize("share", [0.25, 1.0])
def test_rating_share_is_the_share_of_answered_calls_rated(share: float) -> None:
    portfolio = simulate(debtors=300, months=6, seed=22, rating_share=share)
    answered = _count(portfolio, "contact_responded", channel="call") + _count(portfolio, "contact_initiated", channel="call")
    rated = _count(portfolio, "call_rated")
    assert rated / answered == pytest.approx(share, abs=0.05)


@pytest.mark.parametrize("eur", [300.0, 3000.0])
def test_average_principal(eur: float) -> None:
    principals = [e["principal_cents"] for e in _events(simulate(debtors=300, months=3, seed=23, principal_eur=eur)) if e["type"] == "claim_opened"]
    assert sum(principals) / len(principals) / 100 == pytest.approx(eur, rel=0.1)


def test_arrangement_lengths() -> None:
    lengths = [e["installments"] for e in _events(simulate(debtors=150, months=6, seed=24, installments=(12, 24))) if e["type"] == "arrangement_agreed"]
    assert lengths and min(lengths) >= 12 and max(lengths) <= 24
    assert max(lengths) > 20


def test_claims_per_debtor_scale() -> None:
    base = _count(simulate(debtors=300, months=6, seed=25), "claim_opened")
    fewer = _count(simulate(debtors=300, months=6, seed=25, files_scale=0.5), "claim_opened")
    assert 0.4 <= fewer / base <= 0.65


@pytest.mark.parametrize("mix", sorted(MIXES))
def test_persona_shares_match_the_mix(mix: str) -> None:
    portfolio = simulate(debtors=3000, months=1, seed=26, mix=mix)
    counts = Counter(t.persona for t in portfolio.truth.values())
    for persona, share in mix_shares(mix).items():
        assert counts[persona] / 3000 == pytest.approx(share, abs=0.03), persona


def test_custom_mix_and_its_validation() -> None:
    portfolio = simulate(debtors=200, months=1, seed=27, mix={"job": 1.0, "saida": 1.0})
    assert {t.persona for t in portfolio.truth.values()} == {"job", "saida"}
    with pytest.raises(ValueError, match="unknown mix"):
        simulate(debtors=5, months=1, mix="bank")
    with pytest.raises(ValueError, match="non-negative weights"):
        simulate(debtors=5, months=1, mix={"tamara": 1.0, "bob": 1.0})


def _out_of_order_share(portfolio: Portfolio, days: float) -> float:
    """Share of lines stamped more than ``days`` before the debtor's latest stamp delivered so far."""
    latest: dict[str, float] = {}
    behind = total = 0
    for line in portfolio.lines:
        try:
            event = orjson.loads(line)
            debtor, ts = event["debtor_id"], _ts(event)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            continue
        total += 1
        behind += ts < latest.get(debtor, ts) - days * _DAY
        latest[debtor] = max(ts, latest.get(debtor, ts))
    return behind / total


def test_jitter_and_late_arrival_disorder_the_stamps() -> None:
    base = simulate(debtors=100, months=4, seed=28)
    jittered = simulate(debtors=100, months=4, seed=28, jitter_hours=12.0)
    late = simulate(debtors=100, months=4, seed=28, late_share=0.15, late_days=10.0)
    assert _out_of_order_share(base, 0.5) < _out_of_order_share(jittered, 0.5)
    assert _out_of_order_share(base, 3.1) == 0.0  # the default is at most 3 days late
    assert _out_of_order_share(late, 3.1) > 0.01
    assert jittered.injected["jittered"] > 0 and late.injected["late"] > 3 * base.injected["late"]


def test_inflow_spreads_the_debtors_arrival() -> None:
    def first_seen(portfolio: Portfolio) -> dict[str, float]:
        first: dict[str, float] = {}
        for event in _events(portfolio):
            if event["debtor_id"] not in portfolio.truth:  # a broken line's made-up debtor
                continue
            first[event["debtor_id"]] = min(_ts(event), first.get(event["debtor_id"], float("inf")))
        return first

    base, inflow = simulate(debtors=200, months=12, seed=29), simulate(debtors=200, months=12, seed=29, inflow_months=8.0)
    assert max(first_seen(base).values()) - base.start_ts < 31 * _DAY
    late_comers = [ts for ts in first_seen(inflow).values() if ts - inflow.start_ts > 120 * _DAY]
    assert 0.3 < len(late_comers) / len(inflow.truth) < 0.6
    for debtor in inflow.truth.values():  # a change of situation still comes after the arrival
        if debtor.change != "none":
            assert inflow.start_ts < debtor.change_ts < inflow.end_ts


def test_truth_is_kept_under_every_knob() -> None:
    portfolio = simulate(debtors=400, months=12, seed=30, mix="cluster", contact=0.5, rating_share=0.25, principal_eur=3000.0)
    truth = portfolio.truth
    assert len(truth) == 400 and {t.persona for t in truth.values()} == set(PERSONAS)
    assert {t.quadrant for t in truth.values()} == {"willing_able", "willing_unable", "unwilling_able", "unwilling_unable"}
    worsened = [t for t in truth.values() if t.change == "worsened"]
    assert worsened and all(t.persona in ("tamara", "bryan") and t.initial_persona in ("job", "saida", "hendrik-jan") for t in worsened)
    assert all(portfolio.start_ts < t.change_ts < portfolio.end_ts for t in worsened)


def test_invalid_knobs_are_refused() -> None:
    with pytest.raises(ValueError):
        simulate(debtors=5, months=1, installments=(0, 3))
    with pytest.raises(ValueError):
        simulate(debtors=5, months=1, contact=-1.0)
