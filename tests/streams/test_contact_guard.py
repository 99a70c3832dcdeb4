"""The contact guard: unit cases of every rule, and a property test over random policies and
event histories fed through a TreatmentRunner, checked by an independent checker."""

from __future__ import annotations

import bisect
import calendar
import heapq
import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import event as statistic
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from debtor_segments.schemas import CONTACT_DECISIONS_TOPIC, CONTACT_DUE_TOPIC, PERSONA_CHANGES_TOPIC, QUADRANT_CHANGES_TOPIC, TREATMENTS_TOPIC, load_schema
from debtor_segments.streams.contact_guard import VERDICTS, decide, erasure_tombstones, guard_step
from debtor_segments.streams.contact_state import ContactState, observe
from debtor_segments.streams.engine import Output, Step
from debtor_segments.streams.events import Event, decode_object
from debtor_segments.streams.policy import CHANNELS, ContactRules, Policy, parse_policy
from debtor_segments.streams.treatment_runner import TreatmentRunner
from tests.streams.conftest import ZONES

DAY = 86_400.0
HOUR = 3_600.0
RULES = ContactRules()
DECISION_SCHEMA = Draft202012Validator(load_schema("contact_decision"))
DUE_SCHEMA = Draft202012Validator(load_schema("contact_due"))
QUADRANTS = ("willing_able", "willing_unable", "unwilling_able", "unwilling_unable")
BLOCKING = {"outside_hours", "inconvenient_hours", "after_conversation", "call_limit"}


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _ts(text: str) -> float:
    return float(calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ")))


def _event(kind: str, ts: float, event_id: str, debtor_id: str = "d1", **fields: Any) -> Event:
    whole = math.floor(ts)
    stamp = _iso(whole) if ts == whole else _iso(whole)[:-1] + f"{ts - whole:.6f}"[1:] + "Z"
    return decode_object({"event_id": event_id, "debtor_id": debtor_id, "type": kind, "occurred_at": stamp, **fields})


def _step(channel: str = "call", due_at: str = "2026-03-02T10:00:00Z", event_id: str = "due-1", step: int = 0) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "debtor_id": "d1",
        "type": "contact_due",
        "occurred_at": due_at,
        "emitted_at": "x",
        "cause_event_id": "treatment_assigned-1",
        "due_at": due_at,
        "plan_id": "p",
        "step": step,
        "day": 0,
        "channel": channel,
        "tone": "neutral",
        "message_id": "m",
        "experiment_id": None,
        "arm": None,
        "policy_version": "v1",
        "persona": "unknown",
        "quadrant": "willing_able",
    }


def _calls(state: ContactState, *stamps: str) -> None:
    for n, stamp in enumerate(stamps):
        observe(state, _event("contact_attempted", _ts(stamp), f"a{len(state.calls)}-{n}", channel="call", direction="outbound"))


# -- unit cases ------------------------------------------------------------------------------------


def test_seven_calls_in_any_seven_days() -> None:
    state = ContactState()
    _calls(state, *(f"2026-03-0{d}T10:00:00Z" for d in range(2, 9)))  # seven calls, 2..8 March
    # 9 March 09:00 UTC: the window back to 2 March 09:00 still holds all seven
    decision = decide(state, "call", _ts("2026-03-09T09:00:00Z"), RULES, (), "UTC")
    assert decision.verdict == "rescheduled" and decision.reasons == ("call_limit",)
    assert decision.send_ts == _ts("2026-03-09T10:00:00Z")  # exactly when the first call leaves
    assert decide(state, "call", _ts("2026-03-09T10:00:00Z"), RULES, (), "UTC").verdict == "allowed"
    # other channels do not count
    assert decide(state, "email", _ts("2026-03-09T09:00:00Z"), RULES, (), "UTC").verdict == "allowed"
    # a call before the seven also breaks a window (the seven after it): the limit looks both ways
    early = decide(state, "call", _ts("2026-03-01T12:00:00Z"), RULES, (), "UTC")
    assert early.verdict == "rescheduled" and early.send_ts == _ts("2026-03-09T10:00:00Z")


def test_the_guards_own_calls_count_and_an_attempt_replaces_its_count() -> None:
    state = ContactState()
    for day in range(2, 9):
        at = _ts(f"2026-03-0{day}T10:00:00Z")
        outputs = guard_step(state, _step(due_at=_iso(at), event_id=f"due-{day}"), at, at, RULES, (), "UTC", emitted_at="x")
        assert [o.topic for o in outputs] == [CONTACT_DECISIONS_TOPIC, CONTACT_DUE_TOPIC]
    assert len(state.calls) == 7
    at = _ts("2026-03-08T12:00:00Z")
    assert decide(state, "call", at, RULES, (), "UTC").verdict == "rescheduled"
    # the dialer's attempt of the first due call was on 1 March after all: it counts once, then
    observe(state, _event("contact_attempted", _ts("2026-03-01T10:00:00Z"), "att", channel="call", direction="outbound", cause_event_id="due-2"))
    assert len(state.calls) == 7
    assert decide(state, "call", at, RULES, (), "UTC").verdict == "allowed"


def test_quiet_days_after_a_conversation_are_local_days() -> None:
    state = ContactState(tz_name="Europe/Amsterdam")
    # Wednesday 2026-03-25 21:30 CET: the seven local days are 25 March .. 31 March
    observe(state, _event("contact_responded", _ts("2026-03-25T20:30:00Z"), "r1", channel="call", outcome="answered"))
    decision = decide(state, "call", _ts("2026-03-26T09:00:00Z"), RULES, (), "Europe/Amsterdam")
    assert decision.verdict == "rescheduled" and decision.reasons == ("after_conversation",)
    # 1 April 08:00 CEST (the clocks went forward on the 29th): 06:00 UTC
    assert decision.send_ts == _ts("2026-04-01T06:00:00Z")
    # a call earlier on the conversation's own day, before it, was before any conversation
    assert decide(state, "call", _ts("2026-03-25T10:00:00Z"), RULES, (), "Europe/Amsterdam").verdict == "allowed"
    # a letter is no call
    assert decide(state, "letter", _ts("2026-03-26T09:00:00Z"), RULES, (), "Europe/Amsterdam").verdict == "allowed"
    # off with 0 days
    off = ContactRules(quiet_days_after_conversation=0)
    assert decide(state, "call", _ts("2026-03-26T09:00:00Z"), off, (), "Europe/Amsterdam").verdict == "allowed"
    one = ContactRules(quiet_days_after_conversation=1)  # only the conversation's own local day
    assert decide(state, "call", _ts("2026-03-25T22:30:00Z"), one, (), "Europe/Amsterdam").send_ts == _ts("2026-03-26T07:00:00Z")


