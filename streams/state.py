"""Per-debtor behavioural state, updated from events in event time.

Counters that describe *recent* behaviour decay with a half-life. They are kept relative
to the debtor's watermark (latest event time seen), so an event that arrives a few days
late adds exactly what it would have added in order: the sums commute.

>>> from debtor_segments.streams.events import decode_object
>>> state = DebtorState.new("d1")
>>> opened = decode_object({"event_id": "e1", "debtor_id": "d1", "type": "claim_opened",
...     "occurred_at": "2026-01-05T09:00:00Z", "claim_id": "c1", "creditor_id": "shop",
...     "principal_cents": 30000})
>>> paid = decode_object({"event_id": "e2", "debtor_id": "d1", "type": "payment_received",
...     "occurred_at": "2026-01-20T09:00:00Z", "claim_id": "c1", "amount_cents": 10000})
>>> for event in (opened, paid):
...     _ = state.apply(event, half_life_days=120.0)
>>> state.open_claims, state.outstanding_cents, state.paid_cents
(1, 20000, 10000)
>>> DebtorState.from_bytes(state.to_bytes()).to_bytes() == state.to_bytes()
True
"""

from __future__ import annotations

from base64 import urlsafe_b64encode
from dataclasses import dataclass, field, fields
from hashlib import blake2b
from operator import attrgetter
from typing import Any

import orjson

from debtor_segments.streams.events import Event

__all__ = [
    "CHANNELS",
    "ABILITY_N",
    "ABILITY_SUM",
    "ARRANGEMENTS",
    "DECAYED",
    "HARDSHIP",
    "INBOUND",
    "KEPT",
    "MISSED",
    "NEW_DEBT",
    "OUTBOUND",
    "PAID",
    "PAYMENTS",
    "RESPONDED",
    "STARS_N",
    "STARS_SUM",
    "STRICT",
    "DebtorState",
    "erasure_marker",
    "is_debtor_key",
    "event_key",
    "event_token",
    "marker_key",
    "needs_marker",
    "read_marker",
]

#: Outbound channels, in the order of the per-channel counters.
CHANNELS: tuple[str, ...] = ("letter", "email", "sms", "call", "whatsapp", "visit")
_CHANNEL_INDEX = {name: i for i, name in enumerate(CHANNELS)}
#: Names of the decayed counters, in the order they are stored.
DECAYED: tuple[str, ...] = (
    "new_debt",  # principal of claims opened, EUR
    "paid",  # EUR received
    "payments",  # number of payments
    "kept",  # payments while an arrangement ran
    "missed",  # installments missed
    "arrangements",  # arrangements agreed
    "outbound",  # contacts attempted by the agency
    "strict",  # of which in a strict tone
    "responded",  # responses to outbound contact
    "inbound",  # contacts the debtor initiated
    "stars_sum",
    "stars_n",
    "ability_sum",  # agent assessments: can_pay 1, partly 0.5, cannot_pay 0
    "ability_n",
    "hardship",  # ratings that named a hardship
)
_D = {name: i for i, name in enumerate(DECAYED)}
# Indices into DebtorState.decayed, by name, as plain ints (an IntEnum costs a call per index on
# the hot path): readers use these, never a bare position, so a counter added to DECAYED cannot
# be mistaken for another.
NEW_DEBT = _D["new_debt"]
PAID = _D["paid"]
PAYMENTS = _D["payments"]
KEPT = _D["kept"]
MISSED = _D["missed"]
ARRANGEMENTS = _D["arrangements"]
OUTBOUND = _D["outbound"]
STRICT = _D["strict"]
RESPONDED = _D["responded"]
INBOUND = _D["inbound"]
STARS_SUM = _D["stars_sum"]
STARS_N = _D["stars_n"]
ABILITY_SUM = _D["ability_sum"]
ABILITY_N = _D["ability_n"]
HARDSHIP = _D["hardship"]
_DAY = 86_400.0
_ASSESSMENT = {"can_pay": 1.0, "partly": 0.5, "cannot_pay": 0.0}
# Format 2: idempotency entries are [seconds before the watermark, event_token]; format 1 held
# [second, 48-bit event_key], read as such until those entries leave the lateness window.
# Format 3: the same fields as 2, but a stored state holds exactly the fields of its format's
# layout (_LAYOUTS): a field is added by a new format with its own layout, never by appending.
_STATE_FORMAT = 3
#: Characters of an event_token that stand for the event id (9 bytes, 72 bits); the rest (3
#: bytes) is the digest of the body.
_ID_CHARS = 12
_MAX_UNCOUNTED_PAYMENTS = 8


