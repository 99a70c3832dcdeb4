"""HMAC signatures of the records workers trust from Kafka: model snapshots and population
summaries. Anyone who can write to those topics could otherwise set the model every worker
predicts with (a forged snapshot of version 10^12 was taken, and genuine ones refused after).

A signed record is the JSON object plus ``"sig"``: the hex HMAC-SHA256, under the deployment's
secret, of the object without ``"sig"`` serialised with sorted keys (orjson): what a reader
parses and serialises again gives the same bytes, so the signature survives the round trip.
``purpose`` separates the record kinds, so a summary cannot pass as a snapshot.

>>> record = sign({"version": 3, "centers": [0.5]}, b"secret", "model")
>>> verify(record, b"secret", "model")
True
>>> verify({**record, "version": 10**12}, b"secret", "model"), verify(record, b"other", "model")
(False, False)
>>> verify(record, b"secret", "population"), verify({"version": 3}, b"secret", "model")
(False, False)
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

import orjson

__all__ = ["SIGNATURE_FIELD", "sign", "unsigned", "verify"]

#: The field that holds the signature.
SIGNATURE_FIELD = "sig"


def _mac(record: Mapping[str, Any], secret: bytes, purpose: str) -> str:
    body = orjson.dumps({k: v for k, v in record.items() if k != SIGNATURE_FIELD}, option=orjson.OPT_SORT_KEYS)
    return hmac.new(secret, purpose.encode() + b"\n" + body, hashlib.sha256).hexdigest()


def sign(record: Mapping[str, Any], secret: bytes, purpose: str) -> dict[str, Any]:
    """``record`` with its signature added."""
    return {**record, SIGNATURE_FIELD: _mac(record, secret, purpose)}


def verify(record: Mapping[str, Any], secret: bytes, purpose: str) -> bool:
    """Whether ``record`` carries a valid signature under ``secret`` (compared in constant time)."""
    signature = record.get(SIGNATURE_FIELD)
    if not isinstance(signature, str):
        return False
    try:
        expected = _mac(record, secret, purpose)
    except (TypeError, orjson.JSONEncodeError):
        return False
    return hmac.compare_digest(expected, signature)


def unsigned(record: Mapping[str, Any]) -> dict[str, Any]:
    """``record`` without its signature.

    >>> unsigned({"a": 1, "sig": "00"})
    {'a': 1}
    """
    return {k: v for k, v in record.items() if k != SIGNATURE_FIELD}
