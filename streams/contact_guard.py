"""The contact guard: every ``contact_due`` passes the contact rules, and every decision is written.

One guard in front of every plan step (:class:`~streams.treatment_runner.TreatmentRunner`
calls :func:`guard_step` for each step the plans make due):

- **Channel.** With ``adapt_channels``, a step on a channel the debtor left unanswered
  ``adapt_after`` times in a row moves to the channel it last responded on (``adapted_from``).
  A step on an opted-out channel takes the plan's next channel the debtor has not opted out
  of (``replaced_from``), or is skipped with the reason.
- **Time.** Every channel: only from ``earliest_hour`` to ``latest_hour`` in the debtor's local
  time, never in its inconvenient hours. Calls: at most ``max_calls`` in any rolling
  ``call_window_days`` (recorded attempts and the calls the guard made due), none in the
  ``quiet_days_after_conversation`` local days that start with a telephone conversation.
  A step the rules block moves to the earliest instant they allow; if that is still ahead of
  the stream's clock the step is held (``ContactState.held``) and decided again then, with what
  is known by then (a conversation in between holds it further).
- **Record.** Each decision is a ``contact_decision`` (verdict allowed, rescheduled or skipped,
  the reasons, the counters, the time zone and where it came from, ``rule_version``), keyed
  ``<debtor>/<n>`` so an erasure can delete every one of them (:func:`erasure_tombstones`).

>>> from debtor_segments.streams.contact_state import ContactState
>>> from debtor_segments.streams.policy import ContactRules
>>> state, rules = ContactState(), ContactRules()
>>> step = {"event_id": "due-1", "debtor_id": "d1", "type": "contact_due", "channel": "call",
...         "plan_id": "p", "step": 0, "due_at": "2026-03-02T05:00:00Z"}
>>> outputs = guard_step(state, step, 1772427600.0, 1772427600.0, rules, (), "Europe/Amsterdam", emitted_at="now")
>>> [(o.topic, o.value["verdict"], o.value["reason"], o.value["send_at"]) for o in outputs]
[('debtor.contact-decisions', 'rescheduled', 'outside_hours', '2026-03-02T07:00:00Z')]
>>> len(state.held), state.next_release()
(1, 1772434800.0)
>>> release_ts, value, planned_ts = state.held.pop()
>>> later = guard_step(state, value, planned_ts, release_ts, rules, (), "Europe/Amsterdam", emitted_at="now")
>>> [(o.topic, o.value.get("verdict"), o.value.get("send_at"), o.value["due_at"]) for o in later]
[('debtor.contact-decisions', 'allowed', '2026-03-02T07:00:00Z', '2026-03-02T05:00:00Z'), ('debtor.contact-due', None, None, '2026-03-02T07:00:00Z')]
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from hashlib import blake2b
from typing import Any

from debtor_segments.schemas import CONTACT_DECISIONS_TOPIC, CONTACT_DUE_TOPIC
from debtor_segments.streams.answer_rates import PortfolioRates, best_band
from debtor_segments.streams.contact_state import ContactState
from debtor_segments.streams.engine import Output
from debtor_segments.streams.local_time import HourMask, local_datetime, local_iso, next_allowed, start_of_local_day, zone
from debtor_segments.streams.policy import ContactRules

__all__ = ["VERDICTS", "Decision", "decide", "erasure_tombstones", "guard_step", "skip_step"]

_DAY = 86_400.0
VERDICTS = ("allowed", "rescheduled", "skipped")


@dataclass(frozen=True, slots=True)
class Decision:
    """What the rules say about one step: when it may go (``None``: never) and on which channel."""

    verdict: str
    send_ts: float | None
    channel: str
    reasons: tuple[str, ...]
    adapted_from: str | None = None
    replaced_from: str | None = None


def decide(
    state: ContactState,
    planned_channel: str,
    at_ts: float,
    rules: ContactRules,
    later_channels: tuple[str, ...],
    tz_name: str,
) -> Decision:
    """Judge a step planned on ``planned_channel`` at ``at_ts``; ``later_channels`` are the
    channels of the plan's later steps, in order (the replacements of an opted-out channel)."""
    tz = zone(tz_name)
    if tz is None:
        raise ValueError(f"unknown time zone {tz_name!r}")
    channel, reasons = planned_channel, []
    adapted_from = replaced_from = None
    if rules.adapt_channels and state.unanswered_on(channel) >= rules.adapt_after:
        other = state.responsive
        if other and other != channel and not state.opted_out(other):
            adapted_from, channel = channel, other
            reasons.append("adapted")
    if state.opted_out(channel):
        replacement = next((c for c in later_channels if c != channel and not state.opted_out(c)), None)
        if replacement is None:
            return Decision("skipped", None, channel, ("opted_out", *reasons), adapted_from)
        reasons.append("opted_out")
        replaced_from, channel = channel, replacement
    hours = HourMask.allowed_by(rules.earliest_hour, rules.latest_hour, ())
    mask = HourMask.allowed_by(rules.earliest_hour, rules.latest_hour, tuple((span[0], span[1]) for span in state.inconvenient))
    hour = local_datetime(at_ts, tz).hour
    if not hours.allowed[hour]:
        reasons.append("outside_hours")
    elif not mask.allowed[hour]:
        reasons.append("inconvenient_hours")
    send_ts = at_ts
    calls = [entry[0] for entry in state.calls]
    # Each pass that moves the step passes a counted call's leaving the window or a
    # conversation's quiet days for good, so this many passes always settle. (A fixed 200 did
    # not once a debtor keeps up to 200 calls, streams.contact_state._MAX_CALLS.)
    for _ in range(len(calls) + len(state.conversations) + 1):
        allowed_ts = next_allowed(send_ts, mask, tz)
        if allowed_ts is None:
            return Decision("skipped", None, channel, ("no_allowed_hour", *reasons), adapted_from, replaced_from)
        send_ts = allowed_ts
        if channel != "call":
            break
        quiet = quiet_until(state, send_ts, tz, rules.quiet_days_after_conversation)
        if quiet is not None:
            _add(reasons, "after_conversation")
            send_ts = quiet
            continue
        release = _limit_release(calls, send_ts, rules.max_calls, rules.call_window_days * _DAY)
        if release is not None:
            _add(reasons, "call_limit")
            send_ts = release
            continue
        break
    else:  # pragma: no cover - every pass moves the time forward over finitely many releases
        raise RuntimeError("contact rules did not settle")
    moved = send_ts != at_ts
    return Decision("rescheduled" if moved else "allowed", send_ts, channel, tuple(reasons) or ("within_rules",), adapted_from, replaced_from)


