"""The HTTP API without a broker: summaries and their sum, the days parameter, the handlers
(against an in-process app with fakes for the web layer), the registered routes against
docs/openapi.yaml."""

from __future__ import annotations

import asyncio
import math
import random
import socket
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import click
import orjson
import pytest
import yaml
from aiohttp import web as aioweb
from aiokafka.partitioner import DefaultPartitioner as AiokafkaPartitioner
from jsonschema import Draft202012Validator
from kafka.partitioner.default import murmur2 as kafka_python_murmur2

from debtor_segments.agents.api import ApiConfigError
from debtor_segments.agents.http_peers import FORWARDED_HEADER, PEER_HEADER, PEER_PATH, peer_base_url, sign_peer, verify_peer
from debtor_segments.agents.http_population import BadRequest, parse_days
from debtor_segments.agents.population import PopulationBoard, key_partition
from debtor_segments.agents.service import Service
from debtor_segments.agents.settings import Settings
from debtor_segments.agents.topics import WorkerConfig
from debtor_segments.agents.worker import build_service
from debtor_segments.streams.engine import Engine
from debtor_segments.streams.events import DecodeError, decode_event
from debtor_segments.streams.model import SegmentModel
from debtor_segments.streams.population import (
    DEFAULT_WINDOW_DAYS,
    WINDOWS_DAYS,
    UnknownWindow,
    merge_population,
    merge_transitions,
    parse_summary,
    population,
    summarize,
)
from debtor_segments.streams.profile import profile
from debtor_segments.streams.report import ALL_PERSONAS, ALL_QUADRANTS
from debtor_segments.streams.simulation import simulate
from debtor_segments.streams.state import DebtorState
from tests.agents.conftest import HandleLines

ROOT = Path(__file__).resolve().parents[2]
OPENAPI = ROOT / "docs" / "openapi.yaml"
DAY = 86_400.0
PEER_SECRET = "peer-secret-for-the-unit-tests"


@pytest.fixture(scope="module")
def states() -> list[DebtorState]:
    engine = Engine()
    for line in simulate(debtors=80, months=8, seed=11).lines:
        try:
            engine.handle(decode_event(line))
        except DecodeError:
            pass
    return [DebtorState.from_bytes(state.to_bytes()) for state in engine.states.values()]


def split(states: list[DebtorState], partitions: int) -> dict[int, list[DebtorState]]:
    groups: dict[int, list[DebtorState]] = {p: [] for p in range(partitions)}
    for state in states:
        groups[key_partition(state.debtor_id.encode(), partitions)].append(state)
    return groups


def oracle_transitions(states: list[DebtorState], since: float) -> dict[str, dict[str, int]]:
    """Persona at ``since`` -> persona now, written out here apart from streams.population: a
    debtor counts if it was known at ``since`` and has a persona start; it had its previous
    persona then if the current one began after ``since``."""
    counts = {row: dict.fromkeys(ALL_PERSONAS, 0) for row in ALL_PERSONAS}
    for state in states:
        if state.first_ts <= since and math.isfinite(state.persona_since):
            then = state.previous_persona if state.persona_since > since else state.persona
            counts[then][state.persona] += 1
    return counts


# --- partitioning -----------------------------------------------------------------------------


def test_key_partition_is_the_producers_partitioner() -> None:
    rng = random.Random(3)
    keys = [f"d{rng.randrange(10**9)}".encode() for _ in range(300)] + ["dé-ü".encode(), b"x"]
    for partitions in (1, 3, 4, 12):
        for key in keys:
            # kafka-python's DefaultPartitioner (the tests' producer) and aiokafka's (Faust's).
            expected = (kafka_python_murmur2(key) & 0x7FFFFFFF) % partitions
            assert key_partition(key, partitions) == expected
            assert AiokafkaPartitioner()(key, list(range(partitions)), list(range(partitions))) == expected


# --- summaries --------------------------------------------------------------------------------


def test_summaries_round_trip_and_add_up_to_the_whole_population(states: list[DebtorState]) -> None:
    groups = split(states, 4)
    assert all(groups.values()), "every partition should hold debtors"
    summaries = {}
    for partition, group in groups.items():
        wire = orjson.dumps(summarize(partition, 4, group))
        assert len(wire) < 4000
        parsed = parse_summary(wire, 4)
        assert parsed is not None and parsed["partition"] == partition and parsed["debtors"] == len(group)
        summaries[partition] = parsed
    body = merge_population(summaries, 4)
    whole = population(states)
    assert body["debtors"] == whole["debtors"] == len(states)
    assert body["personas"] == whole["personas"] and body["quadrants"] == whole["quadrants"]
    for persona in ALL_PERSONAS:
        assert body["persona_quadrant"][persona] == {q: sum(1 for s in states if s.persona == persona and s.quadrant == q) for q in ALL_QUADRANTS}
    assert body["partitions"] == {"reported": 4, "total": 4, "complete": True}
    assert body["latest_event"] is not None and body["as_of"] is not None


def test_transitions_per_partition_use_its_latest_event(states: list[DebtorState]) -> None:
    groups = split(states, 4)
    summaries = {p: summarize(p, 4, group, published_at=100.0) for p, group in groups.items()}
    for days in WINDOWS_DAYS:
        body = merge_transitions(summaries, 4, days)
        expected = {row: dict.fromkeys(ALL_PERSONAS, 0) for row in ALL_PERSONAS}
        for group in groups.values():
            since = max(s.watermark for s in group) - days * DAY
            for row, cells in oracle_transitions(group, since).items():
                for col, n in cells.items():
                    expected[row][col] += n
        assert body["counts"] == expected
        assert body["debtors"] == sum(map(sum, (cells.values() for cells in expected.values())))
        for row, cells in body["row_shares"].items():
            total = sum(expected[row].values())
            assert sum(cells.values()) == pytest.approx(1.0 if total else 0.0, abs=1e-3)
    # Only debtors known at the window's start count: the longer the window, the fewer (8 months
    # of history here, so none for 365 days).
    counted = [merge_transitions(summaries, 4, days)["debtors"] for days in (30, 90, 365)]
    assert counted[0] >= counted[1] >= counted[2] and counted[1] > 0 and counted[2] == 0


