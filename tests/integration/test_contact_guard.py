"""The contact guard end to end (issue 16): a real worker with a policy that would call every day,
a portfolio with time zones, inconvenient hours, opt-outs, conversations and busy collectors,
and what the worker wrote read back with kcat, an independent client.

Everything is checked here with the test's own code (zoneinfo, its own fold of the events it
published), never with the guard's functions: every call the worker made due keeps to the
contact rules, every contact_due has the decision that let it go, every decision validates
against schemas/contact_decision.json and is keyed ``<debtor>/<n>``, the decision topic is
compacted and retained as configured, and an erasure deletes every decision of its debtor.
"""

from __future__ import annotations

import subprocess
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from jsonschema import Draft202012Validator, FormatChecker

from tests.integration.test_service import Worker, delete_topics, new_prefix, produce, start_workers, wait_caught_up

ROOT = Path(__file__).resolve().parents[2]
DAY = 86_400.0
DECISIONS = "debtor.contact-decisions"
DUE = "debtor.contact-due"
#: The rules the policy sets (written out, not taken from the project's defaults).
MAX_CALLS, WINDOW_DAYS, QUIET_DAYS, EARLIEST, LATEST = 7, 7, 7, 8, 21
#: The deployment default time zone (agents.settings; set explicitly for the worker below).
DEFAULT_TZ = "Europe/Amsterdam"
#: Not the three-year default: the topic must carry the configured setting.
RETENTION_MS = 3 * 365 * 24 * 3600 * 1000 + 86_400_000
#: How long after an event the stream's clock may reach a step it decides (records of other
#: debtors move a partition's clock): a step due this soon before a preference change may
#: already have been decided with it.
SLACK_S = 5 * DAY
PREFIXES: list[str] = []
TOKEN = "agent-contact-guard-0123456789"
CHANNELS = ("letter", "email", "sms", "call", "whatsapp", "visit")

POLICY: dict[str, Any] = {
    "version": "contact-guard-it-1",
    "restart_after_days": 1,
    "contact_rules": {
        "max_calls": MAX_CALLS,
        "call_window_days": WINDOW_DAYS,
        "quiet_days_after_conversation": QUIET_DAYS,
        "earliest_hour": EARLIEST,
        "latest_hour": LATEST,
    },
    # A call every day for three weeks, then an sms and an email (the replacements of an
    # opted-out channel are the plan's later channels).
    "plans": {
        "daily": [
            *({"day": day, "channel": "call", "tone": "neutral", "message_id": f"call-{day}"} for day in range(20)),
            {"day": 20, "channel": "sms", "tone": "neutral", "message_id": "sms"},
            {"day": 21, "channel": "email", "tone": "neutral", "message_id": "email"},
        ]
    },
    "segments": {label: "daily" for label in ("unknown", "willing_able", "willing_unable", "unwilling_able", "unwilling_unable")},
}


@pytest.fixture(scope="module", autouse=True)
def _delete_topics(kafka_bootstrap: str) -> Iterator[None]:
    yield
    delete_topics(kafka_bootstrap, PREFIXES)


def _ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- the portfolio ---------------------------------------------------------------------------------


@dataclass
class Portfolio:
    lines: list[bytes]
    roles: dict[str, str]  # role -> debtor id
    last_ts: float
    erased_at: float


