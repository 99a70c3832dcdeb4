"""The embedded CLI: replay with bad lines and duplicates, fatal errors, demo."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import orjson

from debtor_segments.agents.settings import Settings, with_overrides
from debtor_segments.streams.model import SNAPSHOT_FORMAT
from debtor_segments.streams.simulation import Portfolio

GOOD = b'{"event_id": "e1", "debtor_id": "d1", "type": "contact_initiated", "occurred_at": "2026-01-02T10:00:00Z", "channel": "portal", "direction": "inbound"}'


def _cli(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "debtor_segments.agents", *args], input=stdin, capture_output=True, timeout=300)


def _jsonl(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def test_replay_routes_bad_lines_and_keeps_going(tmp_path: Path, small_portfolio: Portfolio) -> None:
    bad = [b"not json", b'{"event_id": "x", "debtor_id": "d1", "type": "refund", "occurred_at": "2026-01-01T00:00:00Z"}', b'{"debtor_id": "d1"}']
    lines = [*small_portfolio.lines[:2000], *bad, GOOD, GOOD, *small_portfolio.lines[2000:]]
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"\n".join(lines) + b"\n")
    out, dlq = tmp_path / "changes.jsonl", tmp_path / "dlq.jsonl"
    result = _cli("replay", str(source), "--output", str(out), "--dead-letters", str(dlq))
    assert result.returncode == 0, result.stderr
    dead = _jsonl(dlq)
    by_line = {d["line"]: d for d in dead}
    assert by_line[2001]["reason"] == "invalid_json" and by_line[2001]["raw"] == "not json"
    assert by_line[2002]["reason"] == "unknown_type"
    assert by_line[2003]["reason"] == "missing_field"
    injected_bad = small_portfolio.injected["bad"]
    assert len(dead) == 3 + injected_bad
    changes = _jsonl(out)
    assert changes and {c["type"] for c in changes} == {"persona_changed", "quadrant_changed"}
    assert b"duplicate" in result.stderr  # the repeated GOOD line and injected re-sends are counted


def test_replay_from_stdin_matches_file(tmp_path: Path, small_portfolio: Portfolio) -> None:
    data = b"\n".join(small_portfolio.lines[:5000]) + b"\n"
    source = tmp_path / "in.jsonl"
    source.write_bytes(data)
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    assert _cli("replay", str(source), "-o", str(a)).returncode == 0
    assert _cli("replay", "-", "-o", str(b), stdin=data).returncode == 0
    strip = lambda rows: [{k: v for k, v in r.items() if k != "emitted_at"} for r in rows]  # noqa: E731
    assert strip(_jsonl(a)) == strip(_jsonl(b))
    assert (tmp_path / "a.dead-letters.jsonl").exists()


def test_unreadable_input_is_one_line_and_nonzero(tmp_path: Path) -> None:
    result = _cli("replay", str(tmp_path / "missing.jsonl"), "-o", str(tmp_path / "o.jsonl"))
    assert result.returncode != 0
    message = result.stderr.decode().strip().splitlines()
    assert len(message) == 1 and "cannot read" in message[0]


def test_model_snapshot_round_trip(tmp_path: Path, small_portfolio: Portfolio) -> None:
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"\n".join(small_portfolio.lines) + b"\n")
    model = tmp_path / "model.json"
    assert _cli("replay", str(source), "-o", str(tmp_path / "o.jsonl"), "--model", str(model)).returncode == 0
    first = orjson.loads(model.read_bytes())
    assert first["format"] == SNAPSHOT_FORMAT and first["version"] > 0
    assert _cli("replay", str(source), "-o", str(tmp_path / "o2.jsonl"), "--model", str(model)).returncode == 0
    assert orjson.loads(model.read_bytes())["version"] > first["version"]  # warm start, learned on


def test_demo_runs_small(tmp_path: Path) -> None:
    result = _cli("demo", "--debtors", "150", "--months", "6", "--out-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    text = result.stdout.decode()
    for heading in ("Personas at the end", "Quadrants at the end", "Persona transitions"):
        assert heading in text
    assert _jsonl(tmp_path / "changes.jsonl")


def test_worker_options_come_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("DEBTOR_SEGMENTS_TOPIC_PREFIX", "t1-")
    monkeypatch.setenv("DEBTOR_SEGMENTS_WEB_HOST", "auto")
    monkeypatch.setenv("DEBTOR_SEGMENTS_MODEL_SNAPSHOT_SECONDS", "2.5")
    settings = Settings()
    assert settings.topic_prefix == "t1-" and settings.model_snapshot_seconds == 2.5
    assert settings.advertised_web_host == socket.gethostname()
    assert with_overrides(settings, topic_prefix="t2-", app_id=None).topic_prefix == "t2-"


def test_a_bad_worker_setting_in_the_environment_is_a_usage_error() -> None:
    env = {**os.environ, "DEBTOR_SEGMENTS_GUARANTEE": "at_most_once", "DEBTOR_SEGMENTS_BROKER": "kafka://127.0.0.1:1"}
    done = subprocess.run([sys.executable, "-m", "debtor_segments.agents", "worker"], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 2
    assert "guarantee must be one of at_least_once, exactly_once, not 'at_most_once'" in done.stderr


def test_an_overlong_line_is_rejected_without_reading_it_into_memory(tmp_path: Path) -> None:
    """Issue 14, item 5: a 200 MB line took 810 MB; now at most DEBTOR_SEGMENTS_MAX_RECORD_BYTES of it is read."""
    import resource

    source = tmp_path / "in.jsonl"
    with source.open("wb") as out:
        out.write(GOOD + b"\n" + b'{"event_id": "' + b"x" * (1 << 20))
        for _ in range(150):
            out.write(b"y" * (1 << 20))
        out.write(b'"}\n' + GOOD.replace(b'"e1"', b'"e2"') + b"\n")
    out_path, dlq = tmp_path / "changes.jsonl", tmp_path / "dlq.jsonl"
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    result = _cli("replay", str(source), "--output", str(out_path), "--dead-letters", str(dlq))
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    assert result.returncode == 0, result.stderr
    [dead] = _jsonl(dlq)
    assert dead["reason"] == "record_too_large" and dead["line"] == 2 and len(dead["raw"]) <= 65_537
    assert b"2 processed" in result.stderr, result.stderr
    assert peak_mb < 140 or peak_mb <= before / 1024, f"peak RSS {peak_mb:.0f} MB for a 151 MB line"


def test_replay_with_a_policy_sends_treatments_and_writes_the_report(tmp_path: Path, small_portfolio: Portfolio) -> None:
    root = Path(__file__).resolve().parents[2]
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"\n".join(small_portfolio.lines) + b"\n")
    out, report = tmp_path / "out.jsonl", tmp_path / "report.json"
    result = _cli("replay", str(source), "-o", str(out), "--policy", str(root / "policies" / "default.yaml"), "--experiments-report", str(report))
    assert result.returncode == 0, result.stderr
    assert b"policy default-" in result.stderr and b"in force" in result.stderr
    kinds = {row["type"] for row in _jsonl(out)}
    assert {"persona_changed", "quadrant_changed", "treatment_assigned", "contact_due"} <= kinds
    body = orjson.loads(report.read_bytes())
    assert "strict-vs-fair" in body["experiments"]
    assert set(body["experiments"]["strict-vs-fair"]["segments"]["all"]) == {"strict", "fair"}


def test_an_invalid_policy_is_refused_with_every_problem(tmp_path: Path) -> None:
    policy = tmp_path / "bad.yaml"
    policy.write_text("version: x\nplans: {p: [{day: -1, channel: fax, tone: strict, message_id: m}]}\nsegments: {job: nope}\n")
    source = tmp_path / "in.jsonl"
    source.write_bytes(GOOD + b"\n")
    result = _cli("replay", str(source), "-o", str(tmp_path / "o.jsonl"), "--policy", str(policy))
    assert result.returncode != 0
    assert b"3 problems" in result.stderr
    for where in (b"plans.p.0.day", b"plans.p.0.channel", b"segments.job"):
        assert where in result.stderr


def test_replay_keeps_events_after_today_but_not_implausible_ones(tmp_path: Path) -> None:
    """A portfolio file may run past today (a simulated or planned book): replay has no wall
    clock to judge it by, so only the fixed bounds (issue 14, item 4) apply."""
    next_year = GOOD.replace(b"2026-01-02", b"2027-06-02")
    year_9999 = GOOD.replace(b'"e1"', b'"e2"').replace(b"2026-01-02T10:00:00Z", b"9999-12-31T23:59:59-01:00")
    source, out, dlq = tmp_path / "in.jsonl", tmp_path / "o.jsonl", tmp_path / "dlq.jsonl"
    source.write_bytes(next_year + b"\n" + year_9999 + b"\n")
    result = _cli("replay", str(source), "-o", str(out), "--dead-letters", str(dlq))
    assert result.returncode == 0, result.stderr
    assert b"1 processed" in result.stderr, result.stderr
    assert [d["reason"] for d in _jsonl(dlq)] == ["implausible_timestamp"]


def test_the_kafka_security_settings_for_faust_and_the_plain_clients() -> None:
    import faust

    plain = Settings(kafka_security_protocol="PLAINTEXT")
    assert plain.kafka_client_options() == {"security_protocol": "PLAINTEXT"}
    assert plain.faust_broker_credentials() is None
    scram = Settings(kafka_security_protocol="sasl_plaintext", kafka_sasl_mechanism="scram-sha-512", kafka_username="worker", kafka_password="pw")
    assert scram.kafka_client_options() == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "worker",
        "sasl_plain_password": "pw",
    }
    credentials = scram.faust_broker_credentials()
    assert isinstance(credentials, faust.SASLCredentials)
    assert (credentials.protocol.value, credentials.mechanism.value, credentials.username, credentials.password) == ("SASL_PLAINTEXT", "SCRAM-SHA-512", "worker", "pw")
    sasl_ssl = Settings(kafka_security_protocol="SASL_SSL", kafka_username="worker", kafka_password="pw").faust_broker_credentials()
    assert sasl_ssl.protocol.value == "SASL_SSL" and sasl_ssl.ssl_context is not None
    tls = Settings(kafka_security_protocol="SSL").faust_broker_credentials()
    assert isinstance(tls, faust.SSLCredentials) and tls.protocol.value == "SSL"


def test_an_unknown_kafka_security_protocol_is_a_usage_error() -> None:
    env = {**os.environ, "DEBTOR_SEGMENTS_KAFKA_SECURITY_PROTOCOL": "KERBEROS", "DEBTOR_SEGMENTS_BROKER": "kafka://127.0.0.1:1"}
    for command in (["worker"], ["tail", "--timeout", "1"]):
        done = subprocess.run([sys.executable, "-m", "debtor_segments.agents", *command], capture_output=True, text=True, env=env, timeout=60)
        assert done.returncode == 2, done.stderr
        assert "unknown protocol 'KERBEROS'" in done.stderr


def test_fit_learns_a_snapshot_that_replay_and_worker_start_from(tmp_path: Path, small_portfolio: Portfolio) -> None:
    """Issue 12, item 5: onboard a portfolio from its history."""
    history = tmp_path / "history.jsonl"
    history.write_bytes(b"\n".join(small_portfolio.lines) + b"\n")
    model = tmp_path / "fitted.json"
    once = _cli("fit", str(history), "--model", str(model))
    assert once.returncode == 0, once.stderr
    fitted = orjson.loads(model.read_bytes())
    assert fitted["format"] == SNAPSHOT_FORMAT and fitted["version"] > 0 and sum(fitted["updates"]) == fitted["version"]
    again = _cli("fit", str(history), "--model", str(model), "--passes", "2")  # learns on from the file
    assert again.returncode == 0, again.stderr
    assert orjson.loads(model.read_bytes())["version"] == 3 * fitted["version"]
    replayed = _cli("replay", str(history), "-o", str(tmp_path / "o.jsonl"), "--model", str(model))
    assert replayed.returncode == 0, replayed.stderr
    assert orjson.loads(model.read_bytes())["version"] == 4 * fitted["version"]
    # A history with no usable debtor, stdin read twice, a snapshot that is not one: refused.
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"not json\n")
    refused = _cli("fit", str(empty), "--model", str(tmp_path / "none.json"))
    assert refused.returncode != 0 and b"taught the model nothing" in refused.stderr and not (tmp_path / "none.json").exists()
    assert _cli("fit", "-", "--model", str(model), "--passes", "2", stdin=b"").returncode == 2
    broken = tmp_path / "broken.json"
    broken.write_bytes(b'{"format": 2}')
    for command in (("replay", str(history), "-o", str(tmp_path / "p.jsonl")), ("worker", "--broker", "localhost:1", "--broker-wait", "0")):
        result = _cli(*command, "--model", str(broken))
        assert result.returncode == 1 and b"cannot restore model snapshot" in result.stderr, (command, result.stderr)
    missing = _cli("worker", "--broker", "localhost:1", "--broker-wait", "0", "--model", str(tmp_path / "missing.json"))
    assert missing.returncode == 1 and b"cannot restore model snapshot" in missing.stderr