def test_a_call_the_debtor_placed_is_a_conversation_too() -> None:
    state = ContactState()
    observe(state, _event("contact_initiated", _ts("2026-03-02T15:00:00Z"), "i1", channel="call", direction="inbound"))
    observe(state, _event("contact_initiated", _ts("2026-03-09T15:00:00Z"), "i2", channel="portal", direction="inbound"))
    decision = decide(state, "call", _ts("2026-03-04T15:00:00Z"), RULES, (), "America/New_York")
    assert decision.reasons == ("after_conversation",)
    assert decision.send_ts == _ts("2026-03-09T12:00:00Z")  # 9 March 08:00 EDT (clocks forward on the 8th)


def test_hours_reasons() -> None:
    state = ContactState()
    night = decide(state, "sms", _ts("2026-03-02T02:00:00Z"), RULES, (), "Europe/Amsterdam")
    assert (night.verdict, night.reasons, night.send_ts) == ("rescheduled", ("outside_hours",), _ts("2026-03-02T07:00:00Z"))
    observe(state, _event("contact_preference_set", _ts("2026-03-01T00:00:00Z"), "p1", inconvenient_hours=[{"from_hour": 8, "to_hour": 12}, {"from_hour": 18, "to_hour": 6}]))
    lunch = decide(state, "sms", _ts("2026-03-02T08:00:00Z"), RULES, (), "Europe/Amsterdam")  # 09:00 local
    assert (lunch.verdict, lunch.reasons, lunch.send_ts) == ("rescheduled", ("inconvenient_hours",), _ts("2026-03-02T11:00:00Z"))
    evening = decide(state, "email", _ts("2026-03-02T16:30:00Z"), RULES, (), "Europe/Amsterdam")  # 17:30: allowed
    assert evening.verdict == "allowed" and evening.reasons == ("within_rules",)
    late = decide(state, "email", _ts("2026-03-02T17:00:00Z"), RULES, (), "Europe/Amsterdam")  # 18:00 -> next day 12:00
    assert late.send_ts == _ts("2026-03-03T11:00:00Z") and late.reasons == ("inconvenient_hours",)


def test_hours_across_the_clock_changes() -> None:
    state, ams = ContactState(), "Europe/Amsterdam"
    # 2026-03-29 (CET -> CEST): 05:30 UTC is 07:30 local, moved to 08:00 CEST = 06:00 UTC
    assert decide(state, "sms", _ts("2026-03-29T05:30:00Z"), RULES, (), ams).send_ts == _ts("2026-03-29T06:00:00Z")
    assert decide(state, "sms", _ts("2026-03-29T06:30:00Z"), RULES, (), ams).verdict == "allowed"
    # 2026-10-25 (CEST -> CET): 06:30 UTC is 07:30 local, moved to 08:00 CET = 07:00 UTC
    assert decide(state, "sms", _ts("2026-10-25T06:30:00Z"), RULES, (), ams).send_ts == _ts("2026-10-25T07:00:00Z")
    # the evening's end moves with the clocks too: 19:30 UTC is 20:30 CET but 21:30 CEST
    assert decide(state, "sms", _ts("2026-03-28T19:30:00Z"), RULES, (), ams).verdict == "allowed"
    late = decide(state, "sms", _ts("2026-03-29T19:30:00Z"), RULES, (), ams)
    assert (late.reasons, late.send_ts) == (("outside_hours",), _ts("2026-03-30T06:00:00Z"))
    ny = "America/New_York"
    assert decide(state, "call", _ts("2026-03-08T11:30:00Z"), RULES, (), ny).send_ts == _ts("2026-03-08T12:00:00Z")  # 07:30 EDT
    assert decide(state, "call", _ts("2026-11-01T12:30:00Z"), RULES, (), ny).send_ts == _ts("2026-11-01T13:00:00Z")  # 07:30 EST


def test_no_allowed_hour_skips() -> None:
    state = ContactState()
    observe(state, _event("contact_preference_set", _ts("2026-03-01T00:00:00Z"), "p1", inconvenient_hours=[{"from_hour": 20, "to_hour": 9}, {"from_hour": 9, "to_hour": 20}]))
    decision = decide(state, "call", _ts("2026-03-02T10:00:00Z"), RULES, ("email",), "UTC")
    assert decision.verdict == "skipped" and decision.send_ts is None
    assert "no_allowed_hour" in decision.reasons
    outputs = guard_step(state, _step(), _ts("2026-03-02T10:00:00Z"), _ts("2026-03-02T10:00:00Z"), RULES, ("email",), "UTC", emitted_at="x")
    assert [o.topic for o in outputs] == [CONTACT_DECISIONS_TOPIC]
    assert outputs[0].value is not None and outputs[0].value["send_at"] is None and outputs[0].value["verdict"] == "skipped"
    assert not state.held


