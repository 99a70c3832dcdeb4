"""What the contact guard knows about one debtor, folded from its inbound events.

The guard (:mod:`streams.contact_guard`) needs, per debtor: where it lives (time zone and
where that came from), what it asked for (opted-out and opted-in channels, inconvenient
hours; each field's latest setting in event time wins), the recent calls and telephone
conversations the call-frequency rules count, unanswered contacts per channel and the channel
it last answered on (adaptation), answer counts per local band (best time to call), its open
claims (named in decisions), and the steps the rules hold back. All of it is bounded: a
debtor called a thousand times keeps the calls that can still matter.

>>> from debtor_segments.streams.events import decode_object
>>> state = ContactState()
>>> pref = decode_object({"event_id": "p1", "debtor_id": "d1", "type": "contact_preference_set",
...     "occurred_at": "2026-03-01T10:00:00Z", "timezone": "America/New_York",
...     "opt_out_channels": ["sms"], "inconvenient_hours": [{"from_hour": 12, "to_hour": 14}]})
>>> observe(state, pref)
True
>>> state.timezone("Europe/Amsterdam"), state.opted_out("sms"), state.inconvenient
(('America/New_York', 'preference'), True, [[12, 14]])
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any

from debtor_segments.schemas import load_schema
from debtor_segments.streams.answer_rates import AnswerCounts, PortfolioRates, cell_of
from debtor_segments.streams.events import Event
from debtor_segments.streams.local_time import local_datetime, zone
from debtor_segments.streams.policy import CHANNELS

__all__ = ["OBSERVED_TYPES", "ContactState", "observe"]

#: Inbound types the guard folds in (the others leave its state alone).
OBSERVED_TYPES = frozenset(("claim_opened", "claim_closed", "contact_attempted", "contact_responded", "contact_initiated", "contact_preference_set"))
#: The largest contact rules a policy may set (schemas/policy.json): the bounds below must hold
#: for every rule setting a policy may set, not only the defaults.
_RULE_BOUNDS = load_schema("policy")["properties"]["contact_rules"]["properties"]
#: Calls kept per debtor: two rolling windows' worth at the largest ``max_calls`` (older calls
#: cannot change a decision about a newer one). 32, two windows' worth at the default 7 calls,
#: let the 34th call of a day through under ``max_calls: 33``.
_MAX_CALLS = 2 * int(_RULE_BOUNDS["max_calls"]["maximum"])
_MAX_CONVERSATIONS = 4
#: An answered call is filed under the latest call attempt this long before it, if any.
_ANSWER_WITHIN_S = 3600.0
_MAX_CLAIMS = 16
#: A call is dropped once it is this much older than the time decided (or observed): two of the
#: longest windows. 31 days forgot calls a ``call_window_days: 60`` window still counts.
_CALL_HORIZON_S = 2 * int(_RULE_BOUNDS["call_window_days"]["maximum"]) * 86_400.0


@dataclass(slots=True)
class ContactState:
    """One debtor's contact facts; plain lists and scalars so it stores as JSON."""

    tz_name: str = ""
    tz_ts: float = float("-inf")
    claim_tz_name: str = ""
    claim_tz_ts: float = float("-inf")
    opt_out: list[str] = field(default_factory=list)
    opt_out_ts: float = float("-inf")
    opt_in: list[str] = field(default_factory=list)
    opt_in_ts: float = float("-inf")
    inconvenient: list[list[int]] = field(default_factory=list)
    inconvenient_ts: float = float("-inf")
    #: [ts, id] of recent call attempts, sorted by time: recorded ones (the event id, or the
    #: contact_due id the attempt carried out) and the calls the guard made due.
    calls: list[list[Any]] = field(default_factory=list)
    #: Times of the latest telephone conversations (answered calls, calls the debtor placed).
    conversations: list[float] = field(default_factory=list)
    #: Contacts without a response since the last one, per channel (CHANNELS order).
    unanswered: list[int] = field(default_factory=lambda: [0] * len(CHANNELS))
    responsive: str = ""
    responsive_ts: float = float("-inf")
    rates: AnswerCounts = field(default_factory=AnswerCounts.new)
    claims: list[str] = field(default_factory=list)
    #: [release_ts, contact_due value, decisions so far] of steps the rules hold back.
    held: list[list[Any]] = field(default_factory=list)
    #: Decisions written so far: the next decision's key is ``<debtor>/<decisions>``.
    decisions: int = 0

    def timezone(self, default: str) -> tuple[str, str]:
        """(zone name, source): the debtor's own setting, else its latest claim's, else ``default``."""
        if self.tz_name:
            return self.tz_name, "preference"
        if self.claim_tz_name:
            return self.claim_tz_name, "claim"
        return default, "default"

    def opted_out(self, channel: str) -> bool:
        """Whether the debtor asked not to be contacted on ``channel`` (a later opt-in lifts it)."""
        if channel not in self.opt_out:
            return False
        return not (channel in self.opt_in and self.opt_in_ts > self.opt_out_ts)

    def unanswered_on(self, channel: str) -> int:
        return self.unanswered[_CHANNEL_INDEX[channel]] if channel in _CHANNEL_INDEX else 0

    def add_call(self, ts: float, call_id: str, now: float | None = None) -> None:
        """Count a call at ``ts``; a recorded attempt of a call the guard counted replaces it.

        ``now`` is the time being decided (default ``ts``): calls older than the horizon before
        it are dropped. Not before the newest call: the guard places calls ahead of the clock
        when it moves steps, and the steps decided after them can be about earlier times (a
        partition clock that jumps decides a whole plan at once, in due order). Dropping by the
        newest call forgot calls those decisions must count: a 36-call plan under
        ``max_calls: 1`` decided in one go got a second call within 7 days.
        """
        for entry in self.calls:
            if entry[1] == call_id:
                self.calls.remove(entry)
                break
        bisect.insort(self.calls, [ts, call_id])
        oldest = (ts if now is None else min(ts, now)) - _CALL_HORIZON_S
        self.calls = [entry for entry in self.calls if entry[0] > oldest][-_MAX_CALLS:]

    def next_release(self) -> float:
        """When the earliest held step is to be decided again (infinity: none held)."""
        return min((entry[0] for entry in self.held), default=float("inf"))

    def to_dict(self) -> dict[str, Any]:
        """The fields that differ from a new state's (most debtors have few contacts)."""
        out: dict[str, Any] = {}
        for name in _FIELDS:
            value = getattr(self, name)
            if value != _NEW[name]:
                out[name] = value.to_list() if name == "rates" else value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ContactState:
        """Inverse of :meth:`to_dict`.

        >>> s = ContactState(tz_name="Europe/Paris", calls=[[1.0, "e1"]])
        >>> ContactState.from_dict(s.to_dict()) == s
        True
        """
        values = {name: data[name] for name in _FIELDS if name in data}
        values["rates"] = AnswerCounts.from_list(data.get("rates"))
        return cls(**values)