def event_key(event_id: str) -> int:
    """Stable 48-bit unkeyed digest of a string (Python's ``hash`` is salted per process).

    Used for the creditor bits, and to read idempotency entries of state format 1. Not an
    idempotency key any more: a sender found a colliding pair of event ids in 35 s.
    """
    return int.from_bytes(blake2b(event_id.encode(), digest_size=6).digest(), "big")


def event_token(event_id: str, body: bytes, secret: bytes = b"") -> str:
    """The idempotency entry of an event: a keyed 72-bit digest of its id, then a 24-bit
    digest of its body, as 16 URL-safe base64 characters.

    Keyed with the deployment's secret (``DEBTOR_SEGMENTS_ID_SECRET``), a sender who does not
    know it cannot search for ids that collide; 72 bits make an accidental collision among a
    debtor's remembered ids about 1 in 10^19. The body digest tells a re-sent copy (same
    token) from a re-used id with another body (same first :data:`_ID_CHARS` characters).

    >>> a = event_token("e1", b'{"amount_cents":1}', b"k")
    >>> b = event_token("e1", b'{"amount_cents":2}', b"k")
    >>> len(a), a[:12] == b[:12], a == b, a == event_token("e1", b'{"amount_cents":1}', b"other")
    (16, True, False, False)
    """
    key = blake2b(event_id.encode(), digest_size=9, key=secret, person=b"event-id").digest()
    digest = blake2b(body, digest_size=3, key=secret, person=b"event-body").digest()
    return urlsafe_b64encode(key + digest).decode()


# --- erasure markers ------------------------------------------------------------------------------
# An erased debtor's state is deleted; what stays is a marker, under a key of its own: a keyed
# digest of the id (never the id), holding the erasure's event time (nothing else). Events that
# occurred before it are refused (dead letter "erased"), so a late or re-sent event cannot
# rebuild the profile; newer ones start a new one.

#: Marker keys start with NUL, which no debtor id may contain (schemas: no control characters).
_MARKER_PREFIX = b"\x00erased:"


def marker_key(debtor_id: str, secret: bytes = b"") -> bytes:
    """Table key of a debtor's erasure marker.

    >>> key = marker_key("d42", b"k")
    >>> key.startswith(b"\\x00erased:"), b"d42" in key, len(key)
    (True, False, 40)
    """
    return _MARKER_PREFIX + blake2b(debtor_id.encode(), digest_size=16, key=secret, person=b"erasure").hexdigest().encode()


def is_debtor_key(key: bytes) -> bool:
    """Whether a table key is a debtor's state, not a side entry (an erasure marker, a treatment
    state): side keys start with NUL, which no debtor id may contain.

    >>> is_debtor_key(b"d42"), is_debtor_key(marker_key("d42"))
    (True, False)
    """
    return not key.startswith(b"\x00")


def erasure_marker(erased_at: float) -> bytes:
    """The marker's value: the erasure's event time only.

    >>> read_marker(erasure_marker(1.5e9))
    1500000000.0
    """
    return orjson.dumps({"erased_at": erased_at})


