"""The worker's HTTP API: debtor profiles, the persona mix and the persona transition matrix.

``register_api(service)`` (called at the end of :func:`agents.worker.build_service`) adds

* ``GET /debtors/{debtor_id}``: :func:`streams.profile.profile` of one debtor (role ``agent``),
  answered by the worker that owns the debtor's table partition: any worker takes the
  request and forwards it there; with a treatment policy also the debtor's contact facts
  (:func:`contact_facts`: time zone, best window to call, opt-outs, call counts);
* ``GET /personas``: debtors by persona, by quadrant and by both (roles ``agent``, ``ops``);
* ``GET /personas/transitions?days=30|90|365``: persona ``days`` ago -> persona now, counts and
  row shares (roles ``agent``, ``ops``).

``/health``, ``/ready``, ``/model`` and ``/metrics`` stay open. See ``docs/api.md`` for the
contract and ``docs/openapi.yaml`` for the schemas.

Aggregates across workers. A worker holds only its own partitions of the state table, so
each worker publishes a summary per partition it actively owns (:func:`summarize`: counts,
and transition counts for the windows :data:`WINDOWS_DAYS`) to the compacted one-partition
topic ``<prefix>debtor.population`` keyed by the partition number, and every worker reads
that whole topic (:class:`PopulationBoard`) and adds up the newest summary of every partition
(:func:`merge_population`, :func:`merge_transitions`).

Debtor ids never go into logs (unless ``DEBTOR_SEGMENTS_DEBUG_IDS``), tokens never.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
import re
import time
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click
import orjson
from faust import current_event
from faust import web as faust_web
from faust.sensors import Sensor

from agents.auth import (
    AGGREGATES,
    DEBTORS,
    Decision,
    TokenConfigError,
    Tokens,
    authorize,
    parse_tokens,
)
from agents.kafka_io import TopicFollower, TopicSpec, ensure_topics
from agents.metrics import population_stability_index
from schemas import load_schema
from streams.answer_rates import PortfolioRates, best_band
from streams.contact_guard import quiet_until
from streams.contact_state import ContactState
from streams.local_time import HourMask, local_datetime, local_iso, zone
from streams.personas import UNKNOWN
from streams.policy import CHANNELS, ContactRules
from streams.profile import profile
from streams.report import ALL_PERSONAS, ALL_QUADRANTS, row_shares
from streams.signing import sign, unsigned, verify
from streams.state import DebtorState, is_debtor_key
from streams.treatments import read_stored, stored_key

if TYPE_CHECKING:
    from agents.service import Service

__all__ = [
    "DEFAULT_WINDOW_DAYS",
    "FORWARDED_HEADER",
    "PEER_HEADER",
    "PEER_PATH",
    "PROFILE_HEADERS",
    "POPULATION_TOPIC",
    "WINDOWS_DAYS",
    "Api",
    "ApiConfigError",
    "BadRequest",
    "PopulationBoard",
    "contact_facts",
    "PopulationPublisher",
    "key_partition",
    "merge_population",
    "merge_transitions",
    "parse_days",
    "parse_summary",
    "peer_base_url",
    "sign_peer",
    "valid_debtor_id",
    "verify_peer",
    "register_api",
    "summarize",
]

log = logging.getLogger("debtor_segments.api")

#: Compacted single-partition topic of per-partition population summaries, key = partition number.
POPULATION_TOPIC = "debtor.population"
#: The windows (days) the transition matrix is kept for; ``?days=`` must be one of them.
WINDOWS_DAYS: tuple[int, ...] = (30, 90, 365)
DEFAULT_WINDOW_DAYS = 365
#: Set on a request one worker forwards to the owner of the debtor: the owner answers it
#: itself (503 if it no longer owns the partition) instead of forwarding again.
FORWARDED_HEADER = "X-Debtor-Segments-Forwarded"
SUMMARY_VERSION = 1
#: Seconds between population refreshes; a partition's summary is published when it changed,
#: and at least every :data:`REPUBLISH_SECONDS` (which also repairs a summary an old owner
#: published late during a rebalance).
REFRESH_SECONDS = 5.0
#: The population gauges (debtors per persona and quadrant, drift) are set this often, from
#: the publisher's latest scans.
GAUGE_SECONDS = 15.0
REPUBLISH_SECONDS = 60.0
#: A refresh scans the local table; the next one waits at least this many times as long as the
#: scan took, so aggregates never take more than about 1/20 of the event loop.
SCAN_BACKOFF = 20.0
FORWARD_TIMEOUT_S = 10.0
#: The owner's page for forwarded profile requests (signed with DEBTOR_SEGMENTS_PEER_SECRET).
PEER_PATH = "/internal/debtor-profile"
#: Header of a forwarded request: ``<unix seconds>:<hex HMAC-SHA256 of "<seconds>\n<debtor id>">``.
PEER_HEADER = "X-Debtor-Segments-Peer"
#: A signed request older (or newer) than this is refused: a captured one cannot be replayed later.
PEER_MAX_AGE_S = 30.0
#: Every response carrying (or about) a profile: never cached, by a proxy or a browser.
PROFILE_HEADERS = {"Cache-Control": "no-store", "Vary": "Authorization"}
_DEBTOR_ID = load_schema("payment_received")["properties"]["debtor_id"]
_FORBIDDEN_IN_IDS = re.compile(_DEBTOR_ID["not"]["pattern"])
_DAY = 86_400.0
_JSON = "application/json"
#: Faust's built-in pages that serve table data (``/table/<table>/<key>/``, unauthenticated) or
#: the cluster layout (``/router``). The API replaces them; they are not served.
_EXPOSING_BLUEPRINTS = frozenset({"faust.web.apps.tables.blueprint", "faust.web.apps.router:blueprint"})


class ApiConfigError(click.ClickException):
    """The API cannot start with this configuration (printed as ``Error: ...``, exit status 2)."""

    exit_code = 2


class BadRequest(ValueError):
    """A query parameter is invalid; the message says what is allowed."""


def _iso(ts: float | None) -> str | None:
    # A time from event data (a summary, a state written before the decoder bounded event
    # times) must never make an endpoint fail: out of datetime's range it is shown as null.
    if ts is None or not math.isfinite(ts) or ts <= 0:
        return None
    try:
        return datetime.fromtimestamp(ts, UTC).isoformat()
    except (OverflowError, ValueError, OSError):
        return None


def key_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner (murmur2, as Java, kafka-python and aiokafka
    use) gives ``key``: where the debtor's inbound records and table state live.

    >>> key_partition(b"d1", 4)
    1
    """
    from aiokafka.partitioner import murmur2

    return (murmur2(key) & 0x7FFFFFFF) % partitions


