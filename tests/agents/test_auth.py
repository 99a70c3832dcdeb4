"""Access control of the HTTP API: token parsing, roles, constant-time comparison, 401/403."""

from __future__ import annotations

import hmac

import pytest

import debtor_segments.agents.auth
from debtor_segments.agents.auth import (
    AGGREGATES,
    DEBTORS,
    ROLES,
    TokenConfigError,
    Tokens,
    authorize,
    bearer_token,
    parse_tokens,
)

SECRET = "Zx9-very-secret_token"


# --- parsing -----------------------------------------------------------------------------------


def test_parses_pairs_with_blanks_and_equals_signs_in_tokens() -> None:
    tokens = parse_tokens(f" {SECRET}=agent ,  b64tok-0123456789== = ops,other-0123456789ab=agent ")
    assert len(tokens) == 3
    assert tokens.role_for(SECRET) == "agent"
    assert tokens.role_for("b64tok-0123456789==") == "ops"
    assert tokens.role_for("other-0123456789ab") == "agent"
    assert tokens.summary() == "3 API tokens (agent: 2, ops: 1)"


@pytest.mark.parametrize("spec", ["", "   ", "\n"])
def test_empty_configuration_means_no_tokens(spec: str) -> None:
    tokens = parse_tokens(spec)
    assert len(tokens) == 0 and not tokens
    assert tokens.role_for(SECRET) is None
    assert tokens.summary() == "no API tokens"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (f"{SECRET}=admin", "entry 1 has an unknown role (roles: agent, ops; expected token=role)"),
        (f"{SECRET}=agent,x=", "entry 2 has an unknown role"),
        ("=agent", "entry 1 has an empty token"),
        ("   =ops", "entry 1 has an empty token"),
        (f"{SECRET}", "entry 1 has no '=' (expected token=role)"),
        (f"{SECRET}=agent,,b=ops", "entry 2 is empty"),
        (f"{SECRET}=agent,", "entry 2 is empty"),
        (f"another-token-01234=ops,{SECRET}=agent,{SECRET}=ops", "entry 3 repeats the token of entry 2"),
        (f"{SECRET}=agent, {SECRET} =agent", "entry 2 repeats the token of entry 1"),
        (f"{SECRET}=Agent", "unknown role"),
        # Issue 14, item 11: role and token swapped printed the token as the "unknown role".
        (f"agent={SECRET}", "entry 1 has an unknown role (roles: agent, ops; expected token=role, and it reads role=token)"),
        (f"ops={SECRET},{SECRET}x=agent", "entry 1 has an unknown role"),
        (f"{SECRET}=agent,short=ops", "entry 2 has a token shorter than 16 characters"),
        ("fifteen-chars-1=agent", "entry 1 has a token shorter than 16 characters"),
    ],
)
def test_malformed_configuration_is_rejected_without_showing_tokens(spec: str, message: str) -> None:
    with pytest.raises(TokenConfigError) as caught:
        parse_tokens(spec)
    text = str(caught.value)
    assert text.startswith("DEBTOR_SEGMENTS_API_TOKENS: ")
    assert message in text
    assert SECRET not in text


def test_tokens_are_kept_as_digests_and_never_shown() -> None:
    tokens = parse_tokens(f"{SECRET}=agent")
    assert SECRET not in repr(tokens) and SECRET not in str(tokens)
    assert all(isinstance(digest, bytes) and len(digest) == 32 for digest, _ in tokens.entries)
    assert SECRET.encode() not in b"".join(digest for digest, _ in tokens.entries)


# --- constant-time comparison ------------------------------------------------------------------


@pytest.fixture
def compare_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[bytes, bytes]]:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(debtor_segments.agents.auth.hmac, "compare_digest", counting)
    return calls


PAD = "-0123456789abcdef"