def test_partial_coverage_is_reported() -> None:
    summaries = {1: summarize(1, 4, [DebtorState.new("a")], published_at=50.0)}
    body = merge_population(summaries, 4)
    assert body["partitions"] == {"reported": 1, "total": 4, "complete": False}
    assert body["debtors"] == 1
    empty = merge_population({}, 4)
    assert empty["debtors"] == 0 and empty["as_of"] is None and empty["partitions"]["reported"] == 0


@pytest.mark.parametrize(
    "mutate",
    [
        lambda s: s.update(v=2),
        lambda s: s.update(partitions=8),
        lambda s: s.update(partition=4),
        lambda s: s.update(partition="1"),
        lambda s: s.update(debtors=None),
        lambda s: s["personas"].update(tamara=-1),
        lambda s: s["personas"].update(tamara=1.5),
        lambda s: s.update(cells={"tamara": {"x": "1"}}),
        lambda s: s["transitions"].pop("90"),
        lambda s: s["transitions"]["30"].update(counts=[]),
        lambda s: s["transitions"]["30"].update(since="yesterday"),
        lambda s: s.update(published_at=None),
        lambda s: s.update(latest_event="now"),
    ],
)
def test_invalid_summaries_are_ignored(mutate: Any) -> None:
    summary = summarize(1, 4, [DebtorState.new("a")], published_at=1.0)
    assert parse_summary(orjson.dumps(summary), 4) is not None
    mutate(summary)
    assert parse_summary(orjson.dumps(summary), 4) is None


def test_invalid_bytes_are_ignored() -> None:
    for value in (None, b"", b"{", b"[]", b"null", b'"x"'):
        assert parse_summary(value, 4) is None


def test_board_keeps_the_newest_summary_per_partition() -> None:
    board = PopulationBoard("127.0.0.1:1", "t", 4, "c")
    first = summarize(2, 4, [DebtorState.new("a")], published_at=1.0)
    second = summarize(2, 4, [DebtorState.new("a"), DebtorState.new("b")], published_at=2.0)
    board.offer(b"2", orjson.dumps(first))
    board.offer(b"2", orjson.dumps(second))
    assert board.summaries[2]["debtors"] == 2
    board.offer(b"3", orjson.dumps(second))  # key and body disagree
    board.offer(b"x", orjson.dumps(second))
    board.offer(b"1", b"garbage")
    assert set(board.summaries) == {2} and board.ignored == 3
    board.offer(b"2", None)  # a tombstone
    assert board.summaries == {}


# --- the days parameter ---------------------------------------------------------------------------


@pytest.mark.parametrize(("query", "days"), [({}, DEFAULT_WINDOW_DAYS), ({"days": "30"}, 30), ({"days": " 90 "}, 90), ({"days": "365"}, 365)])
def test_days(query: dict[str, str], days: int) -> None:
    assert parse_days(query) == days


@pytest.mark.parametrize("raw", ["60", "0", "-30", "abc", "", "90.0", "1e2", "366"])
def test_bad_days_name_the_allowed_windows(raw: str) -> None:
    with pytest.raises(BadRequest, match=r"days must be one of 30, 90, 365 \(default 365\)"):
        parse_days({"days": raw})
    with pytest.raises(UnknownWindow, match=r"days must be one of 30, 90, 365 \(default 365\)"):
        merge_transitions({}, 4, 60)


# --- the handlers, in-process ------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


class FakeView:
    """Stands in for a faust View: what the handlers answer, decoded."""

    def json(self, value: Any, *, status: int = 200, headers: Any = None) -> Reply:
        return Reply(status, orjson.loads(orjson.dumps(value)), dict(headers or {}))

    def bytes(self, value: bytes, *, content_type: str, status: int = 200, headers: Any = None) -> Reply:
        return Reply(status, orjson.loads(value), dict(headers or {}), content_type)


def request(path: str = "/", token: str | None = None, **headers: str) -> Any:
    all_headers = dict(headers)
    if token is not None:
        all_headers["Authorization"] = f"Bearer {token}"
    query = dict(part.split("=", 1) for part in path.partition("?")[2].split("&") if part)
    return SimpleNamespace(headers=all_headers, query=query, rel_url=path)


@pytest.fixture
def service(monkeypatch: pytest.MonkeyPatch) -> Iterator[Service]:
    service = build_service(WorkerConfig(Settings(api_tokens="agent-t-0123456789=agent,ops-t-0123456789ab=ops", partitions=4, topic_prefix="unit-", peer_secret=PEER_SECRET)))
    service.assigned_once = True
    api = service.api  # type: ignore[attr-defined]
    monkeypatch.setattr(api.publisher, "owned", lambda: {0, 1, 2, 3})
    yield service