# --- summaries of one partition, and their sum -----------------------------------------------


_PERSONA_INDEX = {persona: index for index, persona in enumerate(ALL_PERSONAS)}


class PopulationTally:
    """The population summary of one table partition, built one state at a time.

    A scan of a large table keeps 18 bytes per debtor here (what the transition windows need,
    in arrays), not the decoded states: holding those cost over a kilobyte per debtor.
    """

    def __init__(self) -> None:
        self.debtors = 0
        self.personas = dict.fromkeys(ALL_PERSONAS, 0)
        self.quadrants = dict.fromkeys(ALL_QUADRANTS, 0)
        self.cells: dict[str, dict[str, int]] = {}
        self.latest: float | None = None
        # For the transitions: first event, start of the current persona, previous and
        # current persona (as indices into ALL_PERSONAS) of each debtor that has a persona start.
        self._first = array("d")
        self._since = array("d")
        self._before = array("b")
        self._after = array("b")

    def add(self, state: DebtorState) -> None:
        self.debtors += 1
        self.personas[state.persona] = self.personas.get(state.persona, 0) + 1
        self.quadrants[state.quadrant] = self.quadrants.get(state.quadrant, 0) + 1
        row = self.cells.setdefault(state.persona, {})
        row[state.quadrant] = row.get(state.quadrant, 0) + 1
        if state.watermark and math.isfinite(state.watermark) and (self.latest is None or state.watermark > self.latest):
            self.latest = state.watermark
        if math.isfinite(state.persona_since):
            self._first.append(state.first_ts)
            self._since.append(state.persona_since)
            self._before.append(_PERSONA_INDEX[state.previous_persona])
            self._after.append(_PERSONA_INDEX[state.persona])

    def transitions(self, since: float) -> dict[str, dict[str, int]]:
        """Persona at ``since`` -> persona now, as :func:`streams.profile.transitions` counts
        them, without the zero cells."""
        counts: dict[str, dict[str, int]] = {}
        for first, started, before, after in zip(self._first, self._since, self._before, self._after, strict=True):
            if first > since:
                continue
            row = counts.setdefault(ALL_PERSONAS[before if started > since else after], {})
            row[ALL_PERSONAS[after]] = row.get(ALL_PERSONAS[after], 0) + 1
        return counts

    def summary(self, partition: int, partitions: int, *, published_at: float | None = None) -> dict[str, Any]:
        """The summary as published on :data:`POPULATION_TOPIC` (see :func:`summarize`)."""
        windows: dict[str, Any] = {}
        for days in WINDOWS_DAYS:
            since = None if self.latest is None else self.latest - days * _DAY
            windows[str(days)] = {"since": since, "counts": {} if since is None else self.transitions(since)}
        return {
            "v": SUMMARY_VERSION,
            "partition": partition,
            "partitions": partitions,
            "debtors": self.debtors,
            "personas": self.personas,
            "quadrants": self.quadrants,
            "cells": self.cells,
            "latest_event": self.latest,
            "transitions": windows,
            "published_at": time.time() if published_at is None else published_at,
        }