def quiet_until(state: ContactState, ts: float, tz: Any, days: int) -> float | None:
    """The end of the quiet days after a conversation that covers ``ts`` (``None``: none does).

    The conversation's local day is the first of the ``days``: calls may start again at the
    beginning of the local day ``days`` days after it.
    """
    if days <= 0:
        return None
    until = None
    for conversation in state.conversations:
        if conversation <= ts:
            end = start_of_local_day(conversation, tz, days)
            if ts < end and (until is None or end > until):
                until = end
    return until


def _limit_release(calls: list[float], ts: float, max_calls: int, window_s: float) -> float | None:
    """``None`` if a call at ``ts`` keeps every rolling window at ``max_calls`` calls or fewer;
    else the next time worth trying (when a counted call leaves the window)."""
    position = bisect.bisect_left(calls, ts)
    merged = [*calls[:position], ts, *calls[position:]]
    for first in range(max(0, position - max_calls), position + 1):
        last = first + max_calls
        if last < len(merged) and merged[last] - merged[first] < window_s:
            # Up to the whole second: times are written to the second (truncated), and a call
            # attempted at 10:00:00.5 leaves the window at 10:00:00.5, which written as 10:00:00
            # would still have it in the window (an eighth call in 7 days less half a second).
            return float(math.ceil(min(call + window_s for call in calls if call + window_s > ts)))
    return None


def _add(reasons: list[str], reason: str) -> None:
    if reason not in reasons:
        reasons.append(reason)


def guard_step(
    state: ContactState,
    value: Mapping[str, Any],
    planned_ts: float,
    at_ts: float,
    rules: ContactRules,
    later_channels: tuple[str, ...],
    default_tz: str,
    *,
    emitted_at: str,
    now_ts: float | None = None,
    portfolio: PortfolioRates | None = None,
    policy_version: str = "",
) -> list[Output]:
    """Decide one ``contact_due`` (``value``, planned for ``planned_ts``) at ``at_ts``; return
    its decision and, unless held or skipped, the ``contact_due`` to send.

    ``now_ts`` is the stream's clock (default ``at_ts``): a step the rules move past it is
    held in ``state.held`` as ``[release_ts, value, planned_ts]``, for the caller to decide
    again at ``release_ts``; one moved to a time the clock has passed goes out at once, at
    that time. ``state`` is updated in place.
    """
    now_ts = at_ts if now_ts is None else now_ts
    tz_name, tz_source = state.timezone(default_tz)
    if zone(tz_name) is None:  # a name valid when stored but gone from this zone database
        tz_name, tz_source = default_tz, "default"
    tz = zone(tz_name)
    assert tz is not None  # the default is checked where it is configured
    decision = decide(state, value["channel"], at_ts, rules, later_channels, tz_name)
    held = decision.send_ts is not None and decision.send_ts > now_ts
    outputs = [_decision_record(state, value, planned_ts, at_ts, decision, rules, tz_name, tz_source, emitted_at, policy_version)]
    if decision.send_ts is None:
        return outputs
    if held:
        # Held as the plan made it: decided again from the plan's channel at release, so the
        # decision that lets it go says what the plan asked for and why it changed.
        state.held.append([decision.send_ts, dict(value), planned_ts])
        return outputs
    send_ts = decision.send_ts
    due = dict(value)
    due.update(
        emitted_at=emitted_at,
        occurred_at=_rfc3339(send_ts),
        due_at=_rfc3339(send_ts),
        planned_at=_rfc3339(planned_ts),
        channel=decision.channel,
        adapted_from=decision.adapted_from,
        replaced_from=decision.replaced_from,
        decision_id=outputs[0].value["event_id"] if outputs[0].value else None,
        timezone=tz_name,
    )
    if decision.channel == "call":
        mask = HourMask.allowed_by(rules.earliest_hour, rules.latest_hour, tuple((s[0], s[1]) for s in state.inconvenient))
        weekend = local_datetime(send_ts, tz).weekday() >= 5
        band = best_band(state.rates, portfolio if portfolio is not None else PortfolioRates(), weekend=weekend, allowed=mask)
        due["best_window"] = None if band is None else {"from_hour": band[0], "to_hour": band[1], "timezone": tz_name}
        state.add_call(send_ts, str(value["event_id"]), now=at_ts)
    else:
        due.pop("best_window", None)
    outputs.append(Output(CONTACT_DUE_TOPIC, str(value["debtor_id"]), due))
    return outputs


