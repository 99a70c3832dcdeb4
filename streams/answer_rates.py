"""Best time to call: answer rates per local weekday/weekend x 3-hour band, shrunk to the portfolio's.

Each debtor keeps 16 pairs of counters (call attempts and answered calls per cell: weekday or
weekend x eight 3-hour bands of local time), so its state stays the same size however often it
is called. A debtor with few calls says little about its own hours, so each cell's rate is the
mean of a Beta-Bernoulli posterior whose prior is learned from the portfolio
(:class:`PortfolioRates`): the prior mean of a cell is the portfolio's answer rate there, and
its strength (pseudo-calls) is estimated by the method of moments from how much debtors' own
answer rates vary beyond what their number of calls explains. A heterogeneous portfolio gets a
weak prior (debtors' own hours decide sooner), a uniform one a strong prior.

>>> portfolio, debtor = PortfolioRates(), AnswerCounts.new()
>>> for _ in range(6):
...     portfolio.learn_one(debtor, cell_of(2, 10), answered=False)  # Wednesday mornings: no answer
...     portfolio.learn_one(debtor, cell_of(2, 19), answered=False)  # Wednesday evenings: called ...
...     portfolio.learn_one(debtor, cell_of(2, 19), answered=True)   # ... and answered
>>> best_band(debtor, portfolio, weekend=False, allowed=HourMask.between(8, 21))
(18, 21)
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from debtor_segments.streams.local_time import HourMask

__all__ = ["BAND_HOURS", "AnswerCounts", "PortfolioRates", "best_band", "cell_of"]

#: Width of a band in hours; eight bands a day.
BAND_HOURS = 3
_BANDS = 24 // BAND_HOURS
_CELLS = 2 * _BANDS
#: Prior strength (pseudo-calls) until the portfolio has enough debtors to estimate it.
_DEFAULT_STRENGTH = 10.0
#: Debtors with at least this many calls count towards the strength estimate, and at least
#: this many such debtors are needed before it replaces the default.
_MIN_CALLS, _MIN_DEBTORS = 5, 30
_STRENGTH_BOUNDS = (2.0, 200.0)


def cell_of(weekday: int, hour: int) -> int:
    """The cell of a local weekday (0 = Monday) and hour.

    >>> cell_of(0, 9), cell_of(5, 23)
    (3, 15)
    """
    return (_BANDS if weekday >= 5 else 0) + hour // BAND_HOURS


@dataclass(slots=True)
class AnswerCounts:
    """One debtor's call attempts and answers per cell."""

    attempts: list[int]
    answers: list[int]

    @classmethod
    def new(cls) -> AnswerCounts:
        return cls([0] * _CELLS, [0] * _CELLS)

    @property
    def calls(self) -> int:
        """Call attempts recorded, all cells."""
        return sum(self.attempts)

    def overall(self) -> tuple[int, int]:
        """(answered, attempts) over all cells, answers capped at attempts per cell."""
        return sum(min(a, n) for a, n in zip(self.answers, self.attempts, strict=True)), sum(self.attempts)

    def to_list(self) -> list[list[int]]:
        return [self.attempts, self.answers]

    @classmethod
    def from_list(cls, data: Any) -> AnswerCounts:
        """Inverse of :meth:`to_list` (``None``: no calls yet)."""
        if not data:
            return cls.new()
        return cls(list(data[0]), list(data[1]))


