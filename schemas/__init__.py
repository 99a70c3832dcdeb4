"""Wire contracts of debtor-segments: topic names and JSON Schemas (draft 2020-12).

The JSON files next to this module are the source of truth; the decoder in
``streams.events`` compiles them, so a change here changes validation everywhere.

>>> TOPIC_BY_TYPE["payment_received"]
'debtor.payments'
>>> load_schema("call_rated")["properties"]["stars"]["maximum"]
5
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

__all__ = [
    "CHANNEL_TOPIC_PREFIX",
    "CONTACTS_TOPIC",
    "CONTACT_DECISIONS_TOPIC",
    "CONTACT_DUE_TOPIC",
    "DEAD_LETTERS_TOPIC",
    "ERASURE_TOPIC",
    "INBOUND_TOPICS",
    "INBOUND_TYPES",
    "OUTBOUND_TYPES",
    "PAYMENTS_TOPIC",
    "PERSONA_CHANGES_TOPIC",
    "QUADRANT_CHANGES_TOPIC",
    "RATINGS_TOPIC",
    "TREATMENTS_TOPIC",
    "TREATMENT_TYPES",
    "TOPIC_BY_TYPE",
    "load_schema",
]

PAYMENTS_TOPIC = "debtor.payments"
CONTACTS_TOPIC = "debtor.contacts"
RATINGS_TOPIC = "debtor.ratings"
ERASURE_TOPIC = "debtor.erasure-requests"
PERSONA_CHANGES_TOPIC = "debtor.persona-changes"
QUADRANT_CHANGES_TOPIC = "debtor.quadrant-changes"
DEAD_LETTERS_TOPIC = "debtor.dead-letters"
#: treatment_assigned and experiment_concluded (only with a treatment policy).
TREATMENTS_TOPIC = "debtor.treatments"
#: contact_due: a plan step fell due (only with a treatment policy).
CONTACT_DUE_TOPIC = "debtor.contact-due"
#: contact_decision: every decision of the contact guard, allowed or not (only with a policy).
CONTACT_DECISIONS_TOPIC = "debtor.contact-decisions"
#: With the policy's ``channel_topics``, each contact_due also goes to this prefix + channel.
CHANNEL_TOPIC_PREFIX = "debtor.channel."

TOPIC_BY_TYPE: dict[str, str] = {
    "claim_opened": PAYMENTS_TOPIC,
    "payment_received": PAYMENTS_TOPIC,
    "arrangement_agreed": PAYMENTS_TOPIC,
    "installment_missed": PAYMENTS_TOPIC,
    "claim_closed": PAYMENTS_TOPIC,
    "contact_attempted": CONTACTS_TOPIC,
    "contact_responded": CONTACTS_TOPIC,
    "contact_initiated": CONTACTS_TOPIC,
    "contact_preference_set": CONTACTS_TOPIC,
    "call_rated": RATINGS_TOPIC,
    "erasure_requested": ERASURE_TOPIC,
}
INBOUND_TYPES: tuple[str, ...] = tuple(TOPIC_BY_TYPE)
INBOUND_TOPICS: tuple[str, ...] = tuple(dict.fromkeys(TOPIC_BY_TYPE.values()))
OUTBOUND_TYPES: dict[str, str] = {
    "persona_changed": PERSONA_CHANGES_TOPIC,
    "quadrant_changed": QUADRANT_CHANGES_TOPIC,
}
#: Outbound types of the treatment step (streams.treatments), each with its schema file.
TREATMENT_TYPES: dict[str, str] = {
    "treatment_assigned": TREATMENTS_TOPIC,
    "experiment_concluded": TREATMENTS_TOPIC,
    "contact_due": CONTACT_DUE_TOPIC,
    "contact_decision": CONTACT_DECISIONS_TOPIC,
}


@cache
def load_schema(name: str) -> dict[str, Any]:
    """Return the JSON Schema named ``name`` (an event type, or ``dead_letter``)."""
    text = resources.files(__name__).joinpath(f"{name}.json").read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema
