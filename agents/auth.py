"""Bearer-token access control of the HTTP API.

``DEBTOR_SEGMENTS_API_TOKENS`` holds comma-separated ``token=role`` pairs. A role grants scopes:

========  ================================================
role      may read
========  ================================================
``agent`` debtor profiles (``/debtors/...``) and aggregates
``ops``   aggregates only (``/personas``, ``/personas/transitions``)
========  ================================================

A request presents its token as ``Authorization: Bearer <token>``. No token or an unknown one
is answered 401 (with ``WWW-Authenticate: Bearer``), a known token whose role lacks the scope
403. With no tokens configured every protected request is 401: there is no open default.

Tokens are kept only as SHA-256 digests and compared with :func:`hmac.compare_digest` against
*every* configured token, without stopping at a match, so neither the position of a token in
the list nor the length of a guess shows in the response time. Nothing here logs or repeats a
token, not even in error messages (an unknown role is not shown either: with role and token
swapped, the "role" is the token). A token has at least :data:`MIN_TOKEN_LENGTH` characters.

>>> tokens = parse_tokens("s3cret-0123456789=agent, dashboards-0123456=ops")
>>> tokens.role_for("s3cret-0123456789"), tokens.role_for("nope"), tokens.role_for(None)
('agent', None, None)
>>> authorize(tokens, "Bearer dashboards-0123456", DEBTORS).status
403
>>> authorize(tokens, "Bearer dashboards-0123456", AGGREGATES).status
200
>>> authorize(parse_tokens(""), "Bearer s3cret-0123456789", AGGREGATES).status
401
"""

from __future__ import annotations

import hashlib
import hmac
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = [
    "AGGREGATES",
    "DEBTORS",
    "MIN_TOKEN_LENGTH",
    "REALM",
    "ROLES",
    "Decision",
    "TokenConfigError",
    "Tokens",
    "authorize",
    "bearer_token",
    "parse_tokens",
]

#: Scope of the per-debtor profile endpoint.
DEBTORS = "debtors"
#: Scope of the population endpoints (distribution, transition matrix).
AGGREGATES = "aggregates"
#: What each role may read.
ROLES: Mapping[str, frozenset[str]] = {
    "agent": frozenset({DEBTORS, AGGREGATES}),
    "ops": frozenset({AGGREGATES}),
}
REALM = "debtor-segments"
#: Shortest token accepted (``openssl rand -hex 24`` gives 48 characters).
MIN_TOKEN_LENGTH = 16
ENV_NAME = "DEBTOR_SEGMENTS_API_TOKENS"


class TokenConfigError(ValueError):
    """``DEBTOR_SEGMENTS_API_TOKENS`` is malformed (the message never contains a token)."""


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


@dataclass(frozen=True, slots=True)
class Tokens:
    """The configured tokens (as digests) and their roles."""

    entries: tuple[tuple[bytes, str], ...] = field(default=(), repr=False)

    def __len__(self) -> int:
        return len(self.entries)

    def __repr__(self) -> str:
        return f"Tokens({self.summary()})"

    def summary(self) -> str:
        """Tokens per role, for a start-up log line: ``2 API tokens (agent: 1, ops: 1)``."""
        if not self.entries:
            return "no API tokens"
        roles = Counter(role for _, role in self.entries)
        per_role = ", ".join(f"{role}: {roles[role]}" for role in sorted(roles))
        return f"{len(self.entries)} API token{'s' if len(self.entries) != 1 else ''} ({per_role})"

    def role_for(self, token: str | None) -> str | None:
        """The role of ``token``, or None when it is missing or unknown.

        Compares the token's digest with every configured digest (no early exit).
        """
        if not token:
            return None
        presented = _digest(token)
        role: str | None = None
        for digest, candidate in self.entries:
            if hmac.compare_digest(presented, digest):
                role = candidate
        return role


