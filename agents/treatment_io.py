"""Shell side of the treatments: loading the policy for a command, and the demo's reaction.

The core (``streams.policy``, ``streams.treatments``, ``streams.experiments``) is pure; this
module turns a bad policy into one readable CLI error, and lets ``demo`` show what the
treatments would have collected (the simulator's debtors react through
:mod:`streams.reaction`, since the event simulator does not read contact_due).
"""

from __future__ import annotations

import heapq
import random
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import click

from debtor_segments.streams.engine import Output, Step
from debtor_segments.streams.events import Event
from debtor_segments.streams.policy import Policy, PolicyError, load_policy
from debtor_segments.streams.reaction import draw_outcome, plan_fit
from debtor_segments.streams.report import format_table
from debtor_segments.streams.treatment_runner import DEFAULT_TIMEZONE, TreatmentRunner

__all__ = ["ReactingRunner", "experiment_tables", "load_policy_for_cli"]

_DAY = 86_400.0


def load_policy_for_cli(path: Path | None) -> Policy | None:
    """The policy at ``path`` (None: no treatments), or a CLI error listing every problem."""
    if path is None:
        return None
    try:
        policy = load_policy(path)
    except PolicyError as error:
        raise click.ClickException(f"policy {path} refused: {error}") from None
    click.echo(f"policy {policy.version} in force ({path}: {len(policy.plans)} plans, {len(policy.experiments)} experiments)", err=True)
    return policy


class ReactingRunner(TreatmentRunner):
    """A runner whose debtors pay as :mod:`streams.reaction` says, given their true persona.

    Every assignment draws the debtor's outcome under its plan (principal = what the engine
    says is outstanding); the payment reaches the experiment book when the stream's clock
    passes it, so the sequential test decides on the simulated reaction.
    """

    def __init__(self, policy: Policy, truth: dict[str, str], seed: int = 0, *, default_timezone: str = DEFAULT_TIMEZONE) -> None:
        super().__init__(policy, payments_from_events=False, default_timezone=default_timezone)
        self.truth = truth
        self.rng = random.Random(seed)
        self._payments: list[tuple[float, str, int]] = []
        self.outcomes: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0.0])
        #: (verdict, first reason) -> contact guard decisions, for the demo's summary.
        self.decisions: Counter[tuple[str, str]] = Counter()

    def after(self, event: Event, step: Step, engine_state: Any = None, *, emitted_at: str = "", partition: int = 0) -> list[Output]:
        while self._payments and self._payments[0][0] <= event.ts:
            ts, debtor_id, amount = heapq.heappop(self._payments)
            self.book.paid(debtor_id, ts, amount)
        outputs = super().after(event, step, engine_state, emitted_at=emitted_at, partition=partition)
        for output in outputs:
            value = output.value
            if value is not None and value["type"] == "contact_decision":
                self.decisions[value["verdict"], value["reason"]] += 1
            if value is not None and value["type"] == "treatment_assigned":
                placed = getattr(engine_state, "outstanding_cents", 0) if engine_state is not None else 0
                if placed <= 0:
                    continue
                persona = self.truth.get(value["debtor_id"], "unknown")
                outcome = draw_outcome(self.rng, persona, plan_fit(self.policy.plans[value["plan_id"]], persona), placed)
                cell = self.outcomes[persona, value["plan_id"]]
                cell[0] += placed
                if outcome.paid_day <= 60:
                    cell[1] += outcome.paid_cents
                if outcome.paid_cents:
                    heapq.heappush(self._payments, (event.ts + outcome.paid_day * _DAY, value["debtor_id"], outcome.paid_cents))
        return outputs

    def decision_summary(self) -> str:
        """One line per verdict: how many contact guard decisions, by first reason."""
        lines = []
        for verdict in ("allowed", "rescheduled", "skipped"):
            reasons = sorted(((n, reason) for (v, reason), n in self.decisions.items() if v == verdict), reverse=True)
            total = sum(n for n, _ in reasons)
            detail = ", ".join(f"{reason} {n:,}" for n, reason in reasons)
            lines.append(f"  {verdict:<11} {total:>7,}" + (f"  ({detail})" if detail else ""))
        return "\n".join(lines)

    def persona_plan_table(self, personas: tuple[str, ...]) -> str:
        """Collected share at 60 days per persona (rows) and plan (columns), as published."""
        plans = sorted({plan for _, plan in self.outcomes})
        rows = []
        for persona in personas:
            row = [persona]
            for plan in plans:
                placed, collected = self.outcomes.get((persona, plan), (0.0, 0.0))
                row.append(f"{collected / placed:.1%}" if placed else "-")
            rows.append(row)
        totals = ["all"]
        for plan in plans:
            placed = sum(self.outcomes[p, plan][0] for p in personas if (p, plan) in self.outcomes)
            collected = sum(self.outcomes[p, plan][1] for p in personas if (p, plan) in self.outcomes)
            totals.append(f"{collected / placed:.1%}" if placed else "-")
        return format_table(["persona \\ plan", *plans], [*rows, totals])


def experiment_tables(report: dict[str, Any]) -> str:
    """Each experiment's arms at its horizon (all segments) and the decision, as text."""
    parts = []
    for experiment_id, body in report["experiments"].items():
        h = body["horizon_days"]
        rows = []
        for arm, figures in body["segments"]["all"].items():
            f = figures[f"d{h}"]
            lo, hi = f["collected_share_ci95"]
            plo, phi = f["payer_rate_ci95"]
            rows.append([arm, str(f["debtors"]), f"{f['collected_share']:.1%} [{lo:.1%}, {hi:.1%}]", f"{f['payer_rate']:.1%} [{plo:.1%}, {phi:.1%}]"])
        decision = body["decision"]
        verdict = decision["decision"] + (f" ({decision['winner']}, day {decision['days']})" if decision.get("winner") else "")
        p_values = ", ".join(f"{arm} p={d['p_value']:.3g}" for arm, d in body["differences"].items())
        parts.append(
            f"Experiment {experiment_id} ({body['segment']}, {body['mode']}, {h}-day {body['metric']}): {verdict}; {p_values}; "
            f"{body['in_follow_up']} debtors still within their horizon\n" + format_table(["arm", "debtors", f"collected share d{h} [95% CI]", "payer rate [95% CI]"], rows)
        )
    return "\n\n".join(parts)