def put(service: Service, state: DebtorState) -> None:
    service.table.data[state.debtor_id.encode()] = state.to_bytes()


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def test_debtor_profile_and_access(service: Service, states: list[DebtorState]) -> None:
    api = service.api  # type: ignore[attr-defined]
    state = states[0]
    put(service, state)
    path = f"/debtors/{state.debtor_id}"
    ok = run(api.debtors.debtor(FakeView(), request(path, "agent-t-0123456789"), state.debtor_id))
    assert ok.status == 200 and ok.body == orjson.loads(orjson.dumps(profile(state, service.holder.model)))
    assert ok.body["persona"] == state.persona and ok.body["debtor_id"] == state.debtor_id
    forbidden = run(api.debtors.debtor(FakeView(), request(path, "ops-t-0123456789ab"), state.debtor_id))
    assert forbidden.status == 403 and forbidden.body["error"] == "forbidden"
    for req in (request(path), request(path, "nope"), request(path, Authorization="Basic agent-t-0123456789")):
        denied = run(api.debtors.debtor(FakeView(), req, state.debtor_id))
        assert denied.status == 401 and denied.headers["WWW-Authenticate"].startswith("Bearer")
    missing = run(api.debtors.debtor(FakeView(), request("/debtors/nobody", "agent-t-0123456789"), "nobody"))
    assert missing.status == 404 and missing.body == {"error": "not_found", "detail": "no debtor with this id"}