def parse_tokens(spec: str) -> Tokens:
    """Parse ``token=role[,token=role...]``; raise :class:`TokenConfigError` when malformed.

    Surrounding blanks are ignored; a token may itself contain ``=`` (the role is what follows
    the last one). An empty (or blank) ``spec`` means no tokens.

    >>> parse_tokens(" a-token-of-16-chars=agent ,b-token-of-16-chars==ops").summary()
    '2 API tokens (agent: 1, ops: 1)'
    >>> parse_tokens("a-token-of-16-chars=admin")
    Traceback (most recent call last):
    ...
    debtor_segments.agents.auth.TokenConfigError: DEBTOR_SEGMENTS_API_TOKENS: entry 1 has an unknown role (roles: agent, ops; expected token=role)
    >>> parse_tokens("agent=a-token-of-16-chars")
    Traceback (most recent call last):
    ...
    debtor_segments.agents.auth.TokenConfigError: DEBTOR_SEGMENTS_API_TOKENS: entry 1 has an unknown role (roles: agent, ops; expected token=role, and it reads role=token)
    """
    if not spec.strip():
        return Tokens()
    entries: list[tuple[bytes, str]] = []
    seen: dict[bytes, int] = {}
    for number, item in enumerate(spec.split(","), start=1):
        item = item.strip()
        where = f"{ENV_NAME}: entry {number}"
        if not item:
            raise TokenConfigError(f"{where} is empty (expected token=role, comma-separated)")
        token, equals, role = item.rpartition("=")
        token, role = token.strip(), role.strip()
        if not equals:
            raise TokenConfigError(f"{where} has no '=' (expected token=role)")
        if not token:
            raise TokenConfigError(f"{where} has an empty token")
        if role not in ROLES:
            # Never shown: with role and token swapped, it is the token.
            swapped = ", and it reads role=token" if token in ROLES else ""
            raise TokenConfigError(f"{where} has an unknown role (roles: {', '.join(sorted(ROLES))}; expected token=role{swapped})")
        if len(token) < MIN_TOKEN_LENGTH:
            raise TokenConfigError(f"{where} has a token shorter than {MIN_TOKEN_LENGTH} characters")
        digest = _digest(token)
        if digest in seen:
            raise TokenConfigError(f"{where} repeats the token of entry {seen[digest]}")
        seen[digest] = number
        entries.append((digest, role))
    return Tokens(tuple(entries))


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (scheme case-insensitive).

    >>> bearer_token("Bearer abc"), bearer_token("bearer  abc "), bearer_token("Basic abc"), bearer_token("Bearer")
    ('abc', 'abc', None, None)
    """
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = token.strip()
    return token or None


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether a request may proceed: ``status`` 200, or the 401/403 error to answer."""

    status: int
    error: str = ""
    detail: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    role: str | None = None

    @property
    def allowed(self) -> bool:
        return self.status == 200

    def body(self) -> dict[str, str]:
        return {"error": self.error, "detail": self.detail}


def authorize(tokens: Tokens, authorization: str | None, scope: str) -> Decision:
    """Decide on a request for ``scope`` carrying the ``Authorization`` header ``authorization``."""
    if scope not in {s for scopes in ROLES.values() for s in scopes}:
        raise ValueError(f"unknown scope {scope!r}")
    token = bearer_token(authorization)
    challenge = f'Bearer realm="{REALM}"'
    if token is None:
        detail = "no API tokens are configured" if not tokens else "send Authorization: Bearer <token>"
        return Decision(401, "unauthorized", detail, {"WWW-Authenticate": challenge})
    role = tokens.role_for(token)
    if role is None:
        return Decision(401, "unauthorized", "unknown token", {"WWW-Authenticate": f'{challenge}, error="invalid_token"'})
    if scope not in ROLES[role]:
        return Decision(
            403,
            "forbidden",
            f"the role {role!r} may not read {scope}",
            {"WWW-Authenticate": f'{challenge}, error="insufficient_scope"'},
            role,
        )
    return Decision(200, role=role)