def read_marker(value: bytes | None) -> float | None:
    """The erasure time in a marker value (None: no marker, or not one)."""
    if value is None:
        return None
    try:
        erased_at = orjson.loads(value)["erased_at"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None
    return float(erased_at) if isinstance(erased_at, int | float) else None


def needs_marker(state: DebtorState | None, ts: float) -> bool:
    """Whether the marker must be read to decide on an event at ``ts``: the debtor has no
    state, or the event would be refused anyway (a state begun after an erasure starts its
    duplicate floor at the erasure, so older events land here) and the reason matters."""
    return state is None or ts <= state.dedup_floor


@dataclass(slots=True)
class DebtorState:
    """Everything the service keeps about one debtor, bounded in size.

    Mutating methods are for the engine, which always works on a :meth:`copy`.
    """

    debtor_id: str
    first_ts: float = 0.0
    watermark: float = 0.0
    applied: int = 0
    # (whole seconds of event time, event_token) of events inside the lateness window: the
    # idempotency memory. (States of format 1 hold 48-bit int keys instead, for a while.)
    recent: list[list[Any]] = field(default_factory=list)
    # Events at or before this time can no longer be checked for duplicates.
    dedup_floor: float = 0.0
    open_claims: int = 0
    claims: int = 0
    creditor_bits: int = 0
    principal_cents: int = 0
    paid_cents: int = 0
    outstanding_cents: int = 0
    claims_paid: int = 0
    claims_unpaid: int = 0
    open_arrangements: int = 0
    stars_total: int = 0
    ratings: int = 0
    last_payment_ts: float = 0.0
    last_contact_ts: float = 0.0
    decayed: list[float] = field(default_factory=lambda: [0.0] * len(DECAYED))
    channel_out: list[float] = field(default_factory=lambda: [0.0] * len(CHANNELS))
    channel_resp: list[float] = field(default_factory=lambda: [0.0] * len(CHANNELS))
    persona: str = "unknown"
    persona_since: float = 0.0
    previous_persona: str = "unknown"
    confidence: float = 0.0
    candidate: str = ""
    streak: int = 0
    candidate_since: float = 0.0
    # Features when the persona was last given: a persona only changes once behaviour moved.
    anchor: list[float] = field(default_factory=list)
    quadrant: str = "unknown"
    willingness: float = 0.5
    ability: float = 0.5
    model_version: int = 0
    last_learn_ts: float = 0.0
    # A payment counts as kept (towards an arrangement) when it was made at or after the
    # debtor's first arrangement, in event time, whatever order the two arrive in: payments
    # not counted yet are remembered for the lateness window, so an arrangement that arrives
    # late counts them then.
    # (Whole seconds, like the keys: "at or after" is decided per second.)
    first_arrangement_ts: int | None = None
    uncounted_payments: list[int] = field(default_factory=list)
    # The per-channel counters are decayed lazily, when a contact touches them (they are not
    # clustering features): the time they are decayed to, None meaning the watermark.
    channel_ts: float | None = None

    @classmethod
    def new(cls, debtor_id: str) -> DebtorState:
        """A debtor the service has not seen: persona and quadrant unknown."""
        return cls(debtor_id)

    def copy(self) -> DebtorState:
        """A deep copy cheap enough for every event."""
        clone = DebtorState(*_all_fields(self))
        clone.recent = [list(pair) for pair in self.recent]
        clone.decayed = list(self.decayed)
        clone.channel_out = list(self.channel_out)
        clone.channel_resp = list(self.channel_resp)
        clone.anchor = list(self.anchor)
        clone.uncounted_payments = list(self.uncounted_payments)
        return clone

    # --- idempotency and lateness -------------------------------------------------------

    def seen(self, token: str | int, event_id: str | None = None) -> str:
        """Whether an event with this token was applied (within the lateness window):
        ``"duplicate"`` (same id and body), ``"conflict"`` (same id, another body) or ``""``.

        ``event_id`` lets entries of state format 1 (48-bit keys of the id) be matched too.
        """
        prefix = token[:_ID_CHARS] if isinstance(token, str) else None
        legacy: int | None = None
        for pair in self.recent:
            entry = pair[1]
            if entry == token:
                return "duplicate"
            if type(entry) is int:
                if legacy is None:
                    legacy = event_key(event_id) if event_id is not None else -1
                if entry == legacy:
                    return "duplicate"  # no body digest in format 1: taken as a re-sent copy
            elif prefix is not None and entry.startswith(prefix):
                return "conflict"
        return ""

    def too_late(self, ts: float, lateness_s: float) -> bool:
        """Whether an event at ``ts`` is older than the lateness window (or, see
        :meth:`undecidable`, than the oldest remembered id)."""
        return self.applied > 0 and (ts < self.watermark - lateness_s or ts <= self.dedup_floor)

    def undecidable(self, ts: float, lateness_s: float) -> bool:
        """Whether an event at ``ts`` is inside the lateness window but no older than an id
        already forgotten (more than ``max_remembered_ids`` events in the window): whether it
        is a duplicate cannot be decided."""
        return self.applied > 0 and ts >= self.watermark - lateness_s and ts <= self.dedup_floor

    def remember(self, ts: float, key: str | int, lateness_s: float, max_ids: int) -> None:
        """Record an applied event; forget keys that fell out of the lateness window."""
        # Stored times are whole seconds (floored): keep a second's slack on both ends.
        horizon = self.watermark - lateness_s - 1
        recent = self.recent
        # Keys arrive about in time order: when the first has not expired, hardly any has, and
        # one that stays a little longer is harmless (events that old are too late anyway).
        if recent and recent[0][0] < horizon:
            recent = [pair for pair in recent if pair[0] >= horizon]
        recent.append([int(ts), key])
        if len(recent) > max_ids:
            recent.sort(key=lambda pair: pair[0])
            # Evicting a key means a re-sent copy could no longer be recognised, so events
            # that old are from now on treated as too late instead.
            self.dedup_floor = max(self.dedup_floor, recent[-max_ids - 1][0] + 1)
            recent = recent[-max_ids:]
        self.recent = recent
        if self.uncounted_payments:
            # Bounded: a late arrangement counts at most the latest few uncounted payments.
            pending = sorted(p for p in self.uncounted_payments if p >= horizon)
            self.uncounted_payments = pending[-_MAX_UNCOUNTED_PAYMENTS:]

    # --- applying events -----------------------------------------------------------------

    def apply(self, event: Event, *, half_life_days: float) -> float:
        """Fold one (new, not too late) event into the state; return its decay weight."""
        ts = event.ts
        if self.applied == 0:
            self.first_ts = self.watermark = ts
        half_life_s = half_life_days * _DAY
        if ts > self.watermark:
            factor = 2.0 ** ((self.watermark - ts) / half_life_s)
            self.decayed = [value * factor for value in self.decayed]
            self.watermark = ts
            weight = 1.0
        else:
            weight = 2.0 ** ((ts - self.watermark) / half_life_s)
        if ts < self.first_ts:
            self.first_ts = ts
        self.applied += 1
        _APPLY[event.type](self, event.data, ts, weight, half_life_s)
        return weight

    def response_rates(self) -> dict[str, float]:
        """Responses per outbound contact, by channel, for the channels contacted.

        Both counters of a channel decay alike, so their ratio needs no decaying first.
        """
        return {channel: min(1.0, responded / sent) for channel, sent, responded in zip(CHANNELS, self.channel_out, self.channel_resp, strict=True) if sent > 0.0}

    def decay_channels(self, half_life_s: float) -> None:
        """Decay the per-channel counters to the watermark (the contact handlers call it before
        they add to a channel: the counters are decayed lazily, to :attr:`channel_ts`).

        >>> state = DebtorState.new("d1")
        >>> state.watermark, state.channel_ts, state.channel_out[0] = 10 * 86_400.0, 0.0, 1.0
        >>> state.decay_channels(10 * 86_400.0)
        >>> state.channel_out[0], state.channel_ts == state.watermark
        (0.5, True)
        """
        if self.channel_ts is not None and self.channel_ts != self.watermark:
            factor = 2.0 ** ((self.channel_ts - self.watermark) / half_life_s)
            self.channel_out = [value * factor for value in self.channel_out]
            self.channel_resp = [value * factor for value in self.channel_resp]
        self.channel_ts = self.watermark

    def to_bytes(self) -> bytes:
        """Compact serialisation (a versioned JSON array) for tables and changelogs.

        Decayed counters are rounded to 4 decimals (they are weights, not money), which keeps
        a busy debtor's state under 1 KiB; serialising again what was read gives the same bytes.
        """
        values = list(_all_fields(self))
        for index in _ROUNDED:
            # The counters are never negative: this rounds to 4 decimals (half up, where
            # round(v, 4) rounds a tie to even) at half the cost of round, which formats
            # each float.
            values[index] = [int(v * 10_000.0 + 0.5) / 10_000.0 for v in values[index]]
        # Idempotency entries are stored as seconds before the watermark: 6 digits, not 10.
        base = int(self.watermark)
        values[_RECENT] = [[base - pair[0], pair[1]] for pair in self.recent]
        return orjson.dumps([_STATE_FORMAT, *values])

    @classmethod
    def from_bytes(cls, data: bytes) -> DebtorState:
        """Inverse of :meth:`to_bytes`; reads states written before fields were added."""
        values: list[Any] = orjson.loads(data)
        stored_format, body = values[0], values[1:]
        layout = _LAYOUTS.get(stored_format)
        if layout is None:
            raise ValueError(f"unsupported debtor state format {stored_format!r}")
        exact = stored_format >= 3
        if len(body) > len(layout) or (exact and len(body) != len(layout)):
            raise ValueError(f"a debtor state of format {stored_format} has {len(layout)} fields, this one {len(body)}")
        # The current layout is the dataclass's field order (tested): positional is by name then.
        state = cls(*body) if layout is _FIELDS else cls(**dict(zip(layout, body, strict=False)))
        if stored_format >= 2:
            base = int(state.watermark)
            state.recent = [[base - pair[0], pair[1]] for pair in state.recent]
        if "first_arrangement_ts" not in layout[: len(body)] and (state.open_arrangements or state.decayed[ARRANGEMENTS] > 0):
            # Written before payments were tied to the first arrangement's time: the debtor
            # had arrangements, so payments from now on count as kept, as they did then.
            state.first_arrangement_ts = int(state.first_ts)
        return state

    def decayed_value(self, name: str) -> float:
        """Current value of one decayed counter."""
        return self.decayed[_D[name]]


# attrgetter reads all fields in C: a per-event copy via getattr in Python cost 3x more.
_all_fields = attrgetter(*(f.name for f in fields(DebtorState)))
_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(DebtorState))
#: The stored fields of each format, in order. Formats 1 and 2 grew at the end without a new
#: number: their states hold a prefix of the layout (missing fields keep their defaults).
_LAYOUTS: dict[int, tuple[str, ...]] = {1: _FIELDS, 2: _FIELDS, 3: _FIELDS}
_RECENT = _FIELDS.index("recent")
_ROUNDED = tuple(i for i, name in enumerate(_FIELDS) if name in ("decayed", "channel_out", "channel_resp"))