class PortfolioRates:
    """The portfolio's answer rate per cell and the prior strength, learned incrementally.

    Every debtor's counters change through :meth:`learn_one`, so the portfolio's sums (and the
    moments of debtors' overall rates) stay exact without scanning the debtors.
    """

    def __init__(self) -> None:
        self.attempts = [0] * _CELLS
        self.answers = [0] * _CELLS
        # Moments of debtors' overall answer rates (debtors with >= _MIN_CALLS calls):
        # count, sum of p, sum of p^2, sum of the binomial noise p(1-p)/n.
        self._k = 0
        self._p = self._p2 = self._noise = 0.0

    def learn_one(self, debtor: AnswerCounts, cell: int, *, answered: bool) -> None:
        """Count one call attempt (``answered`` False) or one answer in ``debtor``'s ``cell``."""
        self._moment(debtor, -1)
        if answered:
            debtor.answers[cell] += 1
            self.answers[cell] += 1
        else:
            debtor.attempts[cell] += 1
            self.attempts[cell] += 1
        self._moment(debtor, +1)

    def add(self, debtor: AnswerCounts, sign: int = 1) -> None:
        """Add (or, with ``sign`` -1, remove) a whole debtor: restored from a table, erased, or
        handed to another worker."""
        for cell in range(_CELLS):
            self.attempts[cell] += sign * debtor.attempts[cell]
            self.answers[cell] += sign * debtor.answers[cell]
        self._moment(debtor, sign)

    def _moment(self, debtor: AnswerCounts, sign: int) -> None:
        answered, calls = debtor.overall()
        if calls < _MIN_CALLS:
            return
        p = answered / calls
        self._k += sign
        self._p += sign * p
        self._p2 += sign * p * p
        self._noise += sign * p * (1.0 - p) / calls

    def mean(self, cell: int) -> float:
        """The portfolio's answer rate in ``cell`` (Laplace-smoothed, so never 0 or 1)."""
        return (min(self.answers[cell], self.attempts[cell]) + 1.0) / (self.attempts[cell] + 2.0)

    def strength(self) -> float:
        """Prior pseudo-calls: m(1-m)/var - 1 for the between-debtor variance of answer rates.

        >>> PortfolioRates().strength()
        10.0
        """
        if self._k < _MIN_DEBTORS:
            return _DEFAULT_STRENGTH
        mean = self._p / self._k
        between = self._p2 / self._k - mean * mean - self._noise / self._k
        low, high = _STRENGTH_BOUNDS
        if between <= 0.0:
            return high  # no variation beyond noise: the portfolio's rates are the best guess
        return min(high, max(low, mean * (1.0 - mean) / between - 1.0))

    def posterior(self, debtor: AnswerCounts, cell: int, strength: float | None = None) -> float:
        """Posterior mean answer rate of ``debtor`` in ``cell``."""
        kappa = self.strength() if strength is None else strength
        answered = min(debtor.answers[cell], debtor.attempts[cell])
        return (answered + kappa * self.mean(cell)) / (debtor.attempts[cell] + kappa)


def best_band(debtor: AnswerCounts, portfolio: PortfolioRates, *, weekend: bool, allowed: HourMask) -> tuple[int, int] | None:
    """The local hours ``(from_hour, to_hour)`` to call in: the band with the highest posterior
    answer rate among those with allowed hours, narrowed to its longest allowed run.

    ``None`` if no hour is allowed. Ties go to the earlier band.

    >>> best_band(AnswerCounts.new(), PortfolioRates(), weekend=False, allowed=HourMask.between(8, 21))
    (8, 9)
    """
    kappa = portfolio.strength()
    base = _BANDS if weekend else 0
    best: tuple[float, tuple[int, int]] | None = None
    for band, run in _band_runs(allowed):
        rate = portfolio.posterior(debtor, base + band, kappa)
        if best is None or rate > best[0]:
            best = (rate, run)
    return None if best is None else best[1]


@lru_cache(maxsize=256)
def _band_runs(allowed: HourMask) -> tuple[tuple[int, tuple[int, int]], ...]:
    """(band, its longest allowed run) of each band with an allowed hour; few masks recur
    (the rules' hours minus a debtor's inconvenient ones), so they are computed once each."""
    runs = []
    for band in range(_BANDS):
        hours = HourMask(tuple(allowed.allowed[h] and band * BAND_HOURS <= h < (band + 1) * BAND_HOURS for h in range(24)))
        windows = hours.windows()
        if windows:
            runs.append((band, max(windows, key=lambda run: run[1] - run[0])))
    return tuple(runs)
