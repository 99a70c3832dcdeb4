"""The worker's HTTP API, wired into the Faust app: debtor profiles, the persona mix and the
persona transition matrix.

``register_api(service)`` (called at the end of :func:`agents.worker.build_service`) adds

* ``GET /debtors/{debtor_id}`` (:mod:`agents.http_debtors`, forwarded to the owner of the
  debtor's partition by :mod:`agents.http_peers`);
* ``GET /personas`` and ``GET /personas/transitions`` (:mod:`agents.http_population`), summed
  from the population summaries every worker publishes and reads (:mod:`agents.population`;
  the tallies themselves are :mod:`streams.population`).

``/health``, ``/ready``, ``/model`` and ``/metrics`` stay open. See ``docs/api.md`` for the
contract and ``docs/openapi.yaml`` for the schemas.

Debtor ids never go into logs (unless ``DEBTOR_SEGMENTS_DEBUG_IDS``), tokens never.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click
from faust import web as faust_web

from debtor_segments.agents.auth import TokenConfigError, parse_tokens
from debtor_segments.agents.http_common import Replies
from debtor_segments.agents.http_debtors import DebtorPages
from debtor_segments.agents.http_peers import PEER_PATH, Peers
from debtor_segments.agents.http_population import PopulationPages
from debtor_segments.agents.population import (
    GAUGE_SECONDS,
    POPULATION_TOPIC,
    REFRESH_SECONDS,
    PopulationBoard,
    PopulationPublisher,
    SummaryProducer,
    TableChanges,
)
from debtor_segments.streams.drift import population_stability_index
from debtor_segments.streams.personas import UNKNOWN

if TYPE_CHECKING:
    from debtor_segments.agents.service import Service

__all__ = ["Api", "ApiConfigError", "register_api"]

log = logging.getLogger("debtor_segments.api")


class ApiConfigError(click.ClickException):
    """The API cannot start with this configuration (printed as ``Error: ...``, exit status 2)."""

    exit_code = 2


@dataclass
class Api:
    """The API's parts, as :func:`register_api` wired them (``service.api``)."""

    debtors: DebtorPages
    aggregates: PopulationPages
    peers: Peers
    board: PopulationBoard
    publisher: PopulationPublisher


async def _plain_server_header(request: Any, response: Any) -> None:
    response.headers["Server"] = "debtor-segments"


def _hide_server_version(app: Any) -> None:
    """No ``Server: Python/3.x aiohttp/3.x`` header: versions only help an attacker."""
    app.web.web_app.on_response_prepare.append(_plain_server_header)


def register_api(service: Service) -> Api:
    """Add the API's pages, the population publisher (a timer) and reader (a task) to the app.

    Raises :class:`ApiConfigError` when ``DEBTOR_SEGMENTS_API_TOKENS`` is malformed.
    """
    app = service.app
    config = service.config
    try:
        tokens = parse_tokens(config.settings.api_tokens)
    except TokenConfigError as error:
        raise ApiConfigError(str(error)) from None
    topic_name = config.topic(POPULATION_TOPIC)
    client_options = config.settings.kafka_client_options()
    board = PopulationBoard(
        config.settings.bootstrap_servers,
        topic_name,
        config.settings.partitions,
        f"{config.id}-population-reader",
        config.settings.signing_key,
        lambda: service.metrics.count_signature_failure("population"),
        client_options=client_options,
    )
    producer = SummaryProducer(config.settings.bootstrap_servers, topic_name, f"{config.id}-population-writer", client_options=client_options)
    publisher = PopulationPublisher(service, board, producer.send)
    replies = Replies(tokens, debug_ids=config.settings.debug_ids)
    peers = Peers(app, service.table.name, publisher.changelog, config.settings.peer_secret, replies)
    debtors = DebtorPages(service, replies, publisher, peers)
    aggregates = PopulationPages(replies, board, config.settings.partitions)
    api = Api(debtors, aggregates, peers, board, publisher)
    service.api = api  # type: ignore[attr-defined]
    app.sensors.add(TableChanges(service.table, publisher.mark))
    _hide_server_version(app)

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def stop_population_producer(sender: Any, **kwargs: Any) -> None:
        await producer.stop()

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def forget_revoked(sender: Any, revoked: set[Any], **kwargs: Any) -> None:
        publisher.forget({tp.partition for tp in revoked})

    @app.task
    async def population_reader() -> None:
        if tokens:  # logged here, once the worker has set up logging
            log.info("HTTP API: %s", tokens.summary())
        else:
            log.warning("HTTP API: DEBTOR_SEGMENTS_API_TOKENS is empty: /debtors and /personas answer 401 to every request")
        unset = [name for name, value in (("PEER_SECRET", config.settings.peer_secret), ("ID_SECRET", config.settings.id_secret), ("SIGNING_SECRET", config.settings.signing_secret)) if not value]
        if unset:  # docs/security.md: what each one protects
            log.warning("security: DEBTOR_SEGMENTS_%s not set (docs/security.md)", ", DEBTOR_SEGMENTS_".join(unset))
        await board.run()

    @app.timer(interval=REFRESH_SECONDS)
    async def population_publisher() -> None:
        try:
            await publisher.refresh()
        except asyncio.CancelledError:
            raise
        except Exception as error:  # noqa: BLE001 - a timer must not die; retried next tick
            log.warning("publishing population summaries failed: %s", type(error).__name__)

    previous_mix: dict[str, int] = {}

    @app.timer(interval=GAUGE_SECONDS)
    async def population_gauges() -> None:
        population = publisher.population()
        if population is None or app.in_recovery or app.rebalancing:
            return
        personas, quadrants = population
        metrics = service.metrics
        metrics.set_persona_counts(personas)
        metrics.set_quadrant_counts(quadrants)
        known = {persona: n for persona, n in personas.items() if persona != UNKNOWN}
        if previous_mix and known:
            metrics.set_drift(population_stability_index(previous_mix, known))
        if known:
            previous_mix.clear()
            previous_mix.update(known)

    @app.page("/debtors/{debtor_id}")
    class Debtor(faust_web.View):
        async def get(self, request: faust_web.Request, debtor_id: str) -> faust_web.Response:
            response: faust_web.Response = await debtors.debtor(self, request, debtor_id)
            return response

    @app.page(PEER_PATH)
    class PeerProfile(faust_web.View):
        async def get(self, request: faust_web.Request) -> faust_web.Response:
            response: faust_web.Response = await debtors.peer_profile(self, request)
            return response

    @app.page("/personas")
    class Personas(faust_web.View):
        async def get(self, request: faust_web.Request) -> faust_web.Response:
            response: faust_web.Response = await aggregates.personas(self, request)
            return response

    @app.page("/personas/transitions")
    class Transitions(faust_web.View):
        async def get(self, request: faust_web.Request) -> faust_web.Response:
            response: faust_web.Response = await aggregates.transitions(self, request)
            return response

    return api
