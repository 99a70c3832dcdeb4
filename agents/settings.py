"""Settings of the service, read from environment variables in this one place.

Each setting is declared once, as a field of :class:`Settings` made by :func:`setting`: its
environment variable (``DEBTOR_SEGMENTS_<NAME>``), its default (the text the variable would
hold) and its help. The CLI builds its options from these declarations
(:func:`declaration`); an option given on the command line overrides the environment
(:func:`with_overrides`). Every default works on a laptop; where the core has a default of
its own (``streams.events``, ``streams.engine``), the setting's default is that one.

>>> declaration("web_port")
Declaration(name='web_port', env='DEBTOR_SEGMENTS_WEB_PORT', default='6066', help='HTTP port: /health, /ready, /model, /metrics.', choices=())
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from debtor_segments.streams.engine import EngineConfig
from debtor_segments.streams.events import DEFAULT_MAX_AMOUNT_CENTS, DEFAULT_MAX_RECORD_BYTES, EARLIEST_TS, Limits

if TYPE_CHECKING:
    import ssl

__all__ = ["ENV_PREFIX", "Declaration", "Settings", "declaration", "declarations", "setting", "with_overrides"]

#: Prefix of every setting's environment variable.
ENV_PREFIX = "DEBTOR_SEGMENTS_"


@dataclass(frozen=True, slots=True)
class Declaration:
    """What :func:`setting` declared of one field of :class:`Settings`.

    Attributes
    ----------
    name : str
        The field (``web_port``).
    env : str
        Its environment variable (``DEBTOR_SEGMENTS_WEB_PORT``).
    default : str
        The default, as the text the variable would hold (``""``: empty, nothing set).
    help : str
        One or two sentences for ``--help`` and the docs.
    choices : tuple of str
        The values allowed, or ``()`` for any.
    """

    name: str
    env: str
    default: str
    help: str
    choices: tuple[str, ...] = ()


def setting(env: str, default: str, help: str, parse: Callable[[str], Any] = str, *, choices: tuple[str, ...] = (), secret: bool = False) -> Any:
    """Declare a field of :class:`Settings`, read from ``DEBTOR_SEGMENTS_<env>`` when built.

    Parameters
    ----------
    env : str
        The variable's name after :data:`ENV_PREFIX`.
    default : str
        The value when the variable is not set, as its text.
    help : str
        What the setting does, for ``--help`` and the docs.
    parse : callable, default str
        Turns the text into the field's value (``int``, ``float``, ``Path``, ...).
    choices : tuple of str, optional
        The values allowed (checked by the CLI, for options and environment alike).
    secret : bool, default False
        Left out of the settings' ``repr`` (so out of logs and tracebacks).

    Returns
    -------
    dataclasses.Field
        The field, with the declaration in its metadata (see :func:`declaration`).
    """
    variable = ENV_PREFIX + env
    metadata = {"env": variable, "default": default, "help": help, "choices": choices}
    return dataclasses.field(default_factory=lambda: parse(os.environ.get(variable, default)), repr=not secret, metadata=metadata)


def _flag(text: str) -> bool:
    return text in ("1", "true", "yes")


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_HOUR_MS = 3600 * 1000
_DAY_MS = 24 * _HOUR_MS


@dataclass(frozen=True, slots=True)
class Settings:
    """Configuration of a worker or a CLI run.

    Attributes map to ``DEBTOR_SEGMENTS_<NAME>`` environment variables, e.g. ``broker`` to
    ``DEBTOR_SEGMENTS_BROKER``; each is declared with its default and help below, once.
    """

    broker: str = setting("BROKER", "kafka://127.0.0.1:9092", "Kafka broker URL(s), Faust style.")
    data_dir: Path = setting("DATA_DIR", "./data", "Local table state (RocksDB).", Path)
    web_port: int = setting("WEB_PORT", "6066", "HTTP port: /health, /ready, /model, /metrics.", int)
    web_host: str = setting(
        "WEB_HOST",
        "127.0.0.1",
        "Host name or address other workers reach this one's API at (forwarded /debtors requests); auto: the host name.",
    )
    # Loopback unless other workers (or a proxy) must reach it (docker-compose sets 0.0.0.0
    # inside the container network).
    web_bind: str = setting("WEB_BIND", "127.0.0.1", "The address the HTTP API listens on.")
    peer_secret: str = setting(
        "PEER_SECRET",
        "",
        "Secret shared by the workers of one deployment: a forwarded /debtors request is signed with it (HMAC, never the client's token). Empty: profiles are not forwarded (503).",
        secret=True,
    )
    # --- Kafka client security (docs/security.md) ---
    kafka_security_protocol: str = setting("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT", "PLAINTEXT, SASL_PLAINTEXT, SASL_SSL or SSL.")
    kafka_sasl_mechanism: str = setting("KAFKA_SASL_MECHANISM", "PLAIN", "With SASL, the mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.")
    kafka_username: str = setting("KAFKA_USERNAME", "", "With SASL, this worker's principal.")
    kafka_password: str = setting("KAFKA_PASSWORD", "", "With SASL, its password.", secret=True)
    kafka_ca_file: str = setting("KAFKA_CA_FILE", "", "CA certificate (PEM) that signed the brokers' certificates, for SSL and SASL_SSL.")
    partitions: int = setting("PARTITIONS", "4", "Partitions of the inbound topics and the state changelog.", int)
    store: str = setting("STORE", "memory", "Table store: memory (rebuilt from the changelog on start) or rocksdb (kept in --data-dir).", choices=("memory", "rocksdb"))
    max_amount_cents: int = setting("MAX_AMOUNT_CENTS", str(DEFAULT_MAX_AMOUNT_CENTS), "Largest plausible amount of an event, in cents.", int)
    lateness_days: float = setting("LATENESS_DAYS", f"{EngineConfig().lateness_days:g}", "How late (event time) an event may arrive and still be applied.", float)
    # Plausible event times (streams.events.Limits): anything else is dead-lettered as
    # implausible_timestamp.
    earliest_event: str = setting("EARLIEST_EVENT", _rfc3339(EARLIEST_TS), "Events that occurred before this time (RFC 3339) are implausible.")
    max_future_s: float = setting("MAX_FUTURE_S", f"{Limits().max_future_s:g}", "Events more than this many seconds ahead of the worker's wall clock are implausible.", float)
    max_record_bytes: int = setting(
        "MAX_RECORD_BYTES",
        str(DEFAULT_MAX_RECORD_BYTES),
        "Largest inbound record (Kafka value or replay line) the decoder parses; larger ones are dead-lettered as record_too_large (a replay reads at most this much of a line).",
        int,
    )
    api_tokens: str = setting("API_TOKENS", "", "Tokens of the HTTP API and their roles (token=role, comma-separated; agents/auth.py).", secret=True)
    # Changing it forgets which events of the lateness window were applied (their copies would
    # apply again).
    id_secret: str = setting(
        "ID_SECRET",
        "",
        "Key of the idempotency digests (streams.state.event_token): secret per deployment, the same on every worker, so a sender cannot craft colliding event ids.",
        secret=True,
    )
    signing_secret: str = setting(
        "SIGNING_SECRET",
        "",
        "Key of the HMAC signatures of model snapshots and population summaries (streams/signing.py), the same on every "
        "worker: set, records without a valid signature are refused and counted "
        "(debtor_segments_signature_failures_total). Empty: nothing is signed or checked.",
        secret=True,
    )
    debug_ids: bool = setting("DEBUG_IDS", "", "1, true or yes: record values may reach the log (event ids of failing records; the payload-quoting loggers at --loglevel debug).", _flag)
    topic_prefix: str = setting("TOPIC_PREFIX", "", "Prefix of every topic name, e.g. for tests or several deployments on one cluster.")
    app_id: str = setting("APP_ID", "", "Faust app id = consumer group; empty: PREFIX + debtor-segments.")
    loglevel: str = setting("LOGLEVEL", "info", "Log level.", choices=("debug", "info", "warning", "error"))
    guarantee: str = setting(
        "GUARANTEE",
        "at_least_once",
        "Processing guarantee: at_least_once (change events delivered before the state write) or exactly_once (Faust's Kafka transactions; experimental, see docs/reliability.md).",
        choices=("at_least_once", "exactly_once"),
    )
    model_snapshot_every: int = setting("MODEL_SNAPSHOT_EVERY", "200", "The model writer publishes a snapshot every N updates ...", int)
    # 0: never (agents.scheduler.AligningScheduler._live).
    live_window_s: float = setting(
        "LIVE_WINDOW_S",
        "60",
        "Records whose event time is within this many seconds of their Kafka timestamp are live traffic: they pass an idle inbound topic at once instead of after a 2 s grace.",
        float,
    )
    pending_writes: int = setting("PENDING_WRITES", "1000", "State writes that may wait at once for the delivery of earlier change events (agents/pending.py).", int)
    model_snapshot_seconds: float = setting("MODEL_SNAPSHOT_SECONDS", "5", "... or this long after the last one, if it learned anything.", float)
    # Fewer, larger produce requests (less CPU per event); the agent does not wait for
    # deliveries (agents/pending.py), so it costs latency only on the change events themselves
    # (docs/performance.md, section 2, step 7).
    producer_linger_ms: float = setting("PRODUCER_LINGER_MS", "5", "How long the producer waits to fill a batch (milliseconds).", float)
    policy: str = setting("POLICY", "", "Treatment policy file (policies/*.yaml; issue 15); empty: no treatment events.")
    default_timezone: str = setting("DEFAULT_TIMEZONE", "Europe/Amsterdam", "Time zone (IANA name) of debtors whose events give none: the contact rules' local hours.")
    # Every worker predicts with it until the model topic holds a newer snapshot, and the model
    # writer learns on from it (issue 12).
    initial_model: str = setting("INITIAL_MODEL", "", "Model snapshot to start from (debtor-segments fit), until the model topic holds a newer one; empty: the persona prototypes.")
    # --- failover (issue 18; docs/reliability.md, "Failover") ---
    # "" is never random: a restart with the same data dir is the same member and takes its
    # partitions back at once, without waiting for the session timeout. Set it where the host
    # name changes on every start (containers without a fixed hostname).
    group_instance_id: str = setting("GROUP_INSTANCE_ID", "", "Static consumer-group membership id; '' derives it from the host name and data dir, 'off' disables it.")
    # The bound of failover to another worker (kill -9, lost host). The broker accepts
    # 6..1800 s by default.
    session_timeout_s: float = setting("SESSION_TIMEOUT_S", "8", "Seconds without heartbeat before the group gives a worker's partitions to others.", float)
    # Members learn of a rebalance at their next heartbeat.
    heartbeat_interval_s: float = setting("HEARTBEAT_INTERVAL_S", "1", "Seconds between group heartbeats.", float)
    # So a survivor taking over a dead worker's partitions does not replay their changelogs
    # from the start.
    standby_replicas: int = setting("STANDBY_REPLICAS", "1", "Warm standby copies of each table partition on other workers (Faust standbys).", int)
    # A worker killed with SIGKILL sends nothing (agents/faust_internals.py).
    leave_group_on_stop: bool = setting(
        "LEAVE_GROUP_ON_STOP", "1", "1, true or yes: a static member leaves the group when it stops gracefully (SIGTERM), so survivors take its partitions at once.", _flag
    )
    # --- residue after erasure (issue 14, item 8; docs/reliability.md, "Residue") ---
    # The state changelog is compacted: a debtor's older states and, once ``delete.retention``
    # has passed, the erasure tombstone itself are removed. A segment is compacted only once it
    # is closed, so it rolls after ``changelog_segment_ms``; a dirty record is compacted at the
    # latest ``changelog_max_compaction_lag_ms`` after it was written. Bound for an erased
    # state to leave the changelog: segment + max lag (30 h by default); for the tombstone
    # (the bare debtor id): + delete retention (54 h).
    changelog_segment_ms: int = setting("CHANGELOG_SEGMENT_MS", str(6 * _HOUR_MS), "segment.ms of the state changelog.", int)
    changelog_max_compaction_lag_ms: int = setting("CHANGELOG_MAX_COMPACTION_LAG_MS", str(_DAY_MS), "max.compaction.lag.ms of the state changelog.", int)
    changelog_min_compaction_lag_ms: int = setting("CHANGELOG_MIN_COMPACTION_LAG_MS", "0", "min.compaction.lag.ms of the state changelog.", int)
    changelog_delete_retention_ms: int = setting("CHANGELOG_DELETE_RETENTION_MS", str(_DAY_MS), "delete.retention.ms of the state changelog.", int)
    # Dead letters hold raw records keyed by debtor id, change events name debtors: both are
    # deleted after these (time-based retention; a segment goes once all of it is older).
    dead_letter_retention_ms: int = setting("DEAD_LETTER_RETENTION_MS", str(14 * _DAY_MS), "retention.ms of the dead-letter topic.", int)
    change_retention_ms: int = setting("CHANGE_RETENTION_MS", str(7 * _DAY_MS), "retention.ms of the change topics.", int)
    # Contact decisions are compliance records (12 CFR 1006.100: three years after the last
    # activity): compacted so an erasure's tombstones delete them (issue 16).
    decision_retention_ms: int = setting("DECISION_RETENTION_MS", str(3 * 365 * _DAY_MS), "retention.ms of the contact-decision topic.", int)
    # Retention deletes whole segments.
    outbound_segment_ms: int = setting("OUTBOUND_SEGMENT_MS", str(_DAY_MS), "segment.ms of the dead-letter and change topics.", int)
    # So the erased state leaves its files.
    store_maintenance_s: float = setting(
        "STORE_MAINTENANCE_S",
        "30",
        "How often (seconds) a RocksDB worker compacts the local store of partitions with erasures and removes the files of partitions it no longer serves nor keeps a standby of; 0: never.",
        float,
    )
    # So a dead letter always fits the producer's 1,000,000-byte request limit (issue 14, item 1).
    dead_letter_raw_max_bytes: int = setting("DEAD_LETTER_RAW_MAX_BYTES", "65536", "Raw bytes of a rejected record a dead letter keeps (the rest: its size and SHA-256).", int)

    def instance_id(self, app_id: str) -> str | None:
        """The static consumer-group instance id (None: dynamic membership).

        ``group_instance_id``, or one derived from the host name and the absolute data
        directory: stable across restarts, distinct for two workers on one host (they need
        distinct data directories anyway). Either way it ends with a digest of the worker's
        URL (advertised host and web port): a restarted static member gets the assignment its
        predecessor got, and Faust refuses an assignment made for another URL (its assignor
        asserts it, and the consumer hangs); a worker whose URL changed is a new member instead.

        >>> s = Settings(group_instance_id="", data_dir=Path("/var/lib/ds"), web_port=6066)
        >>> s.instance_id("app") == s.instance_id("app"), s.instance_id("app").startswith("app-")
        (True, True)
        >>> s.instance_id("app") != Settings(group_instance_id="", data_dir=Path("/var/lib/ds"), web_port=6067).instance_id("app")
        True
        >>> Settings(group_instance_id="w1", web_host="10.0.0.5", web_port=6066).instance_id("app"), Settings(group_instance_id="off").instance_id("app")
        ('w1-c91cd7', None)
        """
        if self.group_instance_id == "off":
            return None
        url = hashlib.blake2b(f"http://{self.advertised_web_host}:{self.web_port}".encode(), digest_size=3).hexdigest()
        if self.group_instance_id:
            return f"{self.group_instance_id}-{url}"
        where = f"{socket.gethostname()}\x00{self.data_dir.resolve()}".encode()
        return f"{app_id}-{hashlib.blake2b(where, digest_size=6).hexdigest()}-{url}"

    @property
    def id_secret_key(self) -> bytes:
        """``id_secret`` as a BLAKE2b key (at most 64 bytes, so hashed); empty: unkeyed."""
        return hashlib.blake2b(self.id_secret.encode(), digest_size=32).digest() if self.id_secret else b""

    def kafka_client_options(self) -> dict[str, object]:
        """Security options for aiokafka and kafka-python clients (the names they share)."""
        protocol = self.kafka_security_protocol.upper()
        if protocol not in ("PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL", "SSL"):
            raise ValueError(f"DEBTOR_SEGMENTS_KAFKA_SECURITY_PROTOCOL: unknown protocol {protocol!r}")
        options: dict[str, object] = {"security_protocol": protocol}
        if protocol.startswith("SASL_"):
            options.update(
                sasl_mechanism=self.kafka_sasl_mechanism.upper(),
                sasl_plain_username=self.kafka_username,
                sasl_plain_password=self.kafka_password,
            )
        if protocol.endswith("SSL"):
            import ssl

            options["ssl_context"] = ssl.create_default_context(cafile=self.kafka_ca_file or None)
        return options

    def faust_broker_credentials(self) -> Any:
        """The same security settings as Faust's ``broker_credentials`` (None for PLAINTEXT)."""
        options = self.kafka_client_options()
        protocol = options["security_protocol"]
        if protocol == "PLAINTEXT":
            return None
        import faust

        context = cast("ssl.SSLContext | None", options.get("ssl_context"))  # as kafka_client_options sets it
        if protocol == "SSL":
            return faust.SSLCredentials(context)
        # SASL_SSL when a context is given, SASL_PLAINTEXT otherwise (faust.auth.SASLCredentials).
        return faust.SASLCredentials(
            username=str(options["sasl_plain_username"]),
            password=str(options["sasl_plain_password"]),
            mechanism=str(options["sasl_mechanism"]),
            ssl_context=context,
        )

    @property
    def signing_key(self) -> bytes:
        """``signing_secret`` as HMAC key bytes (empty: signing off)."""
        return self.signing_secret.encode()

    def engine_config(self) -> EngineConfig:
        """The engine's configuration: its defaults, with ``lateness_days`` and ``id_secret`` from these settings.

        >>> Settings(lateness_days=3.0, id_secret="").engine_config().lateness_days
        3.0
        """
        return EngineConfig(lateness_days=self.lateness_days, id_secret=self.id_secret_key)

    @property
    def limits(self) -> Limits:
        """The decoder's plausibility limits (``earliest_event``, ``max_future_s``)."""
        earliest = datetime.fromisoformat(self.earliest_event.replace("Z", "+00:00")).timestamp()
        return Limits(earliest_ts=earliest, max_future_s=self.max_future_s, max_record_bytes=self.max_record_bytes)

    @property
    def advertised_web_host(self) -> str:
        """``web_host``, with "auto" resolved to this machine's host name."""
        return socket.gethostname() if self.web_host == "auto" else self.web_host

    @property
    def bootstrap_servers(self) -> str:
        """The broker URL(s) as host:port list for plain Kafka clients."""
        return ",".join(part.split("://", 1)[-1] for part in self.broker.split(";"))


def declarations() -> tuple[Declaration, ...]:
    """Every setting's declaration, in the order of the fields of :class:`Settings`.

    >>> [d.env for d in declarations()][:2]
    ['DEBTOR_SEGMENTS_BROKER', 'DEBTOR_SEGMENTS_DATA_DIR']
    """
    return tuple(Declaration(f.name, f.metadata["env"], f.metadata["default"], f.metadata["help"], f.metadata["choices"]) for f in dataclasses.fields(Settings))


def declaration(name: str) -> Declaration:
    """The declaration of the setting `name` (a field of :class:`Settings`).

    Raises
    ------
    KeyError
        If no setting has that name.
    """
    for declared in declarations():
        if declared.name == name:
            return declared
    raise KeyError(name)


def with_overrides(settings: Settings, **overrides: Any) -> Settings:
    """Settings with the given (non-None) fields replaced: the command line over the environment.

    >>> with_overrides(Settings(web_port=1), web_port=None, partitions=2).partitions
    2
    """
    return dataclasses.replace(settings, **{k: v for k, v in overrides.items() if v is not None})
