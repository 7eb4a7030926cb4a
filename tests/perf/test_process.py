"""Per-process resources, GC pauses and event-loop lag (perf.process): real processes, the real exporter."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import subprocess
import sys
import time

import httpx
import psutil
import pytest
from django.test import Client

from perf import process
from perf.redis import aclose_loop_resources
from tests.perf.test_metrics import Scrape, metrics_stack, value, wait_for
from tests.servers import background_worker


def pids(samples: Scrape, role: str, name: str = "chat_process_cpu_seconds_total") -> set[int]:
    return {int(dict(labels)["pid"]) for (n, labels), _ in samples.items() if n == name and dict(labels).get("role") == role}


def of(samples: Scrape, name: str, pid: int) -> float:
    return value(samples, name, pid=str(pid))


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(180)
def test_each_server_process_and_the_worker_report_their_resources(tmp_path, make_user) -> None:
    directory = tmp_path / "prometheus-multiproc"
    staff = Client()
    staff.force_login(make_user(is_staff=True))
    session = staff.cookies["sessionid"].value
    # Two server processes behind one port, as deployed (SERVER_WORKERS), and the background worker.
    with metrics_stack(tmp_path, SERVER_WORKERS="2") as ([(port, supervisor)], metrics_port):
        with background_worker(PROMETHEUS_MULTIPROC_DIR=str(directory), ENABLE_METRICS="true") as worker:

            def complete(s: Scrape) -> bool:
                servers = pids(s, "server")
                lag = pids(s, "server", "chat_event_loop_lag_max_seconds")
                return len(servers) == 2 and servers <= lag and worker.pid in pids(s, "chat_worker", "chat_gc_pause_max_seconds")

            samples = wait_for(metrics_port, complete, timeout=30)
            children = {child.pid for child in psutil.Process(supervisor.pid).children()}
            servers = pids(samples, "server")
            assert servers <= children  # uvicorn's worker processes, not the supervisor
            for pid in servers | {worker.pid}:
                assert of(samples, "chat_process_cpu_seconds_total", pid) > 0
                assert of(samples, "chat_process_resident_memory_bytes", pid) > 20 * 2**20  # Django is loaded
                assert 0 < of(samples, "chat_process_open_fds", pid) <= of(samples, "chat_process_max_fds", pid)
                assert of(samples, "chat_process_threads", pid) >= 2  # the metrics sampler at least
                assert abs(of(samples, "chat_process_start_time_seconds", pid) - psutil.Process(pid).create_time()) < 1
                assert of(samples, "chat_gc_pause_max_seconds", pid) >= 0
            assert pids(samples, "chat_worker") == {worker.pid}
            for pid in servers:
                assert of(samples, "chat_event_loop_lag_max_seconds", pid) >= 0
            assert worker.pid not in pids(samples, "chat_worker", "chat_event_loop_lag_max_seconds")
            exporter = pids(samples, "serve_metrics")
            assert len(exporter) == 1 and exporter.isdisjoint(servers | {worker.pid})

            # The staff page, served by one of the servers, lists every process with the same numbers.
            page = httpx.get(f"http://127.0.0.1:{port}/perf/dashboard.json", cookies={"sessionid": session}, timeout=10)
            assert page.status_code == 200, page.text[:500]
            rows = {row["pid"]: row for row in page.json()["processes"]}
            assert set(rows) >= servers | {worker.pid} | exporter
            for pid in servers | {worker.pid}:
                assert rows[pid]["cpu_seconds"] > 0 and rows[pid]["rss_bytes"] > 20 * 2**20
                assert rows[pid]["gc_pause_max_ms"] is not None
            assert {rows[pid]["role"] for pid in servers} == {"server"} and rows[worker.pid]["role"] == "chat_worker"
            assert all(rows[pid]["loop_lag_max_ms"] is not None for pid in servers)

            # A server process that dies is no longer listed; the one uvicorn starts instead registers itself.
            victim = min(servers)
            os.kill(victim, signal.SIGKILL)
            after = wait_for(
                metrics_port, lambda s: victim not in pids(s, "server") and len(pids(s, "server")) == 2, timeout=30
            )
            assert of(after, "chat_process_resident_memory_bytes", victim) == 0
            assert victim not in pids(after, "server", "chat_process_start_time_seconds")


def test_read_is_the_process_that_registered_not_a_reused_pid() -> None:
    own = process.read(os.getpid())
    assert own is not None
    assert own["cpu_seconds"] > 0 and own["rss_bytes"] > 0 and own["threads"] >= 1 and own["open_fds"] > 0
    assert process.read(os.getpid(), started=own["start_time"]) is not None
    assert process.read(os.getpid(), started=own["start_time"] - 3600) is None  # same pid, another process
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    assert process.read(int(done.stdout)) is None  # exited


def test_registered_processes_and_their_own_values_from_a_collection() -> None:
    from prometheus_client.core import GaugeMetricFamily

    start = GaugeMetricFamily("chat_process_start_time_seconds", "", labels=["role", "pid"])
    start.add_metric(["server", "11"], 1000.0)
    start.add_metric(["server", "12"], 0.0)  # never set: not registered
    pause = GaugeMetricFamily("chat_gc_pause_max_seconds", "", labels=["role", "pid"])
    pause.add_metric(["server", "11"], 0.25)
    assert process.registered([start, pause]) == [(11, "server", 1000.0)]
    assert process.per_process([start, pause]) == {(11, "server"): {"gc_pause_max": 0.25}}
    own = GaugeMetricFamily("chat_process_start_time_seconds", "", labels=["role"])
    own.add_metric(["chat_worker"], 2000.0)
    assert process.registered([own], default_pid=7) == [(7, "chat_worker", 2000.0)]
    assert process.registered([own]) == []


@pytest.fixture
def sample(monkeypatch):
    """This test process registered as "test"; the sampling function, which the test alone calls."""
    monkeypatch.setattr(process, "_role", None)
    monkeypatch.setattr(process, "_gc_slots", type(process._gc_slots)())
    monkeypatch.setattr(process, "_lag_slots", type(process._lag_slots)())
    monkeypatch.setattr(process, "_lag_running", False)
    real = process.sample
    # The metrics sampler thread of this process would take samples of the window too.
    monkeypatch.setattr(process, "sample", lambda interval: None)
    installed = process._on_gc in gc.callbacks
    process.register("test")
    assert process.role() == "test"
    yield real
    if not installed and process._on_gc in gc.callbacks:
        gc.callbacks.remove(process._on_gc)


def _gauge(family: str, role: str) -> float:
    from prometheus_client import REGISTRY

    found = REGISTRY.get_sample_value(family, {"role": role})
    assert found is not None
    return found


def test_the_longest_gc_pause_of_the_window_is_published(sample) -> None:
    gc.disable()  # the one collection below is the only long one
    try:
        sample(5.0)
        garbage = []
        for _ in range(200_000):
            a: list = []
            b = [a]
            a.append(b)
            garbage.append(a)
        del garbage, a, b
        began = time.perf_counter()
        gc.collect()
        took = time.perf_counter() - began
        sample(5.0)
    finally:
        gc.enable()
    longest = _gauge("chat_gc_pause_max_seconds", "test")
    assert 0 < longest <= took
    # The window keeps it for a minute of samples, then lets it go.
    for _ in range(round(process.WINDOW / 5.0) - 1):
        sample(5.0)
        assert _gauge("chat_gc_pause_max_seconds", "test") == longest
    sample(5.0)
    assert _gauge("chat_gc_pause_max_seconds", "test") < longest


async def test_a_blocked_event_loop_is_measured(sample) -> None:
    process.start_loop_probe(interval=0.01)
    try:
        await asyncio.sleep(0.05)
        sample(5.0)
        time.sleep(0.3)  # holds the loop: every timer due meanwhile runs late
        await asyncio.sleep(0.05)
        sample(5.0)
        lag = _gauge("chat_event_loop_lag_max_seconds", "test")
        assert lag >= 0.3 - 0.01
    finally:
        await aclose_loop_resources()