def summarize(partition: int, partitions: int, states: Iterable[DebtorState], *, published_at: float | None = None) -> dict[str, Any]:
    """The population summary of one table partition, as published on :data:`POPULATION_TOPIC`.

    Transition counts use the partition's own clock: ``since`` = its latest event time minus
    the window (event time, so a replayed history gives the same matrix as a live one).

    >>> s = summarize(2, 4, [DebtorState.new("d1")], published_at=0.0)
    >>> s["partition"], s["debtors"], s["personas"]["unknown"], s["transitions"]["90"]["counts"]
    (2, 1, 1, {})
    """
    tally = PopulationTally()
    for state in states:
        tally.add(state)
    return tally.summary(partition, partitions, published_at=published_at)


def _counts(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and type(n) is int and n >= 0 for k, n in value.items())


def _matrix(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and _counts(row) for k, row in value.items())


def parse_summary(value: bytes | None, partitions: int) -> dict[str, Any] | None:
    """A summary read from the population topic, or None if it is not a valid one for a
    table of ``partitions`` partitions (another version, another partition count, garbage).

    >>> parse_summary(orjson.dumps(summarize(1, 4, [], published_at=1.0)), 4)["partition"]
    1
    >>> parse_summary(orjson.dumps(summarize(1, 4, [], published_at=1.0)), 8) is None
    True
    """
    try:
        summary = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None
    if not isinstance(summary, dict) or summary.get("v") != SUMMARY_VERSION or summary.get("partitions") != partitions:
        return None
    partition = summary.get("partition")
    if type(partition) is not int or not 0 <= partition < partitions or type(summary.get("debtors")) is not int:
        return None
    if not (_counts(summary.get("personas")) and _counts(summary.get("quadrants")) and _matrix(summary.get("cells"))):
        return None
    windows = summary.get("transitions")
    if not isinstance(windows, dict):
        return None
    for days in WINDOWS_DAYS:
        window = windows.get(str(days))
        if not isinstance(window, dict) or not _matrix(window.get("counts")):
            return None
        if window.get("since") is not None and not isinstance(window["since"], int | float):
            return None
    if not isinstance(summary.get("published_at"), int | float):
        return None
    latest = summary.get("latest_event")
    if latest is not None and not isinstance(latest, int | float):
        return None
    return summary


def _coverage(summaries: Mapping[int, Mapping[str, Any]], partitions: int) -> tuple[list[Mapping[str, Any]], dict[str, Any]]:
    present = [summaries[p] for p in range(partitions) if p in summaries]
    published = [s["published_at"] for s in present]
    latest = [s["latest_event"] for s in present if s.get("latest_event") is not None]
    meta = {
        "partitions": {"reported": len(present), "total": partitions, "complete": len(present) == partitions},
        "as_of": _iso(min(published)) if published else None,
        "latest_event": _iso(max(latest)) if latest else None,
    }
    return present, meta


def merge_population(summaries: Mapping[int, Mapping[str, Any]], partitions: int) -> dict[str, Any]:
    """``GET /personas``: the sum of the newest summary of every partition.

    >>> parts = {p: summarize(p, 2, [DebtorState.new(f"d{p}")], published_at=1.0) for p in (0, 1)}
    >>> body = merge_population(parts, 2)
    >>> body["debtors"], body["personas"]["unknown"], body["partitions"]["complete"]
    (2, 2, True)
    """
    present, meta = _coverage(summaries, partitions)
    personas = dict.fromkeys(ALL_PERSONAS, 0)
    quadrants = dict.fromkeys(ALL_QUADRANTS, 0)
    both = {persona: dict.fromkeys(ALL_QUADRANTS, 0) for persona in ALL_PERSONAS}
    for summary in present:
        for persona, n in summary["personas"].items():
            personas[persona] = personas.get(persona, 0) + n
        for quadrant, n in summary["quadrants"].items():
            quadrants[quadrant] = quadrants.get(quadrant, 0) + n
        for persona, row in summary["cells"].items():
            target = both.setdefault(persona, dict.fromkeys(ALL_QUADRANTS, 0))
            for quadrant, n in row.items():
                target[quadrant] = target.get(quadrant, 0) + n
    return {
        "debtors": sum(s["debtors"] for s in present),
        "personas": personas,
        "quadrants": quadrants,
        "persona_quadrant": both,
        **meta,
    }


