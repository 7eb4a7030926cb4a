"""The operator's stack in tests: Debian's exporters, a Redis that evicts, and Prometheus, as child processes on free ports.

Each context manager starts one real program, waits until it listens, and
stops it on exit. The exporters are those of the Debian packages
prometheus-node-exporter, prometheus-postgres-exporter and
prometheus-redis-exporter (.ci/run installs them without their services).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import httpx
import redis
import yaml

from tests.servers import ROOT, _wait_for_port, free_port, stop_process
from tests.waiting import wait_until

DEPLOY = ROOT / "deploy"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
POSTGRES_QUERIES = DEPLOY / "prometheus" / "postgres-exporter-queries.yml"
DASHBOARD = DEPLOY / "grafana" / "chat-performance.json"

# Program -> the Debian package that installs it.
PACKAGES = {
    "prometheus": "prometheus",
    "promtool": "prometheus",
    "prometheus-node-exporter": "prometheus-node-exporter",
    "prometheus-postgres-exporter": "prometheus-postgres-exporter",
    "prometheus-redis-exporter": "prometheus-redis-exporter",
    "redis-server": "redis-server",
}


def tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is missing: install the Debian package {PACKAGES[name]} (.ci/run does)"
    return path


def version(name: str) -> str:
    """The version a program reports (``x.y.z``), as the compose file's image tags name it."""
    done = subprocess.run([tool(name), "--version"], capture_output=True, text=True, timeout=30)
    found = re.search(r"(?:version |Exporter )v?(\d+\.\d+\.\d+)", done.stdout + done.stderr)
    assert found, done.stdout + done.stderr
    return found.group(1)


@contextmanager
def child(args: list[str], port: int, log: Path, env: dict[str, str] | None = None) -> Iterator[str]:
    """Run ``args`` until the block ends; yields ``127.0.0.1:port`` once it listens there."""
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=log.parent)
    try:
        _wait_for_port(port, proc)
        yield f"127.0.0.1:{port}"
    finally:
        stop_process(proc, timeout=15)


@contextmanager
def node_exporter(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    args = [tool("prometheus-node-exporter"), f"--web.listen-address=127.0.0.1:{port}"]
    with child(args, port, tmp_path / "node-exporter.log") as target:
        yield target


@contextmanager
def postgres_exporter(tmp_path: Path, database: dict[str, Any]) -> Iterator[str]:
    """postgres_exporter on ``database`` (Django's settings dict), with deploy's extra queries."""
    port = free_port()
    dsn = f"postgresql://{database['USER']}@{database['HOST']}:{database['PORT']}/{database['NAME']}?sslmode=disable"
    args = [
        tool("prometheus-postgres-exporter"),
        f"--web.listen-address=127.0.0.1:{port}",
        f"--extend.query-path={POSTGRES_QUERIES}",
    ]
    with child(args, port, tmp_path / "postgres-exporter.log", env={"DATA_SOURCE_NAME": dsn}) as target:
        yield target


@contextmanager
def redis_exporter(tmp_path: Path, url: str, name: str = "redis-exporter") -> Iterator[str]:
    port = free_port()
    args = [tool("prometheus-redis-exporter"), "-redis.addr", url, "-web.listen-address", f"127.0.0.1:{port}"]
    with child(args, port, tmp_path / f"{name}.log") as target:
        yield target


@contextmanager
def evicting_redis(tmp_path: Path, maxmemory: str = "4mb") -> Iterator[str]:
    """A Redis of its own with a small maxmemory and allkeys-lru (the shared one must never evict); yields its URL."""
    port = free_port()
    args = [
        tool("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
        "--maxmemory", maxmemory, "--maxmemory-policy", "allkeys-lru",
    ]  # fmt: skip
    with child(args, port, tmp_path / "evicting-redis.log"):
        yield f"redis://127.0.0.1:{port}"


def fill_until_evicted(url: str) -> int:
    """Write 10 KB values until Redis has evicted some; returns its evicted_keys."""
    client = redis.Redis.from_url(url)
    try:
        for batch in range(1000):
            pipe = client.pipeline(transaction=False)
            for i in range(50):
                pipe.set(f"fill:{batch}:{i}", b"x" * 10_000)
            pipe.execute()
            evicted = int(client.info("stats")["evicted_keys"])
            if evicted:
                return evicted
        raise AssertionError("Redis never evicted: is maxmemory set?")
    finally:
        client.close()


@contextmanager
def prometheus(tmp_path: Path, targets: dict[str, list[str]]) -> Iterator[str]:
    """deploy/prometheus's configuration and rules, every job pointed at ``targets``, scraping every second.

    Yields the base URL of its HTTP API.
    """
    config = yaml.safe_load(CONFIG.read_text())
    jobs = [job["job_name"] for job in config["scrape_configs"]]
    assert sorted(jobs) == sorted(targets), "the test must scrape every job of deploy/prometheus/prometheus.yml"
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": targets[job["job_name"]]}]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    shutil.copy(ALERTS, tmp_path / "alerts.yml")
    port = free_port()
    args = [
        tool("prometheus"),
        f"--config.file={tmp_path / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    with child(args, port, tmp_path / "prometheus.log") as address:
        yield f"http://{address}"


def query(base: str, expr: str) -> list[dict[str, Any]]:
    """The instant vector (or scalar) ``expr`` evaluates to now; the query must be valid."""
    response = httpx.get(f"{base}/api/v1/query", params={"query": expr}, timeout=10)
    body = response.json()
    assert body["status"] == "success", (expr, body)
    data = body["data"]
    if data["resultType"] == "scalar":
        return [{"metric": {}, "value": data["result"]}]
    return data["result"]


def numbers(base: str, expr: str) -> list[float]:
    """The finite values ``expr`` has now (NaN and infinities, from empty rates, left out)."""
    values = [float(row["value"][1]) for row in query(base, expr)]
    return [v for v in values if v == v and abs(v) != float("inf")]


def wait_for_value(
    base: str, expr: str, *, at_least: float | None = None, above: float | None = None, timeout: float = 60
) -> list[float]:
    """Query ``expr`` until it has a finite value (``>= at_least``, ``> above`` when given); its values then."""

    def enough(values: list[float]) -> bool:
        return bool(values) and (at_least is None or max(values) >= at_least) and (above is None or max(values) > above)

    def found() -> list[float] | None:
        values = numbers(base, expr)
        return values if enough(values) else None

    return wait_until(found, timeout=timeout, interval=0.5, message=f"{expr} never had a value (>= {at_least}, > {above})")


def metric_names(base: str) -> set[str]:
    """Every series name Prometheus holds."""
    body = httpx.get(f"{base}/api/v1/label/__name__/values", timeout=10).json()
    assert body["status"] == "success", body
    return set(body["data"])


# PromQL words that are followed by a parenthesis but are not functions, or are operators.
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset", "inf", "nan"}
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_IDENTIFIER = re.compile(r"(?<![\w:.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?")


def names_in(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (functions, keywords, labels and numbers left out)."""
    text = _STRINGS.sub('""', expr)
    text = _MATCHERS.sub("", text)
    text = _RANGES.sub("", text)
    text = _GROUPING.sub("", text)
    return {
        name for name, call in _IDENTIFIER.findall(text) if not call and name.lower() not in _KEYWORDS
    }
