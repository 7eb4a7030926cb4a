"""The metrics exporter: one process serving every server process's numbers.

Server processes (daphne, the background worker) write their metrics to
memory-mapped files in ``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's
multiprocess mode). ``manage.py serve_metrics`` runs :func:`serve`, which
answers each scrape with the sum over those files, plus the gauges that only
make sense once for the whole deployment (active users, read from Redis), and
the CPU, memory, descriptors and threads of every process that registered
itself (perf.process), read from the operating system at the scrape.

A process that exits leaves its files behind: its counters and histograms keep
counting towards the totals (so a restart never makes a counter go back), and
its ``live*`` gauge files are removed at the next scrape once its pid is gone
(:func:`remove_dead_processes`). That needs the exporter to see the servers'
pids: run it on the same host or in the same container (scripts/serve.sh does).
"""

from __future__ import annotations

import logging
import os
import re
from http.server import ThreadingHTTPServer
from typing import Iterator

from prometheus_client import CollectorRegistry, MetricsHandler
from prometheus_client import multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from perf import metrics, process

logger = logging.getLogger(__name__)

_LIVE_GAUGE_FILE = re.compile(r"^gauge_live[a-z]+_(\d+)\.db$")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_dead_processes(path: str) -> list[int]:
    """Drop the live-gauge files of processes that no longer run; returns their pids."""
    dead = set()
    for name in os.listdir(path):
        match = _LIVE_GAUGE_FILE.match(name)
        if match and not _pid_alive(int(match.group(1))):
            dead.add(int(match.group(1)))
    for pid in dead:
        multiprocess.mark_process_dead(pid, path)
    return sorted(dead)


class ServerProcessesCollector(multiprocess.MultiProcessCollector):
    """MultiProcessCollector that first forgets the live gauges of dead processes,
    and adds the resources of every registered process (perf.process)."""

    def collect(self) -> Iterator[Metric]:
        remove_dead_processes(self._path)
        families = list(super().collect())
        yield from families
        yield from process.resource_families(process.registered(families))


class DeploymentCollector:
    """Numbers that belong to the deployment, not to a process."""

    def collect(self) -> Iterator[Metric]:
        count = metrics.active_users_count()
        if count is not None:
            yield GaugeMetricFamily(
                "chat_active_users",
                f"Distinct users with a request or WebSocket frame in the last {metrics.ACTIVE_USERS_WINDOW} s.",
                value=count,
            )


def build_registry(path: str) -> CollectorRegistry:
    registry = CollectorRegistry()
    ServerProcessesCollector(registry, path=path)
    registry.register(DeploymentCollector())
    return registry


def make_server(bind: str, port: int, path: str) -> ThreadingHTTPServer:
    """An HTTP server answering every GET with the metrics of ``path`` (not started)."""
    os.makedirs(path, exist_ok=True)
    return ThreadingHTTPServer((bind, port), MetricsHandler.factory(build_registry(path)))