def _claim_opened(state: DebtorState, data: dict[str, Any], ts: float, weight: float, half_life_s: float) -> None:
    principal = data["principal_cents"]
    state.open_claims += 1
    state.claims += 1
    state.principal_cents += principal
    state.outstanding_cents += principal
    state.creditor_bits |= 1 << (event_key(data["creditor_id"]) & 63)
    state.decayed[NEW_DEBT] += weight * principal / 100


def _payment_received(state: DebtorState, data: dict[str, Any], ts: float, weight: float, half_life_s: float) -> None:
    amount = data["amount_cents"]
    state.paid_cents += amount
    state.outstanding_cents = max(0, state.outstanding_cents - amount)
    state.last_payment_ts = max(state.last_payment_ts, ts)
    state.decayed[PAID] += weight * amount / 100
    state.decayed[PAYMENTS] += weight
    if state.first_arrangement_ts is not None and int(ts) >= state.first_arrangement_ts:
        state.decayed[KEPT] += weight
    else:
        state.uncounted_payments.append(int(ts))


def _arrangement_agreed(state: DebtorState, data: dict[str, Any], ts: float, weight: float, half_life_s: float) -> None:
    state.open_arrangements += 1
    state.decayed[ARRANGEMENTS] += weight
    second = int(ts)
    if state.first_arrangement_ts is None or second < state.first_arrangement_ts:
        state.first_arrangement_ts = second
        # Payments made since this arrangement that arrived before it are kept after all.
        for paid_at in state.uncounted_payments:
            if paid_at >= second:
                state.decayed[KEPT] += 2.0 ** ((paid_at - state.watermark) / half_life_s)
        state.uncounted_payments = [p for p in state.uncounted_payments if p < second]


