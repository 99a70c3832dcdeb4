"""Outcomes of treatments and the decisions of experiments, from the payment events themselves.

An :class:`ExperimentBook` follows every debtor assigned to an experiment arm: its placed
principal (outstanding at assignment) and what it paid within 30, 60 and 90 days. Once a
debtor passes a horizon its figures enter the sums of its experiment x segment (persona at
assignment, and ``all``) x arm: debtors, placed principal, collected share (ratio of sums,
95% interval by the delta method) and payer rate (Wilson interval), and contacts by channel.

Decisions use the mixture sequential probability ratio test (mSPRT; Robbins 1970, Johari,
Pekelis and Walsh, "Always Valid Inference: Continuous Monitoring of A/B Tests", 2017/2022)
on the difference of the metric at the experiment's horizon, with a normal mixture of scale
``tau`` over the difference: its p-value stays valid however often it is checked, so the
book checks every day (event time), but decides only after ``min_debtors`` per arm and
``min_days``. With more than two arms each challenger is tested against the first arm
(the champion) at ``alpha / (arms - 1)``. Undecided at ``max_days``: no difference.

Adaptive experiments are split by Thompson sampling: each day the probability that each arm
is best (Beta posteriors of the per-debtor collected share at 30 days, or the horizon if
shorter) sets the allocation, with ``exploration`` spread evenly over the arms as a floor.

>>> msprt_lambda(0.0, 0.01, 0.1) < 1 < msprt_lambda(0.05, 0.0001, 0.1)
True
>>> lo, hi = wilson(30, 100)
>>> round(lo, 3), round(hi, 3)
(0.219, 0.396)
"""

from __future__ import annotations

import heapq
import math
import random
import time
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from hashlib import blake2b
from typing import Any

from debtor_segments.schemas import TREATMENTS_TOPIC
from debtor_segments.streams.engine import Output
from debtor_segments.streams.policy import Experiment, Policy
from debtor_segments.streams.treatments import Allocation

__all__ = ["HORIZONS", "ExperimentBook", "Sums", "msprt_lambda", "ratio_interval", "wilson"]

HORIZONS: tuple[int, ...] = (30, 60, 90)
_DAY = 86_400.0
_Z95 = 1.959963984540054
_BANDIT_HORIZON = 30
#: Matured debtors per arm before the test's p-value is updated: the mSPRT uses the sample
#: variance in place of the true one, which is unreliable on a handful of debtors.
BURN_IN = 30