@pytest.mark.parametrize("presented", [f"first{PAD}", f"middle{PAD}", f"last{PAD}", f"unknown{PAD}", f"first{PAD}"[:-1], f"first{PAD}-and-more"])
def test_every_configured_token_is_compared_in_constant_time(presented: str, compare_calls: list[tuple[bytes, bytes]]) -> None:
    tokens = parse_tokens(f"first{PAD}=agent,middle{PAD}=ops,last{PAD}=agent")
    expected = {f"first{PAD}": "agent", f"middle{PAD}": "ops", f"last{PAD}": "agent"}.get(presented)
    assert tokens.role_for(presented) == expected
    # No early exit on a match, and every comparison is of equal-length digests (a guess's
    # length does not show either).
    assert len(compare_calls) == 3
    assert all(len(a) == len(b) == 32 for a, b in compare_calls)


def test_authorize_goes_through_the_constant_time_comparison(compare_calls: list[tuple[bytes, bytes]]) -> None:
    tokens = parse_tokens(f"a{PAD}=agent,b{PAD}=ops")
    assert authorize(tokens, f"Bearer b{PAD}", AGGREGATES).allowed
    assert len(compare_calls) == 2


def test_missing_token_compares_nothing(compare_calls: list[tuple[bytes, bytes]]) -> None:
    assert parse_tokens(f"a{PAD}=agent").role_for(None) is None
    assert parse_tokens(f"a{PAD}=agent").role_for("") is None
    assert compare_calls == []


# --- the Authorization header --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer abc", "abc"),
        ("BEARER   abc  ", "abc"),
        ("Bearer a=b==", "a=b=="),
        (None, None),
        ("", None),
        ("Bearer", None),
        ("Bearer   ", None),
        ("Basic YWxhZGRpbjpvcGVuc2VzYW1l", None),
        ("abc", None),
        ("Token abc", None),
    ],
)
def test_bearer_token(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token


# --- decisions -------------------------------------------------------------------------------------

TOKENS = parse_tokens("agent-token-0123456=agent,ops-token-01234567=ops")


@pytest.mark.parametrize(
    ("header", "scope", "status", "error"),
    [
        ("Bearer agent-token-0123456", DEBTORS, 200, ""),
        ("Bearer agent-token-0123456", AGGREGATES, 200, ""),
        ("Bearer ops-token-01234567", AGGREGATES, 200, ""),
        ("Bearer ops-token-01234567", DEBTORS, 403, "forbidden"),
        (None, DEBTORS, 401, "unauthorized"),
        (None, AGGREGATES, 401, "unauthorized"),
        ("Bearer wrong", DEBTORS, 401, "unauthorized"),
        ("Bearer wrong", AGGREGATES, 401, "unauthorized"),
        ("Basic agent-token-0123456", DEBTORS, 401, "unauthorized"),
        ("agent-token-0123456", DEBTORS, 401, "unauthorized"),
    ],
)
def test_decisions(header: str | None, scope: str, status: int, error: str) -> None:
    decision = authorize(TOKENS, header, scope)
    assert (decision.status, decision.error) == (status, error)
    assert decision.allowed is (status == 200)
    if status == 401:
        assert decision.headers["WWW-Authenticate"].startswith('Bearer realm="debtor-segments"')
    if status != 200:
        assert set(decision.body()) == {"error", "detail"} and decision.detail
        assert "agent-token-0123456" not in decision.detail and "ops-token-01234567" not in decision.detail


def test_unknown_token_challenge_says_invalid_token() -> None:
    assert 'error="invalid_token"' in authorize(TOKENS, "Bearer wrong", DEBTORS).headers["WWW-Authenticate"]
    assert "error=" not in authorize(TOKENS, None, DEBTORS).headers["WWW-Authenticate"]


def test_no_tokens_configured_is_401_for_everyone() -> None:
    nobody = parse_tokens("")
    for header in (None, "Bearer agent-token-0123456", "Bearer ", "Bearer anything"):
        for scope in (DEBTORS, AGGREGATES):
            decision = authorize(nobody, header, scope)
            assert decision.status == 401, (header, scope)
            assert "WWW-Authenticate" in decision.headers


def test_roles_and_scopes() -> None:
    assert ROLES == {"agent": {DEBTORS, AGGREGATES}, "ops": {AGGREGATES}}
    with pytest.raises(ValueError, match="unknown scope"):
        authorize(TOKENS, "Bearer agent-token-0123456", "everything")


def test_tokens_default_is_empty() -> None:
    assert len(Tokens()) == 0