def merge_transitions(summaries: Mapping[int, Mapping[str, Any]], partitions: int, days: int) -> dict[str, Any]:
    """``GET /personas/transitions``: summed counts of the ``days`` window, and row shares.

    >>> parts = {0: summarize(0, 1, [DebtorState.new("d")], published_at=1.0)}
    >>> body = merge_transitions(parts, 1, 90)
    >>> body["days"], body["debtors"], body["row_shares"]["tamara"]["tamara"]
    (90, 0, 0.0)
    """
    if days not in WINDOWS_DAYS:
        raise BadRequest(_days_message())
    present, meta = _coverage(summaries, partitions)
    counts = {row: dict.fromkeys(ALL_PERSONAS, 0) for row in ALL_PERSONAS}
    starts = []
    for summary in present:
        window = summary["transitions"][str(days)]
        if window.get("since") is not None:
            starts.append(window["since"])
        for row, cells in window["counts"].items():
            target = counts.setdefault(row, dict.fromkeys(ALL_PERSONAS, 0))
            for col, n in cells.items():
                target[col] = target.get(col, 0) + n
    shares = {row: {col: round(share, 4) for col, share in cells.items()} for row, cells in row_shares(counts).items()}
    return {
        "days": days,
        "since": _iso(min(starts)) if starts else None,
        "debtors": sum(sum(cells.values()) for cells in counts.values()),
        "counts": counts,
        "row_shares": shares,
        **meta,
    }


def _days_message() -> str:
    return f"days must be one of {', '.join(map(str, WINDOWS_DAYS))} (default {DEFAULT_WINDOW_DAYS})"


def parse_days(query: Mapping[str, str]) -> int:
    """The ``days`` query parameter: one of :data:`WINDOWS_DAYS`, default :data:`DEFAULT_WINDOW_DAYS`.

    >>> parse_days({}), parse_days({"days": "90"})
    (365, 90)
    >>> parse_days({"days": "60"})
    Traceback (most recent call last):
    ...
    agents.api.BadRequest: days must be one of 30, 90, 365 (default 365)
    """
    raw = query.get("days")
    if raw is None:
        return DEFAULT_WINDOW_DAYS
    try:
        days = int(raw.strip())
    except ValueError:
        raise BadRequest(_days_message()) from None
    if days not in WINDOWS_DAYS:
        raise BadRequest(_days_message())
    return days


# --- a debtor's contact facts ----------------------------------------------------------------


def contact_facts(contact: ContactState, rules: ContactRules, portfolio: PortfolioRates, default_tz: str, now: float) -> dict[str, Any]:
    """What the contact guard knows about one debtor and would apply at ``now`` (wall clock):
    the ``contact`` member of ``GET /debtors/{debtor_id}`` with a treatment policy.

    ``best_window`` is the contact_due's (:func:`streams.contact_guard.guard_step`): the best
    band of the debtor's answer rates shrunk to ``portfolio``'s, within the rules' hours
    minus the debtor's inconvenient hours, for a weekday or a weekend as ``now`` is one in
    the debtor's time zone. Call counts are those of the rolling window ending at ``now``.

    >>> facts = contact_facts(ContactState(tz_name="America/New_York", opt_out=["sms"], inconvenient=[[8, 10]]),
    ...                       ContactRules(), PortfolioRates(), "Europe/Amsterdam", 1772449200.0)
    >>> facts["timezone"], facts["timezone_source"], facts["local_time"], facts["opted_out_channels"]
    ('America/New_York', 'preference', '2026-03-02T06:00:00-05:00', ['sms'])
    >>> facts["best_window"], facts["allowed_hours"]
    ({'from_hour': 10, 'to_hour': 12, 'timezone': 'America/New_York'}, [{'from_hour': 10, 'to_hour': 21}])
    """
    tz_name, tz_source = contact.timezone(default_tz)
    tz = zone(tz_name)
    if tz is None:  # as the guard does: a stored name this zone database no longer has
        tz_name, tz_source, tz = default_tz, "default", zone(default_tz)
    if tz is None:
        raise ValueError(f"unknown default time zone {default_tz!r}")
    mask = HourMask.between(rules.earliest_hour, rules.latest_hour).without((span[0], span[1]) for span in contact.inconvenient)
    local = local_datetime(now, tz)
    band = best_band(contact.rates, portfolio, weekend=local.weekday() >= 5, allowed=mask)
    window_s = rules.call_window_days * _DAY
    answered, attempts = contact.rates.overall()
    quiet = quiet_until(contact, now, tz, rules.quiet_days_after_conversation)
    return {
        "timezone": tz_name,
        "timezone_source": tz_source,
        "local_time": local_iso(now, tz),
        "weekend": local.weekday() >= 5,
        "allowed_hours": [{"from_hour": start, "to_hour": end} for start, end in mask.windows()],
        "inconvenient_hours": [{"from_hour": span[0], "to_hour": span[1]} for span in contact.inconvenient],
        "best_window": None if band is None else {"from_hour": band[0], "to_hour": band[1], "timezone": tz_name},
        "opted_out_channels": [channel for channel in CHANNELS if contact.opted_out(channel)],
        "calls": {
            "in_window": sum(1 for entry in contact.calls if now - window_s < entry[0] <= now),
            "max_calls": rules.max_calls,
            "window_days": rules.call_window_days,
            "last_call_at": _iso(contact.calls[-1][0]) if contact.calls else None,
            "recorded_attempts": attempts,
            "answered": answered,
        },
        "last_conversation_at": _iso(contact.conversations[-1]) if contact.conversations else None,
        "quiet_until": _iso(quiet),
        "held_steps": len(contact.held),
        "decisions": contact.decisions,
        "rule_version": rules.version,
    }


