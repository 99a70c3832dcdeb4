"""Fixtures for the pure core."""

from __future__ import annotations

from typing import Any

import pytest

from debtor_segments.streams.events import Event, decode_object

#: Time zones that make local-time rules hard: DST north and south, offsets of 30 and 45 minutes,
#: a 30-minute DST shift (Lord Howe), clocks changed at midnight (Havana, Santiago), and UTC.
ZONES = (
    "Europe/Amsterdam",
    "America/New_York",
    "Australia/Sydney",
    "Asia/Kathmandu",
    "Asia/Kolkata",
    "Australia/Lord_Howe",
    "Pacific/Chatham",
    "America/Havana",
    "America/Santiago",
    "UTC",
)


def make_event(event_type: str, debtor_id: str = "d1", event_id: str = "e1", at: str = "2026-02-01T10:00:00Z", **fields: Any) -> Event:
    defaults: dict[str, dict[str, Any]] = {
        "claim_opened": {"claim_id": "c1", "creditor_id": "cr1", "principal_cents": 30_000},
        "payment_received": {"claim_id": "c1", "amount_cents": 5_000},
        "arrangement_agreed": {"claim_id": "c1", "arrangement_id": "a1", "installments": 3, "installment_cents": 10_000},
        "installment_missed": {"claim_id": "c1", "arrangement_id": "a1", "amount_cents": 10_000},
        "claim_closed": {"claim_id": "c1", "outcome": "paid"},
        "contact_attempted": {"channel": "email", "direction": "outbound", "tone": "friendly"},
        "contact_responded": {"channel": "email", "outcome": "opened"},
        "contact_initiated": {"channel": "portal", "direction": "inbound"},
        "call_rated": {"stars": 4, "assessment": "partly"},
        "contact_preference_set": {"timezone": "Europe/Paris"},
        "erasure_requested": {},
    }
    body = {"event_id": event_id, "debtor_id": debtor_id, "type": event_type, "occurred_at": at}
    body.update(defaults[event_type])
    body.update(fields)
    return decode_object(body)


@pytest.fixture
def event_factory():
    """Build valid events with sensible defaults."""
    return make_event
