"""Fixtures for tests that talk to a real Kafka broker.

The broker is the single-node KRaft Kafka started by ``scripts/kafka start``
(127.0.0.1:9092 unless KAFKA_BOOTSTRAP or KAFKA_PORT says otherwise).

When the broker (or kcat) is missing, tests are *skipped* with a loud reason
on a developer machine, but *fail* under CI (env CI=true): the Kafka tests
must run in CI, where .ci/run starts the broker first.

Every test collected under tests/integration/ gets the ``kafka`` marker, so
``pytest -m "not kafka"`` runs everything else.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

INTEGRATION_DIR = Path(__file__).resolve().parent
REPO_ROOT = INTEGRATION_DIR.parents[1]

KAFKA_BOOTSTRAP = os.environ.get("KAFKA_BOOTSTRAP", f"127.0.0.1:{os.environ.get('KAFKA_PORT', '9092')}")


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def missing(reason: str) -> None:
    """Skip (developer machine) or fail (CI) because a dependency is missing."""
    if in_ci():
        pytest.fail(f"[CI] {reason}", pytrace=False)
    pytest.skip(f"!!! KAFKA INTEGRATION TEST NOT RUN: {reason}")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "kafka: needs a real Kafka broker (scripts/kafka start); auto-applied to tests/integration",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # This hook sees every collected item of the session, not just ours.
    for item in items:
        if INTEGRATION_DIR in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.kafka)


def _which(name: str) -> str:
    path = shutil.which(name)
    return path if path else "NOT on PATH"


def _tcp_reachable(bootstrap: str, timeout: float = 2.0) -> bool:
    host, _, port = bootstrap.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return True
    except OSError:
        return False


def _metadata(bootstrap: str, deadline_s: float) -> dict:
    """A real Kafka request (DescribeCluster/metadata) via kafka-python."""
    from kafka import KafkaAdminClient

    last: Exception | None = None
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        admin = None
        try:
            admin = KafkaAdminClient(
                bootstrap_servers=bootstrap,
                client_id="pytest-probe",
                request_timeout_ms=5000,
                bootstrap_timeout_ms=5000,
            )
            return admin.describe_cluster()
        except Exception as exc:  # noqa: BLE001 - broker still starting, or not Kafka
            last = exc
            time.sleep(0.5)
        finally:
            if admin is not None:
                admin.close()
    raise RuntimeError(f"no metadata from {bootstrap}: {last!r}")


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """``host:port`` of a reachable Kafka broker, else skip (dev) / fail (CI)."""
    hint = f"run scripts/kafka start (needs Java 17 and Maven; java: {_which('java')}, mvn: {_which('mvn')})"
    if not _tcp_reachable(KAFKA_BOOTSTRAP):
        missing(f"Kafka broker not reachable at {KAFKA_BOOTSTRAP}: {hint}")
    try:
        _metadata(KAFKA_BOOTSTRAP, deadline_s=15)
    except Exception as exc:  # noqa: BLE001 - any failure: no usable broker, and the reason is reported
        missing(f"something listens on {KAFKA_BOOTSTRAP} but Kafka metadata failed ({exc}); {hint}, or scripts/kafka status / scripts/kafka reset")
    return KAFKA_BOOTSTRAP


@pytest.fixture(scope="session")
def kafka_admin(kafka_bootstrap: str) -> Iterator[KafkaAdminClient]:  # noqa: F821
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id="pytest-admin")
    yield admin
    admin.close()


@pytest.fixture(scope="session")
def kcat() -> str:
    """Path of the kcat binary (Debian package ``kcat``), else skip (dev) / fail (CI)."""
    path = shutil.which("kcat") or shutil.which("kafkacat")
    if not path:
        missing("kcat not found on PATH: apt-get install -y kcat")
    return path  # type: ignore[return-value]


@pytest.fixture
def unique_topic_prefix(request: pytest.FixtureRequest) -> str:
    """A topic-name prefix unique to this test run, e.g. ``it-test_x-3f9a1c2b``.

    Topic names may only hold [a-zA-Z0-9._-]; ``.`` is avoided because Kafka
    treats ``.`` and ``_`` as colliding in metric names.
    """
    name = re.sub(r"[^a-zA-Z0-9-]+", "-", request.node.name).strip("-")[:60]
    return f"it-{name}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def make_topic(kafka_admin, unique_topic_prefix: str) -> Iterator[Callable[..., str]]:
    """Factory: ``make_topic("events", partitions=1, config={...}) -> full name``.

    Creates ``<unique_topic_prefix>-<suffix>``, waits until every partition has
    a leader, and deletes the created topics after the test (best effort).
    """
    created: list[str] = []

    def _make(suffix: str = "t", partitions: int = 1, config: dict[str, str] | None = None) -> str:
        name = f"{unique_topic_prefix}-{suffix}"
        kafka_admin.create_topics(
            {
                name: {
                    "num_partitions": partitions,
                    "replication_factor": 1,
                    "configs": dict(config or {}),
                }
            },
            wait_for_metadata=True,
        )
        created.append(name)
        return name

    yield _make
    if created:
        try:
            kafka_admin.delete_topics(created, raise_errors=False)
        except Exception:  # noqa: BLE001 - best effort clean-up
            pass
