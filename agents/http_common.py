"""What every page of the HTTP API answers alike: errors, the token check, the profile headers.

Debtor ids never go into logs (unless ``DEBTOR_SEGMENTS_DEBUG_IDS``), tokens never.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

from debtor_segments.agents.auth import Decision, Tokens, authorize

__all__ = ["JSON", "PROFILE_HEADERS", "Replies", "finite", "with_profile_headers"]

log = logging.getLogger("debtor_segments.api")

JSON = "application/json"
#: Every response carrying (or about) a profile: never cached, by a proxy or a browser.
PROFILE_HEADERS = {"Cache-Control": "no-store", "Vary": "Authorization"}


class Replies:
    """The error replies of the pages, and the token check in front of them.

    ``view`` is the Faust view answering (``view.json`` builds the reply).
    """

    def __init__(self, tokens: Tokens, *, debug_ids: bool) -> None:
        self.tokens = tokens
        self.debug_ids = debug_ids

    @staticmethod
    def error(view: Any, status: int, error: str, detail: str, headers: Mapping[str, str] | None = None) -> Any:
        return view.json({"error": error, "detail": detail}, status=status, headers=dict(headers or {}))

    def check(self, view: Any, request: Any, scope: str) -> tuple[Decision, Any]:
        """The request's token decision for ``scope``, and the reply refusing it (None if allowed)."""
        decision = authorize(self.tokens, request.headers.get("Authorization"), scope)
        if decision.allowed:
            return decision, None
        return decision, self.error(view, decision.status, decision.error, decision.detail, decision.headers)

    def unavailable(self, view: Any, detail: str) -> Any:
        return self.error(view, 503, "unavailable", detail, {"Retry-After": "1", **PROFILE_HEADERS})

    def failed(self, view: Any, what: str, error: BaseException) -> Any:
        if self.debug_ids:
            log.exception("%s failed", what)
        else:  # the message or traceback could hold a debtor id
            log.error("%s failed: %s", what, type(error).__name__)
        return self.error(view, 500, "internal", "the request failed; see the worker log")


def with_profile_headers(reply: Any) -> Any:
    try:
        reply.headers.update(PROFILE_HEADERS)
    except AttributeError:  # a reply without headers to update
        pass
    return reply


def finite(value: Any) -> Any:
    """JSON has no NaN/Infinity: such floats become null.

    >>> finite({"a": [1.0, float("nan")], "b": float("inf")})
    {'a': [1.0, None], 'b': None}
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value