_FIELDS = tuple(ContactState.__dataclass_fields__)
_NEW = {name: getattr(ContactState(), name) for name in _FIELDS}
_CHANNEL_INDEX = {channel: n for n, channel in enumerate(CHANNELS)}


def observe(state: ContactState, event: Event, portfolio: PortfolioRates | None = None, default_tz: str = "Europe/Amsterdam") -> bool:
    """Fold one processed inbound event into ``state`` (in place); whether anything changed.

    ``portfolio`` learns the answer counts with the debtor (best time to call); calls are
    placed in local cells by the debtor's time zone as known at the time.
    """
    data, ts, kind = event.data, event.ts, event.type
    if kind == "contact_preference_set":
        return _preferences(state, data, ts)
    if kind == "claim_opened":
        changed = False
        if data.get("timezone") and ts >= state.claim_tz_ts:
            state.claim_tz_name, state.claim_tz_ts, changed = data["timezone"], ts, True
        if data["claim_id"] not in state.claims:
            state.claims = [*state.claims, data["claim_id"]][-_MAX_CLAIMS:]
            changed = True
        return changed
    if kind == "claim_closed":
        if data["claim_id"] in state.claims:
            state.claims.remove(data["claim_id"])
            return True
        return False
    channel = data.get("channel", "")
    if kind == "contact_attempted":
        if channel in _CHANNEL_INDEX:
            state.unanswered[_CHANNEL_INDEX[channel]] += 1
        if channel == "call":
            state.add_call(ts, str(data.get("cause_event_id") or event.event_id))
            _learn(state, ts, portfolio, default_tz, answered=False)
        return True
    if kind in ("contact_responded", "contact_initiated"):
        if channel in _CHANNEL_INDEX:
            state.unanswered[_CHANNEL_INDEX[channel]] = 0
            if ts >= state.responsive_ts:
                state.responsive, state.responsive_ts = channel, ts
        if channel == "call" and (kind == "contact_initiated" or data.get("outcome") == "answered"):
            state.conversations = sorted([*state.conversations, ts])[-_MAX_CONVERSATIONS:]
            if kind == "contact_responded":
                # The answer belongs to the band of the call it answers (the latest attempt of
                # the hour before it), not of the moment it was recorded: a call at 11:59:50
                # answered at 12:00:05 is a 09-12 answer.
                attempt = max((entry[0] for entry in state.calls if ts - _ANSWER_WITHIN_S <= entry[0] <= ts), default=ts)
                _learn(state, attempt, portfolio, default_tz, answered=True)
        return True
    return False


def _preferences(state: ContactState, data: dict[str, Any], ts: float) -> bool:
    changed = False
    if "timezone" in data and ts >= state.tz_ts:
        state.tz_name, state.tz_ts, changed = data["timezone"], ts, True
    if "opt_out_channels" in data and ts >= state.opt_out_ts:
        state.opt_out, state.opt_out_ts, changed = sorted(set(data["opt_out_channels"])), ts, True
    if "opt_in_channels" in data and ts >= state.opt_in_ts:
        state.opt_in, state.opt_in_ts, changed = sorted(set(data["opt_in_channels"])), ts, True
    if "inconvenient_hours" in data and ts >= state.inconvenient_ts:
        spans = sorted({(span["from_hour"], span["to_hour"]) for span in data["inconvenient_hours"]})
        state.inconvenient, state.inconvenient_ts, changed = [list(span) for span in spans], ts, True
    return changed


def _learn(state: ContactState, ts: float, portfolio: PortfolioRates | None, default_tz: str, *, answered: bool) -> None:
    tz = zone(state.timezone(default_tz)[0]) or zone(default_tz)
    if tz is None:
        return
    local = local_datetime(ts, tz)
    cell = cell_of(local.weekday(), local.hour)
    if portfolio is None:
        portfolio = PortfolioRates()  # a throwaway: the debtor's own counts still learn
    portfolio.learn_one(state.rates, cell, answered=answered)