def test_opted_out_channel_takes_the_plans_next_channel_or_is_skipped() -> None:
    state = ContactState()
    observe(state, _event("contact_preference_set", _ts("2026-03-01T00:00:00Z"), "p1", opt_out_channels=["call", "sms"]))
    at = _ts("2026-03-02T10:00:00Z")
    replaced = decide(state, "call", at, RULES, ("sms", "call", "letter", "email"), "UTC")
    assert (replaced.verdict, replaced.channel, replaced.replaced_from, replaced.reasons) == ("allowed", "letter", "call", ("opted_out",))
    skipped = decide(state, "call", at, RULES, ("sms", "call"), "UTC")
    assert (skipped.verdict, skipped.send_ts, skipped.reasons) == ("skipped", None, ("opted_out",))
    assert decide(state, "sms", at, RULES, (), "UTC").verdict == "skipped"  # the last step
    # the replacement is judged by the rules of its own channel (here: a call after a conversation)
    observe(state, _event("contact_preference_set", _ts("2026-03-01T01:00:00Z"), "p2", opt_out_channels=["email"]))
    observe(state, _event("contact_responded", _ts("2026-03-01T12:00:00Z"), "r1", channel="call", outcome="answered"))
    moved = decide(state, "email", at, RULES, ("call",), "UTC")
    assert (moved.channel, moved.replaced_from, moved.reasons) == ("call", "email", ("opted_out", "after_conversation"))
    assert moved.send_ts == _ts("2026-03-08T08:00:00Z")
    # an opt-in later than the opt-out lifts it
    observe(state, _event("contact_preference_set", _ts("2026-03-01T02:00:00Z"), "p3", opt_in_channels=["email"]))
    assert decide(state, "email", at, RULES, ("call",), "UTC").channel == "email"


def test_adapted_channel() -> None:
    rules = ContactRules(adapt_channels=True, adapt_after=2)
    state = ContactState()
    observe(state, _event("contact_responded", _ts("2026-03-01T09:00:00Z"), "r1", channel="whatsapp", outcome="replied"))
    for n in range(2):
        observe(state, _event("contact_attempted", _ts("2026-03-01T10:00:00Z") + n, f"a{n}", channel="email", direction="outbound"))
    decision = decide(state, "email", _ts("2026-03-02T10:00:00Z"), rules, (), "UTC")
    assert (decision.channel, decision.adapted_from, decision.reasons) == ("whatsapp", "email", ("adapted",))
    assert decide(state, "email", _ts("2026-03-02T10:00:00Z"), ContactRules(), (), "UTC").channel == "email"
    # never onto an opted-out channel: then the plan's own channel stays
    observe(state, _event("contact_preference_set", _ts("2026-03-01T00:00:00Z"), "p1", opt_out_channels=["whatsapp"]))
    assert decide(state, "email", _ts("2026-03-02T10:00:00Z"), rules, (), "UTC").channel == "email"


def test_held_step_is_decided_again_with_what_is_known_then() -> None:
    state = ContactState()
    at = _ts("2026-03-02T04:00:00Z")  # 05:00 in Amsterdam
    outputs = guard_step(state, _step(due_at=_iso(at)), at, at, RULES, (), "Europe/Amsterdam", emitted_at="x")
    assert [o.topic for o in outputs] == [CONTACT_DECISIONS_TOPIC]
    assert state.next_release() == _ts("2026-03-02T07:00:00Z")
    # a conversation before the release: decided again then, the step is held for the quiet days
    observe(state, _event("contact_responded", _ts("2026-03-02T06:30:00Z"), "r1", channel="call", outcome="answered"))
    release_ts, value, planned_ts = state.held.pop()
    again = guard_step(state, value, planned_ts, release_ts, RULES, (), "Europe/Amsterdam", emitted_at="x")
    assert again[0].value is not None and again[0].value["reasons"] == ["after_conversation"]
    assert len(again) == 1 and state.next_release() == _ts("2026-03-09T07:00:00Z")
    # when the clock has passed the time the rules allow, the step goes out at once, at that time
    release_ts, value, planned_ts = state.held.pop()
    late = guard_step(state, value, planned_ts, release_ts, RULES, (), "Europe/Amsterdam", emitted_at="x", now_ts=release_ts + 5 * DAY)
    assert [o.topic for o in late] == [CONTACT_DECISIONS_TOPIC, CONTACT_DUE_TOPIC]
    assert late[1].value is not None and late[1].value["due_at"] == "2026-03-09T07:00:00Z" and late[1].value["planned_at"] == "2026-03-02T04:00:00Z"


def test_decision_records_follow_their_contract() -> None:
    state = ContactState()
    observe(state, _event("claim_opened", _ts("2026-03-01T00:00:00Z"), "c", claim_id="c1", creditor_id="cr", principal_cents=100, timezone="Asia/Kathmandu"))
    _calls(state, "2026-03-01T05:00:00Z", "2026-03-01T06:00:00Z")
    observe(state, _event("contact_responded", _ts("2026-02-20T05:00:00Z"), "r1", channel="call", outcome="answered"))
    at = _ts("2026-03-02T05:00:00Z")
    outputs = guard_step(state, _step(due_at=_iso(at)), at, at, RULES, ("email",), "Europe/Amsterdam", emitted_at="now", policy_version="v9")
    record, due = outputs[0].value, outputs[1].value
    assert record is not None and due is not None
    assert not list(DECISION_SCHEMA.iter_errors(record)) and not list(DUE_SCHEMA.iter_errors(due))
    assert outputs[0].key == "d1/0" and state.decisions == 1
    assert (record["timezone"], record["timezone_source"], record["decided_at_local"]) == ("Asia/Kathmandu", "claim", "2026-03-02T10:45:00+05:45")
    assert record["claim_ids"] == ["c1"] and record["policy_version"] == "v9" and record["rule_version"] == RULES.version
    assert record["counters"]["calls_in_window"] == 2 and record["counters"]["quiet_until"] is None
    assert record["counters"]["last_conversation_at"] == "2026-02-20T05:00:00Z"
    assert due["decision_id"] == record["event_id"] and due["timezone"] == "Asia/Kathmandu"
    assert due["best_window"] is not None and due["best_window"]["timezone"] == "Asia/Kathmandu"
    assert 8 <= due["best_window"]["from_hour"] < due["best_window"]["to_hour"] <= 21
    email = guard_step(state, _step("email", _iso(at), "due-2", 1), at, at, RULES, (), "Europe/Amsterdam", emitted_at="now")
    assert email[1].value is not None and "best_window" not in email[1].value and email[0].key == "d1/1"