# --- publishing and reading the summaries --------------------------------------------------------


class _TableChanges(Sensor):
    """Marks the partition of every key the agents set or delete in the state table."""

    def __init__(self, table: Any, mark: Callable[[bytes], None]) -> None:
        super().__init__()
        self._table = table
        self._mark = mark

    def on_table_set(self, table: Any, key: Any, value: Any) -> None:
        if table is self._table:
            self._mark(key)

    def on_table_del(self, table: Any, key: Any) -> None:
        if table is self._table:
            self._mark(key)


class PopulationPublisher:
    """Publishes the summary of every table partition this worker actively owns.

    A partition is refreshed when a key of it changed (see :class:`_TableChanges`), when this
    worker has not published it yet since it got it, and every :data:`REPUBLISH_SECONDS`; a
    summary equal to the last one published (apart from its time) is not sent again unless
    that is due.
    """

    def __init__(self, service: Service, board: PopulationBoard, send: Callable[[bytes, bytes], Any]) -> None:
        self.service = service
        self.board = board
        self.send = send
        self.partitions = service.config.settings.partitions
        self.changelog = service.table.changelog_topic.get_topic_name()
        self.dirty: set[int] = set()
        self.published: dict[int, tuple[float, bytes]] = {}  # partition -> (when, content without time)
        self._not_before = 0.0
        self.published_count = 0
        #: Debtors per persona and per quadrant of each partition, from its latest scan: the
        #: worker's population gauges read them instead of scanning the table again.
        self.counts: dict[int, tuple[dict[str, int], dict[str, int]]] = {}
        # RocksDB iterates a consistent view while the agent writes; the memory store cannot.
        self.persistent = not service.config.settings.store.startswith("memory")

    def mark(self, key: Any) -> None:
        """A key of the table changed: its partition needs a new summary."""
        event = current_event()
        if event is not None:  # the agent's record: Faust writes the changelog to its partition
            self.dirty.add(event.message.partition)
        elif isinstance(key, bytes | str):
            self.dirty.add(key_partition(key.encode() if isinstance(key, str) else key, self.partitions))

    def forget(self, partitions: Iterable[int]) -> None:
        """Partitions revoked: publish them afresh should they come back."""
        for partition in partitions:
            self.published.pop(partition, None)
            self.counts.pop(partition, None)

    def owned(self) -> set[int]:
        """Table partitions this worker actively owns now."""
        try:
            actives = self.service.app.assignor.assigned_actives()
        except Exception:  # noqa: BLE001 - no assignment yet (Faust internals)
            return set()
        return {tp.partition for tp in actives if tp.topic == self.changelog}

    def _settled(self) -> bool:
        app = self.service.app
        try:
            return bool(self.service.assigned_once) and not app.rebalancing and not app.in_recovery
        except Exception:  # noqa: BLE001 - Faust internals, best effort
            return False

    def population(self) -> tuple[Counter[str], Counter[str]] | None:
        """Debtors per persona and per quadrant in the partitions this worker owns, summed
        from their latest scans; None while one of them has not been scanned yet."""
        owned = self.owned()
        if not owned <= self.counts.keys():
            return None
        personas: Counter[str] = Counter()
        quadrants: Counter[str] = Counter()
        for partition in owned:
            personas.update(self.counts[partition][0])
            quadrants.update(self.counts[partition][1])
        return +personas, +quadrants  # without the personas and quadrants nobody has

    async def refresh(self, *, force: bool = False) -> int:
        """Publish the summaries that are due (with ``force``: of every partition owned, now,
        changed or not); returns how many were sent."""
        now = time.monotonic()
        if not self.board.topic_ready.is_set() or not self._settled() or (not force and now < self._not_before):
            return 0
        owned = self.owned()
        due = {
            p for p in owned if force or p in self.dirty or p not in self.published or now - self.published[p][0] >= REPUBLISH_SECONDS
        }
        if not due:
            return 0
        self.dirty -= due  # changes from here on mark them again
        try:
            return await self._publish(due, force)
        except BaseException:
            self.dirty |= due
            raise

    async def _publish(self, due: set[int], force: bool) -> int:
        started = time.perf_counter()
        tallies = {p: PopulationTally() for p in due}
        items: Iterable[tuple[Any, Any]] = self.service.table.items()
        if not self.persistent:
            # The memory store is a dict, which must not change while the scan yields below.
            items = list(items)
        for number, (key, value) in enumerate(items, start=1):
            if isinstance(key, bytes) and value is not None and is_debtor_key(key):
                tally = tallies.get(key_partition(key, self.partitions))
                if tally is not None:
                    tally.add(DebtorState.from_bytes(value))
            if number % 500 == 0:
                await asyncio.sleep(0)
        if not self._settled() or not due <= self.owned():
            self.dirty |= due  # a rebalance began meanwhile: try again later
            return 0
        for partition in due:
            self.counts[partition] = (tallies[partition].personas, tallies[partition].quadrants)
        sent = 0
        for partition in sorted(due):
            summary = tallies[partition].summary(partition, self.partitions)
            content = orjson.dumps({k: v for k, v in summary.items() if k != "published_at"}, option=orjson.OPT_SORT_KEYS)
            last = self.published.get(partition)
            if not force and last is not None and last[1] == content and time.monotonic() - last[0] < REPUBLISH_SECONDS:
                continue
            key = self.service.config.settings.signing_key
            await self.send(str(partition).encode(), orjson.dumps(sign(summary, key, "population") if key else summary))
            self.published[partition] = (time.monotonic(), content)
            sent += 1
        self.published_count += sent
        took = time.perf_counter() - started
        self._not_before = time.monotonic() + took * SCAN_BACKOFF
        return sent