def _decision_record(
    state: ContactState,
    value: Mapping[str, Any],
    planned_ts: float,
    at_ts: float,
    decision: Decision,
    rules: ContactRules,
    tz_name: str,
    tz_source: str,
    emitted_at: str,
    policy_version: str,
) -> Output:
    debtor_id = str(value["debtor_id"])
    number = state.decisions
    state.decisions += 1
    digest = blake2b(f"contact_decision\x00{debtor_id}\x00{value['event_id']}\x00{number}".encode(), digest_size=12)
    tz = zone(tz_name)
    assert tz is not None
    window_s = rules.call_window_days * _DAY
    judged = decision.send_ts if decision.send_ts is not None else at_ts
    calls_in_window = sum(1 for entry in state.calls if judged - window_s < entry[0] <= judged)
    quiet = quiet_until(state, at_ts, tz, rules.quiet_days_after_conversation)
    record = {
        "event_id": f"contact_decision-{digest.hexdigest()}",
        "debtor_id": debtor_id,
        "type": "contact_decision",
        "occurred_at": _rfc3339(at_ts),
        "emitted_at": emitted_at,
        "cause_event_id": value["event_id"],
        "assignment_id": value.get("cause_event_id"),
        "claim_ids": list(state.claims),
        "plan_id": value.get("plan_id"),
        "step": value.get("step"),
        "experiment_id": value.get("experiment_id"),
        "arm": value.get("arm"),
        "persona": value.get("persona"),
        "quadrant": value.get("quadrant"),
        "planned_channel": value["channel"],
        "channel": decision.channel,
        "adapted_from": decision.adapted_from,
        "replaced_from": decision.replaced_from,
        "due_at": _rfc3339(planned_ts),
        "send_at": None if decision.send_ts is None else _rfc3339(decision.send_ts),
        "decided_at": _rfc3339(at_ts),
        "decided_at_local": local_iso(at_ts, tz),
        "timezone": tz_name,
        "timezone_source": tz_source,
        "counters": {
            "calls_in_window": calls_in_window,
            "max_calls": rules.max_calls,
            "window_days": rules.call_window_days,
            "last_conversation_at": _rfc3339(state.conversations[-1]) if state.conversations else None,
            "quiet_until": None if quiet is None else _rfc3339(quiet),
            "unanswered_on_channel": state.unanswered_on(value["channel"]),
        },
        "rule_version": rules.version,
        "policy_version": policy_version or value.get("policy_version"),
        "verdict": decision.verdict,
        "reason": decision.reasons[0],
        "reasons": list(decision.reasons),
    }
    return Output(CONTACT_DECISIONS_TOPIC, f"{debtor_id}/{number}", record)


def skip_step(
    state: ContactState,
    value: Mapping[str, Any],
    planned_ts: float,
    at_ts: float,
    reason: str,
    rules: ContactRules,
    default_tz: str,
    *,
    emitted_at: str,
    policy_version: str = "",
) -> Output:
    """The decision that a held step will not go out after all: its plan ended
    (``plan_ended``), or a later step on the same channel goes out in its place
    (``superseded``: a backlog of calls held through the quiet days is one call, not seven at
    08:00 on the first day after)."""
    tz_name, tz_source = state.timezone(default_tz)
    if zone(tz_name) is None:
        tz_name, tz_source = default_tz, "default"
    decision = Decision("skipped", None, str(value["channel"]), (reason,))
    return _decision_record(state, value, planned_ts, at_ts, decision, rules, tz_name, tz_source, emitted_at, policy_version)


def erasure_tombstones(debtor_id: str, state: ContactState | None) -> list[Output]:
    """Tombstones (value ``None``) for every decision written about an erased debtor: the
    decision topic is compacted, so the records go at the next compaction.

    >>> [(o.key, o.value) for o in erasure_tombstones("d1", ContactState(decisions=2))]
    [('d1/0', None), ('d1/1', None)]
    """
    if state is None:
        return []
    return [Output(CONTACT_DECISIONS_TOPIC, f"{debtor_id}/{number}", None) for number in range(state.decisions)]


def _rfc3339(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