def _installment_missed(state: DebtorState, data: dict[str, Any], ts: float, weight: float, half_life_s: float) -> None:
    state.decayed[MISSED] += weight


def _claim_closed(state: DebtorState, data: dict[str, Any], ts: float, weight: float, half_life_s: float) -> None:
    if state.open_claims > 0:
        # Per-claim balances are not kept (bounded state): a closed claim takes its average
        # share of what is still outstanding with it.
        state.outstanding_cents -= state.outstanding_cents // state.open_claims
        state.open_claims -= 1
    if data["outcome"] == "paid":
        state.claims_paid += 1
    else:
        state.claims_unpaid += 1
    state.open_arrangements = min(state.open_arrangements, state.open_claims)


def _contact_attempted(state: DebtorState, data: dict[str, Any], ts: float, weight: float, half_life_s: float) -> None:
    state.decay_channels(half_life_s)
    state.channel_out[_CHANNEL_INDEX[data["channel"]]] += weight
    state.last_contact_ts = max(state.last_contact_ts, ts)
    state.decayed[OUTBOUND] += weight
    if data.get("tone") == "strict":
        state.decayed[STRICT] += weight


def _contact_responded(state: DebtorState, data: dict[str, Any], ts: float, weight: float, half_life_s: float) -> None:
    state.decay_channels(half_life_s)
    state.channel_resp[_CHANNEL_INDEX[data["channel"]]] += weight
    state.decayed[RESPONDED] += weight