class _SummaryProducer:
    """A plain producer for the summaries: they are derived data, outside the processing
    guarantee (Faust's producer sends transactionally under exactly_once, and only to topics
    its agents consume)."""

    def __init__(self, bootstrap: str, topic: str, client_id: str, *, client_options: Mapping[str, Any] | None = None) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.client_id = client_id
        self.client_options: dict[str, Any] = dict(client_options or {})
        self._producer: Any = None

    async def send(self, key: bytes, value: bytes) -> None:
        if self._producer is None:
            from aiokafka import AIOKafkaProducer

            producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, client_id=self.client_id, acks="all", **self.client_options)
            await producer.start()
            self._producer = producer
        await self._producer.send_and_wait(self.topic, value, key=key)

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()


class PopulationBoard(TopicFollower):
    """The newest summary of every partition, read from the whole population topic."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        partitions: int,
        client_id: str,
        signing_key: bytes = b"",
        on_bad_signature: Callable[[], None] = lambda: None,
        *,
        client_options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(bootstrap, topic, client_id, "population reader", client_options=client_options)
        self.partitions = partitions
        self.signing_key = signing_key
        self.on_bad_signature = on_bad_signature
        self.summaries: dict[int, dict[str, Any]] = {}
        self.topic_ready = asyncio.Event()
        self.loaded = asyncio.Event()
        self.ignored = 0

    def offer(self, key: bytes | None, value: bytes | None) -> None:
        """Take one record of the topic (records come in offset order: the newest wins)."""
        try:
            partition = int((key or b"").decode())
        except (UnicodeDecodeError, ValueError):
            self.ignored += 1
            return
        if value is None:
            self.summaries.pop(partition, None)
            return
        summary = parse_summary(value, self.partitions)
        if summary is None or summary["partition"] != partition:
            self.ignored += 1
            return
        if self.signing_key:
            if not verify(summary, self.signing_key, "population"):
                self.ignored += 1
                self.on_bad_signature()
                return
            summary = unsigned(summary)
        self.summaries[partition] = summary

    async def ensure_topic(self) -> None:
        spec = TopicSpec(
            self.topic,
            1,
            {"cleanup.policy": "compact", "segment.ms": "600000", "min.cleanable.dirty.ratio": "0.1"},
            role="population summaries, key = table partition",
        )
        while not self.topic_ready.is_set():
            try:
                await asyncio.to_thread(ensure_topics, self.bootstrap, [spec], wait_s=30.0, client_options=self.client_options)
                self.topic_ready.set()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - broker down or topic mismatch: keep trying
                log.warning("cannot create the topic %s (%s); retrying in 5s", self.topic, error)
                await asyncio.sleep(5.0)

    async def run(self) -> None:
        await self.ensure_topic()
        await super().run()

    def on_restart(self) -> None:
        self.summaries.clear()

    def on_records(self, records: list[Any]) -> None:
        for record in records:
            self.offer(record.key, record.value)

    def on_caught_up(self) -> None:
        self.loaded.set()


# --- the HTTP side ---------------------------------------------------------------------------------


class Api:
    """The endpoints' logic; :func:`register_api` wires it into the Faust app."""

    def __init__(self, service: Service, tokens: Tokens, board: PopulationBoard, publisher: PopulationPublisher) -> None:
        self.service = service
        self.tokens = tokens
        self.board = board
        self.publisher = publisher
        self.partitions = service.config.settings.partitions
        self.debug_ids = service.config.settings.debug_ids
        self.peer_secret = service.config.settings.peer_secret
        self.forwarded = 0  # requests this worker forwarded to the owner of the debtor
        #: The wall clock of the contact facts (their "now"; tests set it).
        self.clock: Callable[[], float] = time.time

    # helpers

    @staticmethod
    def _error(view: Any, status: int, error: str, detail: str, headers: Mapping[str, str] | None = None) -> Any:
        return view.json({"error": error, "detail": detail}, status=status, headers=dict(headers or {}))

    def _check(self, view: Any, request: Any, scope: str) -> tuple[Decision, Any]:
        decision = authorize(self.tokens, request.headers.get("Authorization"), scope)
        if decision.allowed:
            return decision, None
        return decision, self._error(view, decision.status, decision.error, decision.detail, decision.headers)

    def _unavailable(self, view: Any, detail: str) -> Any:
        return self._error(view, 503, "unavailable", detail, {"Retry-After": "1", **PROFILE_HEADERS})

    def _failed(self, view: Any, what: str, error: BaseException) -> Any:
        if self.debug_ids:
            log.exception("%s failed", what)
        else:  # the message or traceback could hold a debtor id
            log.error("%s failed: %s", what, type(error).__name__)
        return self._error(view, 500, "internal", "the request failed; see the worker log")

    # endpoints

    async def debtor(self, view: Any, request: Any, debtor_id: str) -> Any:
        _, denied = self._check(view, request, DEBTORS)
        if denied is not None:
            return _with_profile_headers(denied)
        if not valid_debtor_id(debtor_id):
            return self._error(view, 400, "bad_request", _ID_MESSAGE, PROFILE_HEADERS)
        try:
            return await self._debtor(view, debtor_id, forwarded=False)
        except Exception as error:  # noqa: BLE001 - answered 500, logged without the id
            return self._failed(view, "GET /debtors/{debtor_id}", error)

    async def peer_profile(self, view: Any, request: Any) -> Any:
        """``GET /internal/debtor-profile?debtor_id=...``: a profile request another worker
        forwarded, signed with the peer secret; answered from this worker's partitions only."""
        debtor_id = request.query.get("debtor_id", "")
        if not valid_debtor_id(debtor_id) or not verify_peer(self.peer_secret, request.headers.get(PEER_HEADER), debtor_id):
            return self._error(view, 403, "forbidden", "not a signed request of a worker of this deployment", PROFILE_HEADERS)
        try:
            return await self._debtor(view, debtor_id, forwarded=True)
        except Exception as error:  # noqa: BLE001 - answered 500, logged without the id
            return self._failed(view, "GET " + PEER_PATH, error)

    async def _debtor(self, view: Any, debtor_id: str, *, forwarded: bool) -> Any:
        app = self.service.app
        key = debtor_id.encode("utf-8")
        partition = key_partition(key, self.partitions)
        if app.rebalancing or app.in_recovery or not self.service.assigned_once:
            return self._unavailable(view, "the workers are rebalancing; retry shortly")
        if partition in self.publisher.owned():
            return self._local_profile(view, key)
        if forwarded:
            return self._unavailable(view, "the owner of this debtor changed; retry shortly")
        if not self.peer_secret:
            return self._unavailable(view, "another worker owns this debtor, and forwarding needs DEBTOR_SEGMENTS_PEER_SECRET")
        owner = self._owner(partition)
        if owner is None:
            return self._unavailable(view, "no worker owns this debtor's partition right now; retry shortly")
        return await self._forward(view, debtor_id, owner)

    def _local_profile(self, view: Any, key: bytes) -> Any:
        data = self.service.table.get(key)
        if data is None:
            return self._error(view, 404, "not_found", "no debtor with this id", PROFILE_HEADERS)
        body = profile(DebtorState.from_bytes(data), self.service.holder.model)
        treatments = self.service.treatments
        if treatments is not None:
            body["contact"] = self._contact(key.decode("utf-8"), treatments.runner)
        return view.bytes(orjson.dumps(_finite(body)), content_type=_JSON, headers=PROFILE_HEADERS)

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

    def _owner(self, partition: int) -> str | None:
        """Base URL of the worker that actively owns ``partition`` of the state table (Faust's
        assignment metadata of the current group members, as ``@app.table_route`` uses it),
        or None. A URL that is not a plain ``http(s)://host:port`` is never used."""
        try:
            metadata = self.service.app.router.table_metadata(self.service.table.name)
        except Exception:  # noqa: BLE001 - no assignment metadata yet
            return None
        changelog = self.publisher.changelog
        own = _url_ident(str(self.service.app.conf.canonical_url))
        for url, topics in metadata.items():
            if partition in (topics.get(changelog) or ()) and _url_ident(url) != own:
                base = peer_base_url(url)
                if base is None:
                    log.warning("a group member advertises an unusable URL; not forwarding to it")
                return base
        return None

    async def _forward(self, view: Any, debtor_id: str, owner: str) -> Any:
        import aiohttp
        from yarl import URL

        # Only the profile request, rebuilt from the validated id (never the client's path),
        # signed with the peer secret (never the client's token).
        target = URL(owner).with_path(PEER_PATH).with_query({"debtor_id": debtor_id})
        headers = {PEER_HEADER: sign_peer(self.peer_secret, debtor_id), "Accept": _JSON}
        self.forwarded += 1
        try:
            client = self.service.app.http_client
            timeout = aiohttp.ClientTimeout(total=FORWARD_TIMEOUT_S)
            async with client.get(target, headers=headers, timeout=timeout, allow_redirects=False) as response:
                status = response.status
                body = await response.content.read(1 << 20) if status == 200 else b""
        except (aiohttp.ClientError, TimeoutError) as error:
            log.warning("could not reach the worker %s owning a debtor: %s", owner, type(error).__name__)
            return self._unavailable(view, "the worker that owns this debtor did not answer; retry shortly")
        if status == 404:
            return self._error(view, 404, "not_found", "no debtor with this id", PROFILE_HEADERS)
        if status == 200:
            try:
                value = orjson.loads(body)
            except orjson.JSONDecodeError:
                value = None
            if isinstance(value, dict) and value.get("debtor_id") == debtor_id:
                return view.bytes(orjson.dumps(value), content_type=_JSON, headers=PROFILE_HEADERS)
        if status != 503:
            log.warning("the worker %s owning a debtor answered a forwarded request with %d", owner, status)
        return self._unavailable(view, "the worker that owns this debtor could not answer; retry shortly")

    async def personas(self, view: Any, request: Any) -> Any:
        _, denied = self._check(view, request, AGGREGATES)
        if denied is not None:
            return denied
        if not self.board.loaded.is_set():
            return self._unavailable(view, "population summaries not loaded yet")
        return view.json(merge_population(self.board.summaries, self.partitions))

    async def transitions(self, view: Any, request: Any) -> Any:
        _, denied = self._check(view, request, AGGREGATES)
        if denied is not None:
            return denied
        try:
            days = parse_days(request.query)
        except BadRequest as error:
            return self._error(view, 400, "bad_request", str(error))
        if not self.board.loaded.is_set():
            return self._unavailable(view, "population summaries not loaded yet")
        return view.json(merge_transitions(self.board.summaries, self.partitions, days))