def test_a_stored_zone_gone_from_the_database_falls_back_to_the_default() -> None:
    state = ContactState(tz_name="Mars/Olympus")
    at = _ts("2026-03-02T10:00:00Z")
    outputs = guard_step(state, _step(due_at=_iso(at)), at, at, RULES, (), "America/New_York", emitted_at="x")
    assert outputs[0].value is not None
    assert (outputs[0].value["timezone"], outputs[0].value["timezone_source"]) == ("America/New_York", "default")
    assert outputs[0].value["verdict"] == "rescheduled"  # 05:00 in New York
    with pytest.raises(ValueError, match="unknown time zone"):
        decide(state, "call", at, RULES, (), "Mars/Olympus")


def test_erasure_tombstones() -> None:
    assert erasure_tombstones("d1", None) == []
    assert erasure_tombstones("d1", ContactState()) == []
    assert [(o.topic, o.key, o.value) for o in erasure_tombstones("d7", ContactState(decisions=3))] == [(CONTACT_DECISIONS_TOPIC, f"d7/{n}", None) for n in range(3)]


def test_an_erased_debtor_gets_a_tombstone_for_every_decision_through_the_runner() -> None:
    policy = parse_policy(
        {
            "version": "v1",
            "segments": {"willing_able": "p"},
            "plans": {
                "p": [
                    {"day": 0, "channel": "call", "tone": "neutral", "message_id": "m0"},
                    {"day": 1, "channel": "sms", "tone": "neutral", "message_id": "m1"},
                    {"day": 2, "channel": "email", "tone": "neutral", "message_id": "m2"},
                ]
            },
        }
    )
    runner = TreatmentRunner(policy)
    t0 = _ts("2026-03-02T04:00:00Z")  # 05:00 in Amsterdam: the first step is held first
    sent = runner.after(*_change("d1", "willing_able", t0, "q1"))
    sent += runner.after(*_change("d2", "willing_able", t0, "q2"))
    sent += runner.idle(0, 3 * DAY)
    keys = [o.key for o in sent if o.topic == CONTACT_DECISIONS_TOPIC and o.value and o.value["debtor_id"] == "d1"]
    assert keys == ["d1/0", "d1/1", "d1/2", "d1/3"]  # the held call was decided twice
    erased = runner.after(*_change("d1", "willing_able", t0 + 4 * DAY, "q3", reason="erased"))
    assert [(o.key, o.value) for o in erased if o.topic == CONTACT_DECISIONS_TOPIC] == [(key, None) for key in keys]
    assert "d1" not in runner.states and "d2" in runner.states


def test_a_plan_decided_at_once_keeps_the_call_limit() -> None:
    # Found by the property test below: a partition clock that jumps decides a whole plan at
    # once, in due order; the calls the first steps were moved to lie far ahead, and dropping
    # calls by the newest one forgot the calls the later steps had to count.
    # (with the defaults: 16 of these 63 calls had 7 others within 7 days)
    steps = [{"day": day, "channel": "call", "tone": "neutral", "message_id": f"m{day}-{n}"} for day in range(21) for n in range(3)]
    for rules, window in (({}, 7 * DAY), ({"max_calls": 1}, 7 * DAY), ({"max_calls": 2, "call_window_days": 30}, 30 * DAY)):
        policy = parse_policy({"version": "v1", "segments": {"unknown": "p"}, "plans": {"p": steps}, "contact_rules": rules})
        runner = TreatmentRunner(policy)
        outputs = runner.after(*_change("d1", "willing_able", _ts("2026-03-02T09:00:00Z"), "q1"))
        for _ in range(10):
            outputs += runner.idle(0, 400 * DAY)
        calls = sorted(_ts(o.value["due_at"]) for o in outputs if o.topic == CONTACT_DUE_TOPIC and o.value)
        assert len(calls) == len(steps)
        limit = policy.contact_rules.max_calls
        assert all(later - first >= window for first, later in zip(calls, calls[limit:], strict=False)), rules


def test_an_adapted_step_held_and_released_still_says_what_the_plan_asked_for() -> None:
    rules = ContactRules(adapt_channels=True)
    state = ContactState(unanswered=[0, 0, 0, 3, 0, 0], responsive="sms")
    at = _ts("2026-03-02T05:00:00Z")  # 06:00 in Amsterdam: held till 08:00
    first = guard_step(state, _step(due_at=_iso(at)), at, at, rules, (), "Europe/Amsterdam", emitted_at="x")
    assert first[0].value is not None and first[0].value["reasons"] == ["adapted", "outside_hours"]
    release_ts, value, planned_ts = state.held.pop()
    assert value["channel"] == "call"  # held as planned, decided again from the plan's channel
    again = guard_step(state, value, planned_ts, release_ts, rules, (), "Europe/Amsterdam", emitted_at="x")
    decision, due_value = again[0].value, again[1].value
    assert decision is not None and due_value is not None
    assert (decision["planned_channel"], decision["channel"], decision["adapted_from"], decision["reasons"]) == ("call", "sms", "call", ["adapted"])
    assert (due_value["channel"], due_value["adapted_from"]) == ("sms", "call")


def _daily_calls_after_a_conversation(supersede: bool) -> list[Output]:
    steps = [{"day": day, "channel": "call", "tone": "neutral", "message_id": f"m{day}"} for day in range(0, 10, 2)]
    policy = parse_policy({"version": "v1", "segments": {"unknown": "p"}, "plans": {"p": steps}, "contact_rules": {"supersede_held": supersede}})
    runner = TreatmentRunner(policy, default_timezone="UTC")
    outputs = runner.after(*_change("d1", "willing_able", _ts("2026-03-02T09:00:00Z"), "q1"))
    answered = _event("contact_responded", _ts("2026-03-02T09:30:00Z"), "r1", channel="call", outcome="answered")
    outputs += runner.after(answered, Step(None, (), "processed"))
    for _ in range(4):
        outputs += runner.idle(0, 4 * DAY)
    return outputs