def wilson(successes: int, n: int, z: float = _Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion (good at small n and near 0 or 1)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def msprt_lambda(difference: float, variance: float, tau: float) -> float:
    """Mixture likelihood ratio of an estimated difference with the given sampling variance.

    Under H0 (no difference) it is (approximately) a martingale with mean 1, so by Ville's
    inequality it ever exceeds ``1 / alpha`` with probability at most ``alpha``.
    """
    if variance <= 0:
        return 1.0
    total = variance + tau * tau
    exponent = tau * tau * difference * difference / (2 * variance * total)
    return math.sqrt(variance / total) * math.exp(min(exponent, 700.0))


def msprt_half_width(variance: float, tau: float, alpha: float) -> float:
    """Half-width of the always-valid interval for the difference (the mSPRT inverted)."""
    if variance <= 0:
        return math.inf
    total = variance + tau * tau
    return math.sqrt(variance * total / (tau * tau) * (2 * math.log(1 / alpha) + math.log(total / variance)))


@dataclass(slots=True)
class Sums:
    """Running sums of (placed, collected) per debtor: a ratio estimate with its variance."""

    n: int = 0
    payers: int = 0
    placed: float = 0.0
    collected: float = 0.0
    pp: float = 0.0
    cc: float = 0.0
    pc: float = 0.0
    share: float = 0.0  # sum of per-debtor collected shares (Thompson sampling)

    def add(self, placed: float, collected: float) -> None:
        self.n += 1
        self.payers += collected > 0
        self.placed += placed
        self.collected += collected
        self.pp += placed * placed
        self.cc += collected * collected
        self.pc += placed * collected
        self.share += collected / placed if placed else 0.0

    def ratio(self) -> float:
        return self.collected / self.placed if self.placed else 0.0

    def ratio_variance(self) -> float:
        """Delta-method variance of collected / placed: var(c - R p) / (n mean(p)^2)."""
        if self.n < 2 or not self.placed:
            return math.inf
        r = self.ratio()
        residual = (self.cc - 2 * r * self.pc + r * r * self.pp) / (self.n - 1)
        mean_p = self.placed / self.n
        return max(residual, 0.0) / (self.n * mean_p * mean_p)

    def payer_rate(self) -> float:
        return self.payers / self.n if self.n else 0.0

    def payer_variance(self) -> float:
        if self.n < 2:
            return math.inf
        p = self.payer_rate()
        return max(p * (1 - p), 0.25 / self.n) / self.n


def ratio_interval(sums: Sums) -> tuple[float, float]:
    """95% interval of the collected share (delta method)."""
    variance = sums.ratio_variance()
    if math.isinf(variance):
        return 0.0, 1.0
    half = _Z95 * math.sqrt(variance)
    return max(0.0, sums.ratio() - half), min(1.0, sums.ratio() + half)


@dataclass(slots=True)
class _Debtor:
    experiment_id: str
    arm: str
    segment: str
    assigned_ts: float
    placed: int
    collected: list[int]


@dataclass(slots=True)
class _Status:
    started_ts: float
    last_check_day: int = -1
    p_values: dict[str, float] = field(default_factory=dict)
    concluded: dict[str, Any] | None = None


class ExperimentBook:
    """Outcomes, statistics and decisions of the policy's experiments (see the module doc).

    Feed it :meth:`assigned` (each ``treatment_assigned`` with the debtor's outstanding
    principal), :meth:`paid`, :meth:`contacted` (each ``contact_due``), :meth:`forget` (erasure)
    and :meth:`tick` with the stream's clock; read :attr:`allocations` and :meth:`report`.
    """

    def __init__(self, policy: Policy, *, seed: int = 0) -> None:
        self.policy = policy
        self.seed = seed
        self.debtors: dict[str, _Debtor] = {}
        self.status: dict[str, _Status] = {}
        self.allocations: dict[str, Allocation] = {}
        self.sums: dict[tuple[str, str, str, int], Sums] = defaultdict(Sums)
        self.contacts: Counter[tuple[str, str, str]] = Counter()
        self._maturing: list[tuple[float, str, int, str]] = []
        self.clock = 0.0

    # --- inputs ----------------------------------------------------------------------------
    def assigned(self, value: Mapping[str, Any], at_ts: float, placed_cents: int) -> None:
        """A ``treatment_assigned``: start following the debtor if it is in an experiment arm."""
        debtor_id = value["debtor_id"]
        if value.get("reason") == "plan_finished":
            return  # the same plan again, not a new unit of the experiment: the first follow-up goes on
        self.debtors.pop(debtor_id, None)  # a new assignment ends the old one's follow-up
        experiment_id = value.get("experiment_id")
        if not experiment_id or value.get("reason") == "winner_promoted" or experiment_id not in self.policy.experiments:
            return
        status = self.status.get(experiment_id)
        if status is None:
            status = self.status[experiment_id] = _Status(at_ts)
        if status.concluded is not None:
            return  # after the decision, assignments are no longer part of the experiment
        self.debtors[debtor_id] = _Debtor(experiment_id, value["arm"], value.get("persona", "unknown"), at_ts, max(0, placed_cents), [0, 0, 0])
        for h in HORIZONS:
            heapq.heappush(self._maturing, (at_ts + h * _DAY, debtor_id, h, value["event_id"]))

    def paid(self, debtor_id: str, at_ts: float, amount_cents: int) -> None:
        """A payment: counts for each horizon it falls within."""
        debtor = self.debtors.get(debtor_id)
        if debtor is None or at_ts < debtor.assigned_ts:
            return
        days = (at_ts - debtor.assigned_ts) / _DAY
        for i, h in enumerate(HORIZONS):
            if days <= h:
                debtor.collected[i] += amount_cents

    def contacted(self, value: Mapping[str, Any]) -> None:
        """A ``contact_due`` of an experiment arm: its cost, by channel."""
        if value.get("experiment_id") and value["debtor_id"] in self.debtors:
            self.contacts[value["experiment_id"], value["arm"], value["channel"]] += 1

    def forget(self, debtor_id: str) -> None:
        """Erasure: the debtor's figures not yet in the sums are dropped."""
        self.debtors.pop(debtor_id, None)

    # --- the clock -------------------------------------------------------------------------
    def tick(self, now_ts: float, *, emitted_at: str = "") -> list[Output]:
        """Mature debtors the clock passed; once per day of event time, test and conclude."""
        self.clock = max(self.clock, now_ts)
        heap = self._maturing
        while heap and heap[0][0] <= now_ts:
            _, debtor_id, h, assignment_id = heapq.heappop(heap)
            debtor = self.debtors.get(debtor_id)
            if debtor is None or not debtor.placed:
                continue
            collected = min(debtor.collected[HORIZONS.index(h)], debtor.placed)
            for segment in ("all", debtor.segment):
                self.sums[debtor.experiment_id, segment, debtor.arm, h].add(debtor.placed, collected)
            if h == HORIZONS[-1]:
                del self.debtors[debtor_id]
        outputs: list[Output] = []
        for experiment_id, status in self.status.items():
            day = int((now_ts - status.started_ts) // _DAY)
            if status.concluded is None and day > status.last_check_day:
                status.last_check_day = day
                output = self._check(self.policy.experiments[experiment_id], status, day, now_ts, emitted_at)
                if output is not None:
                    outputs.append(output)
        return outputs

    def _arm_sums(self, experiment: Experiment, h: int, segment: str = "all") -> dict[str, Sums]:
        return {arm.plan_id: self.sums.get((experiment.experiment_id, segment, arm.plan_id, h), Sums()) for arm in experiment.arms}

    def _estimate(self, experiment: Experiment, sums: Sums) -> tuple[float, float]:
        if experiment.metric == "payer_rate":
            return sums.payer_rate(), sums.payer_variance()
        return sums.ratio(), sums.ratio_variance()

    def _check(self, experiment: Experiment, status: _Status, day: int, now_ts: float, emitted_at: str) -> Output | None:
        if experiment.mode == "adaptive":
            self._thompson(experiment, day)
        arms = self._arm_sums(experiment, experiment.horizon_days)
        champion = experiment.arms[0].plan_id
        alpha = experiment.alpha / (len(experiment.arms) - 1)
        base, base_var = self._estimate(experiment, arms[champion])
        better: list[tuple[float, str]] = []
        worse: list[tuple[float, str]] = []
        burnt_in = all(s.n >= BURN_IN for s in arms.values())
        for arm in experiment.arms[1:] if burnt_in else ():
            value, var = self._estimate(experiment, arms[arm.plan_id])
            diff, variance = value - base, var + base_var
            lam = msprt_lambda(diff, variance, experiment.tau) if math.isfinite(variance) else 1.0
            p = min(status.p_values.get(arm.plan_id, 1.0), 1.0 / lam if lam > 0 else 1.0)
            status.p_values[arm.plan_id] = p
            if p <= alpha:
                (better if diff > 0 else worse).append((value, arm.plan_id))
        ready = day >= experiment.min_days and all(s.n >= experiment.min_debtors for s in arms.values())
        if not ready and day < experiment.max_days:
            return None
        if better:
            winner = max(better)[1]
        elif len(worse) == len(experiment.arms) - 1:
            winner = champion
        elif day >= experiment.max_days:
            winner = ""
        else:
            return None
        return self._conclude(experiment, status, winner, day, now_ts, emitted_at)

    def _conclude(self, experiment: Experiment, status: _Status, winner: str, day: int, now_ts: float, emitted_at: str) -> Output:
        if winner and experiment.promote_winner:
            self.allocations[experiment.experiment_id] = Allocation(winner=winner)
        digest = blake2b(f"experiment_concluded\x00{experiment.experiment_id}\x00{self.policy.version}".encode(), digest_size=12)
        occurred_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now_ts))
        value = {
            "event_id": f"experiment_concluded-{digest.hexdigest()}",
            "type": "experiment_concluded",
            "experiment_id": experiment.experiment_id,
            "segment": experiment.segment,
            "occurred_at": occurred_at,
            "emitted_at": emitted_at or occurred_at,
            "policy_version": self.policy.version,
            "decision": "winner" if winner else "no_difference",
            "winner": winner or None,
            "promoted": bool(winner and experiment.promote_winner),
            "days": day,
            "metric": experiment.metric,
            "horizon_days": experiment.horizon_days,
            "p_values": {arm: round(p, 6) for arm, p in status.p_values.items()},
            "arms": self._arm_figures(experiment, "all"),
        }
        status.concluded = value
        return Output(TREATMENTS_TOPIC, experiment.experiment_id, value)

    def _thompson(self, experiment: Experiment, day: int) -> None:
        horizon = min(_BANDIT_HORIZON, experiment.horizon_days)
        arms = self._arm_sums(experiment, horizon)
        # Seeded per experiment and day: replay and service compute the same allocation.
        rng = random.Random(f"{self.seed}\x00{experiment.experiment_id}\x00{day}")
        wins: Counter[str] = Counter()
        draws = 500
        for _ in range(draws):
            best = max(
                experiment.arms,
                key=lambda arm: rng.betavariate(1 + arms[arm.plan_id].share, 1 + arms[arm.plan_id].n - arms[arm.plan_id].share),
            )
            wins[best.plan_id] += 1
        k = len(experiment.arms)
        floor = experiment.exploration / k
        self.allocations[experiment.experiment_id] = Allocation({arm.plan_id: floor + (1 - experiment.exploration) * wins[arm.plan_id] / draws for arm in experiment.arms})

    # --- output ----------------------------------------------------------------------------
    def _arm_figures(self, experiment: Experiment, segment: str) -> dict[str, Any]:
        figures: dict[str, Any] = {}
        for arm in experiment.arms:
            row: dict[str, Any] = {}
            for h in HORIZONS:
                sums = self.sums.get((experiment.experiment_id, segment, arm.plan_id, h), Sums())
                lo, hi = ratio_interval(sums)
                plo, phi = wilson(sums.payers, sums.n)
                row[f"d{h}"] = {
                    "debtors": sums.n,
                    "placed_cents": int(sums.placed),
                    "collected_cents": int(sums.collected),
                    "collected_share": round(sums.ratio(), 4),
                    "collected_share_ci95": [round(lo, 4), round(hi, 4)],
                    "payer_rate": round(sums.payer_rate(), 4),
                    "payer_rate_ci95": [round(plo, 4), round(phi, 4)],
                }
            figures[arm.plan_id] = row
        return figures

    def report(self) -> dict[str, Any]:
        """Per experiment, segment and arm: the figures at 30/60/90 days, cost, and the decision."""
        out: dict[str, Any] = {"policy_version": self.policy.version, "experiments": {}}
        for experiment in self.policy.experiments.values():
            status = self.status.get(experiment.experiment_id)
            segments = sorted({key[1] for key in self.sums if key[0] == experiment.experiment_id} | {"all"})
            h = experiment.horizon_days
            arms = self._arm_sums(experiment, h)
            champion = experiment.arms[0].plan_id
            base, base_var = self._estimate(experiment, arms[champion])
            differences = {}
            for arm in experiment.arms[1:]:
                value, var = self._estimate(experiment, arms[arm.plan_id])
                half = msprt_half_width(var + base_var, experiment.tau, experiment.alpha / (len(experiment.arms) - 1))
                differences[arm.plan_id] = {
                    "vs": champion,
                    "difference": round(value - base, 4),
                    "always_valid_ci": [round(value - base - half, 4), round(value - base + half, 4)] if math.isfinite(half) else None,
                    "p_value": round(status.p_values.get(arm.plan_id, 1.0), 6) if status else 1.0,
                }
            out["experiments"][experiment.experiment_id] = {
                "segment": experiment.segment,
                "mode": experiment.mode,
                "metric": experiment.metric,
                "horizon_days": h,
                "weights": experiment.weights,
                "allocation": dict(self.allocations[experiment.experiment_id].probabilities) if experiment.experiment_id in self.allocations else None,
                "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(status.started_ts)) if status else None,
                "days": status.last_check_day if status else 0,
                "in_follow_up": sum(1 for d in self.debtors.values() if d.experiment_id == experiment.experiment_id),
                "segments": {segment: self._arm_figures(experiment, segment) for segment in segments},
                "contacts": {arm.plan_id: {ch: n for (e, a, ch), n in sorted(self.contacts.items()) if e == experiment.experiment_id and a == arm.plan_id} for arm in experiment.arms},
                "differences": differences,
                "decision": status.concluded if status and status.concluded else {"decision": "running"},
            }
        return out
