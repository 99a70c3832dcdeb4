"""The HTTP API of real workers against the real broker: access control, profiles routed to the
owner of the debtor, aggregates over all partitions, and conformance with docs/openapi.yaml."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from jsonschema import Draft202012Validator

from debtor_segments.schemas import DEAD_LETTERS_TOPIC, PERSONA_CHANGES_TOPIC
from debtor_segments.streams.personas import UNKNOWN
from debtor_segments.streams.report import ALL_PERSONAS
from debtor_segments.streams.simulation import simulate
from tests.integration.test_service import (
    Worker,
    delete_topics,
    final_personas,
    free_port,
    new_prefix,
    produce,
    read_all,
    replay,
    start_workers,
    wait_caught_up,
)

ROOT = Path(__file__).resolve().parents[2]
OPENAPI = yaml.safe_load((ROOT / "docs" / "openapi.yaml").read_text(encoding="utf-8"))
AGENT, OPS = "agent-tok-3f2a-5d1e", "ops-tok-91bc-77a0"
TOKENS = f"{AGENT}=agent,{OPS}=ops"
MINE: list[str] = []


def call(port: int, path: str, token: str | None = None) -> tuple[int, dict[str, str], bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def get_json(port: int, path: str, token: str | None = None) -> tuple[int, Any]:
    status, _, body = call(port, path, token)
    return status, orjson.loads(body)


def start_with_tokens(workers: list[Worker]) -> None:
    with pytest.MonkeyPatch.context() as patch:  # the worker subprocesses inherit it
        patch.setenv("DEBTOR_SEGMENTS_API_TOKENS", TOKENS)
        patch.setenv("DEBTOR_SEGMENTS_PEER_SECRET", "peer-secret-of-the-integration-tests")
        start_workers(workers)


def expected_mix(debtors: Iterable[str], changes: dict[str, str]) -> dict[str, int]:
    """Debtors per persona: the last persona_changed of each debtor with a state, else unknown."""
    mix = dict.fromkeys(ALL_PERSONAS, 0)
    for debtor_id in debtors:
        mix[changes.get(debtor_id, UNKNOWN)] += 1
    return mix


def wait_population(port: int, mix: dict[str, int], timeout: float = 40.0) -> dict[str, Any]:
    """/personas once every partition reported and the summaries add up to ``mix``."""
    deadline = time.monotonic() + timeout
    body: Any = None
    while time.monotonic() < deadline:
        status, body = get_json(port, "/personas", OPS)
        if status == 200 and body["partitions"]["complete"] and body["personas"] == mix:
            return body
        time.sleep(0.5)
    pytest.fail(f"/personas on port {port} did not reach {mix} over all partitions: {body}")


class Portfolio:
    def __init__(self, seed: int) -> None:
        self.lines = simulate(debtors=60, months=4, seed=seed).lines
        self.expected = replay(self.lines)

    @property
    def debtors(self) -> set[str]:
        return set(self.expected.personas)  # debtors with a state (erased ones have none)


@pytest.fixture(scope="module")
def portfolio() -> Portfolio:
    return Portfolio(seed=31)


@pytest.fixture(scope="module")
def worker(kafka_bootstrap: str, portfolio: Portfolio, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    prefix = new_prefix("api")
    MINE.append(prefix)
    # With the default policy, so /experiments and /portfolio are served (and checked below).
    process = Worker(kafka_bootstrap, prefix, tmp_path_factory.mktemp("api") / "data", "--policy", str(ROOT / "policies" / "default.yaml"))
    try:
        start_with_tokens([process])
        produce(kafka_bootstrap, prefix, portfolio.lines)
        wait_caught_up(kafka_bootstrap, process.group, prefix, workers=[process])
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def personas(kafka_bootstrap: str, worker: Worker) -> dict[str, str]:
    """Final persona per debtor according to the persona-changes topic."""
    found = final_personas(read_all(kafka_bootstrap, [worker.prefix + PERSONA_CHANGES_TOPIC]))
    assert len(found) > 20
    return found


@pytest.fixture(scope="module", autouse=True)
def _delete_topics(kafka_bootstrap: str) -> Iterator[None]:
    yield
    delete_topics(kafka_bootstrap, MINE)


# --- one worker ---------------------------------------------------------------------------------


def test_profiles_agree_with_the_change_topic(worker: Worker, portfolio: Portfolio, personas: dict[str, str]) -> None:
    for debtor_id in sorted(portfolio.debtors):
        persona = personas.get(debtor_id, UNKNOWN)  # no change event yet: still unknown
        status, body = get_json(worker.port, f"/debtors/{urllib.parse.quote(debtor_id)}", AGENT)
        assert status == 200, (debtor_id, body)
        assert body["debtor_id"] == debtor_id and body["persona"] == persona
        assert {"quadrant", "willingness", "ability", "confidence", "explanation", "average_stars", "ratings", "features", "last_update"} <= set(body)


def test_access_control(worker: Worker, portfolio: Portfolio) -> None:
    path = f"/debtors/{min(portfolio.debtors)}"
    status, headers, body = call(worker.port, path, OPS)
    assert status == 403 and orjson.loads(body)["error"] == "forbidden"
    for token in (None, "not-a-token", AGENT + "x", AGENT[:-1]):
        status, headers, body = call(worker.port, path, token)
        assert status == 401, token
        assert headers["WWW-Authenticate"].startswith('Bearer realm="debtor-segments"')
        assert orjson.loads(body)["error"] == "unauthorized"
    for aggregate in ("/personas", "/personas/transitions"):
        assert call(worker.port, aggregate)[0] == 401
        assert call(worker.port, aggregate, "nope")[0] == 401
        assert call(worker.port, aggregate, OPS)[0] == 200
        assert call(worker.port, aggregate, AGENT)[0] == 200
    for open_path in ("/health", "/ready", "/metrics"):
        assert call(worker.port, open_path)[0] == 200, open_path
    # Faust's own table and router pages would bypass all of this: they are not served.
    for hidden in ("/table/", f"/table/debtor-state/{min(portfolio.debtors)}/", "/router/"):
        assert call(worker.port, hidden)[0] == 404, hidden


def test_profile_responses_are_not_cached_and_name_no_server_version(worker: Worker, portfolio: Portfolio) -> None:
    """Issue 14, item 9."""
    debtor = min(portfolio.debtors)
    for path, token in ((f"/debtors/{debtor}", AGENT), ("/debtors/no-such-debtor", AGENT), (f"/debtors/{debtor}", None), ("/personas", OPS), ("/health", None)):
        status, headers, _ = call(worker.port, path, token)
        assert "aiohttp" not in headers.get("Server", "") and "Python" not in headers.get("Server", ""), (path, headers)
        if path.startswith("/debtors"):
            assert headers.get("Cache-Control") == "no-store" and headers.get("Vary") == "Authorization", (path, status, headers)
    status, _, _ = call(worker.port, "/debtors/" + urllib.parse.quote("d\x00x"), AGENT)
    assert status == 400
    # The peer page takes signed requests only: a client's token is not enough.
    status, _, _ = call(worker.port, f"/internal/debtor-profile?debtor_id={debtor}", AGENT)
    assert status == 403


def test_unknown_debtor_is_404(worker: Worker) -> None:
    status, body = get_json(worker.port, "/debtors/no-such-debtor", AGENT)
    assert status == 404 and body == {"error": "not_found", "detail": "no debtor with this id"}


def test_personas_add_up_to_every_debtor(worker: Worker, portfolio: Portfolio, personas: dict[str, str]) -> None:
    body = wait_population(worker.port, expected_mix(portfolio.debtors, personas))
    assert sum(body["personas"].values()) == body["debtors"] == len(portfolio.debtors)
    assert sum(body["quadrants"].values()) == body["debtors"]
    assert sum(sum(row.values()) for row in body["persona_quadrant"].values()) == body["debtors"]
    assert body["partitions"] == {"reported": 4, "total": 4, "complete": True}


def test_transitions(worker: Worker, portfolio: Portfolio, personas: dict[str, str]) -> None:
    wait_population(worker.port, expected_mix(portfolio.debtors, personas))
    status, body = get_json(worker.port, "/personas/transitions?days=90", OPS)
    assert status == 200 and body["days"] == 90
    assert body["debtors"] == sum(sum(row.values()) for row in body["counts"].values()) > 0
    for persona, row in body["row_shares"].items():
        total = sum(body["counts"][persona].values())
        assert sum(row.values()) == pytest.approx(1.0 if total else 0.0, abs=1e-3)
    assert get_json(worker.port, "/personas/transitions", OPS)[1]["days"] == 365
    for bad in ("60", "abc", ""):
        status, body = get_json(worker.port, f"/personas/transitions?days={bad}", OPS)
        assert status == 400 and body["error"] == "bad_request" and "30, 90, 365" in body["detail"]


def test_malformed_tokens_stop_the_worker(kafka_bootstrap: str, tmp_path: Path) -> None:
    prefix = new_prefix("badtok")
    MINE.append(prefix)
    env = dict(os.environ, DEBTOR_SEGMENTS_API_TOKENS="s3cr3t-value-0123456=agent,s3cr3t-value-0123456=ops")
    result = subprocess.run(
        [sys.executable, "-m", "debtor_segments.agents", "worker", "--broker", f"kafka://{kafka_bootstrap}", "--topic-prefix", prefix,
         "--web-port", str(free_port()), "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=90, cwd=ROOT, env=env, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1] == "Error: DEBTOR_SEGMENTS_API_TOKENS: entry 2 repeats the token of entry 1"
    assert "s3cr3t" not in result.stderr + result.stdout


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("agent=Swapped-Secret-7f3a9c", "entry 1 has an unknown role (roles: agent, ops; expected token=role, and it reads role=token)"),
        ("Swapped-Secret=agent", "entry 1 has a token shorter than 16 characters"),
    ],
)
def test_a_token_config_error_never_prints_the_token(kafka_bootstrap: str, tmp_path: Path, spec: str, message: str) -> None:
    """Issue 14, item 11: role and token swapped printed the token as the unknown role."""
    env = dict(os.environ, DEBTOR_SEGMENTS_API_TOKENS=spec)
    result = subprocess.run(
        [sys.executable, "-m", "debtor_segments.agents", "worker", "--broker", f"kafka://{kafka_bootstrap}", "--topic-prefix", new_prefix("swap"),
         "--web-port", str(free_port()), "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=90, cwd=ROOT, env=env, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1] == f"Error: DEBTOR_SEGMENTS_API_TOKENS: {message}"
    assert "Swapped-Secret" not in result.stderr + result.stdout


# --- OpenAPI conformance -------------------------------------------------------------------------------


def validate(path: str, status: int, headers: dict[str, str], body: bytes) -> None:
    """``status`` is documented for ``path`` and ``body`` matches its schema."""
    operation = OPENAPI["paths"][path]["get"]
    responses = operation["responses"]
    assert str(status) in responses, f"GET {path} answered {status}, documented: {sorted(responses)}"
    response = responses[str(status)]
    if "$ref" in response:
        response = OPENAPI["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
    [(media, content)] = response["content"].items()
    assert headers.get("Content-Type", "").split(";")[0] == media, (path, status, headers.get("Content-Type"))
    for name in response.get("headers", {}):
        if status in (401, 503):
            assert name in headers, (path, status, name)
    value: Any = body.decode() if media.startswith("text/") else orjson.loads(body)
    schema = {**content["schema"], "components": OPENAPI["components"]}
    Draft202012Validator(schema).validate(value)


def test_every_documented_path_conforms(worker: Worker, portfolio: Portfolio, personas: dict[str, str]) -> None:
    wait_population(worker.port, expected_mix(portfolio.debtors, personas))
    debtor = urllib.parse.quote(min(portfolio.debtors))
    requests: dict[str, list[tuple[str, str | None, int]]] = {
        "/debtors/{debtor_id}": [
            (f"/debtors/{debtor}", AGENT, 200),
            (f"/debtors/{debtor}", OPS, 403),
            (f"/debtors/{debtor}", None, 401),
            (f"/debtors/{debtor}", "wrong", 401),
            ("/debtors/no-such-debtor", AGENT, 404),
        ],
        "/personas": [("/personas", OPS, 200), ("/personas", AGENT, 200), ("/personas", None, 401)],
        "/personas/transitions": [(f"/personas/transitions?days={days}", OPS, 200) for days in (30, 90, 365)]
        + [("/personas/transitions", AGENT, 200), ("/personas/transitions?days=7", OPS, 400), ("/personas/transitions", "x", 401)],
        "/experiments": [("/experiments", OPS, 200), ("/experiments", AGENT, 200), ("/experiments", None, 401)],
        "/experiments/{experiment_id}": [
            ("/experiments/strict-vs-fair", OPS, 200),
            ("/experiments/strict-vs-fair", "wrong", 401),
            ("/experiments/no-such-experiment", AGENT, 404),
        ],
        "/portfolio": [("/portfolio", AGENT, 200), ("/portfolio", None, 401)],
        "/health": [("/health", None, 200)],
        "/ready": [("/ready", None, 200)],
        "/metrics": [("/metrics", None, 200)],
    }
    assert set(requests) == set(OPENAPI["paths"]), "every documented path is exercised"
    for documented, cases in requests.items():
        for url, token, expected in cases:
            status, headers, body = call(worker.port, url, token)
            assert status == expected, (url, token, status, body[:200])
            validate(documented, status, headers, body)


# --- two workers share the partitions ----------------------------------------------------------------


def test_two_workers_route_profiles_and_aggregate_all_partitions(kafka_bootstrap: str, tmp_path: Path) -> None:
    portfolio = Portfolio(seed=37)
    prefix = new_prefix("api2")
    MINE.append(prefix)
    workers = [Worker(kafka_bootstrap, prefix, tmp_path / f"w{i}") for i in (1, 2)]
    try:
        start_with_tokens(workers)
        produce(kafka_bootstrap, prefix, portfolio.lines)
        wait_caught_up(kafka_bootstrap, workers[0].group, prefix, workers=workers)
        personas = final_personas(read_all(kafka_bootstrap, [prefix + PERSONA_CHANGES_TOPIC]))
        bodies = [wait_population(worker.port, expected_mix(portfolio.debtors, personas)) for worker in workers]
        assert bodies[0]["personas"] == bodies[1]["personas"] and bodies[0]["quadrants"] == bodies[1]["quadrants"]
        counted = [worker.events_counted() for worker in workers]
        assert min(counted) > 0, f"both workers must own partitions: {counted}"
        for debtor_id in sorted(portfolio.debtors):
            persona = personas.get(debtor_id, UNKNOWN)
            for worker in workers:
                status, body = get_json(worker.port, f"/debtors/{urllib.parse.quote(debtor_id)}", AGENT)
                assert status == 200 and body["persona"] == persona, (worker.port, debtor_id, status, body)
        for worker in workers:
            assert get_json(worker.port, "/debtors/no-such-debtor", AGENT)[0] == 404
            assert call(worker.port, f"/debtors/{min(portfolio.debtors)}", OPS)[0] == 403
    finally:
        for worker in workers:
            worker.stop()


# --- hostile event data (issue 14) -----------------------------------------------------------------


def test_an_event_dated_9999_never_makes_the_api_fail(kafka_bootstrap: str, tmp_path: Path) -> None:
    """Item 4: ``9999-12-31T23:59:59-01:00`` (UTC year 10000) was accepted, and once its debtor
    was in a population summary /personas and /personas/transitions answered 500."""
    lines = simulate(debtors=8, months=3, seed=43).lines
    debtor = orjson.loads(next(line for line in lines if line.startswith(b"{"))).get("debtor_id", "d43-000000")
    hostile = [
        orjson.dumps({"event_id": f"hostile-{n}", "debtor_id": debtor, "type": "contact_initiated", "occurred_at": stamp, "channel": "portal", "direction": "inbound"})
        for n, stamp in enumerate(["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00Z"])
    ]
    prefix = new_prefix("api9999")
    MINE.append(prefix)
    worker = Worker(kafka_bootstrap, prefix, tmp_path / "w")
    try:
        start_with_tokens([worker])
        produce(kafka_bootstrap, prefix, [*lines[:40], *hostile, *lines[40:]])
        wait_caught_up(kafka_bootstrap, worker.group, prefix, workers=[worker])
        deadline = time.monotonic() + 40
        while True:
            status, body = get_json(worker.port, "/personas", OPS)
            assert status in (200, 503), (status, body)
            if status == 200 and body["partitions"]["complete"]:
                break
            assert time.monotonic() < deadline, body
            time.sleep(0.5)
        for days in (30, 90, 365):
            assert get_json(worker.port, f"/personas/transitions?days={days}", OPS)[0] == 200
        status, profile_body = get_json(worker.port, f"/debtors/{urllib.parse.quote(debtor)}", AGENT)
        assert status == 200 and profile_body["last_update"] < "2100", profile_body
        letters = [r.value for r in read_all(kafka_bootstrap, [prefix + DEAD_LETTERS_TOPIC])]
        implausible = [d for d in letters if d["reason"] == "implausible_timestamp"]
        assert sorted(orjson.loads(d["raw"])["event_id"] for d in implausible) == ["hostile-0", "hostile-1"], letters
    finally:
        worker.stop()