def _contact_initiated(state: DebtorState, data: dict[str, Any], ts: float, weight: float, half_life_s: float) -> None:
    state.decayed[INBOUND] += weight


def _call_rated(state: DebtorState, data: dict[str, Any], ts: float, weight: float, half_life_s: float) -> None:
    stars = data["stars"]
    state.stars_total += stars
    state.ratings += 1
    state.decayed[STARS_SUM] += weight * stars
    state.decayed[STARS_N] += weight
    assessment = _ASSESSMENT.get(data.get("assessment", ""))
    if assessment is not None:
        state.decayed[ABILITY_SUM] += weight * assessment
        state.decayed[ABILITY_N] += weight
    if data.get("hardship", "none") != "none":
        state.decayed[HARDSHIP] += weight


def _preference_set(state: DebtorState, data: dict[str, Any], ts: float, weight: float, half_life_s: float) -> None:
    """Preferences are the contact guard's (streams.contact_state), never a clustering feature."""


_APPLY = {
    "claim_opened": _claim_opened,
    "payment_received": _payment_received,
    "arrangement_agreed": _arrangement_agreed,
    "installment_missed": _installment_missed,
    "claim_closed": _claim_closed,
    "contact_attempted": _contact_attempted,
    "contact_responded": _contact_responded,
    "contact_initiated": _contact_initiated,
    "call_rated": _call_rated,
    "contact_preference_set": _preference_set,
}
