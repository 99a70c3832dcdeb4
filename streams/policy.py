"""Treatment policies: plans of contact steps per segment, and experiments between plans.

A policy is a file (YAML or JSON) described by ``schemas/policy.json``. :func:`parse_policy`
checks it against the schema *and* its cross-references (plan and experiment ids, segment
labels) and lists every problem with its path, so an operator fixes a file in one go.

>>> policy = parse_policy({
...     "version": "v1",
...     "plans": {"soft": [{"day": 0, "channel": "email", "tone": "friendly", "message_id": "m1"}],
...               "firm": [{"day": 0, "channel": "letter", "tone": "strict", "message_id": "m2"}]},
...     "segments": {"willing_able": "soft", "unwilling_able": "ab", "unknown": "soft"},
...     "experiments": {"ab": {"segment": "unwilling_able",
...                            "arms": [{"plan": "soft", "weight": 1}, {"plan": "firm", "weight": 1}]}},
... })
>>> policy.segment_of("saida", "unwilling_able"), policy.segment_of("job", "unknown")
('unwilling_able', 'unknown')
>>> policy.experiments["ab"].horizon_days
60
>>> parse_policy({"version": "v2", "plans": {}, "segments": {"job": "nope"}})
Traceback (most recent call last):
...
debtor_segments.streams.policy.PolicyError: 2 problems in the policy:
  plans: should be non-empty
  segments.job: 'nope' is neither a plan nor an experiment
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from debtor_segments.schemas import load_schema

__all__ = [
    "CHANNELS",
    "Arm",
    "ContactRules",
    "Experiment",
    "Plan",
    "PlanStep",
    "Policy",
    "PolicyError",
    "Problem",
    "load_policy",
    "parse_policy",
    "policy_problems",
]

CHANNELS: tuple[str, ...] = ("letter", "email", "sms", "call", "whatsapp", "visit")


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a policy: where (dotted path) and why."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path or '(top)'}: {self.reason}"


class PolicyError(ValueError):
    """A policy that cannot be used; ``problems`` lists all that is wrong with it."""

    def __init__(self, problems: list[Problem]) -> None:
        noun = "problem" if len(problems) == 1 else "problems"
        super().__init__(f"{len(problems)} {noun} in the policy:\n" + "\n".join(f"  {p}" for p in problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class PlanStep:
    """One contact of a plan, ``day`` days after assignment."""

    day: int
    channel: str
    tone: str
    message_id: str


@dataclass(frozen=True, slots=True)
class Plan:
    """An ordered list of steps (sorted by day; the file's order breaks ties)."""

    plan_id: str
    steps: tuple[PlanStep, ...]


@dataclass(frozen=True, slots=True)
class Arm:
    """A plan with its allocation weight."""

    plan_id: str
    weight: float


@dataclass(frozen=True, slots=True)
class Experiment:
    """Champion/challenger (or more arms) within one segment; see ``schemas/policy.json``."""

    experiment_id: str
    segment: str
    arms: tuple[Arm, ...]
    horizon_days: int = 60
    metric: str = "collected_share"
    mode: str = "fixed"
    exploration: float = 0.05
    min_debtors: int = 200
    min_days: int = 30
    max_days: int = 365
    alpha: float = 0.05
    tau: float = 0.1
    promote_winner: bool = False
    salt: str = ""

    @property
    def weights(self) -> dict[str, float]:
        """Arm -> share of the fixed split (weights normalised to sum to 1)."""
        total = sum(arm.weight for arm in self.arms)
        return {arm.plan_id: arm.weight / total for arm in self.arms}


@dataclass(frozen=True, slots=True)
class ContactRules:
    """The contact guard's rules (``contact_rules`` in the policy; defaults: US Regulation F's
    presumptions, 12 CFR 1006.14(b)(2) and 1006.6(b)(1)(i)); see :mod:`streams.contact_guard`."""

    #: Written on every decision, so an audit knows which rules applied.
    version: str = "reg-f-2021"
    max_calls: int = 7
    call_window_days: int = 7
    quiet_days_after_conversation: int = 7
    earliest_hour: int = 8
    latest_hour: int = 21
    adapt_channels: bool = False
    adapt_after: int = 3
    #: A held step that a later step of its plan on the same channel has fallen due after is
    #: skipped (reason ``superseded``): a backlog goes as one contact. Off: all go, each within
    #: the rules.
    supersede_held: bool = False


@dataclass(frozen=True, slots=True)
class Policy:
    """A validated policy. ``segments`` maps a segment label to a plan or experiment id."""

    version: str
    plans: Mapping[str, Plan]
    segments: Mapping[str, str]
    experiments: Mapping[str, Experiment]
    channel_topics: bool = False
    #: Days after a plan's last step after which a debtor still in the segment starts its plan
    #: again (``treatment_assigned`` reason ``plan_finished``); ``None``: a finished plan stays so.
    restart_after_days: int | None = None
    contact_rules: ContactRules = ContactRules()

    def segment_of(self, persona: str, quadrant: str) -> str | None:
        """The most specific label that has an entry: persona/quadrant, persona, quadrant, unknown.

        ``None`` when none matches: the debtor gets no treatment.
        """
        labels: tuple[str, ...] = (f"{persona}/{quadrant}", persona) if persona != "unknown" else ()
        for label in (*labels, quadrant):
            # "unknown" is the fallback, not a persona or quadrant label of its own.
            if label != "unknown" and label in self.segments:
                return label
        return "unknown" if "unknown" in self.segments else None


def policy_problems(document: Any) -> list[Problem]:
    """Every problem of a parsed policy document: schema first, then cross-references."""
    problems = [Problem(".".join(str(part) for part in error.absolute_path), _reason(error)) for error in sorted(_VALIDATOR.iter_errors(document), key=lambda e: [str(p) for p in e.absolute_path])]
    if not isinstance(document, dict):
        return problems
    plans: dict[str, Any] = document["plans"] if isinstance(document.get("plans"), dict) else {}
    experiments: dict[str, Any] = document["experiments"] if isinstance(document.get("experiments"), dict) else {}
    segments: dict[str, Any] = document["segments"] if isinstance(document.get("segments"), dict) else {}
    for label, target in segments.items():
        if not isinstance(target, str):
            continue
        if target in plans and target in experiments:
            problems.append(Problem(f"segments.{label}", f"{target!r} is both a plan and an experiment"))
        elif target in experiments:
            own = experiments[target].get("segment") if isinstance(experiments[target], dict) else None
            if own != label:
                problems.append(Problem(f"segments.{label}", f"experiment {target!r} is for segment {own!r}"))
        elif target not in plans:
            problems.append(Problem(f"segments.{label}", f"{target!r} is neither a plan nor an experiment"))
    for experiment_id, body in experiments.items():
        if not isinstance(body, dict):
            continue
        arms: list[Any] = body["arms"] if isinstance(body.get("arms"), list) else []
        seen: set[str] = set()
        for n, arm in enumerate(arms):
            plan = arm.get("plan") if isinstance(arm, dict) else None
            if isinstance(plan, str) and plan not in plans:
                problems.append(Problem(f"experiments.{experiment_id}.arms.{n}.plan", f"no plan {plan!r}"))
            if isinstance(plan, str) and plan in seen:
                problems.append(Problem(f"experiments.{experiment_id}.arms.{n}.plan", f"plan {plan!r} is in two arms"))
            if isinstance(plan, str):
                seen.add(plan)
        if isinstance(body.get("segment"), str) and segments.get(body["segment"]) != experiment_id:
            problems.append(Problem(f"experiments.{experiment_id}.segment", f"segment {body['segment']!r} does not use this experiment"))
        if isinstance(body.get("min_days"), int) and isinstance(body.get("max_days"), int) and body["max_days"] < body["min_days"]:
            problems.append(Problem(f"experiments.{experiment_id}.max_days", "is below min_days"))
    rules = document.get("contact_rules")
    if isinstance(rules, dict) and isinstance(rules.get("earliest_hour", 8), int) and isinstance(rules.get("latest_hour", 21), int):
        if rules.get("latest_hour", 21) <= rules.get("earliest_hour", 8):
            problems.append(Problem("contact_rules.latest_hour", "must be after earliest_hour"))
    return problems


def parse_policy(document: Any) -> Policy:
    """A :class:`Policy` from a parsed document, or :class:`PolicyError` with every problem."""
    problems = policy_problems(document)
    if problems:
        raise PolicyError(problems)
    plans = {plan_id: Plan(plan_id, tuple(sorted((PlanStep(**step) for step in steps), key=lambda s: s.day))) for plan_id, steps in document["plans"].items()}
    experiments = {}
    for experiment_id, body in document.get("experiments", {}).items():
        fields = {k: v for k, v in body.items() if k not in ("arms", "salt")}
        arms = tuple(Arm(arm["plan"], float(arm["weight"])) for arm in body["arms"])
        experiments[experiment_id] = Experiment(experiment_id, arms=arms, salt=body.get("salt", experiment_id), **fields)
    return Policy(
        str(document["version"]),
        plans,
        dict(document["segments"]),
        experiments,
        bool(document.get("channel_topics", False)),
        document.get("restart_after_days"),
        ContactRules(**document.get("contact_rules", {})),
    )


def load_policy(path: str | Path) -> Policy:
    """Read and parse a policy file (``.yaml``/``.yml`` as YAML, anything else as JSON)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise PolicyError([Problem("(file)", f"cannot read {path}: {error.strerror}")]) from None
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml  # only needed for YAML policies, and only at load time

            document = yaml.safe_load(text)
        else:
            document = json.loads(text)
    except Exception as error:  # noqa: BLE001 - yaml.YAMLError or json.JSONDecodeError: the file is not parseable
        raise PolicyError([Problem("(file)", f"cannot parse {path}: {error}")]) from None
    return parse_policy(document)


def _reason(error: Any) -> str:
    if error.validator == "minProperties" and error.validator_value == 1:
        return "should be non-empty"
    if error.validator == "required":
        return str(error.message).replace(" is a required property", " is required")
    return str(error.message)


_VALIDATOR = Draft202012Validator(load_schema("policy"))