def build_portfolio() -> Portfolio:
    """A simulated portfolio (two months, autumn 2026: both DST ends) with the contact facts of
    a dozen debtors laid over it; every line in event-time order, as a live feed delivers them."""
    from debtor_segments.streams.simulation import simulate

    sim = simulate(debtors=40, months=2, seed=5, start="2026-09-14", late_share=0.0, duplicate_share=0.0, bad_share=0.0)
    events = [orjson.loads(line) for line in sim.lines]
    debtors = list(dict.fromkeys(event["debtor_id"] for event in events))
    first = {debtor: min(_ts(e["occurred_at"]) for e in events if e["debtor_id"] == debtor) for debtor in debtors}
    names = ["ny", "tokyo", "kolkata", "no_calls", "no_channel", "late_opt_out", "talker", "caller", "busy", "erased", "sydney", "mover", "opt_in"]
    roles = dict(zip(names, debtors, strict=False))
    extra: list[dict[str, Any]] = []
    serial = iter(range(1, 10_000))

    def add(role: str, offset_s: float, kind: str, **body: Any) -> None:
        debtor = roles[role]
        extra.append({"event_id": f"cg-{next(serial)}", "debtor_id": debtor, "type": kind, "occurred_at": _iso(first[debtor] + offset_s), **body})

    def prefer(role: str, offset_s: float, **body: Any) -> None:
        add(role, offset_s, "contact_preference_set", **body)

    prefer("ny", -3600, timezone="America/New_York", inconvenient_hours=[{"from_hour": 12, "to_hour": 14}])
    prefer("kolkata", -3600, timezone="Asia/Kolkata", inconvenient_hours=[{"from_hour": 18, "to_hour": 21}])
    prefer("no_calls", -3600, opt_out_channels=["call"])
    prefer("no_channel", -3600, opt_out_channels=["call", "sms", "email"])
    prefer("late_opt_out", 12 * DAY, opt_out_channels=["call"])
    prefer("sydney", -3600, timezone="Australia/Sydney", inconvenient_hours=[{"from_hour": 20, "to_hour": 9}])
    prefer("mover", -3600, timezone="Europe/Lisbon")
    prefer("mover", 20 * DAY, timezone="America/Los_Angeles")
    prefer("opt_in", -3600, opt_out_channels=["call"])
    prefer("opt_in", 25 * DAY, opt_in_channels=["call"])
    for day in (14, 28, 40):  # answered calls: seven quiet local days after each
        add("talker", day * DAY, "contact_attempted", channel="call", direction="outbound")
        add("talker", day * DAY + 120, "contact_responded", channel="call", outcome="answered")
    add("caller", 18 * DAY, "contact_initiated", channel="call", direction="inbound")
    for day in range(16, 24):  # a collector dialling twice a day on top of the plan
        for hour in (9.5, 15.5):
            add("busy", day * DAY + hour * 3600, "contact_attempted", channel="call", direction="outbound")
    for event in events:
        if event["debtor_id"] == roles["tokyo"] and event["type"] == "claim_opened":
            event["timezone"] = "Asia/Tokyo"
    erased_at = first[roles["erased"]] + 30 * DAY
    add("erased", 30 * DAY, "erasure_requested")
    merged = [e for e in events if not (e["debtor_id"] == roles["erased"] and _ts(e["occurred_at"]) >= erased_at)] + extra
    merged.sort(key=lambda e: (_ts(e["occurred_at"]), e["type"] == "erasure_requested"))
    return Portfolio([orjson.dumps(e) for e in merged], roles, max(_ts(e["occurred_at"]) for e in merged), erased_at)


# --- the test's own fold of what it published ----------------------------------------------------------


@dataclass
class ContactSettings:
    """A debtor's contact settings at one time, as this test understands contact_preference_set."""

    timezone: str
    source: str
    opted_out: frozenset[str]
    inconvenient: tuple[tuple[int, int], ...]

    def allowed_hour(self, hour: int) -> bool:
        if not EARLIEST <= hour < LATEST:
            return False
        for start, end in self.inconvenient:
            inside = start <= hour < end if start <= end else (hour >= start or hour < end)
            if inside:
                return False
        return True


