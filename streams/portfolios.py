"""A family of simulated portfolios the engine was not tuned on, each with a fixed seed.

The engine's defaults were tuned on one portfolio (``own``: the retailer's persona mix).
Real collection portfolios differ in their persona mix, how often the agency reaches out, how
many answered calls get a star rating, amounts, arrangement lengths, claims per debtor and the
quality of delivery; each variant here moves one or a few of those (see
:func:`streams.simulation.simulate` for the knobs). A quality target holds when it holds on the
worst variant, not on average. Sizes follow the issue's hidden checks: 3,000 or 2,000 debtors
over 12 months.

>>> len(VARIANTS) >= 8, VARIANTS["own"].knobs
(True, {})
>>> VARIANTS["stars-quarter"].knobs
{'mix': 'cluster', 'rating_share': 0.25}
>>> small = build("contact-half", scale=0.01)
>>> len(small.truth), small.lines == build("contact-half", scale=0.01).lines
(20, True)
>>> VARIANTS["own"].debtors_at(0.1)
300
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from debtor_segments.streams.ledger import simulate_ledger
from debtor_segments.streams.simulation import Portfolio, simulate

__all__ = ["HIDDEN_LIKE", "VARIANTS", "Variant", "build", "select"]

#: Fewest debtors a scaled-down variant keeps, so that every persona still shows up.
_MIN_DEBTORS = 20


@dataclass(frozen=True, slots=True)
class Variant:
    """One portfolio of the family: its size, seed and the simulator's knobs it moves."""

    name: str
    description: str
    debtors: int
    seed: int
    months: int = 12
    knobs: dict[str, Any] = field(default_factory=dict)
    generator: str = "simulation"  # which generative story: "simulation" or "ledger"

    def debtors_at(self, scale: float) -> int:
        """Debtors when scaled down (or up) for a quick run."""
        return max(_MIN_DEBTORS, round(self.debtors * scale))

    def build(self, scale: float = 1.0) -> Portfolio:
        """Simulate this variant (deterministic: same scale, same lines)."""
        debtors = self.debtors_at(scale)
        if self.generator == "ledger":
            return simulate_ledger(debtors, self.months, self.seed, **self.knobs)
        return simulate(debtors, self.months, self.seed, **self.knobs)


_VARIANTS = (
    Variant("own", "today's simulator defaults (retailer mix), the portfolio the engine was tuned on", 3000, 7),
    Variant("cluster", "the published K-means cluster shares as the persona mix", 3000, 1201, knobs={"mix": "cluster"}),
    Variant("insurer", "an insurer's monthly inflow mix (many Saidas and Hendrik-Jans), EUR 300 a claim", 2000, 1202, knobs={"mix": "insurer", "principal_eur": 300.0}),
    Variant("stars-quarter", "star ratings on a quarter of answered calls, cluster mix", 3000, 1203, knobs={"mix": "cluster", "rating_share": 0.25}),
    Variant("stars-all", "star ratings on every answered call, insurer mix", 2000, 1204, knobs={"mix": "insurer", "rating_share": 1.0}),
    Variant("contact-half", "half the outbound contact, insurer mix", 2000, 1205, knobs={"mix": "insurer", "contact": 0.5}),
    Variant("contact-double", "twice the outbound contact, retailer mix", 3000, 1206, knobs={"contact": 2.0}),
    Variant("principal-3000", "EUR 3,000 average principal a claim (ten times the default), cluster mix", 3000, 1207, knobs={"mix": "cluster", "principal_eur": 3000.0}),
    Variant("arrangements-long", "arrangements of 12 to 24 installments instead of 3 to 12, retailer mix", 3000, 1208, knobs={"installments": (12, 24)}),
    Variant("claims-fewer", "half the claims per debtor, cluster mix", 3000, 1209, knobs={"mix": "cluster", "files_scale": 0.5}),
    Variant("claims-more", "1.5 times the claims per debtor, insurer mix", 2000, 1210, knobs={"mix": "insurer", "files_scale": 1.5}),
    Variant(
        "late-jitter", "occurred_at off by 12 h (sd), 15% of events up to 10 days late, cluster mix", 3000, 1211, knobs={"mix": "cluster", "jitter_hours": 12.0, "late_share": 0.15, "late_days": 10.0}
    ),
    Variant("inflow-few-hj", "debtors arrive over the first 8 months, almost no Hendrik-Jans (1%)", 2000, 1212, knobs={"mix": "few_hendrik_jans", "inflow_months": 8.0}),
    Variant("hidden-like", "cluster mix, stars on a quarter of answered calls and half the outbound contact at once", 3000, 1213, knobs={"mix": "cluster", "rating_share": 0.25, "contact": 0.5}),
    # The second story (streams/ledger.py): monthly ledgers per claim and a dunning schedule.
    Variant("ledger", "second story: monthly ledger per claim, dunning schedule, cluster mix, EUR 300 a claim", 3000, 1301, generator="ledger"),
    Variant(
        "ledger-insurer",
        "second story, insurer mix, stars on a quarter of answered calls, half the dunning",
        2000,
        1302,
        knobs={"mix": "insurer", "rating_share": 0.25, "contact": 0.5},
        generator="ledger",
    ),
    Variant(
        "ledger-retailer",
        "second story, retailer mix, EUR 160 a claim, debtors arriving over 6 months",
        3000,
        1303,
        knobs={"mix": "retailer", "principal_eur": 160.0, "inflow_months": 6.0},
        generator="ledger",
    ),
)

#: Every variant by name, in report order (read-only).
VARIANTS: Mapping[str, Variant] = MappingProxyType({v.name: v for v in _VARIANTS})

#: The variants closest to the issue's hidden checks (for a quick look): the mixes and knobs
#: it names, in both stories (the ledger's figures on today's engine are the closest to its).
HIDDEN_LIKE: tuple[str, ...] = ("cluster", "insurer", "stars-quarter", "contact-half", "hidden-like", "ledger", "ledger-insurer")


def select(names: Iterable[str] | None = None) -> list[Variant]:
    """The variants named (all when ``None``), in the order given; unknown names raise.

    >>> [v.name for v in select(["insurer", "own"])]
    ['insurer', 'own']
    """
    if names is None:
        return list(VARIANTS.values())
    chosen = []
    for name in names:
        if name not in VARIANTS:
            raise KeyError(f"unknown portfolio variant {name!r}; known: {', '.join(VARIANTS)}")
        chosen.append(VARIANTS[name])
    return chosen


def build(name: str, scale: float = 1.0) -> Portfolio:
    """Simulate the named variant, with its debtors scaled by ``scale`` (at least 20)."""
    return select([name])[0].build(scale)