def test_calls_held_through_the_quiet_days_go_as_one_with_supersede_held() -> None:
    def calls(outputs: list[Output]) -> list[str]:
        return [o.value["due_at"] for o in outputs if o.topic == CONTACT_DUE_TOPIC and o.value]

    # Calls on days 2, 4 and 6 are held until day 7 (a conversation on day 0): by default all
    # three go at 08:00 that day (each within 7 in 7 days); superseded, only the day-6 one.
    assert calls(_daily_calls_after_a_conversation(False)).count("2026-03-09T08:00:00Z") == 3
    outputs = _daily_calls_after_a_conversation(True)
    assert calls(outputs).count("2026-03-09T08:00:00Z") == 1
    skipped = [o.value for o in outputs if o.topic == CONTACT_DECISIONS_TOPIC and o.value and o.value["verdict"] == "skipped"]
    assert [(v["step"], v["reason"]) for v in skipped] == [(1, "superseded"), (2, "superseded")]


def test_a_held_step_of_a_plan_the_debtor_left_is_not_sent() -> None:
    policy = parse_policy(
        {
            "version": "v1",
            "segments": {"willing_able": "a", "unwilling_able": "b"},
            "plans": {"a": [{"day": 0, "channel": "call", "tone": "friendly", "message_id": "a0"}], "b": [{"day": 3, "channel": "letter", "tone": "strict", "message_id": "b3"}]},
        }
    )
    runner = TreatmentRunner(policy, default_timezone="UTC")
    outputs = runner.after(*_change("d1", "willing_able", _ts("2026-03-02T05:00:00Z"), "q1"))  # held till 08:00
    outputs += runner.after(*_change("d1", "unwilling_able", _ts("2026-03-02T06:00:00Z"), "q2"))
    outputs += runner.idle(0, DAY)
    decisions = [o.value for o in outputs if o.topic == CONTACT_DECISIONS_TOPIC and o.value]
    assert [(d["planned_channel"], d["verdict"], d["reason"]) for d in decisions] == [("call", "rescheduled", "outside_hours"), ("call", "skipped", "plan_ended")]
    assert not [o for o in outputs if o.topic == CONTACT_DUE_TOPIC]


# -- the property test: random policies and histories through a TreatmentRunner ------------------


def _change(debtor_id: str, label: str, ts: float, cause: str, *, persona: bool = False, reason: str = "behaviour") -> tuple[Event, Step]:
    kind, topic = ("persona_changed", PERSONA_CHANGES_TOPIC) if persona else ("quadrant_changed", QUADRANT_CHANGES_TOPIC)
    value = {"type": kind, kind.split("_")[0]: label, "cause_event_id": cause, "event_id": f"{kind}-{cause}", "occurred_at": _iso(ts), "reason": reason}
    return Event(cause, debtor_id, "call_rated", _iso(ts), ts, {}), Step(None, (Output(topic, debtor_id, value),), "processed")


@dataclass
class Known:
    """What the checker knows of one debtor: the events fed so far and the calls counted."""

    events: list[Event] = field(default_factory=list)
    calls: dict[str, float] = field(default_factory=dict)

    def setting(self, name: str) -> tuple[float, Any] | None:
        """The latest ``name`` of the debtor's preference events in event time (ties: fed last)."""
        best: tuple[float, int, Any] | None = None
        for n, event in enumerate(self.events):
            if event.type == "contact_preference_set" and name in event.data:
                if best is None or (event.ts, n) > (best[0], best[1]):
                    best = (event.ts, n, event.data[name])
        return None if best is None else (best[0], best[2])

    def timezone(self, default: str) -> tuple[str, str]:
        own = self.setting("timezone")
        if own is not None:
            return own[1], "preference"
        claims = [(e.ts, n, e.data["timezone"]) for n, e in enumerate(self.events) if e.type == "claim_opened" and e.data.get("timezone")]
        return (max(claims)[2], "claim") if claims else (default, "default")

    def opted_out(self, channel: str) -> bool:
        out, back_in = self.setting("opt_out_channels"), self.setting("opt_in_channels")
        if out is None or channel not in out[1]:
            return False
        return back_in is None or channel not in back_in[1] or back_in[0] <= out[0]

    def hour_ok(self, rules: ContactRules, tz: ZoneInfo, ts: float) -> bool:
        hour = datetime.fromtimestamp(math.floor(ts), tz).hour
        return self.mask_allows(rules, hour)

    def mask_allows(self, rules: ContactRules, hour: int) -> bool:
        if not rules.earliest_hour <= hour < rules.latest_hour:
            return False
        spans = self.setting("inconvenient_hours")
        for span in spans[1] if spans else ():
            start, end = span["from_hour"], span["to_hour"]
            if (start <= hour < end) if start <= end else (hour >= start or hour < end):
                return False
        return True

    def conversations(self) -> list[float]:
        return [e.ts for e in self.events if e.data.get("channel") == "call" and (e.type == "contact_initiated" or (e.type == "contact_responded" and e.data["outcome"] == "answered"))]

    def quiet_ok(self, rules: ContactRules, tz: ZoneInfo, ts: float) -> bool:
        days = rules.quiet_days_after_conversation
        today = datetime.fromtimestamp(math.floor(ts), tz).date()
        for conversation in self.conversations():
            if conversation <= ts and (today - datetime.fromtimestamp(conversation, tz).date()).days < days:
                return False
        return True

    def window_ok(self, rules: ContactRules, ts: float, leave_out: str = "") -> bool:
        window = rules.call_window_days * DAY
        times = sorted([t for key, t in self.calls.items() if key != leave_out] + [ts])
        for start in (t for t in times if ts - window < t <= ts):
            if bisect.bisect_left(times, start + window) - bisect.bisect_left(times, start) > rules.max_calls:
                return False
        return True

    def allowed(self, rules: ContactRules, tz: ZoneInfo, channel: str, ts: float) -> bool:
        return not self.broken(rules, tz, channel, ts)

    def broken(self, rules: ContactRules, tz: ZoneInfo, channel: str, ts: float) -> str:
        """The first rule a contact on ``channel`` at ``ts`` breaks ("": none)."""
        if self.opted_out(channel):
            return "opted out"
        if not self.hour_ok(rules, tz, ts):
            return f"hours ({datetime.fromtimestamp(math.floor(ts), tz).isoformat()})"
        if channel == "call" and not self.quiet_ok(rules, tz, ts):
            return f"quiet days after {[_iso(c) for c in self.conversations()]}"
        if channel == "call" and not self.window_ok(rules, ts):
            return f"call limit {sorted((_iso(t), t, key) for key, t in self.calls.items())}"
        return ""


