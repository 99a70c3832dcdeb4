"""Answer rates: counters per local cell, the portfolio prior and its strength, the best band."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from debtor_segments.streams.answer_rates import BAND_HOURS, AnswerCounts, PortfolioRates, best_band, cell_of
from debtor_segments.streams.local_time import HourMask

CELLS = 16
DAY_HOURS = HourMask.between(8, 21)


def _call(portfolio: PortfolioRates, debtor: AnswerCounts, cell: int, *, answered: bool) -> None:
    """One call as the guard learns it: an attempt, and an answer if it was answered."""
    portfolio.learn_one(debtor, cell, answered=False)
    if answered:
        portfolio.learn_one(debtor, cell, answered=True)


def _portfolio(rates: list[float], calls: int, seed: int = 1) -> PortfolioRates:
    """Debtors with the given true answer rates, ``calls`` calls each, spread over weekday cells."""
    rng = random.Random(seed)
    portfolio = PortfolioRates()
    for rate in rates:
        debtor = AnswerCounts.new()
        answered = round(rate * calls)  # exactly the rate: no sampling noise between runs
        for n in range(calls):
            _call(portfolio, debtor, rng.randrange(2, 7), answered=n < answered)
    return portfolio


def test_cells() -> None:
    assert [cell_of(0, hour) for hour in range(0, 24, 3)] == list(range(8))
    assert cell_of(4, 23) == 7 and cell_of(5, 0) == 8 and cell_of(6, 23) == 15
    assert {cell_of(day, hour) for day in range(7) for hour in range(24)} == set(range(CELLS))
    assert 24 // BAND_HOURS == 8


def test_counts_round_trip_and_overall() -> None:
    debtor = AnswerCounts.new()
    assert debtor.calls == 0 and debtor.overall() == (0, 0)
    portfolio = PortfolioRates()
    _call(portfolio, debtor, 3, answered=True)
    _call(portfolio, debtor, 3, answered=False)
    portfolio.learn_one(debtor, 5, answered=True)  # an answer without a recorded attempt
    assert debtor.calls == 2
    assert debtor.overall() == (1, 2)  # answers are capped at attempts per cell
    assert AnswerCounts.from_list(debtor.to_list()) == debtor
    assert AnswerCounts.from_list(None) == AnswerCounts.new() == AnswerCounts.from_list([])


def test_the_portfolio_mean_is_smoothed() -> None:
    portfolio = PortfolioRates()
    assert portfolio.mean(0) == 0.5
    debtor = AnswerCounts.new()
    for _ in range(8):
        _call(portfolio, debtor, 0, answered=True)
    assert portfolio.mean(0) == pytest.approx(9 / 10)
    assert 0.0 < portfolio.mean(0) < 1.0


def test_strength_defaults_until_enough_debtors() -> None:
    assert PortfolioRates().strength() == 10.0
    few = _portfolio([0.1, 0.9] * 14, calls=20)  # 28 debtors: still the default
    assert few.strength() == 10.0
    light = _portfolio([0.1, 0.9] * 40, calls=4)  # fewer than 5 calls each: they do not count
    assert light.strength() == 10.0


def test_strength_falls_as_debtors_get_more_heterogeneous() -> None:
    strengths = []
    for spread in (0.0, 0.05, 0.1, 0.2, 0.3, 0.4):
        rates = [0.5 - spread, 0.5 + spread] * 30
        strengths.append(_portfolio(rates, calls=40).strength())
    assert strengths[0] == 200.0  # no variation beyond binomial noise: the upper bound
    assert all(a >= b for a, b in zip(strengths, strengths[1:], strict=False)), strengths
    assert strengths[0] > strengths[2] > strengths[-1]
    assert strengths[-1] == pytest.approx(2.0, abs=1.5)  # rates of 0.1 and 0.9: a weak prior
    assert all(2.0 <= s <= 200.0 for s in strengths)


def test_strength_is_the_method_of_moments() -> None:
    calls = 50
    rates = [0.2] * 20 + [0.6] * 20
    portfolio = _portfolio(rates, calls=calls)
    mean = sum(rates) / len(rates)
    variance = sum((p - mean) ** 2 for p in rates) / len(rates)
    noise = sum(p * (1 - p) / calls for p in rates) / len(rates)
    assert portfolio.strength() == pytest.approx(mean * (1 - mean) / (variance - noise) - 1.0)


def test_posterior_shrinks_a_debtors_rate_to_the_portfolios() -> None:
    portfolio = _portfolio([0.5] * 40, calls=20)
    mean = portfolio.mean(4)
    assert portfolio.posterior(AnswerCounts.new(), 4) == pytest.approx(mean)  # no calls: the prior
    debtor = AnswerCounts.new()
    for n in range(10):
        _call(portfolio, debtor, 4, answered=n < 9)
    kappa = portfolio.strength()
    expected = (9 + kappa * portfolio.mean(4)) / (10 + kappa)
    assert portfolio.posterior(debtor, 4) == pytest.approx(expected)
    # the more calls, the closer to the debtor's own rate
    own = []
    for strength in (200.0, 50.0, 10.0, 2.0):
        own.append(portfolio.posterior(debtor, 4, strength))
    assert own == sorted(own) and own[-1] > 0.8 > own[0]
    # an untouched cell keeps the portfolio's rate, whatever the debtor did elsewhere
    assert portfolio.posterior(debtor, 12) == pytest.approx(portfolio.mean(12))


def test_best_band_is_the_truly_best_band_for_a_debtor_with_many_calls() -> None:
    portfolio = _portfolio([0.3, 0.5] * 20, calls=30)
    true_rates = {2: 0.2, 3: 0.35, 4: 0.3, 5: 0.25, 6: 0.7}  # weekday bands 06-09 .. 18-21
    debtor = AnswerCounts.new()
    for n in range(120):
        for band, rate in true_rates.items():
            _call(portfolio, debtor, band, answered=n < rate * 120)
    assert best_band(debtor, portfolio, weekend=False, allowed=DAY_HOURS) == (18, 21)
    # with the evening not allowed the next best band is taken, narrowed to the allowed hours
    assert best_band(debtor, portfolio, weekend=False, allowed=HourMask.between(8, 18)) == (9, 12)
    # nobody was called at the weekend: every weekend cell is at the prior, the tie goes to the
    # earliest band with an allowed hour
    assert best_band(debtor, portfolio, weekend=True, allowed=DAY_HOURS) == (8, 9)


def test_best_band_of_a_band_cut_by_the_allowed_hours() -> None:
    portfolio, debtor = PortfolioRates(), AnswerCounts.new()
    for _ in range(30):
        _call(portfolio, debtor, 2, answered=True)  # 06-09 is the best band, 08-09 is allowed
    assert best_band(debtor, portfolio, weekend=False, allowed=DAY_HOURS) == (8, 9)
    cut = DAY_HOURS.without([(9, 10)])
    for _ in range(30):
        _call(portfolio, debtor, 3, answered=True)
        _call(portfolio, debtor, 2, answered=False)
    assert best_band(debtor, portfolio, weekend=False, allowed=cut) == (10, 12)  # 09-12 as far as allowed
    assert best_band(debtor, portfolio, weekend=False, allowed=DAY_HOURS.without([(10, 11)])) == (9, 10)  # the first of equal runs
    assert best_band(debtor, portfolio, weekend=False, allowed=HourMask.between(8, 8)) is None


def test_learning_one_by_one_equals_adding_whole_debtors() -> None:
    rng = random.Random(3)
    one_by_one, whole = PortfolioRates(), PortfolioRates()
    debtors = []
    for _ in range(45):
        debtor = AnswerCounts.new()
        rate = rng.random()
        for _ in range(rng.randrange(0, 25)):
            _call(one_by_one, debtor, rng.randrange(CELLS), answered=rng.random() < rate)
        debtors.append(debtor)
        whole.add(debtor)
    assert whole.attempts == one_by_one.attempts and whole.answers == one_by_one.answers
    assert whole.strength() == pytest.approx(one_by_one.strength())
    for debtor in debtors[:20]:
        whole.add(debtor, -1)
    rest = PortfolioRates()
    for debtor in debtors[20:]:
        rest.add(debtor)
    assert whole.attempts == rest.attempts and whole.answers == rest.answers
    assert whole.strength() == pytest.approx(rest.strength())


counts = st.lists(st.integers(0, 40), min_size=CELLS, max_size=CELLS)


@settings(max_examples=200, deadline=None)
@given(counts, counts, st.lists(st.booleans(), min_size=24, max_size=24), st.booleans())
def test_best_band_stays_inside_the_allowed_hours(attempts: list[int], answers: list[int], hours: list[bool], weekend: bool) -> None:
    debtor = AnswerCounts(attempts, answers)
    portfolio = PortfolioRates()
    portfolio.add(debtor)
    mask = HourMask(tuple(hours))
    band = best_band(debtor, portfolio, weekend=weekend, allowed=mask)
    if not any(hours):
        assert band is None
        return
    assert band is not None
    start, end = band
    assert 0 <= start < end <= 24
    assert all(hours[hour] for hour in range(start, end))  # only allowed hours
    assert start // BAND_HOURS == (end - 1) // BAND_HOURS  # within one band
    # the chosen band has the highest posterior of the bands with an allowed hour (ties: earlier)
    base = 8 if weekend else 0
    candidates = [b for b in range(8) if any(hours[b * BAND_HOURS : (b + 1) * BAND_HOURS])]
    rates = {b: portfolio.posterior(debtor, base + b) for b in candidates}
    chosen = start // BAND_HOURS
    assert rates[chosen] == max(rates.values())
    assert all(rates[b] < rates[chosen] for b in candidates if b < chosen)
    # and the first of the longest allowed runs within it
    runs: list[tuple[int, int]] = []
    for hour in range(chosen * BAND_HOURS, (chosen + 1) * BAND_HOURS):
        if hours[hour] and runs and runs[-1][1] == hour:
            runs[-1] = (runs[-1][0], hour + 1)
        elif hours[hour]:
            runs.append((hour, hour + 1))
    longest = max(b - a for a, b in runs)
    assert band == next(run for run in runs if run[1] - run[0] == longest)
