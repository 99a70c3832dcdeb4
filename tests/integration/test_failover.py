"""Failover against the real broker (issue 18): a restarted worker must not wait for the group.

With static membership (``--group-instance-id``, derived from the data directory by default) a
worker killed with SIGKILL and restarted on the same data dir is the same group member: the
broker hands it its partitions back at once instead of waiting for the dead member's session to
expire. The session timeout here is 60 s, so a restart that waits for it is plain to see, even
on a loaded machine where a worker process takes 10-20 s to start.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.integration.test_reliability import (
    changes,
    check_changes_exact,
    compare_with_replay,
    expected,  # noqa: F401 - fixture
    kill,
    lines,  # noqa: F401 - fixture
    prepared,
    table,
    wait_counted,
)
from tests.integration.test_service import PREFIXES, Worker, delete_topics, produce, start_workers, wait_caught_up

SESSION_TIMEOUT_S = 60.0


@pytest.fixture(scope="module", autouse=True)
def _delete_topics(kafka_bootstrap: str):  # type: ignore[no-untyped-def]
    yield
    delete_topics(kafka_bootstrap, PREFIXES)


def _first_processed(worker: Worker, timeout: float) -> float:
    """Seconds from now until the worker counted its first inbound record."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        assert worker.proc is not None
        if worker.proc.poll() is not None:
            pytest.fail(f"worker exited with {worker.proc.returncode}:\n{worker.log_tail()}")
        try:
            if worker.events_counted() > 0:
                return time.monotonic() - started
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    return float("inf")


def test_restart_after_kill_9_does_not_wait_for_the_session_timeout(kafka_bootstrap: str, tmp_path: Path, lines: list[bytes], expected: dict[str, bytes]) -> None:  # noqa: F811
    prefix = prepared(kafka_bootstrap, "static")
    data = tmp_path / "data"
    extra = ("--session-timeout", str(SESSION_TIMEOUT_S), "--heartbeat-interval", "1")
    produce(kafka_bootstrap, prefix, lines[: len(lines) // 2])
    worker = Worker(kafka_bootstrap, prefix, data, *extra)
    start_workers([worker])
    wait_counted(worker, len(lines) // 5)
    kill(worker)
    produce(kafka_bootstrap, prefix, lines[len(lines) // 2 :])  # a backlog waits for the restart
    port = worker.port
    worker = Worker(kafka_bootstrap, prefix, data, *extra)
    worker.port = port  # same data dir and URL: the same static member
    try:
        started = time.monotonic()
        worker.start()
        seconds = _first_processed(worker, timeout=SESSION_TIMEOUT_S + 30)
        # Waiting for the dead member's session would take >= 60 s from the kill; a process
        # start (Python, Faust, topic checks, recovery) takes 4 s on an idle machine, 18 s
        # seen with a load average of 9 on two cores.
        assert seconds < SESSION_TIMEOUT_S / 2, f"first record processed {seconds:.1f}s after the restart:\n{worker.log_tail()}"
        _, ready = worker.get("/ready")
        # /ready turns true only once every partition resumed or has nothing left to do.
        worker.wait_ready(timeout=SESSION_TIMEOUT_S)
        print(f"restart after kill -9: first record processed after {seconds:.1f}s, ready after {time.monotonic() - started:.1f}s; at the first record: {ready}")
        wait_caught_up(kafka_bootstrap, worker.group, prefix, workers=[worker])
        compare_with_replay(expected, table(kafka_bootstrap, worker))
        check_changes_exact(changes(kafka_bootstrap, prefix))
    finally:
        worker.stop()
