"""Forwarding a profile request to the worker that owns the debtor's table partition.

Any worker takes ``GET /debtors/{debtor_id}``; one that does not own the debtor's partition
forwards it (:class:`Peers`) to the owner's page :data:`PEER_PATH`: only the profile request,
rebuilt from the validated id (never the client's path), signed with
``DEBTOR_SEGMENTS_PEER_SECRET`` (:func:`sign_peer`, never the client's token).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from typing import Any

import orjson

from debtor_segments.agents.http_common import JSON, PROFILE_HEADERS, Replies

__all__ = [
    "FORWARD_TIMEOUT_S",
    "FORWARDED_HEADER",
    "PEER_HEADER",
    "PEER_MAX_AGE_S",
    "PEER_PATH",
    "Peers",
    "peer_base_url",
    "sign_peer",
    "verify_peer",
]

log = logging.getLogger("debtor_segments.api")

#: Set on a request one worker forwards to the owner of the debtor: the owner answers it
#: itself (503 if it no longer owns the partition) instead of forwarding again.
FORWARDED_HEADER = "X-Debtor-Segments-Forwarded"
FORWARD_TIMEOUT_S = 10.0
#: The owner's page for forwarded profile requests (signed with DEBTOR_SEGMENTS_PEER_SECRET).
PEER_PATH = "/internal/debtor-profile"
#: Header of a forwarded request: ``<unix seconds>:<hex HMAC-SHA256 of "<seconds>\n<debtor id>">``.
PEER_HEADER = "X-Debtor-Segments-Peer"
#: A signed request older (or newer) than this is refused: a captured one cannot be replayed later.
PEER_MAX_AGE_S = 30.0


def sign_peer(secret: str, debtor_id: str, now: float | None = None) -> str:
    """The :data:`PEER_HEADER` value of a forwarded request for ``debtor_id``."""
    stamp = str(int(time.time() if now is None else now))
    mac = hmac.new(secret.encode(), f"{stamp}\n{debtor_id}".encode(), hashlib.sha256).hexdigest()
    return f"{stamp}:{mac}"


def verify_peer(secret: str, header: str | None, debtor_id: str, now: float | None = None) -> bool:
    """Whether ``header`` signs a request for ``debtor_id`` with ``secret``, recently.

    >>> header = sign_peer("s", "d1", now=100.0)
    >>> verify_peer("s", header, "d1", now=110.0), verify_peer("s", header, "d2", now=110.0)
    (True, False)
    >>> verify_peer("s", header, "d1", now=200.0), verify_peer("", header, "d1", now=110.0)
    (False, False)
    """
    if not secret or not header:
        return False
    stamp, _, mac = header.partition(":")
    if not stamp.isdigit() or abs((time.time() if now is None else now) - int(stamp)) > PEER_MAX_AGE_S:
        return False
    expected = hmac.new(secret.encode(), f"{stamp}\n{debtor_id}".encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, mac)


def peer_base_url(url: str) -> str | None:
    """``url`` as ``scheme://host:port`` if it is a plain http(s) base URL, else None.

    >>> peer_base_url("http://w2:6066/"), peer_base_url("http://u:p@w2:6066"), peer_base_url("file:///etc")
    ('http://w2:6066', None, None)
    """
    from yarl import URL

    try:
        parsed = URL(url)
    except (ValueError, TypeError):
        return None
    if parsed.scheme not in ("http", "https") or not parsed.host or parsed.user or parsed.password:
        return None
    if parsed.path not in ("", "/") or parsed.query_string or parsed.fragment:
        return None
    return f"{parsed.scheme}://{parsed.host}:{parsed.port}"


def _url_ident(url: str) -> tuple[str, int]:
    from yarl import URL

    parsed = URL(url)
    return (parsed.host or parsed.path or "", int(parsed.port or 80))


class Peers:
    """The other workers of the deployment: which one owns a partition of the state table,
    and the forwarded profile request to it.

    ``app`` is the Faust app (its assignment metadata, canonical URL and HTTP client),
    ``table`` the state table's name, ``changelog`` its changelog topic, ``secret`` the peer
    secret (empty: nothing is forwarded).
    """

    def __init__(self, app: Any, table: str, changelog: str, secret: str, replies: Replies) -> None:
        self.app = app
        self.table = table
        self.changelog = changelog
        self.secret = secret
        self.replies = replies
        self.forwarded = 0  # requests this worker forwarded to the owner of the debtor

    def owner(self, partition: int) -> str | None:
        """Base URL of the worker that actively owns ``partition`` of the state table (Faust's
        assignment metadata of the current group members, as ``@app.table_route`` uses it),
        or None. A URL that is not a plain ``http(s)://host:port`` is never used."""
        try:
            metadata = self.app.router.table_metadata(self.table)
        except Exception:  # noqa: BLE001 - no assignment metadata yet
            return None
        own = _url_ident(str(self.app.conf.canonical_url))
        for url, topics in metadata.items():
            if partition in (topics.get(self.changelog) or ()) and _url_ident(url) != own:
                base = peer_base_url(url)
                if base is None:
                    log.warning("a group member advertises an unusable URL; not forwarding to it")
                return base
        return None

    async def forward(self, view: Any, debtor_id: str, owner: str) -> Any:
        """The owner's answer for ``debtor_id``: its profile, 404, or 503 for anything else."""
        import aiohttp
        from yarl import URL

        # Only the profile request, rebuilt from the validated id (never the client's path),
        # signed with the peer secret (never the client's token).
        target = URL(owner).with_path(PEER_PATH).with_query({"debtor_id": debtor_id})
        headers = {PEER_HEADER: sign_peer(self.secret, debtor_id), "Accept": JSON}
        self.forwarded += 1
        try:
            client = self.app.http_client
            timeout = aiohttp.ClientTimeout(total=FORWARD_TIMEOUT_S)
            async with client.get(target, headers=headers, timeout=timeout, allow_redirects=False) as response:
                status = response.status
                body = await response.content.read(1 << 20) if status == 200 else b""
        except (aiohttp.ClientError, TimeoutError) as error:
            log.warning("could not reach the worker %s owning a debtor: %s", owner, type(error).__name__)
            return self.replies.unavailable(view, "the worker that owns this debtor did not answer; retry shortly")
        if status == 404:
            return self.replies.error(view, 404, "not_found", "no debtor with this id", PROFILE_HEADERS)
        if status == 200:
            try:
                value = orjson.loads(body)
            except orjson.JSONDecodeError:
                value = None
            if isinstance(value, dict) and value.get("debtor_id") == debtor_id:
                return view.bytes(orjson.dumps(value), content_type=JSON, headers=PROFILE_HEADERS)
        if status != 503:
            log.warning("the worker %s owning a debtor answered a forwarded request with %d", owner, status)
        return self.replies.unavailable(view, "the worker that owns this debtor could not answer; retry shortly")
