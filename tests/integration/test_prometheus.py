"""The worker's /metrics scraped by a real Prometheus server, as in production.

Starts a worker, feeds it a small simulated portfolio, starts ``prometheus`` (Debian package
``prometheus``) on a free local port scraping the worker every second, and asks Prometheus's
HTTP API for the service's and Faust's series, including every metric the Grafana dashboard
queries. A live scrape also goes through ``promtool check metrics``.

Without the prometheus binary the test is skipped loudly on a developer machine and fails
under CI (env CI=true).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import debtor_segments.agents.metrics
from debtor_segments.agents.faust_metrics import FAUST_PREFIX
from debtor_segments.streams.simulation import simulate
from tests.integration.conftest import in_ci
from tests.integration.test_service import (
    Worker,
    delete_topics,
    free_port,
    new_prefix,
    produce,
    start_workers,
    wait_caught_up,
)

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "grafana" / "dashboards" / "debtor-segments.json"
METRIC_NAME = re.compile(rf"\b(?:debtor_segments|{FAUST_PREFIX})_[A-Za-z0-9_]+")
MINE: list[str] = []


def require(binary: str) -> str:
    path = shutil.which(binary)
    if path:
        return path
    message = f"{binary} NOT FOUND: the Prometheus scrape test was NOT run. Install it with `apt-get install prometheus`."
    if in_ci():
        pytest.fail(f"[CI] {message}", pytrace=False)
    pytest.skip(f"!!! {message}")


class Prometheus:
    """A Prometheus server in a subprocess, scraping one target every second."""

    def __init__(self, binary: str, target: str, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.log_path = workdir / "prometheus.log"
        config = workdir / "prometheus.yml"
        config.write_text(
            "global:\n"
            "  scrape_interval: 1s\n"
            "  scrape_timeout: 1s\n"
            "  evaluation_interval: 1s\n"
            "scrape_configs:\n"
            "  - job_name: debtor-segments\n"
            "    metrics_path: /metrics\n"
            "    static_configs:\n"
            f"      - targets: ['{target}']\n",
            encoding="utf-8",
        )
        self.args = [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
        ]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Prometheus:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir)
        return self

    def log_tail(self) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-30:])
        except OSError:
            return ""

    def api(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.loads(response.read())
        assert body["status"] == "success", body
        return body["data"]

    def wait(self, what: str, check: Any, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                pytest.fail(f"prometheus exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                last = check()
                if last:
                    return last
            except (OSError, urllib.error.URLError, KeyError, IndexError, ValueError, AssertionError) as error:
                last = error
            time.sleep(0.5)
        pytest.fail(f"Prometheus: {what} not within {timeout}s (last: {last!r}):\n{self.log_tail()}")

    def value(self, query: str) -> float:
        """The single value of an instant query (NaN if it has no result)."""
        result = self.api("/api/v1/query", query=query)["result"]
        return float(result[0]["value"][1]) if result else float("nan")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def dashboard_metrics() -> set[str]:
    """Every metric name in the exprs of the Grafana dashboard's panels."""
    names: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "expr" and isinstance(value, str):
                    names.update(METRIC_NAME.findall(value))
                else:
                    walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads(DASHBOARD.read_text(encoding="utf-8")))
    return names


@pytest.fixture(scope="module")
def worker(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    prefix = new_prefix("prom")
    MINE.append(prefix)
    # With the default policy: the dashboard's treatment row queries the per-arm families.
    policy = ROOT / "policies" / "default.yaml"
    process = Worker(kafka_bootstrap, prefix, tmp_path_factory.mktemp("prom-worker") / "data", "--policy", str(policy))
    try:
        start_workers([process])
        produce(kafka_bootstrap, prefix, simulate(debtors=60, months=4, seed=41).lines)
        wait_caught_up(kafka_bootstrap, process.group, prefix, workers=[process])
        yield process
    finally:
        process.stop()
        delete_topics(kafka_bootstrap, MINE)


@pytest.fixture(scope="module")
def prometheus(worker: Worker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    server = Prometheus(require("prometheus"), f"127.0.0.1:{worker.port}", tmp_path_factory.mktemp("prometheus"))
    try:
        server.start()
        server.wait("ready", lambda: urllib.request.urlopen(f"http://127.0.0.1:{server.port}/-/ready", timeout=5).status == 200, 60)
        yield server
    finally:
        server.stop()


def test_prometheus_scrapes_the_worker(prometheus: Prometheus) -> None:
    def scraped() -> bool:
        [target] = prometheus.api("/api/v1/targets")["activeTargets"]
        return target["health"] == "up" and target["lastError"] == ""

    prometheus.wait("a successful scrape of the worker", scraped, 30)
    assert prometheus.value('up{job="debtor-segments"}') == 1.0
    assert prometheus.wait("events counted", lambda: prometheus.value("sum(debtor_segments_events_total)") > 0, 20)
    # The population gauges are set by a timer (every 15 s) that scans the table.
    assert prometheus.wait("debtors per persona", lambda: prometheus.value("sum(debtor_segments_debtors)") > 0, 45)
    assert prometheus.value("sum(faust_messages_received_total)") > 0
    assert prometheus.value("sum(faust_total_events_total)") > 0


def test_every_dashboard_metric_exists_in_prometheus(prometheus: Prometheus) -> None:
    names = dashboard_metrics()
    assert len(names) >= 10 and any(name.startswith(f"{FAUST_PREFIX}_") for name in names)
    prometheus.wait("the worker's series", lambda: prometheus.value("sum(debtor_segments_debtors)") > 0, 45)

    def missing() -> list[str]:
        return [name for name in sorted(names) if not prometheus.api("/api/v1/series", **{"match[]": name})]

    deadline = time.monotonic() + 20
    while (absent := missing()) and time.monotonic() < deadline:
        time.sleep(1)
    assert not absent, f"the dashboard queries metrics Prometheus never got from the worker: {absent}"
    known = set(prometheus.api("/api/v1/label/__name__/values"))
    assert names <= known


def test_live_scrape_passes_promtool(worker: Worker) -> None:
    promtool = require("promtool")
    status, exposition = worker.get("/metrics")
    assert status == 200 and b"debtor_segments_events_total" in exposition
    result = subprocess.run([promtool, "check", "metrics"], input=exposition, capture_output=True, timeout=60, check=False)
    problems = [line for line in (result.stdout + result.stderr).decode().splitlines() if line.strip()]
    # Only Faust's own families may trip the linter (their names are not ours to change), and
    # only those agents/metrics.py documents.
    documented = debtor_segments.agents.metrics.__doc__ or ""
    for problem in problems:
        name = problem.split()[0]
        assert name.startswith(f"{FAUST_PREFIX}_"), problem
        family = re.sub(r"_(total|bucket|sum|count|created)$", "", name)
        assert family in documented or name in documented, f"undocumented lint problem: {problem}"
