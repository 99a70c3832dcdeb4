"""Settings of the service, read from environment variables in this one place.

Every setting has a default that works on a laptop; CLI options override the environment.
"""

from __future__ import annotations

import hashlib
import os
import socket
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from streams.events import Limits

__all__ = ["Settings"]


def _env(name: str, default: str) -> str:
    return os.environ.get(f"DEBTOR_SEGMENTS_{name}", default)


@dataclass(frozen=True, slots=True)
class Settings:
    """Configuration of a worker or a CLI run.

    Attributes map to ``DEBTOR_SEGMENTS_<NAME>`` environment variables, e.g. ``broker`` to
    ``DEBTOR_SEGMENTS_BROKER``.
    """

    broker: str = field(default_factory=lambda: _env("BROKER", "kafka://127.0.0.1:9092"))
    data_dir: Path = field(default_factory=lambda: Path(_env("DATA_DIR", "./data")))
    web_port: int = field(default_factory=lambda: int(_env("WEB_PORT", "6066")))
    # How other workers reach this one's HTTP API (forwarded /debtors requests): this host's
    # name or address as they see it, or "auto" for the host name.
    web_host: str = field(default_factory=lambda: _env("WEB_HOST", "127.0.0.1"))
    # The address the HTTP API listens on: loopback unless other workers (or a proxy) must
    # reach it (docker-compose sets 0.0.0.0 inside the container network).
    web_bind: str = field(default_factory=lambda: _env("WEB_BIND", "127.0.0.1"))
    # Secret shared by the workers of one deployment: a forwarded /debtors request is signed
    # with it (HMAC, never the client's token). Empty: profiles are not forwarded (503).
    peer_secret: str = field(default_factory=lambda: _env("PEER_SECRET", ""), repr=False)
    # Kafka client security (docs/security.md): PLAINTEXT, SASL_PLAINTEXT, SASL_SSL or SSL; with
    # SASL, the mechanism (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) and this worker's principal.
    kafka_security_protocol: str = field(default_factory=lambda: _env("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT"))
    kafka_sasl_mechanism: str = field(default_factory=lambda: _env("KAFKA_SASL_MECHANISM", "PLAIN"))
    kafka_username: str = field(default_factory=lambda: _env("KAFKA_USERNAME", ""))
    kafka_password: str = field(default_factory=lambda: _env("KAFKA_PASSWORD", ""), repr=False)
    # CA certificate (PEM) that signed the brokers' certificates, for SSL and SASL_SSL.
    kafka_ca_file: str = field(default_factory=lambda: _env("KAFKA_CA_FILE", ""))
    partitions: int = field(default_factory=lambda: int(_env("PARTITIONS", "4")))
    store: str = field(default_factory=lambda: _env("STORE", "memory"))
    max_amount_cents: int = field(default_factory=lambda: int(_env("MAX_AMOUNT_CENTS", "1000000000")))
    lateness_days: float = field(default_factory=lambda: float(_env("LATENESS_DAYS", "7")))
    # Plausible event times (streams.events.Limits): events that occurred before EARLIEST_EVENT
    # (RFC 3339), or more than MAX_FUTURE_S seconds ahead of the worker's wall clock, are
    # dead-lettered as implausible_timestamp.
    earliest_event: str = field(default_factory=lambda: _env("EARLIEST_EVENT", "2000-01-01T00:00:00Z"))
    max_future_s: float = field(default_factory=lambda: float(_env("MAX_FUTURE_S", "86400")))
    # Largest inbound record (Kafka value or replay line) the decoder parses; larger ones are
    # dead-lettered as record_too_large (a replay reads at most this much of a line).
    max_record_bytes: int = field(default_factory=lambda: int(_env("MAX_RECORD_BYTES", "65536")))
    api_tokens: str = field(default_factory=lambda: _env("API_TOKENS", ""), repr=False)
    # Key of the idempotency digests (streams.state.event_token): secret per deployment, the same
    # on every worker, so a sender cannot craft colliding event ids. Changing it forgets which
    # events of the lateness window were applied (their copies would apply again).
    id_secret: str = field(default_factory=lambda: _env("ID_SECRET", ""), repr=False)
    # Key of the HMAC signatures of model snapshots and population summaries (streams/signing.py),
    # the same on every worker: set, records without a valid signature are refused and counted
    # (debtor_segments_signature_failures_total). Empty: nothing is signed or checked.
    signing_secret: str = field(default_factory=lambda: _env("SIGNING_SECRET", ""), repr=False)
    debug_ids: bool = field(default_factory=lambda: _env("DEBUG_IDS", "") in ("1", "true", "yes"))
    topic_prefix: str = field(default_factory=lambda: _env("TOPIC_PREFIX", ""))
    app_id: str = field(default_factory=lambda: _env("APP_ID", ""))
    loglevel: str = field(default_factory=lambda: _env("LOGLEVEL", "info"))
    guarantee: str = field(default_factory=lambda: _env("GUARANTEE", "at_least_once"))
    model_snapshot_every: int = field(default_factory=lambda: int(_env("MODEL_SNAPSHOT_EVERY", "200")))
    # Records whose event time is within this many seconds of their Kafka timestamp are live
    # traffic: they pass an idle inbound topic at once instead of after a 2 s grace (0: never;
    # agents.scheduler.AligningScheduler._live).
    live_window_s: float = field(default_factory=lambda: float(_env("LIVE_WINDOW_S", "60")))
    # State writes that may wait at once for the delivery of earlier change events (agents/pending.py).
    pending_writes: int = field(default_factory=lambda: int(_env("PENDING_WRITES", "1000")))
    model_snapshot_seconds: float = field(default_factory=lambda: float(_env("MODEL_SNAPSHOT_SECONDS", "5")))
    # How long the producer waits to fill a batch: fewer, larger produce requests (less CPU per
    # event); the agent does not wait for deliveries (agents/pending.py), so it costs latency only
    # on the change events themselves (docs/performance.md, section 2, step 7).
    producer_linger_ms: float = field(default_factory=lambda: float(_env("PRODUCER_LINGER_MS", "5")))
    # Treatment policy file (policies/*.yaml; issue 15); empty: no treatment events.
    policy: str = field(default_factory=lambda: _env("POLICY", ""))
    # Time zone (IANA name) of debtors whose events give none: the contact rules' local hours.
    default_timezone: str = field(default_factory=lambda: _env("DEFAULT_TIMEZONE", "Europe/Amsterdam"))
    # Model snapshot to start from (``debtor-segments fit``; issue 12): every worker predicts with
    # it until the model topic holds a newer snapshot, and the model writer learns on from it.
    # Empty: the persona prototypes.
    initial_model: str = field(default_factory=lambda: _env("INITIAL_MODEL", ""))
    # --- failover (issue 18; docs/reliability.md, "Failover") ---
    # Static group membership: the consumer-group instance id of this worker. "" derives a
    # stable one from the host name and the absolute data directory (never random: a restart
    # with the same data dir is the same member and takes its partitions back at once, without
    # waiting for the session timeout); "off" disables static membership. Set it where the host
    # name changes on every start (containers without a fixed hostname).
    group_instance_id: str = field(default_factory=lambda: _env("GROUP_INSTANCE_ID", ""))
    # A worker that stops heartbeating (kill -9, lost host) loses its partitions after this
    # long: the bound of failover to another worker. The broker accepts 6..1800 s by default.
    session_timeout_s: float = field(default_factory=lambda: float(_env("SESSION_TIMEOUT_S", "8")))
    # Heartbeats per session: members learn of a rebalance at their next heartbeat.
    heartbeat_interval_s: float = field(default_factory=lambda: float(_env("HEARTBEAT_INTERVAL_S", "1")))
    # Warm copies of other workers' table partitions (Faust standbys), so a survivor taking over
    # a dead worker's partitions does not replay their changelogs from the start.
    standby_replicas: int = field(default_factory=lambda: int(_env("STANDBY_REPLICAS", "1")))
    # A static member leaves the group when it stops gracefully (SIGTERM), so a survivor with
    # warm standbys takes its partitions at once instead of them waiting for its restart; a
    # worker killed with SIGKILL sends nothing (agents/faust_internals.py).
    leave_group_on_stop: bool = field(default_factory=lambda: _env("LEAVE_GROUP_ON_STOP", "1") in ("1", "true", "yes"))
    # --- residue after erasure (issue 14, item 8; docs/reliability.md, "Residue") ---
    # The state changelog is compacted: a debtor's older states and, once ``delete.retention``
    # has passed, the erasure tombstone itself are removed. A segment is compacted only once it
    # is closed, so it rolls after ``changelog_segment_ms``; a dirty record is compacted at the
    # latest ``changelog_max_compaction_lag_ms`` after it was written. Bound for an erased
    # state to leave the changelog: segment + max lag (30 h by default); for the tombstone
    # (the bare debtor id): + delete retention (54 h).
    changelog_segment_ms: int = field(default_factory=lambda: int(_env("CHANGELOG_SEGMENT_MS", str(6 * 3600 * 1000))))
    changelog_max_compaction_lag_ms: int = field(default_factory=lambda: int(_env("CHANGELOG_MAX_COMPACTION_LAG_MS", str(24 * 3600 * 1000))))
    changelog_min_compaction_lag_ms: int = field(default_factory=lambda: int(_env("CHANGELOG_MIN_COMPACTION_LAG_MS", "0")))
    changelog_delete_retention_ms: int = field(default_factory=lambda: int(_env("CHANGELOG_DELETE_RETENTION_MS", str(24 * 3600 * 1000))))
    # Dead letters hold raw records keyed by debtor id, change events name debtors: both are
    # deleted after these (time-based retention; a segment goes once all of it is older).
    dead_letter_retention_ms: int = field(default_factory=lambda: int(_env("DEAD_LETTER_RETENTION_MS", str(14 * 24 * 3600 * 1000))))
    change_retention_ms: int = field(default_factory=lambda: int(_env("CHANGE_RETENTION_MS", str(7 * 24 * 3600 * 1000))))
    # Contact decisions are compliance records (12 CFR 1006.100: three years after the last
    # activity): kept this long, compacted so an erasure's tombstones delete them (issue 16).
    decision_retention_ms: int = field(default_factory=lambda: int(_env("DECISION_RETENTION_MS", str(3 * 365 * 24 * 3600 * 1000))))
    # Segment size of the dead-letter and change topics (retention deletes whole segments).
    outbound_segment_ms: int = field(default_factory=lambda: int(_env("OUTBOUND_SEGMENT_MS", str(24 * 3600 * 1000))))
    # How often a RocksDB worker compacts the local store of partitions with erasures (so the
    # erased state leaves its files) and removes the files of partitions it no longer serves
    # nor keeps a standby of; 0: never.
    store_maintenance_s: float = field(default_factory=lambda: float(_env("STORE_MAINTENANCE_S", "30")))
    # Raw bytes of a rejected record a dead letter keeps (the rest: its size and SHA-256), so a
    # dead letter always fits the producer's 1,000,000-byte request limit (issue 14, item 1).
    dead_letter_raw_max_bytes: int = field(default_factory=lambda: int(_env("DEAD_LETTER_RAW_MAX_BYTES", "65536")))

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

        context = options.get("ssl_context")
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