class Checker:
    """Recomputes every rule from the events fed and the contact_due records emitted."""

    def __init__(self, policy: Policy, default_tz: str) -> None:
        self.policy, self.rules, self.default_tz = policy, policy.contact_rules, default_tz
        self.known: dict[str, Known] = defaultdict(Known)
        self.decisions: dict[str, list[dict[str, Any]]] = defaultdict(list)  # per step (contact_due id)
        self.sent: dict[str, dict[str, Any]] = {}  # contact_due id -> the record
        self.counts: dict[str, int] = defaultdict(int)
        self.assignment: dict[str, str] = {}  # debtor -> its latest treatment_assigned

    def fed(self, event: Event) -> None:
        known = self.known[event.debtor_id]
        known.events.append(event)
        if event.type == "contact_attempted" and event.data["channel"] == "call":
            known.calls[str(event.data.get("cause_event_id") or event.event_id)] = event.ts

    def outputs(self, outputs: list[Output]) -> None:
        for output in outputs:
            assert output.value is not None  # no erasure in these histories
            if output.topic == CONTACT_DECISIONS_TOPIC:
                self.decision(output.value)
            elif output.topic == CONTACT_DUE_TOPIC:
                self.due(output.value)
            else:
                assert output.topic == TREATMENTS_TOPIC or output.topic.startswith("debtor.channel.")
                if output.value["type"] == "treatment_assigned":
                    self.assignment[output.value["debtor_id"]] = output.value["event_id"]

    def decision(self, record: dict[str, Any]) -> None:
        errors = list(DECISION_SCHEMA.iter_errors(record))
        assert not errors, (record, errors[0].message)
        rules, known = self.rules, self.known[record["debtor_id"]]
        name, source = known.timezone(self.default_tz)
        assert (record["timezone"], record["timezone_source"]) == (name, source)
        tz = ZoneInfo(name)
        verdict, reasons, channel = record["verdict"], record["reasons"], record["channel"]
        assert verdict in VERDICTS and reasons and record["reason"] == reasons[0]
        self.counts[verdict] += 1
        decided = _ts(record["decided_at"])
        later = self._later_channels(record)
        # the channel: the plan's (or adapted), else the next later one not opted out
        base = record["replaced_from"] or channel
        if record["adapted_from"]:
            assert rules.adapt_channels and record["adapted_from"] == record["planned_channel"] != base and "adapted" in reasons
        else:
            assert base == record["planned_channel"]
        if record["replaced_from"]:
            assert known.opted_out(base) and "opted_out" in reasons
            assert channel == next(c for c in later if c != base and not known.opted_out(c))
        if verdict == "skipped":
            assert record["send_at"] is None
            held_before = self.decisions[record["cause_event_id"]]
            assert reasons[0] in ("opted_out", "no_allowed_hour", "plan_ended", "superseded"), reasons
            if reasons[0] in ("plan_ended", "superseded"):
                # Only a held step, decided again at its time: its plan ended, or (with
                # supersede_held) a later held step on its channel goes in its place.
                assert held_before and held_before[-1]["verdict"] == "rescheduled"
                if reasons[0] == "plan_ended":
                    assert record["assignment_id"] != self.assignment[record["debtor_id"]]
                else:
                    assert rules.supersede_held and record["assignment_id"] == self.assignment[record["debtor_id"]]
            elif "no_allowed_hour" in reasons:
                assert not any(known.mask_allows(rules, hour) for hour in range(24))
            else:
                assert known.opted_out(channel) and all(known.opted_out(c) for c in later if c != channel)
        else:
            send = _ts(record["send_at"])
            broken = known.broken(rules, tz, channel, send)
            assert not broken, ("decided on a time the rules forbid", broken, record)
            if verdict == "allowed":
                assert send == decided and not BLOCKING & set(reasons)
            else:
                assert send > decided and BLOCKING & set(reasons), record
                self._earliest(known, tz, channel, decided, send, record)
            if not known.hour_ok(rules, tz, decided):
                in_hours = rules.earliest_hour <= datetime.fromtimestamp(decided, tz).hour < rules.latest_hour
                assert ("inconvenient_hours" if in_hours else "outside_hours") in reasons
        steps = self.decisions[record["cause_event_id"]]
        if steps:  # decided again: only a held step, at the time it was moved to
            assert steps[-1]["verdict"] == "rescheduled" and steps[-1]["send_at"] == record["decided_at"]
            assert record["cause_event_id"] not in self.sent
        steps.append(record)

    def _later_channels(self, record: dict[str, Any]) -> list[str]:
        plan = self.policy.plans[record["plan_id"]]
        return [step.channel for step in plan.steps[record["step"] + 1 :]]

    def _earliest(self, known: Known, tz: ZoneInfo, channel: str, decided: float, send: float, record: dict[str, Any]) -> None:
        """No instant in [decided, send) is allowed: check each one where a rule may start to allow."""
        rules = self.rules
        window = rules.call_window_days * DAY
        candidates = {decided}
        candidates.update(float(math.ceil(t + window)) for t in known.calls.values())
        first, last = datetime.fromtimestamp(decided, tz).date(), datetime.fromtimestamp(send, tz).date()
        hours = [h for h in range(24) if known.mask_allows(rules, h) and (h == 0 or not known.mask_allows(rules, h - 1))]
        day = first
        while day <= last:
            for hour in (0, *hours):
                candidates.add(datetime(day.year, day.month, day.day, hour, tzinfo=tz).timestamp())
            day += timedelta(days=1)
        for candidate in sorted(candidates):
            if decided <= candidate < send:
                assert not known.allowed(rules, tz, channel, candidate), ("an earlier time was allowed", _iso(candidate), record)

    def due(self, value: dict[str, Any]) -> None:
        errors = list(DUE_SCHEMA.iter_errors(value))
        assert not errors, (value, errors[0].message)
        step_id = value["event_id"]
        assert step_id not in self.sent, "a step goes out once"
        decision = self.decisions[step_id][-1]
        assert value["decision_id"] == decision["event_id"] and decision["verdict"] in ("allowed", "rescheduled")
        assert (decision["send_at"], decision["channel"]) == (value["due_at"], value["channel"])
        known = self.known[value["debtor_id"]]
        name, _ = known.timezone(self.default_tz)
        assert value["timezone"] == name
        tz, ts, channel = ZoneInfo(name), _ts(value["due_at"]), value["channel"]
        rules = self.rules
        local = datetime.fromtimestamp(ts, tz)
        assert known.hour_ok(rules, tz, ts), ("outside the allowed hours", local.isoformat(), value)
        assert not known.opted_out(channel), ("on an opted-out channel", value)
        if channel == "call":
            assert known.quiet_ok(rules, tz, ts), ("within the quiet days after a conversation", local.isoformat(), known.conversations(), value)
            assert known.window_ok(rules, ts), ("over the call limit", value, sorted(known.calls.values()))
            window = value["best_window"]
            assert window is not None and window["timezone"] == name
            assert all(known.mask_allows(rules, h) for h in range(window["from_hour"], window["to_hour"]))
            known.calls[step_id] = ts
        else:
            assert "best_window" not in value
        self.sent[step_id] = value

    def finish(self, runner: TreatmentRunner) -> None:
        """Every step decided was sent, skipped, or (rescheduled) decided again; none is left held."""
        assert all(not state.contact.held for state in runner.states.values())
        for step_id, records in self.decisions.items():
            for before, after in zip(records, records[1:], strict=False):
                assert before["verdict"] == "rescheduled" and after["decided_at"] == before["send_at"]
            last = records[-1]
            if last["verdict"] == "skipped":
                assert step_id not in self.sent
            else:
                assert step_id in self.sent, ("a rescheduled step was never sent", records)
                assert self.sent[step_id]["decision_id"] == last["event_id"]