@dataclass
class Facts:
    """One debtor's published contact facts: preference and claim events, calls, conversations."""

    preferences: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    claim_zones: list[tuple[float, str]] = field(default_factory=list)
    attempts: list[float] = field(default_factory=list)
    conversations: list[float] = field(default_factory=list)

    def settings(self, ts: float) -> ContactSettings:
        tz, source = DEFAULT_TZ, "default"
        claims = [zone for at, zone in self.claim_zones if at <= ts]
        if claims:
            tz, source = claims[-1], "claim"
        opt_out: set[str] = set()
        opt_in: set[str] = set()
        out_at = in_at = float("-inf")
        inconvenient: tuple[tuple[int, int], ...] = ()
        for at, body in self.preferences:
            if at > ts:
                break
            if "timezone" in body:
                tz, source = body["timezone"], "preference"
            if "opt_out_channels" in body:
                opt_out, out_at = set(body["opt_out_channels"]), at
            if "opt_in_channels" in body:
                opt_in, in_at = set(body["opt_in_channels"]), at
            if "inconvenient_hours" in body:
                inconvenient = tuple((span["from_hour"], span["to_hour"]) for span in body["inconvenient_hours"])
        # A later opt-in lifts an opt-out of the same channel.
        opted_out = frozenset(c for c in opt_out if not (c in opt_in and in_at > out_at))
        return ContactSettings(tz, source, opted_out, inconvenient)

    def candidates(self, ts: float) -> list[ContactSettings]:
        """The settings a step due at ``ts`` may have been decided with: those in force then, or
        after a change the stream's clock may already have passed when it decided."""
        later = [at for at, _ in self.preferences if ts < at <= ts + SLACK_S] + [at for at, _ in self.claim_zones if ts < at <= ts + SLACK_S]
        return [self.settings(ts), *(self.settings(at) for at in later)]


def fold(lines: list[bytes]) -> dict[str, Facts]:
    facts: dict[str, Facts] = defaultdict(Facts)
    for line in lines:
        event = orjson.loads(line)
        debtor, kind, ts = event["debtor_id"], event["type"], _ts(event["occurred_at"])
        if kind == "contact_preference_set":
            facts[debtor].preferences.append((ts, event))
        elif kind == "claim_opened" and event.get("timezone"):
            facts[debtor].claim_zones.append((ts, event["timezone"]))
        elif kind == "contact_attempted" and event["channel"] == "call":
            facts[debtor].attempts.append(ts)
        elif (kind == "contact_responded" and event["channel"] == "call" and event["outcome"] == "answered") or (kind == "contact_initiated" and event["channel"] == "call"):
            facts[debtor].conversations.append(ts)
    return facts


def quiet_end(conversation: float, tz: ZoneInfo) -> float:
    """The first instant after the quiet days: midnight local, QUIET_DAYS calendar days after
    the local day of the conversation."""
    day = datetime.fromtimestamp(conversation, tz).date() + timedelta(days=QUIET_DAYS)
    return datetime(day.year, day.month, day.day, tzinfo=tz).timestamp()


# --- reading with kcat ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    partition: int
    offset: int
    key: str
    value: dict[str, Any] | None


