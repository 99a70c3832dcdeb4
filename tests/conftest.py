"""Shared fixtures: small deterministic portfolios."""

from __future__ import annotations

import pytest

from debtor_segments.streams.simulation import Portfolio, simulate


@pytest.fixture(scope="session")
def small_portfolio() -> Portfolio:
    """200 debtors over 6 months, with late, duplicate and bad lines injected."""
    return simulate(debtors=200, months=6, seed=11)
