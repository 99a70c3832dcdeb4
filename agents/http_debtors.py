"""``GET /debtors/{debtor_id}``: the profile of one debtor (role ``agent``), answered by the
worker that owns the debtor's table partition: any worker takes the request and forwards it
there (:mod:`agents.http_peers`); with a treatment policy also the debtor's contact facts
(:func:`streams.profile.contact_facts`: time zone, best window to call, opt-outs, call counts).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from debtor_segments.agents.auth import DEBTORS
from debtor_segments.agents.http_common import JSON, PROFILE_HEADERS, Replies, finite, with_profile_headers
from debtor_segments.agents.http_peers import PEER_HEADER, PEER_PATH, Peers, verify_peer
from debtor_segments.agents.population import PopulationPublisher, key_partition
from debtor_segments.schemas import load_schema
from debtor_segments.streams.contact_state import ContactState
from debtor_segments.streams.profile import contact_facts, profile
from debtor_segments.streams.state import DebtorState
from debtor_segments.streams.treatments import read_stored, stored_key

if TYPE_CHECKING:
    from debtor_segments.agents.service import Service

__all__ = ["DebtorPages", "valid_debtor_id"]

_DEBTOR_ID = load_schema("payment_received")["properties"]["debtor_id"]
_FORBIDDEN_IN_IDS = re.compile(_DEBTOR_ID["not"]["pattern"])
_ID_MESSAGE = f"debtor_id must be {_DEBTOR_ID['minLength']}-{_DEBTOR_ID['maxLength']} characters without control characters"


def valid_debtor_id(debtor_id: str) -> bool:
    """Whether ``debtor_id`` is one the wire contract allows (checked before any routing).

    >>> valid_debtor_id("d42"), valid_debtor_id(""), valid_debtor_id("d\\x00"), valid_debtor_id("x" * 65)
    (True, False, False, False)
    """
    return _DEBTOR_ID["minLength"] <= len(debtor_id) <= _DEBTOR_ID["maxLength"] and not _FORBIDDEN_IN_IDS.search(debtor_id)


class DebtorPages:
    """The debtor pages' logic; :func:`agents.api.register_api` wires it into the app.

    ``publisher`` says which partitions this worker owns, ``peers`` who owns the others.
    """

    def __init__(self, service: Service, replies: Replies, publisher: PopulationPublisher, peers: Peers) -> None:
        self.service = service
        self.replies = replies
        self.publisher = publisher
        self.peers = peers
        self.partitions = service.config.settings.partitions
        #: The wall clock of the contact facts (their "now"; tests set it).
        self.clock: Callable[[], float] = time.time

    async def debtor(self, view: Any, request: Any, debtor_id: str) -> Any:
        """``GET /debtors/{debtor_id}``."""
        _, denied = self.replies.check(view, request, DEBTORS)
        if denied is not None:
            return with_profile_headers(denied)
        if not valid_debtor_id(debtor_id):
            return self.replies.error(view, 400, "bad_request", _ID_MESSAGE, PROFILE_HEADERS)
        try:
            return await self._route(view, debtor_id, forwarded=False)
        except Exception as error:  # noqa: BLE001 - answered 500, logged without the id
            return self.replies.failed(view, "GET /debtors/{debtor_id}", error)

    async def peer_profile(self, view: Any, request: Any) -> Any:
        """``GET /internal/debtor-profile?debtor_id=...``: a profile request another worker
        forwarded, signed with the peer secret; answered from this worker's partitions only."""
        debtor_id = request.query.get("debtor_id", "")
        if not valid_debtor_id(debtor_id) or not verify_peer(self.peers.secret, request.headers.get(PEER_HEADER), debtor_id):
            return self.replies.error(view, 403, "forbidden", "not a signed request of a worker of this deployment", PROFILE_HEADERS)
        try:
            return await self._route(view, debtor_id, forwarded=True)
        except Exception as error:  # noqa: BLE001 - answered 500, logged without the id
            return self.replies.failed(view, "GET " + PEER_PATH, error)

    async def _route(self, view: Any, debtor_id: str, *, forwarded: bool) -> Any:
        app = self.service.app
        key = debtor_id.encode("utf-8")
        partition = key_partition(key, self.partitions)
        if app.rebalancing or app.in_recovery or not self.service.assigned_once:
            return self.replies.unavailable(view, "the workers are rebalancing; retry shortly")
        if partition in self.publisher.owned():
            return self._local_profile(view, key)
        if forwarded:
            return self.replies.unavailable(view, "the owner of this debtor changed; retry shortly")
        if not self.peers.secret:
            return self.replies.unavailable(view, "another worker owns this debtor, and forwarding needs DEBTOR_SEGMENTS_PEER_SECRET")
        owner = self.peers.owner(partition)
        if owner is None:
            return self.replies.unavailable(view, "no worker owns this debtor's partition right now; retry shortly")
        return await self.peers.forward(view, debtor_id, owner)

    def _local_profile(self, view: Any, key: bytes) -> Any:
        data = self.service.table.get(key)
        if data is None:
            return self.replies.error(view, 404, "not_found", "no debtor with this id", PROFILE_HEADERS)
        body = profile(DebtorState.from_bytes(data), self.service.holder.model)
        treatments = self.service.treatments
        if treatments is not None:
            body["contact"] = self._contact(key.decode("utf-8"), treatments.runner)
        return view.bytes(orjson.dumps(finite(body)), content_type=JSON, headers=PROFILE_HEADERS)

    def _contact(self, debtor_id: str, runner: Any) -> dict[str, Any]:
        """The debtor's contact facts: from the runner's state (the newest; the table's copy is
        written with the partition's next record), else from the table (a partition not
        restored yet), else those of a debtor the guard knows nothing about yet."""
        state = runner.states.get(debtor_id)
        if state is None:
            key = stored_key(debtor_id)
            stored = read_stored(key, self.service.table.get(key))
            state = stored[1] if stored is not None else None
        contact = state.contact if state is not None else ContactState()
        return contact_facts(contact, runner.policy.contact_rules, runner.portfolio, runner.default_timezone, self.clock())