_ID_MESSAGE = f"debtor_id must be {_DEBTOR_ID['minLength']}-{_DEBTOR_ID['maxLength']} characters without control characters"


def valid_debtor_id(debtor_id: str) -> bool:
    """Whether ``debtor_id`` is one the wire contract allows (checked before any routing).

    >>> valid_debtor_id("d42"), valid_debtor_id(""), valid_debtor_id("d\\x00"), valid_debtor_id("x" * 65)
    (True, False, False, False)
    """
    return _DEBTOR_ID["minLength"] <= len(debtor_id) <= _DEBTOR_ID["maxLength"] and not _FORBIDDEN_IN_IDS.search(debtor_id)


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


def _with_profile_headers(reply: Any) -> Any:
    try:
        reply.headers.update(PROFILE_HEADERS)
    except AttributeError:  # a reply without headers to update
        pass
    return reply


def _finite(value: Any) -> Any:
    """JSON has no NaN/Infinity: such floats become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _url_ident(url: str) -> tuple[str, int]:
    from yarl import URL

    parsed = URL(url)
    return (parsed.host or parsed.path or "", int(parsed.port or 80))


def _drop_exposing_blueprints(app: Any) -> None:
    manager = app.web.blueprints
    if manager.applied:
        raise RuntimeError("register_api must run before the web server starts")
    manager._enabled = [(prefix, bp) for prefix, bp in manager._enabled if bp not in _EXPOSING_BLUEPRINTS]


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
    producer = _SummaryProducer(config.settings.bootstrap_servers, topic_name, f"{config.id}-population-writer", client_options=client_options)
    publisher = PopulationPublisher(service, board, producer.send)
    api = Api(service, tokens, board, publisher)
    service.api = api  # type: ignore[attr-defined]
    app.sensors.add(_TableChanges(service.table, publisher.mark))
    _drop_exposing_blueprints(app)
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
        unset = [name for name, value in (("PEER_SECRET", config.settings.peer_secret), ("ID_SECRET", config.settings.id_secret),
                                          ("SIGNING_SECRET", config.settings.signing_secret)) if not value]
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
            return await api.debtor(self, request, debtor_id)

    @app.page(PEER_PATH)
    class PeerProfile(faust_web.View):
        async def get(self, request: faust_web.Request) -> faust_web.Response:
            return await api.peer_profile(self, request)

    @app.page("/personas")
    class Personas(faust_web.View):
        async def get(self, request: faust_web.Request) -> faust_web.Response:
            return await api.personas(self, request)

    @app.page("/personas/transitions")
    class Transitions(faust_web.View):
        async def get(self, request: faust_web.Request) -> faust_web.Response:
            return await api.transitions(self, request)

    return api