def test_debtor_is_503_while_rebalancing_or_not_owned(service: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    api = service.api  # type: ignore[attr-defined]
    put(service, DebtorState.new("d1"))
    monkeypatch.setattr(type(service.app), "rebalancing", property(lambda self: True))
    busy = run(api.debtors.debtor(FakeView(), request("/debtors/d1", "agent-t-0123456789"), "d1"))
    assert busy.status == 503 and busy.headers["Retry-After"] == "1"
    monkeypatch.undo()
    monkeypatch.setattr(api.publisher, "owned", lambda: set())
    # Forwarded here, but this worker does not own the partition (any more): no second hop.
    moved = run(api.debtors.debtor(FakeView(), request("/debtors/d1", "agent-t-0123456789", **{FORWARDED_HEADER: "1"}), "d1"))
    assert moved.status == 503 and moved.body["error"] == "unavailable"
    # Not owned here and nobody known to own it (no assignment metadata yet).
    nobody = run(api.debtors.debtor(FakeView(), request("/debtors/d1", "agent-t-0123456789"), "d1"))
    assert nobody.status == 503


def test_debtor_is_forwarded_to_the_owner(service: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 14, item 9: only the profile request, rebuilt from the validated id, signed with the
    peer secret (never the client's token); only the expected JSON comes back."""
    api = service.api  # type: ignore[attr-defined]
    monkeypatch.setattr(api.publisher, "owned", lambda: set())
    seen: list[dict[str, str]] = []
    answers: list[aioweb.Response] = []

    async def owner_page(req: aioweb.Request) -> aioweb.Response:
        seen.append(dict(req.headers) | {"path": req.path, "debtor_id": req.query.get("debtor_id", "")})
        return answers.pop(0)

    async def scenario() -> list[Reply]:
        owner = aioweb.Application()
        owner.router.add_get(PEER_PATH, owner_page)
        runner = aioweb.AppRunner(owner)
        await runner.setup()
        listening = socket.socket()
        listening.bind(("127.0.0.1", 0))
        port = listening.getsockname()[1]
        site = aioweb.SockSite(runner, listening)
        await site.start()
        replies = []
        try:
            monkeypatch.setattr(api.peers, "owner", lambda partition: f"http://127.0.0.1:{port}")
            answers.append(aioweb.json_response({"error": "not_found", "detail": "no debtor with this id"}, status=404))
            replies.append(await api.debtors.debtor(FakeView(), request("/debtors/d%C3%A9?x=1", "agent-t-0123456789"), "dé"))
            answers.append(aioweb.json_response({"debtor_id": "..", "persona": "job"}, headers={"Set-Cookie": "x=1", "WWW-Authenticate": "Peer"}))
            replies.append(await api.debtors.debtor(FakeView(), request("/debtors/..", "agent-t-0123456789"), ".."))
            answers.append(aioweb.json_response({"debtor_id": "someone-else"}))
            replies.append(await api.debtors.debtor(FakeView(), request("/debtors/d3", "agent-t-0123456789"), "d3"))
            answers.append(aioweb.Response(text="<html>owner's root</html>", content_type="text/html"))
            replies.append(await api.debtors.debtor(FakeView(), request("/debtors/d4", "agent-t-0123456789"), "d4"))
            await runner.cleanup()
            replies.append(await api.debtors.debtor(FakeView(), request("/debtors/d2", "agent-t-0123456789"), "d2"))
            return replies
        finally:
            await runner.cleanup()
            await service.app.http_client.close()

    missing, dots, wrong, html, down = run(scenario())
    assert missing.status == 404 and missing.body["error"] == "not_found"
    assert dots.status == 200 and dots.body == {"debtor_id": "..", "persona": "job"}
    assert set(dots.headers) == {"Cache-Control", "Vary"} and dots.headers["Cache-Control"] == "no-store"
    assert wrong.status == 503 and html.status == 503  # not the profile asked for: never passed on
    assert down.status == 503 and down.body["error"] == "unavailable"
    assert [h["path"] for h in seen] == [PEER_PATH] * 4
    assert [h["debtor_id"] for h in seen] == ["dé", "..", "d3", "d4"]
    for headers in seen:
        assert "Authorization" not in headers and "agent-t-0123456789" not in str(headers)
        assert verify_peer(PEER_SECRET, headers[PEER_HEADER], headers["debtor_id"])
    assert api.peers.forwarded == 5


def test_ids_outside_the_contract_are_400_before_routing(service: Service) -> None:
    api = service.api  # type: ignore[attr-defined]
    for debtor_id in ("d\x00", "x" * 65, "a\nb", "d\x85"):
        reply = run(api.debtors.debtor(FakeView(), request("/debtors/x", "agent-t-0123456789"), debtor_id))
        assert reply.status == 400 and reply.body["error"] == "bad_request" and "control characters" in reply.body["detail"]
    assert api.peers.forwarded == 0


def test_without_a_peer_secret_nothing_is_forwarded(service: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    api = service.api  # type: ignore[attr-defined]
    monkeypatch.setattr(api.publisher, "owned", lambda: set())
    monkeypatch.setattr(api.peers, "owner", lambda partition: "http://127.0.0.1:9")
    monkeypatch.setattr(api.peers, "secret", "")
    reply = run(api.debtors.debtor(FakeView(), request("/debtors/d1", "agent-t-0123456789"), "d1"))
    assert reply.status == 503 and "PEER_SECRET" in reply.body["detail"] and api.peers.forwarded == 0


def test_the_peer_page_answers_signed_requests_only(service: Service, states: list[DebtorState]) -> None:
    api = service.api  # type: ignore[attr-defined]
    state = states[0]
    put(service, state)

    def peer(headers: dict[str, str], debtor_id: str = state.debtor_id) -> Reply:
        req = SimpleNamespace(headers=headers, query={"debtor_id": debtor_id}, rel_url=PEER_PATH)
        return run(api.debtors.peer_profile(FakeView(), req))

    ok = peer({PEER_HEADER: sign_peer(PEER_SECRET, state.debtor_id)})
    assert ok.status == 200 and ok.body["debtor_id"] == state.debtor_id and ok.headers["Cache-Control"] == "no-store"
    for headers in (
        {},
        {"Authorization": "Bearer agent-t-0123456789"},  # a client token is no peer signature
        {PEER_HEADER: sign_peer("another-secret", state.debtor_id)},
        {PEER_HEADER: sign_peer(PEER_SECRET, "someone-else")},
        {PEER_HEADER: sign_peer(PEER_SECRET, state.debtor_id, now=time.time() - 120)},  # replayed later
        {PEER_HEADER: "garbage"},
    ):
        assert peer(headers).status == 403, headers


def test_owner_urls_must_be_plain_base_urls() -> None:
    assert peer_base_url("http://w2:6066") == "http://w2:6066"
    assert peer_base_url("https://w2.internal:8443/") == "https://w2.internal:8443"
    for url in ("http://169.254.169.254/latest/meta-data", "http://w2:6066/?x=1", "http://u:p@w2:6066", "gopher://w2:70", "w2:6066", ""):
        assert peer_base_url(url) is None, url


def test_the_api_listens_on_loopback_by_default(service: Service) -> None:
    assert service.app.conf.web_bind == "127.0.0.1"


def test_aggregates(service: Service, states: list[DebtorState]) -> None:
    api = service.api  # type: ignore[attr-defined]
    not_loaded = run(api.aggregates.personas(FakeView(), request("/personas", "ops-t-0123456789ab")))
    assert not_loaded.status == 503
    api.board.loaded.set()
    for partition, group in split(states, 4).items():
        api.board.offer(str(partition).encode(), orjson.dumps(summarize(partition, 4, group)))
    for token in ("ops-t-0123456789ab", "agent-t-0123456789"):
        body = run(api.aggregates.personas(FakeView(), request("/personas", token)))
        assert body.status == 200 and body.body["debtors"] == len(states)
        matrix = run(api.aggregates.transitions(FakeView(), request("/personas/transitions?days=90", token)))
        assert matrix.status == 200 and matrix.body["days"] == 90 and set(matrix.body["counts"]) == set(ALL_PERSONAS)
    default = run(api.aggregates.transitions(FakeView(), request("/personas/transitions", "ops-t-0123456789ab")))
    assert default.body["days"] == 365
    bad = run(api.aggregates.transitions(FakeView(), request("/personas/transitions?days=7", "ops-t-0123456789ab")))
    assert bad.status == 400 and "30, 90, 365" in bad.body["detail"]
    for handler in (api.aggregates.personas, api.aggregates.transitions):
        assert run(handler(FakeView(), request("/personas"))).status == 401


def test_malformed_tokens_stop_the_worker_at_start_up() -> None:
    with pytest.raises(ApiConfigError) as caught:
        build_service(WorkerConfig(Settings(api_tokens="secret-1-0123456789=agent,secret-2-0123456789=root", topic_prefix="unit-")))
    error = caught.value
    assert isinstance(error, click.ClickException) and error.exit_code == 2
    assert error.format_message() == "DEBTOR_SEGMENTS_API_TOKENS: entry 2 has an unknown role (roles: agent, ops; expected token=role)"
    assert "secret" not in error.format_message()


def test_no_tokens_still_starts(service: Service) -> None:
    bare = build_service(WorkerConfig(Settings(api_tokens="", topic_prefix="unit-")))
    api = bare.api  # type: ignore[attr-defined]
    assert run(api.aggregates.personas(FakeView(), request("/personas", "anything"))).status == 401


# --- routes and the OpenAPI document ------------------------------------------------------------


@pytest.fixture(scope="module")
def openapi() -> dict[str, Any]:
    return yaml.safe_load(OPENAPI.read_text(encoding="utf-8"))


DEFAULT_POLICY = ROOT / "policies" / "default.yaml"
#: Served only by a worker started with ``--policy`` (agents/treatment_service.py).
POLICY_PREFIXES = {"/experiments", "/portfolio"}


def registered_routes(policy: str = str(DEFAULT_POLICY)) -> set[tuple[str, str]]:
    service = build_service(WorkerConfig(Settings(topic_prefix="unit-", policy=policy)))
    web = service.app.web
    web.blueprints.apply(web)  # what the server adds when it starts
    return {(route.method, route.resource.canonical) for route in web.web_app.router.routes() if route.method != "HEAD"}


def test_every_route_under_the_documented_prefixes_is_documented(openapi: dict[str, Any]) -> None:
    routes = registered_routes()
    documented = {(method.upper(), path) for path, item in openapi["paths"].items() for method in item}
    prefixes = {"/" + path.strip("/").split("/")[0] for path in openapi["paths"]}
    assert prefixes == {"/debtors", "/personas", "/health", "/ready", "/metrics"} | POLICY_PREFIXES
    served = {(method, path) for method, path in routes if ("/" + path.strip("/").split("/")[0]) in prefixes}
    assert served == documented
    # Without a policy the treatment pages are not served at all.
    bare = {(method, path) for method, path in registered_routes(policy="") if ("/" + path.strip("/").split("/")[0]) in prefixes}
    assert bare == {(method, path) for method, path in documented if ("/" + path.strip("/").split("/")[0]) not in POLICY_PREFIXES}
    # Faust's table and router pages would serve table data and the cluster layout unauthenticated.
    assert not [path for _, path in routes if path.startswith(("/table", "/router"))]


def test_openapi_document(openapi: dict[str, Any]) -> None:
    assert openapi["openapi"].startswith("3.1.")
    schemas = openapi["components"]["schemas"]
    for name, schema in schemas.items():
        Draft202012Validator.check_schema(schema), name
    assert tuple(schemas["Persona"]["enum"]) == ALL_PERSONAS
    assert tuple(schemas["Quadrant"]["enum"]) == ALL_QUADRANTS
    assert set(schemas["PersonaCounts"]["required"]) == set(ALL_PERSONAS)
    assert set(schemas["QuadrantCounts"]["required"]) == set(ALL_QUADRANTS)
    [days] = openapi["paths"]["/personas/transitions"]["get"]["parameters"]
    assert tuple(days["schema"]["enum"]) == WINDOWS_DAYS and days["schema"]["default"] == DEFAULT_WINDOW_DAYS
    for path, item in openapi["paths"].items():
        for operation in item.values():
            protected = bool(operation.get("security"))
            assert protected == path.startswith(("/debtors", "/personas", *POLICY_PREFIXES)), path
            assert ("401" in operation["responses"]) == protected, path


def test_bodies_match_the_documented_schemas(openapi: dict[str, Any], states: list[DebtorState]) -> None:
    def validator(name: str) -> Draft202012Validator:
        return Draft202012Validator({"$ref": f"#/components/schemas/{name}", "components": openapi["components"]})

    model = SegmentModel()
    for state in states[:20] + [DebtorState.new("fresh")]:
        validator("Profile").validate(orjson.loads(orjson.dumps(profile(state, model))))
    summaries = {p: summarize(p, 4, group) for p, group in split(states, 4).items()}
    validator("Population").validate(orjson.loads(orjson.dumps(merge_population(summaries, 4))))
    validator("Population").validate(orjson.loads(orjson.dumps(merge_population({}, 4))))
    for days in WINDOWS_DAYS:
        validator("Transitions").validate(orjson.loads(orjson.dumps(merge_transitions(summaries, 4, days))))


def test_experiment_bodies_match_the_documented_schemas(openapi: dict[str, Any], tmp_path: Path, handle_lines: HandleLines) -> None:
    """``GET /experiments`` and ``GET /experiments/{id}`` of a worker with the default policy."""
    from debtor_segments.agents.treatment_service import TreatmentService

    def validator(name: str) -> Draft202012Validator:
        return Draft202012Validator({"$ref": f"#/components/schemas/{name}", "components": openapi["components"]})

    service = TreatmentService(DEFAULT_POLICY)
    empty = orjson.loads(orjson.dumps(service.experiments()))
    validator("ExperimentList").validate(empty)
    for item in empty["experiments"]:  # before any record: nothing assigned yet
        validator("Experiment").validate(orjson.loads(orjson.dumps(service.experiment(item["experiment_id"]))))
    for line, handled in handle_lines(simulate(debtors=120, months=8, seed=5).lines):
        service.after_record(handled, line, "x")
    body = orjson.loads(orjson.dumps(service.experiments()))
    validator("ExperimentList").validate(body)
    assert body["experiments"]
    for item in body["experiments"]:
        report = orjson.loads(orjson.dumps(service.experiment(item["experiment_id"])))
        validator("Experiment").validate(report)
        assert report["segments"]["all"] and report["contacts"]


# --- the publisher ------------------------------------------------------------------------------


def test_publisher_sends_changed_partitions_only(service: Service, states: list[DebtorState], monkeypatch: pytest.MonkeyPatch) -> None:
    api = service.api  # type: ignore[attr-defined]
    publisher = api.publisher
    sent: list[tuple[bytes, dict[str, Any]]] = []

    async def send(key: bytes, value: bytes) -> None:
        sent.append((key, orjson.loads(value)))

    publisher.send = send
    monkeypatch.setattr(publisher, "owned", lambda: {0, 2})
    for state in states:
        put(service, state)
    groups = split(states, 4)

    async def scenario() -> list[int]:
        counts = []
        publisher.clock = lambda: 1000.0  # frozen: nothing is due by time, and no scan backoff
        assert await publisher.refresh() == 0  # the population topic is not there yet
        api.board.topic_ready.set()
        counts.append(await publisher.refresh())  # never published: both owned partitions
        counts.append(await publisher.refresh())  # nothing changed
        changed = next(s for s in groups[2] if s.persona != "job").copy()  # the fixture's stay as they are
        changed.persona = "job"
        put(service, changed)
        publisher.mark(changed.debtor_id.encode())
        publisher.mark(groups[0][0].debtor_id.encode())  # marked, but its summary is the same
        counts.append(await publisher.refresh())
        counts.append(await publisher.refresh(force=True))
        publisher.forget({0})  # revoked: published afresh when it comes back
        counts.append(await publisher.refresh())
        return counts

    assert run(scenario()) == [2, 0, 1, 2, 1]
    first = {key: body for key, body in sent[:2]}
    assert set(first) == {b"0", b"2"}
    assert first[b"0"]["debtors"] == len(groups[0]) and first[b"2"]["debtors"] == len(groups[2])
    key, body = sent[2]
    assert key == b"2" and body["personas"]["job"] == first[b"2"]["personas"]["job"] + 1
    assert all(parse_summary(orjson.dumps(body), 4) is not None for _, body in sent)


def test_a_refresh_waits_as_many_times_as_long_as_the_last_one_took(service: Service, states: list[DebtorState], monkeypatch: pytest.MonkeyPatch) -> None:
    from debtor_segments.agents.population import SCAN_BACKOFF

    publisher = service.api.publisher  # type: ignore[attr-defined]
    now = [1000.0]

    async def send(key: bytes, value: bytes) -> None:
        now[0] += 1.0  # sending takes a second of the publisher's clock

    publisher.send = send
    publisher.clock = lambda: now[0]
    monkeypatch.setattr(publisher, "owned", lambda: {0})
    for state in states:
        put(service, state)
    service.api.board.topic_ready.set()  # type: ignore[attr-defined]
    assert run(publisher.refresh()) == 1  # took 1 s: the next one not before 1001 + 20 s
    changed = next(s for s in split(states, 4)[0] if s.persona != "job").copy()
    changed.persona = "job"
    put(service, changed)
    publisher.mark(changed.debtor_id.encode())
    now[0] = 1001.0 + SCAN_BACKOFF - 0.5
    assert run(publisher.refresh()) == 0
    now[0] = 1001.0 + SCAN_BACKOFF
    assert run(publisher.refresh()) == 1


def test_population_gauges_come_from_the_publishers_scans(service: Service, states: list[DebtorState], monkeypatch: pytest.MonkeyPatch) -> None:
    api = service.api  # type: ignore[attr-defined]
    publisher = api.publisher

    async def send(key: bytes, value: bytes) -> None:
        pass

    publisher.send = send
    monkeypatch.setattr(publisher, "owned", lambda: {0, 2})
    for state in states:
        put(service, state)
    groups = split(states, 4)
    owned = groups[0] + groups[2]
    assert publisher.population() is None  # no partition scanned yet
    api.board.topic_ready.set()
    run(publisher.refresh())
    personas, quadrants = publisher.population()
    assert personas == Counter(s.persona for s in owned) and quadrants == Counter(s.quadrant for s in owned)
    publisher.forget({2})
    assert publisher.population() is None  # partition 2 came back: not scanned since


# --- event data never makes an endpoint fail (issue 14, item 4) ----------------------------------


def test_a_state_dated_9999_does_not_break_any_endpoint(service: Service) -> None:
    """States and summaries written before the decoder bounded event times: a debtor whose
    watermark is UTC year 10000 (``9999-12-31T23:59:59-01:00``) made /personas answer 500."""
    api = service.api  # type: ignore[attr-defined]
    frozen = DebtorState.new("d-9999")
    frozen.applied, frozen.first_ts, frozen.watermark, frozen.persona_since = 1, 1.7e9, 253_402_304_399.0, 253_402_304_399.0
    ancient = DebtorState.new("d-0001")
    ancient.applied, ancient.first_ts, ancient.watermark = 1, -62_135_596_800.0, -62_135_596_800.0
    put(service, frozen)
    put(service, ancient)
    api.board.loaded.set()
    for partition, group in split([frozen, ancient], 4).items():
        api.board.offer(str(partition).encode(), orjson.dumps(summarize(partition, 4, group)))
    body = run(api.aggregates.personas(FakeView(), request("/personas", "ops-t-0123456789ab")))
    assert body.status == 200 and body.body["debtors"] == 2 and body.body["latest_event"] is None
    for days in WINDOWS_DAYS:
        matrix = run(api.aggregates.transitions(FakeView(), request(f"/personas/transitions?days={days}", "ops-t-0123456789ab")))
        assert matrix.status == 200, matrix
    for state in (frozen, ancient):
        reply = run(api.debtors.debtor(FakeView(), request(f"/debtors/{state.debtor_id}", "agent-t-0123456789"), state.debtor_id))
        assert reply.status == 200 and reply.body["debtor_id"] == state.debtor_id


# --- the contact facts of GET /debtors/{debtor_id} with a treatment policy (issue 16) -------------

#: Rules other than the defaults: the facts must come from the policy in force.
CONTACT_RULES = {"version": "unit-rules", "earliest_hour": 9, "latest_hour": 20, "max_calls": 5, "call_window_days": 6, "quiet_days_after_conversation": 3}
#: Monday 2 March 2026, 15:00 UTC: 10:00 in New York, 00:00 (Tuesday) in Tokyo.
MONDAY = 1772463600.0


@pytest.fixture
def policy_service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Service]:
    policy = tmp_path / "policy.json"
    policy.write_bytes(orjson.dumps({
        "version": "unit-contact", "contact_rules": CONTACT_RULES,
        "plans": {"p": [{"day": 0, "channel": "call", "tone": "neutral", "message_id": "m"}]}, "segments": {"unknown": "p"},
    }))  # fmt: skip
    service = build_service(WorkerConfig(Settings(
        api_tokens="agent-t-0123456789=agent,ops-t-0123456789ab=ops", partitions=4, topic_prefix="unit-", peer_secret=PEER_SECRET,
        policy=str(policy), default_timezone="Europe/Amsterdam",
    )))  # fmt: skip
    service.assigned_once = True
    monkeypatch.setattr(service.api.publisher, "owned", lambda: {0, 1, 2, 3})  # type: ignore[attr-defined]
    service.api.debtors.clock = lambda: MONDAY  # type: ignore[attr-defined]
    yield service


def _treatment(debtor_id: str, **contact: Any) -> Any:
    from debtor_segments.streams.contact_state import ContactState
    from debtor_segments.streams.treatments import TreatmentState

    return TreatmentState(debtor_id, contact=ContactState(**contact))


def _store(service: Service, state: Any) -> None:
    from debtor_segments.agents.population import key_partition
    from debtor_segments.streams.treatments import stored_key, stored_value

    service.table.data[stored_key(state.debtor_id)] = stored_value(state, key_partition(state.debtor_id.encode(), 4))


def _get(service: Service, debtor_id: str, token: str = "agent-t-0123456789") -> Reply:
    return run(service.api.debtors.debtor(FakeView(), request(f"/debtors/{debtor_id}", token), debtor_id))  # type: ignore[attr-defined]


def test_the_profile_shows_the_contact_facts_the_guard_applies(policy_service: Service) -> None:
    from zoneinfo import ZoneInfo

    from debtor_segments.streams.answer_rates import AnswerCounts
    from debtor_segments.streams.contact_guard import guard_step
    from debtor_segments.streams.contact_state import ContactState

    put(policy_service, DebtorState.new("d-ny"))
    # Answers in the evening on weekdays, none in the morning; a later opt-in lifts the opt-out of call.
    attempts, answers = [0] * 16, [0] * 16
    attempts[3], attempts[6], answers[6] = 6, 6, 5  # weekday 09-12: 0/6, weekday 18-21: 5/6
    treatment = _treatment(
        "d-ny", tz_name="America/New_York", tz_ts=1.0, opt_out=["call", "sms"], opt_out_ts=1.0, opt_in=["call"], opt_in_ts=2.0,
        inconvenient=[[12, 14], [19, 20]], calls=[[MONDAY - 8 * DAY, "a"], [MONDAY - 5 * DAY, "b"], [MONDAY - 3600, "c"], [MONDAY + 60, "d"]],
        conversations=[MONDAY - 2 * DAY], rates=AnswerCounts(attempts, answers), held=[[MONDAY + DAY, {}, MONDAY]], decisions=9,
    )  # fmt: skip
    _store(policy_service, treatment)
    reply = _get(policy_service, "d-ny")
    assert reply.status == 200 and reply.headers["Cache-Control"] == "no-store"
    facts = reply.body["contact"]
    assert (facts["timezone"], facts["timezone_source"], facts["local_time"], facts["weekend"]) == ("America/New_York", "preference", "2026-03-02T10:00:00-05:00", False)
    assert facts["opted_out_channels"] == ["sms"]
    # The policy's 09-20 minus the debtor's 12-14 and 19-20.
    assert facts["allowed_hours"] == [{"from_hour": 9, "to_hour": 12}, {"from_hour": 14, "to_hour": 19}]
    assert facts["inconvenient_hours"] == [{"from_hour": 12, "to_hour": 14}, {"from_hour": 19, "to_hour": 20}]
    # Weekday evenings answer best: the 18-21 band, narrowed to its allowed 18-19.
    assert facts["best_window"] == {"from_hour": 18, "to_hour": 19, "timezone": "America/New_York"}
    assert facts["calls"] == {"in_window": 2, "max_calls": 5, "window_days": 6, "last_call_at": "2026-03-02T15:01:00+00:00", "recorded_attempts": 12, "answered": 5}
    quiet_end = datetime(2026, 3, 3, tzinfo=ZoneInfo("America/New_York")).timestamp()  # the conversation's day (28 Feb) + 3 days
    assert facts["last_conversation_at"] == "2026-02-28T15:00:00+00:00" and facts["quiet_until"] == datetime.fromtimestamp(quiet_end, UTC).isoformat()
    assert (facts["held_steps"], facts["decisions"], facts["rule_version"]) == (1, 9, "unit-rules")
    # The same window as the contact_due of a call the guard lets go at this instant.
    runner = policy_service.treatments.runner  # type: ignore[union-attr]
    step = {"event_id": "due-x", "debtor_id": "d-ny", "type": "contact_due", "channel": "call", "plan_id": "p", "step": 0, "due_at": "2026-03-02T15:00:00Z"}
    contact = ContactState.from_dict({**treatment.contact.to_dict(), "conversations": [], "calls": []})  # a call may go now
    outputs = guard_step(contact, step, MONDAY, MONDAY, runner.policy.contact_rules, (), "Europe/Amsterdam", emitted_at="x", portfolio=runner.portfolio)
    [due] = [o.value for o in outputs if o.value is not None and o.value["type"] == "contact_due"]
    assert due["best_window"] == facts["best_window"]
    # The role model of the personal-data endpoint holds: ops may not read them, nobody without a token.
    assert _get(policy_service, "d-ny", "ops-t-0123456789ab").status == 403
    denied = run(policy_service.api.debtors.debtor(FakeView(), request("/debtors/d-ny"), "d-ny"))  # type: ignore[attr-defined]
    assert denied.status == 401 and "contact" not in denied.body


def test_the_best_window_is_for_the_weekday_or_weekend_it_is_for_the_debtor(policy_service: Service) -> None:
    from debtor_segments.streams.answer_rates import AnswerCounts

    put(policy_service, DebtorState.new("d-tokyo"))
    attempts, answers = [0] * 16, [0] * 16
    attempts[6], answers[6] = 8, 8  # weekdays 18-21: always
    attempts[8 + 3], answers[8 + 3] = 8, 8  # weekends 09-12: always
    attempts[8 + 6] = attempts[3] = 8  # weekend evenings, weekday mornings: never
    _store(policy_service, _treatment("d-tokyo", claim_tz_name="Asia/Tokyo", claim_tz_ts=1.0, rates=AnswerCounts(attempts, answers)))
    api = policy_service.api  # type: ignore[attr-defined]
    # Friday 6 March, 23:30 UTC: still Friday in UTC (and Amsterdam), Saturday 08:30 in Tokyo.
    api.debtors.clock = lambda: 1772839800.0
    saturday = _get(policy_service, "d-tokyo").body["contact"]
    assert (saturday["timezone"], saturday["timezone_source"], saturday["weekend"]) == ("Asia/Tokyo", "claim", True)
    assert saturday["local_time"] == "2026-03-07T08:30:00+09:00"
    assert saturday["best_window"] == {"from_hour": 9, "to_hour": 12, "timezone": "Asia/Tokyo"}
    api.debtors.clock = lambda: 1772839800.0 - 12 * 3600  # Friday 20:30 in Tokyo
    friday = _get(policy_service, "d-tokyo").body["contact"]
    assert friday["weekend"] is False and friday["best_window"] == {"from_hour": 18, "to_hour": 20, "timezone": "Asia/Tokyo"}


def test_the_contact_facts_come_from_the_runner_then_the_table(policy_service: Service) -> None:
    put(policy_service, DebtorState.new("d-live"))
    _store(policy_service, _treatment("d-live", tz_name="Asia/Tokyo", tz_ts=1.0))
    assert _get(policy_service, "d-live").body["contact"]["timezone"] == "Asia/Tokyo"  # partition not restored yet: the table's
    runner = policy_service.treatments.runner  # type: ignore[union-attr]
    runner.states["d-live"] = _treatment("d-live", tz_name="America/Chicago", tz_ts=2.0, opt_out=["email"], opt_out_ts=2.0)
    live = _get(policy_service, "d-live").body["contact"]  # the runner's is newer (written with the next record)
    assert (live["timezone"], live["opted_out_channels"]) == ("America/Chicago", ["email"])
    # A debtor the guard knows nothing about: the deployment default and the portfolio's prior.
    put(policy_service, DebtorState.new("d-new"))
    fresh = _get(policy_service, "d-new").body["contact"]
    assert (fresh["timezone"], fresh["timezone_source"], fresh["opted_out_channels"], fresh["held_steps"]) == ("Europe/Amsterdam", "default", [], 0)
    assert fresh["best_window"] == {"from_hour": 9, "to_hour": 12, "timezone": "Europe/Amsterdam"}  # no answers anywhere: the first band
    assert fresh["calls"]["in_window"] == 0 and fresh["calls"]["last_call_at"] is None and fresh["quiet_until"] is None
    # No contact hour left at all: no window. A zone gone from the database: the default, as the guard does.
    _store(policy_service, _treatment("d-new", tz_name="Mars/Olympus", tz_ts=1.0, inconvenient=[[0, 24]]))
    none = _get(policy_service, "d-new").body["contact"]
    assert (none["best_window"], none["allowed_hours"], none["timezone"], none["timezone_source"]) == (None, [], "Europe/Amsterdam", "default")
    # Erased (no state in the table): 404, nothing about its contacts.
    assert _get(policy_service, "d-gone").status == 404


def test_without_a_policy_the_profile_has_no_contact_facts(service: Service) -> None:
    assert service.treatments is None
    put(service, DebtorState.new("d1"))
    reply = _get(service, "d1")
    assert reply.status == 200 and "contact" not in reply.body


def test_forwarded_profiles_carry_the_contact_facts(policy_service: Service) -> None:
    put(policy_service, DebtorState.new("d-peer"))
    _store(policy_service, _treatment("d-peer", tz_name="Europe/Lisbon", tz_ts=1.0))
    req = SimpleNamespace(headers={PEER_HEADER: sign_peer(PEER_SECRET, "d-peer")}, query={"debtor_id": "d-peer"}, rel_url=PEER_PATH)
    reply = run(policy_service.api.debtors.peer_profile(FakeView(), req))  # type: ignore[attr-defined]
    assert reply.status == 200 and reply.body["contact"]["timezone"] == "Europe/Lisbon"


def test_profiles_with_contact_facts_match_the_documented_schema(openapi: dict[str, Any], policy_service: Service, states: list[DebtorState]) -> None:
    validator = Draft202012Validator({"$ref": "#/components/schemas/Profile", "components": openapi["components"]})
    put(policy_service, states[0])
    _store(policy_service, _treatment(states[0].debtor_id, tz_name="Asia/Kolkata", tz_ts=1.0, opt_out=["sms"], opt_out_ts=1.0,
                                      inconvenient=[[20, 9]], calls=[[MONDAY - DAY, "x"]], conversations=[MONDAY - DAY]))  # fmt: skip
    put(policy_service, DebtorState.new("d-bare"))
    for debtor_id in (states[0].debtor_id, "d-bare"):
        body = _get(policy_service, debtor_id).body
        assert "contact" in body
        validator.validate(body)
    assert set(openapi["components"]["schemas"]["ContactFacts"]["required"]) == set(body["contact"])