def consume(kcat: str, bootstrap: str, topic: str) -> list[Message]:
    """Every record of ``topic`` now, read by kcat (JSON envelope; a tombstone's payload is null)."""
    result = subprocess.run(
        [kcat, "-C", "-b", bootstrap, "-t", topic, "-o", "beginning", "-e", "-q", "-J"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    messages = []
    for line in result.stdout.splitlines():
        if line.strip():
            envelope = orjson.loads(line)
            payload = envelope["payload"]
            messages.append(Message(envelope["partition"], envelope["offset"], envelope["key"], None if payload is None else orjson.loads(payload)))
    return sorted(messages, key=lambda m: (m.partition, m.offset))


def _validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(orjson.loads((ROOT / "schemas" / f"{name}.json").read_bytes()), format_checker=FormatChecker())


# --- the test --------------------------------------------------------------------------------------


def test_every_contact_keeps_to_the_rules_and_every_decision_is_recorded(kafka_bootstrap: str, kafka_admin: Any, kcat: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    portfolio = build_portfolio()
    policy = tmp_path / "daily-calls.json"
    policy.write_bytes(orjson.dumps(POLICY))
    prefix = new_prefix("contact-guard")
    PREFIXES.append(prefix)
    monkeypatch.setenv("DEBTOR_SEGMENTS_DECISION_RETENTION_MS", str(RETENTION_MS))
    monkeypatch.setenv("DEBTOR_SEGMENTS_DEFAULT_TIMEZONE", DEFAULT_TZ)
    monkeypatch.setenv("DEBTOR_SEGMENTS_API_TOKENS", f"{TOKEN}=agent")
    worker = Worker(kafka_bootstrap, prefix, tmp_path / "data", "--policy", str(policy))
    start_workers([worker])
    try:
        produce(kafka_bootstrap, prefix, portfolio.lines)
        wait_caught_up(kafka_bootstrap, worker.group, prefix, workers=[worker])
        # The profiles first: a held step the partition timer releases meanwhile only adds decisions.
        profiles = {debtor: profile(worker.port, debtor) for debtor in portfolio.roles.values()}
        decisions = consume(kcat, kafka_bootstrap, prefix + DECISIONS)
        dues = consume(kcat, kafka_bootstrap, prefix + DUE)
    finally:
        assert worker.stop() == 0, worker.log_tail()

    check_topic_config(kafka_admin, prefix + DECISIONS)
    check_decisions(portfolio, decisions, dues)
    check_profiles(portfolio, profiles, decisions)


def profile(port: int, debtor_id: str) -> tuple[int, Any]:
    """``GET /debtors/{debtor_id}`` of the worker, as role agent."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}/debtors/{debtor_id}", headers={"Authorization": f"Bearer {TOKEN}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, orjson.loads(error.read() or b"null")


def check_profiles(portfolio: Portfolio, profiles: dict[str, tuple[int, Any]], decisions: list[Message]) -> None:
    """The worker's profiles show the contact facts the test published and the decisions it wrote."""
    facts = fold(portfolio.lines)
    written = Counter(m.key.rpartition("/")[0] for m in decisions if m.value is not None)
    for role, debtor in portfolio.roles.items():
        status, body = profiles[debtor]
        if role == "erased":
            assert status == 404, (status, body)
            continue
        assert status == 200, (role, status, body)
        contact = body["contact"]
        expected = facts[debtor].settings(portfolio.last_ts)
        assert (contact["timezone"], contact["timezone_source"]) == (expected.timezone, expected.source), (role, contact)
        assert contact["opted_out_channels"] == [c for c in CHANNELS if c in expected.opted_out], (role, contact)
        assert contact["inconvenient_hours"] == [{"from_hour": a, "to_hour": b} for a, b in expected.inconvenient], (role, contact)
        allowed = [h for h in range(24) if expected.allowed_hour(h)]
        assert [h for span in contact["allowed_hours"] for h in range(span["from_hour"], span["to_hour"])] == allowed, (role, contact)
        window = contact["best_window"]
        assert window["timezone"] == expected.timezone and set(range(window["from_hour"], window["to_hour"])) <= set(allowed), (role, contact)
        assert (contact["calls"]["max_calls"], contact["calls"]["window_days"]) == (MAX_CALLS, WINDOW_DAYS)
        assert 0 <= written[debtor] - contact["decisions"] <= contact["held_steps"], (role, written[debtor], contact)
    talker = profiles[portfolio.roles["talker"]][1]["contact"]
    assert talker["last_conversation_at"] is not None and _ts(talker["last_conversation_at"]) == max(facts[portfolio.roles["talker"]].conversations)


def check_topic_config(kafka_admin: Any, topic: str) -> None:
    """The decision topic: compacted (an erasure's tombstones delete) and retained as configured."""
    from kafka.admin import ConfigResource, ConfigResourceType

    described = kafka_admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    config = {name: entry["value"] for name, entry in described["topic"][topic].items()}
    assert config["cleanup.policy"] == "compact,delete" and config["retention.ms"] == str(RETENTION_MS), config


def check_decisions(portfolio: Portfolio, decisions: list[Message], dues: list[Message]) -> None:
    """Everything about the decisions and the contacts they let go, with the test's own code."""
    roles = portfolio.roles
    # 1. Every decision validates and is keyed <debtor>/<n>, n = 0, 1, ... per debtor.
    decision_schema, due_schema = _validator("contact_decision"), _validator("contact_due")
    records = [m for m in decisions if m.value is not None]
    tombstones = [m for m in decisions if m.value is None]
    numbers: dict[str, list[int]] = defaultdict(list)
    by_id: dict[str, dict[str, Any]] = {}
    for message in records:
        decision = message.value
        assert decision is not None
        errors = [e.message for e in decision_schema.iter_errors(decision)]
        assert not errors, (errors, decision)
        debtor, _, number = message.key.rpartition("/")
        assert debtor == decision["debtor_id"] and number.isdigit() and str(int(number)) == number, message.key
        numbers[debtor].append(int(number))
        assert by_id.setdefault(decision["event_id"], decision) == decision, "one event id, one decision"
        assert decision["reason"] == decision["reasons"][0]
        assert (decision["send_at"] is None) == (decision["verdict"] == "skipped"), decision
    for debtor, theirs in numbers.items():
        assert sorted(theirs) == list(range(len(theirs))), (debtor, sorted(theirs)[:20])

    # 2. Every contact_due validates and has the allowed or rescheduled decision that let it go.
    sent: dict[str, dict[str, Any]] = {}
    for message in dues:
        due = message.value
        assert due is not None and message.key == due["debtor_id"]
        errors = [e.message for e in due_schema.iter_errors(due)]
        assert not errors, (errors, due)
        assert sent.setdefault(due["event_id"], due) == due, "a contact_due sent twice differs"
        decision = by_id.get(due["decision_id"])
        assert decision is not None, f"no decision {due['decision_id']} for {due['event_id']}"
        assert decision["verdict"] in ("allowed", "rescheduled"), decision
        assert (decision["cause_event_id"], decision["debtor_id"], decision["channel"], decision["send_at"], decision["timezone"]) == (
            due["event_id"], due["debtor_id"], due["channel"], due["due_at"], due["timezone"],
        )  # fmt: skip
        assert decision["due_at"] == due["planned_at"] and _ts(due["due_at"]) >= _ts(due["planned_at"])
    let_go = Counter(due["decision_id"] for due in sent.values())
    assert max(let_go.values()) == 1, "one decision lets one contact_due go"
    # ... and every decision that let a step go has its contact_due; one that held a step back
    # was decided again later, or the stream's clock has not reached its time yet.
    later: dict[str, list[int]] = defaultdict(list)
    for message in records:
        assert message.value is not None
        later[message.value["cause_event_id"]].append(int(message.key.rpartition("/")[2]))
    for message in records:
        decision = message.value
        assert decision is not None
        number = int(message.key.rpartition("/")[2])
        if decision["verdict"] == "allowed":
            assert let_go[decision["event_id"]] == 1, decision
        elif decision["verdict"] == "rescheduled" and not let_go[decision["event_id"]]:
            again = any(n > number for n in later[decision["cause_event_id"]])
            pending = _ts(decision["send_at"]) > (portfolio.erased_at if decision["debtor_id"] == roles["erased"] else portfolio.last_ts - 3 * DAY)
            assert again or pending, decision
        elif decision["verdict"] == "skipped":
            assert not let_go[decision["event_id"]], decision

    # 3. Every contact the worker made due keeps to the rules, judged with the test's own fold.
    facts = fold(portfolio.lines)
    emitted_calls: dict[str, list[float]] = defaultdict(list)
    for due in sent.values():
        if due["channel"] == "call":
            emitted_calls[due["debtor_id"]].append(_ts(due["due_at"]))
    for calls in emitted_calls.values():
        calls.sort()
    for due in sent.values():
        debtor, ts, channel = due["debtor_id"], _ts(due["due_at"]), due["channel"]
        theirs = facts[debtor]
        tz = ZoneInfo(due["timezone"])
        hour = datetime.fromtimestamp(ts, tz).hour
        fitting = [s for s in theirs.candidates(ts) if s.timezone == due["timezone"]]
        assert fitting, f"{due['timezone']} is not the time zone of {debtor} at {due['due_at']}: {[s.timezone for s in theirs.candidates(ts)]}"
        assert any(s.allowed_hour(hour) and channel not in s.opted_out for s in fitting), (due, hour, fitting)
        assert EARLIEST <= hour < LATEST, due
        if channel != "call":
            assert "best_window" not in due or due["best_window"] is None, due
            continue
        window = due["best_window"]
        assert window is not None and window["timezone"] == due["timezone"], due
        assert window["from_hour"] < window["to_hour"]
        assert any(all(s.allowed_hour(h) for h in range(window["from_hour"], window["to_hour"])) for s in fitting), due
        # At most MAX_CALLS calls in the rolling window that ends with this call: the calls the
        # collectors recorded and the calls the worker made due.
        start = ts - WINDOW_DAYS * DAY
        counted = sum(1 for at in theirs.attempts if start < at <= ts) + sum(1 for at in emitted_calls[debtor] if start < at <= ts)
        assert counted <= MAX_CALLS, f"{counted} calls in the {WINDOW_DAYS} days up to {due['due_at']} for {debtor}"
        # None in the quiet local days that start with the day of a telephone conversation.
        for conversation in theirs.conversations:
            assert not conversation <= ts < quiet_end(conversation, tz), f"call at {due['due_at']} after a conversation at {_iso(conversation)} ({debtor})"

    # 4. The portfolio made every rule bite (else the checks above prove little).
    reasons = Counter(reason for d in by_id.values() for reason in d["reasons"])
    for reason in ("within_rules", "outside_hours", "inconvenient_hours", "opted_out", "after_conversation", "call_limit"):
        assert reasons[reason] > 0, reasons
    verdicts = Counter(d["verdict"] for d in by_id.values())
    assert verdicts["allowed"] and verdicts["rescheduled"] and verdicts["skipped"], verdicts
    assert {d["timezone_source"] for d in by_id.values()} == {"preference", "claim", "default"}
    by_debtor = defaultdict(list)
    for due in sent.values():
        by_debtor[due["debtor_id"]].append(due)
    assert by_debtor[roles["no_calls"]] and all(d["channel"] != "call" for d in by_debtor[roles["no_calls"]])
    assert any(d["replaced_from"] == "call" and d["channel"] == "sms" for d in by_debtor[roles["no_calls"]])
    assert not by_debtor[roles["no_channel"]] and any(d["debtor_id"] == roles["no_channel"] and d["verdict"] == "skipped" for d in by_id.values())
    assert {d["timezone"] for d in by_debtor[roles["tokyo"]]} == {"Asia/Tokyo"}
    assert {d["timezone"] for d in by_debtor[roles["mover"]]} == {"Europe/Lisbon", "America/Los_Angeles"}
    assert any(d["channel"] == "call" for d in by_debtor[roles["opt_in"]]), "calls resume after the opt-in"
    assert len(sent) > 300, len(sent)

    # 5. The erasure sent a tombstone for every decision of its debtor, and for nobody else's.
    erased = roles["erased"]
    theirs_keys = {f"{erased}/{n}" for n in numbers[erased]}
    assert theirs_keys, "the erased debtor had decisions"
    assert Counter(m.key for m in tombstones) == Counter(theirs_keys), (sorted(theirs_keys), sorted(m.key for m in tombstones))
    newest: dict[str, Message] = {}
    for message in decisions:  # per key, in offset order (a key lives on one partition)
        newest[message.key] = message
    assert all(newest[key].value is None for key in theirs_keys), "the tombstone is each key's last record"
