"""What the guard knows about a debtor: folding events, latest setting per field, bounds, storage."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from debtor_segments.schemas import load_schema
from debtor_segments.streams.answer_rates import AnswerCounts, PortfolioRates, cell_of
from debtor_segments.streams.contact_guard import decide
from debtor_segments.streams.contact_state import OBSERVED_TYPES, ContactState, observe
from debtor_segments.streams.events import DecodeError, decode_object
from debtor_segments.streams.policy import CHANNELS, ContactRules
from debtor_segments.streams.treatments import TreatmentState, read_stored, stored_key, stored_value
from tests.streams.conftest import make_event

DAY = 86_400.0
T0 = 1_772_359_200.0  # 2026-03-01T10:00:00Z
#: The bounds of a debtor's contact state, as the policy schema implies them (they must hold for
#: every rule setting a policy may set): two rolling windows' worth of calls at the largest
#: ``max_calls``, dropped once two of the longest windows older than the time decided; the
#: latest four conversations.
_RULE_BOUNDS = load_schema("policy")["properties"]["contact_rules"]["properties"]
MAX_CALLS = 2 * int(_RULE_BOUNDS["max_calls"]["maximum"])
CALL_HORIZON_S = 2 * int(_RULE_BOUNDS["call_window_days"]["maximum"]) * DAY
MAX_CONVERSATIONS = 4
ZONES = ("Europe/Amsterdam", "America/New_York", "Australia/Sydney", "Asia/Kathmandu", "Asia/Kolkata", "UTC")


def _iso(ts: float) -> str:
    import time

    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _pref(ts: float, event_id: str = "p", **fields: Any) -> Any:
    body = {"event_id": event_id, "debtor_id": "d1", "type": "contact_preference_set", "occurred_at": _iso(ts), **fields}
    return decode_object(body)


# -- decoding contact_preference_set --------------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {"timezone": "Asia/Kathmandu"},
        {"opt_out_channels": ["sms", "call"]},
        {"opt_out_channels": []},
        {"opt_in_channels": ["call"]},
        {"inconvenient_hours": [{"from_hour": 22, "to_hour": 6}, {"from_hour": 23, "to_hour": 24}]},
        {"inconvenient_hours": []},
        {"timezone": "America/New_York", "opt_out_channels": ["letter"], "opt_in_channels": ["email"], "inconvenient_hours": [{"from_hour": 0, "to_hour": 0}]},
    ],
)
def test_valid_preferences_decode(fields: dict[str, Any]) -> None:
    event = _pref(T0, **fields)
    assert event.type == "contact_preference_set" and event.ts == T0
    for name, value in fields.items():
        assert event.data[name] == value


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"timezone": "Mars/Olympus"}, "invalid_timezone"),
        ({"timezone": "../../etc/passwd"}, "invalid_timezone"),
        ({"timezone": "CET+1"}, "invalid_timezone"),
        ({}, None),  # no preference field at all
        ({"opt_out_channels": ["portal"]}, "invalid_field"),
        ({"opt_out_channels": "sms"}, "invalid_field"),
        ({"inconvenient_hours": [{"from_hour": 24, "to_hour": 2}]}, "invalid_field"),
        ({"inconvenient_hours": [{"from_hour": 2, "to_hour": 25}]}, "invalid_field"),
        ({"inconvenient_hours": [{"from_hour": 2}]}, None),
        ({"inconvenient_hours": [{"from_hour": 2, "to_hour": 3, "note": "x"}]}, "invalid_field"),
        ({"timezone": ""}, "invalid_field"),
    ],
)
def test_invalid_preferences_are_rejected(fields: dict[str, Any], reason: str | None) -> None:
    with pytest.raises(DecodeError) as error:
        _pref(T0, **fields)
    if reason is not None:
        assert error.value.reason == reason


def test_an_unknown_claim_timezone_is_rejected_too() -> None:
    with pytest.raises(DecodeError) as error:
        make_event("claim_opened", timezone="Europe/Atlantis")
    assert error.value.reason == "invalid_timezone"
    assert make_event("claim_opened", timezone="Asia/Kolkata").data["timezone"] == "Asia/Kolkata"


# -- folding events -------------------------------------------------------------------------------


def test_time_zone_source_preference_then_claim_then_default() -> None:
    state = ContactState()
    assert state.timezone("Europe/Amsterdam") == ("Europe/Amsterdam", "default")
    assert observe(state, make_event("claim_opened", at=_iso(T0), timezone="Asia/Kolkata"))
    assert state.timezone("Europe/Amsterdam") == ("Asia/Kolkata", "claim")
    # an older claim's zone does not replace a newer one's; a claim without one keeps it
    observe(state, make_event("claim_opened", event_id="e2", at=_iso(T0 - DAY), claim_id="c2", timezone="America/New_York"))
    observe(state, make_event("claim_opened", event_id="e3", at=_iso(T0 + DAY), claim_id="c3"))
    assert state.timezone("UTC") == ("Asia/Kolkata", "claim")
    observe(state, _pref(T0 - 5 * DAY, timezone="Australia/Sydney"))  # even an old preference beats a claim
    assert state.timezone("UTC") == ("Australia/Sydney", "preference")
    observe(state, make_event("claim_opened", event_id="e4", at=_iso(T0 + 2 * DAY), claim_id="c4", timezone="UTC"))
    assert state.timezone("UTC") == ("Australia/Sydney", "preference")
    assert state.claims == ["c1", "c2", "c3", "c4"]


def test_latest_setting_per_field_wins_in_event_time() -> None:
    state = ContactState()
    observe(state, _pref(T0 + DAY, "p1", timezone="America/New_York", opt_out_channels=["sms"]))
    # older in event time, fed later: it changes only the fields it is the latest of
    assert observe(state, _pref(T0, "p0", timezone="Asia/Kolkata", opt_out_channels=["call"], inconvenient_hours=[{"from_hour": 12, "to_hour": 13}]))
    assert state.timezone("UTC") == ("America/New_York", "preference")
    assert state.opt_out == ["sms"]
    assert state.inconvenient == [[12, 13]]
    assert not observe(state, _pref(T0 - DAY, "p-1", timezone="UTC"))  # nothing newer: no change
    # a later list replaces the earlier one (it does not add to it)
    observe(state, _pref(T0 + 2 * DAY, "p2", opt_out_channels=["email", "email"], inconvenient_hours=[{"from_hour": 20, "to_hour": 9}, {"from_hour": 20, "to_hour": 9}]))
    assert state.opt_out == ["email"] and state.inconvenient == [[20, 9]]
    assert not state.opted_out("sms") and state.opted_out("email")
    # equal event times: the one fed last wins
    observe(state, _pref(T0 + 2 * DAY, "p3", opt_out_channels=["visit"]))
    assert state.opt_out == ["visit"]


def test_an_opt_in_lifts_only_an_earlier_opt_out() -> None:
    state = ContactState()
    observe(state, _pref(T0, "p1", opt_out_channels=["sms", "call"]))
    observe(state, _pref(T0 - DAY, "p0", opt_in_channels=["sms"]))  # before the opt-out: no effect
    assert state.opted_out("sms") and state.opted_out("call")
    observe(state, _pref(T0 + DAY, "p2", opt_in_channels=["sms"]))
    assert not state.opted_out("sms") and state.opted_out("call") and not state.opted_out("email")
    observe(state, _pref(T0 + 2 * DAY, "p3", opt_out_channels=["sms"]))  # opted out again, later
    assert state.opted_out("sms") and not state.opted_out("call")
    same = ContactState()
    observe(same, _pref(T0, "p4", opt_out_channels=["sms"], opt_in_channels=["sms"]))  # one event: not later
    assert same.opted_out("sms")


def test_calls_conversations_and_unanswered_contacts() -> None:
    state = ContactState()
    observe(state, make_event("contact_attempted", event_id="a1", at=_iso(T0), channel="call"))
    observe(state, make_event("contact_attempted", event_id="a2", at=_iso(T0 + 60), channel="email"))
    observe(state, make_event("contact_attempted", event_id="a3", at=_iso(T0 + 120), channel="email"))
    assert state.calls == [[T0, "a1"]]
    assert state.unanswered_on("email") == 2 and state.unanswered_on("call") == 1 and state.unanswered_on("portal") == 0
    observe(state, make_event("contact_responded", event_id="r1", at=_iso(T0 + 180), channel="email", outcome="opened"))
    assert state.unanswered_on("email") == 0 and state.responsive == "email"
    assert state.conversations == []  # an opened email is no telephone conversation
    observe(state, make_event("contact_responded", event_id="r2", at=_iso(T0 + 240), channel="call", outcome="replied"))
    assert state.conversations == []
    observe(state, make_event("contact_responded", event_id="r3", at=_iso(T0 + 300), channel="call", outcome="answered"))
    observe(state, make_event("contact_initiated", event_id="i1", at=_iso(T0 + 400), channel="call", direction="inbound"))
    observe(state, make_event("contact_initiated", event_id="i2", at=_iso(T0 + 500), channel="portal", direction="inbound"))
    assert state.conversations == [T0 + 300, T0 + 400]
    assert state.responsive == "call"  # the portal is no channel of ours
    # a response older than the latest one does not change the responsive channel
    observe(state, make_event("contact_responded", event_id="r4", at=_iso(T0 - DAY), channel="sms", outcome="clicked"))
    assert state.responsive == "call" and state.unanswered_on("sms") == 0


def test_an_attempt_of_a_call_the_guard_made_due_replaces_its_count() -> None:
    state = ContactState()
    state.add_call(T0, "contact_due-x")
    observe(state, make_event("contact_attempted", event_id="a1", at=_iso(T0 + 1800), channel="call", cause_event_id="contact_due-x"))
    assert state.calls == [[T0 + 1800, "contact_due-x"]]
    observe(state, make_event("contact_attempted", event_id="a2", at=_iso(T0 + 3600), channel="call"))
    assert state.calls == [[T0 + 1800, "contact_due-x"], [T0 + 3600, "a2"]]
    observe(state, make_event("contact_attempted", event_id="a3", at=_iso(T0 - 3600), channel="call", cause_event_id="contact_due-y"))
    assert [entry[0] for entry in state.calls] == [T0 - 3600, T0 + 1800, T0 + 3600]  # kept in time order


def test_claims_open_and_close() -> None:
    state = ContactState()
    observe(state, make_event("claim_opened", claim_id="c1"))
    assert not observe(state, make_event("claim_opened", event_id="e2", claim_id="c1"))  # known, no zone
    observe(state, make_event("claim_opened", event_id="e3", claim_id="c2"))
    assert observe(state, make_event("claim_closed", event_id="e4", claim_id="c1"))
    assert not observe(state, make_event("claim_closed", event_id="e5", claim_id="c9"))
    assert state.claims == ["c2"]
    for n in range(40):
        observe(state, make_event("claim_opened", event_id=f"x{n}", claim_id=f"k{n}"))
    assert len(state.claims) == 16 and state.claims[-1] == "k39"


def test_other_events_leave_the_state_alone() -> None:
    state = ContactState()
    for kind in ("payment_received", "call_rated", "installment_missed", "arrangement_agreed"):
        assert kind not in OBSERVED_TYPES
        assert not observe(state, make_event(kind))
    assert state == ContactState()


def test_answers_are_learned_in_the_debtors_local_cell() -> None:
    state, portfolio = ContactState(), PortfolioRates()
    observe(state, _pref(T0 - DAY, timezone="America/New_York"))
    at = 1_772_476_200.0  # 2026-03-02T18:30:00Z: Monday 13:30 in New York, 19:30 in Amsterdam
    observe(state, make_event("contact_attempted", event_id="a1", at=_iso(at), channel="call"), portfolio, "Europe/Amsterdam")
    observe(state, make_event("contact_responded", event_id="r1", at=_iso(at + 60), channel="call", outcome="answered"), portfolio, "Europe/Amsterdam")
    cell = cell_of(0, 13)
    assert state.rates.attempts[cell] == 1 and state.rates.answers[cell] == 1 and state.rates.calls == 1
    assert portfolio.attempts[cell] == 1 and portfolio.answers[cell] == 1
    # without a zone of its own, the default's local time places it (Saturday 2026-03-07 02:00 UTC)
    other = ContactState()
    observe(other, make_event("contact_attempted", event_id="a2", at="2026-03-07T02:00:00Z", channel="call"), None, "America/New_York")
    assert other.rates.attempts[cell_of(4, 21)] == 1  # Friday 21:00 in New York


# -- bounds ---------------------------------------------------------------------------------------


def test_a_debtor_called_a_thousand_times_keeps_the_bound() -> None:
    state = ContactState()
    for n in range(1000):
        observe(state, make_event("contact_attempted", event_id=f"a{n}", at=_iso(T0 + n * 3600.0), channel="call"))
        assert len(state.calls) <= MAX_CALLS
    assert len(state.calls) == MAX_CALLS
    assert state.calls[-1] == [T0 + 999 * 3600.0, "a999"]
    assert [entry[0] for entry in state.calls] == sorted(entry[0] for entry in state.calls)
    for n in range(50):
        observe(state, make_event("contact_responded", event_id=f"r{n}", at=_iso(T0 + n * 3600.0), channel="call", outcome="answered"))
    assert len(state.conversations) == MAX_CONVERSATIONS
    assert state.conversations[-1] == T0 + 49 * 3600.0
    assert len(orjson.dumps(state.to_dict())) < 40_000


def test_calls_far_older_than_the_time_decided_are_dropped() -> None:
    state = ContactState()
    state.add_call(T0, "old")
    state.add_call(T0 + CALL_HORIZON_S + DAY, "new")
    assert state.calls == [[T0 + CALL_HORIZON_S + DAY, "new"]]
    # A call the guard places far ahead of the time it decides does not push out the calls
    # around that time: steps decided after it (a plan decided at once) still count them.
    state = ContactState()
    state.add_call(T0, "near")
    state.add_call(T0 + 400 * DAY, "ahead", now=T0 + DAY)
    assert [entry[1] for entry in state.calls] == ["near", "ahead"]
    state.add_call(T0 + 401 * DAY, "observed")  # a recorded attempt: its own time is the time decided
    assert [entry[1] for entry in state.calls] == ["ahead", "observed"]


rules_in_schema = st.builds(
    ContactRules,
    max_calls=st.one_of(st.integers(1, 10), st.integers(1, 100)),
    call_window_days=st.one_of(st.integers(1, 10), st.integers(1, 60)),
    quiet_days_after_conversation=st.integers(0, 60),
    earliest_hour=st.integers(0, 12),
    latest_hour=st.integers(13, 24),
)


@settings(max_examples=250, deadline=None)
@given(
    rules_in_schema,
    st.integers(1, 250),
    st.sampled_from((0.02 * DAY, 0.2 * DAY, DAY, 8 * DAY)),
    st.randoms(use_true_random=False),
    st.lists(st.floats(0.0, 40 * DAY), max_size=8),
    st.floats(0.0, 1.0),
    st.floats(0.0, 3 * DAY),
    st.sampled_from(ZONES),
)
def test_the_kept_calls_decide_as_all_of_them_would(rules: ContactRules, count: int, spacing: float, rng: Any, conversations: list[float], back: float, ahead: float, name: str) -> None:
    """Whatever the rules (within the policy schema), dropping old calls never changes a
    decision about a time at most one window before the newest call."""
    bounded, everything = ContactState(), ContactState()
    ts = T0
    for n in range(count):
        ts += rng.random() * 2 * spacing
        bounded.add_call(ts, f"c{n}")
        everything.calls.append([ts, f"c{n}"])
    for offset in sorted(conversations):
        bounded.conversations = sorted([*bounded.conversations, T0 + offset])[-MAX_CONVERSATIONS:]
        everything.conversations.append(T0 + offset)
    window = rules.call_window_days * DAY
    at = max(ts - back * window, max(everything.conversations, default=T0)) + ahead
    kept, full = decide(bounded, "call", at, rules, (), name), decide(everything, "call", at, rules, (), name)
    assert kept == full, (len(bounded.calls), count, kept.send_ts, full.send_ts)


def test_the_bound_holds_at_the_largest_rules_the_schema_allows() -> None:
    # Found by the property above: with max_calls 40 the 41st call in a day was allowed (only
    # 32 calls were kept), and with a 60-day window calls more than 31 days old were forgotten.
    rules = ContactRules(max_calls=40, call_window_days=7, earliest_hour=0, latest_hour=24)
    state = ContactState()
    for n in range(40):
        state.add_call(T0 + n * 600.0, f"c{n}")
    assert decide(state, "call", T0 + 41 * 600.0, rules, (), "UTC").verdict == "rescheduled"
    rules = ContactRules(max_calls=7, call_window_days=60, earliest_hour=0, latest_hour=24)
    state = ContactState()
    for n, day in enumerate((0, 6, 12, 18, 24, 30, 36)):
        state.add_call(T0 + day * DAY, f"c{n}")
    decision = decide(state, "call", T0 + 37 * DAY, rules, (), "UTC")
    assert decision.verdict == "rescheduled" and decision.send_ts == T0 + 60 * DAY
    assert decision.reasons == ("call_limit",)


# -- storage --------------------------------------------------------------------------------------

finite_ts = st.floats(1.5e9, 2.0e9)
maybe_ts = st.one_of(st.just(float("-inf")), finite_ts)
channels = st.lists(st.sampled_from(CHANNELS), unique=True, max_size=6).map(sorted)
spans = st.lists(st.lists(st.integers(0, 24), min_size=2, max_size=2), max_size=4)
held_value = st.fixed_dictionaries({"event_id": st.text(min_size=1, max_size=8), "channel": st.sampled_from(CHANNELS), "step": st.integers(0, 9)})
states = st.builds(
    ContactState,
    tz_name=st.sampled_from(("", *ZONES)),
    tz_ts=maybe_ts,
    claim_tz_name=st.sampled_from(("", *ZONES)),
    claim_tz_ts=maybe_ts,
    opt_out=channels,
    opt_out_ts=maybe_ts,
    opt_in=channels,
    opt_in_ts=maybe_ts,
    inconvenient=spans,
    inconvenient_ts=maybe_ts,
    calls=st.lists(st.tuples(finite_ts, st.text(min_size=1, max_size=10)).map(list), max_size=6),
    conversations=st.lists(finite_ts, max_size=4),
    unanswered=st.lists(st.integers(0, 50), min_size=len(CHANNELS), max_size=len(CHANNELS)),
    responsive=st.sampled_from(("", *CHANNELS)),
    responsive_ts=maybe_ts,
    rates=st.builds(AnswerCounts, st.lists(st.integers(0, 9), min_size=16, max_size=16), st.lists(st.integers(0, 9), min_size=16, max_size=16)),
    claims=st.lists(st.text(min_size=1, max_size=6), max_size=16),
    held=st.lists(st.tuples(finite_ts, held_value, finite_ts).map(list), max_size=3),
    decisions=st.integers(0, 10_000),
)


@settings(max_examples=150, deadline=None)
@given(states)
def test_to_dict_from_dict_round_trip(state: ContactState) -> None:
    assert ContactState.from_dict(state.to_dict()) == state
    stored = orjson.loads(orjson.dumps(state.to_dict()))  # as the table stores it
    assert ContactState.from_dict(stored) == state
    treatment = TreatmentState("d1", plan_id="p", contact=state)
    partition, again = read_stored(stored_key("d1"), stored_value(treatment, 2)) or (None, None)
    assert partition == 2 and again == treatment


def test_a_new_state_stores_as_nothing() -> None:
    assert ContactState().to_dict() == {}
    assert ContactState.from_dict({}) == ContactState()
    state = ContactState(decisions=3, calls=[[T0, "a"]])
    assert state.to_dict() == {"decisions": 3, "calls": [[T0, "a"]]}


def test_an_answer_is_filed_under_the_band_of_the_call_it_answers() -> None:
    state = ContactState()
    # 11:59:50 in UTC (the default zone here), answered 15 s later, in the next band
    observe(state, make_event("contact_attempted", event_id="a1", at="2026-03-02T11:59:50Z", channel="call"), default_tz="UTC")
    observe(state, make_event("contact_responded", event_id="r1", at="2026-03-02T12:00:05Z", channel="call", outcome="answered"), default_tz="UTC")
    band = cell_of(0, 11)
    assert (state.rates.attempts[band], state.rates.answers[band]) == (1, 1)
    assert state.rates.overall() == (1, 1)