STEP_TONES = st.sampled_from(("friendly", "neutral", "strict"))
CALL_HEAVY = st.sampled_from(("call", "call", "call", "sms", "email"))


@st.composite
def plans(draw: Any) -> list[dict[str, Any]]:
    kind = draw(st.sampled_from(("mixed", "call_heavy", "daily_calls")))
    if kind == "daily_calls":
        days, per_day = draw(st.integers(3, 21)), draw(st.integers(1, 3))
        steps = [(day, "call") for day in range(days) for _ in range(per_day)]
        steps += [(draw(st.integers(0, days)), draw(st.sampled_from(CHANNELS))) for _ in range(draw(st.integers(0, 3)))]
    else:
        channel = CALL_HEAVY if kind == "call_heavy" else st.sampled_from(CHANNELS)
        steps = draw(st.lists(st.tuples(st.integers(0, 30), channel), min_size=1, max_size=12))
    return [{"day": day, "channel": channel, "tone": draw(STEP_TONES), "message_id": f"m{n}"} for n, (day, channel) in enumerate(steps[:64])]


@st.composite
def contact_rules(draw: Any) -> dict[str, Any]:
    rules: dict[str, Any] = {}
    if draw(st.booleans()):
        rules["max_calls"] = draw(st.one_of(st.integers(1, 10), st.integers(1, 100)))
    if draw(st.booleans()):
        rules["call_window_days"] = draw(st.one_of(st.integers(1, 10), st.integers(1, 60)))
    if draw(st.booleans()):
        rules["quiet_days_after_conversation"] = draw(st.one_of(st.integers(0, 10), st.integers(0, 60)))
    if draw(st.booleans()):
        earliest = draw(st.integers(0, 23))
        rules["earliest_hour"], rules["latest_hour"] = earliest, draw(st.integers(earliest + 1, 24))
    if draw(st.booleans()):
        rules["adapt_channels"], rules["adapt_after"] = True, draw(st.integers(1, 4))
    if draw(st.booleans()):
        rules["supersede_held"] = True
    return rules


@st.composite
def policies(draw: Any) -> Policy:
    plan_ids = [f"p{n}" for n in range(draw(st.integers(1, 3)))]
    document = {
        "version": "v1",
        "plans": {plan_id: draw(plans()) for plan_id in plan_ids},
        "segments": {label: draw(st.sampled_from(plan_ids)) for label in ("unknown", *draw(st.lists(st.sampled_from((*QUADRANTS, "tamara", "job/willing_able")), unique=True)))},
        "contact_rules": draw(contact_rules()),
        "channel_topics": draw(st.booleans()),
    }
    return parse_policy(document)


# Mostly short spans (some over midnight), now and then any span at all.
short_span = st.tuples(st.integers(0, 23), st.integers(0, 5)).map(lambda s: {"from_hour": s[0], "to_hour": s[0] + s[1] if s[0] + s[1] <= 24 else s[0] + s[1] - 24})
any_span = st.fixed_dictionaries({"from_hour": st.integers(0, 23), "to_hour": st.integers(0, 24)})
spans = st.lists(st.one_of(short_span, short_span, any_span), max_size=3)
channel_lists = st.lists(st.sampled_from(CHANNELS), max_size=3)
PREFERENCE_FIELDS = {"timezone": st.sampled_from(ZONES), "opt_out_channels": channel_lists, "opt_in_channels": channel_lists, "inconvenient_hours": spans}
preferences = st.sets(st.sampled_from(sorted(PREFERENCE_FIELDS)), min_size=1).flatmap(lambda names: st.fixed_dictionaries({name: PREFERENCE_FIELDS[name] for name in names}))
happenings = st.one_of(
    st.tuples(st.just("change"), st.sampled_from((*QUADRANTS, "tamara", "job"))),
    st.tuples(st.just("attempt"), st.sampled_from(("call", "call", "call", "email", "sms", "letter"))),
    st.tuples(st.just("answered"), st.none()),
    st.tuples(st.just("responded"), st.sampled_from(("email", "sms", "whatsapp", "letter"))),
    st.tuples(st.just("initiated"), st.sampled_from(("call", "portal", "email"))),
    st.tuples(st.just("preference"), preferences),
    st.tuples(st.just("preference"), st.fixed_dictionaries({"opt_out_channels": st.lists(st.sampled_from(("call", "call", "sms", "email")), min_size=1, max_size=2)})),
    st.tuples(st.just("claim"), st.one_of(st.none(), st.sampled_from(ZONES))),
    st.tuples(st.just("idle"), st.none()),
)
# Around the 2026 clock changes: New York, Amsterdam and Sydney in spring, all three in autumn.
STARTS = (_ts("2026-03-05T00:00:00Z"), _ts("2026-09-30T00:00:00Z"), _ts("2026-01-12T00:00:00Z"))
histories = st.lists(
    st.tuples(st.sampled_from(("d1", "d2", "d3")), st.integers(0, 35 * 24 * 60), st.booleans(), happenings),
    min_size=1,
    max_size=60,
)


def _inbound(kind: str, arg: Any, debtor_id: str, ts: float, event_id: str) -> Event:
    if kind == "attempt":
        return _event("contact_attempted", ts, event_id, debtor_id, channel=arg, direction="outbound")
    if kind == "answered":
        return _event("contact_responded", ts, event_id, debtor_id, channel="call", outcome="answered")
    if kind == "responded":
        return _event("contact_responded", ts, event_id, debtor_id, channel=arg, outcome="replied")
    if kind == "initiated":
        return _event("contact_initiated", ts, event_id, debtor_id, channel=arg, direction="inbound")
    if kind == "preference":
        return _event("contact_preference_set", ts, event_id, debtor_id, **arg)
    assert kind == "claim"
    extra = {"timezone": arg} if arg else {}
    return _event("claim_opened", ts, event_id, debtor_id, claim_id=f"c-{event_id}", creditor_id="cr", principal_cents=10_000, **extra)


@settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],  # no slow "explain" phase
)
@given(policies(), st.sampled_from(ZONES), st.sampled_from(STARTS), histories, st.randoms(use_true_random=False))
def test_no_contact_due_ever_breaks_a_rule(policy: Policy, default_tz: str, start: float, history: list[Any], rng: Any) -> None:
    runner = TreatmentRunner(policy, default_timezone=default_tz)
    checker = Checker(policy, default_tz)
    queue: list[tuple[float, int, str, str, Any]] = []
    for n, (debtor_id, minute, fraction, (kind, arg)) in enumerate(history):
        ts = start + minute * 60.0 + (rng.randrange(1, 1_000_000) / 1e6 if fraction else 0.0)
        queue.append((ts, n, debtor_id, kind, arg))
    for debtor_id in ("d1", "d2", "d3"):  # every debtor is in a segment from the start
        queue.append((start + rng.randrange(0, 600) * 60.0, -1, debtor_id, "change", rng.choice(QUADRANTS)))
    heapq.heapify(queue)
    seq = len(history)
    while queue:
        ts, n, debtor_id, kind, arg = heapq.heappop(queue)
        event_id = f"e{n}-{debtor_id}"
        if kind == "idle":
            # Every debtor is on partition 0: the runner's clock is that partition's (-inf: none yet).
            clock = runner.clock
            outputs = runner.idle(0, ts - clock) if clock > -math.inf and ts > clock else []
        elif kind == "change":
            event, step = _change(debtor_id, arg, ts, event_id, persona=arg in ("tamara", "job"))
            outputs = runner.after(event, step, emitted_at="x")
        else:
            if kind == "dialed":  # the dialer's attempt of a call the guard made due
                event = _event("contact_attempted", ts, event_id, debtor_id, channel="call", direction="outbound", cause_event_id=arg)
            else:
                event = _inbound(kind, arg, debtor_id, ts, event_id)
            checker.fed(event)
            outputs = runner.after(event, Step(None, (), "processed"), emitted_at="x")
        checker.outputs(outputs)
        # Most contacts made due are attempted, some at once, some later; a few calls are answered.
        now = max(ts, runner.clock)
        for output in outputs:
            if output.topic != CONTACT_DUE_TOPIC or output.value is None or rng.random() < 0.3:
                continue
            at = now + rng.choice((0.0, 60.0, 1800.0, 7200.0)) + rng.choice((0.0, rng.random()))
            seq += 1
            if output.value["channel"] == "call":
                heapq.heappush(queue, (at, seq, output.value["debtor_id"], "dialed", output.value["event_id"]))
                if rng.random() < 0.25:
                    seq += 1
                    heapq.heappush(queue, (at + 120.0, seq, output.value["debtor_id"], "answered", None))
            else:
                heapq.heappush(queue, (at, seq, output.value["debtor_id"], "attempt", output.value["channel"]))
    # Run the clock on until nothing is held (64 calls at one per 60 days take years).
    for _ in range(20):
        checker.outputs(runner.idle(0, 400 * DAY))
        if not any(state.contact.held for state in runner.states.values()):
            break
    checker.finish(runner)
    assert sum(checker.counts.values()) > 0
    for verdict, count in checker.counts.items():
        statistic(f"{verdict}: {'1-9' if count < 10 else '10+'}")
    for reason in sorted({reason for records in checker.decisions.values() for record in records for reason in record["reasons"]}):
        statistic(f"reason {reason}")
