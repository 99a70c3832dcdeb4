"""Settings of the service, read from environment variables in this one place.

Every setting has a default that works on a laptop; CLI options override the environment.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

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
    # name or address as they see it, or "auto" for the host name. It listens on every interface.
    web_host: str = field(default_factory=lambda: _env("WEB_HOST", "127.0.0.1"))
    partitions: int = field(default_factory=lambda: int(_env("PARTITIONS", "4")))
    store: str = field(default_factory=lambda: _env("STORE", "memory"))
    max_amount_cents: int = field(default_factory=lambda: int(_env("MAX_AMOUNT_CENTS", "1000000000")))
    lateness_days: float = field(default_factory=lambda: float(_env("LATENESS_DAYS", "7")))
    api_tokens: str = field(default_factory=lambda: _env("API_TOKENS", ""), repr=False)
    debug_ids: bool = field(default_factory=lambda: _env("DEBUG_IDS", "") in ("1", "true", "yes"))
    topic_prefix: str = field(default_factory=lambda: _env("TOPIC_PREFIX", ""))
    app_id: str = field(default_factory=lambda: _env("APP_ID", ""))
    loglevel: str = field(default_factory=lambda: _env("LOGLEVEL", "info"))
    guarantee: str = field(default_factory=lambda: _env("GUARANTEE", "at_least_once"))
    model_snapshot_every: int = field(default_factory=lambda: int(_env("MODEL_SNAPSHOT_EVERY", "200")))
    # Records whose event time is within this many seconds of their Kafka timestamp are live
    # traffic: they pass an idle inbound topic at once instead of after a 2 s grace (0: never;
    # agents.worker.AligningScheduler._live).
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

    @property
    def advertised_web_host(self) -> str:
        """``web_host``, with "auto" resolved to this machine's host name."""
        return socket.gethostname() if self.web_host == "auto" else self.web_host

    @property
    def bootstrap_servers(self) -> str:
        """The broker URL(s) as host:port list for plain Kafka clients."""
        return ",".join(part.split("://", 1)[-1] for part in self.broker.split(";"))
