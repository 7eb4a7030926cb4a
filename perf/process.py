"""Per-process resources, garbage-collector pauses and event-loop lag.

prometheus_client's multiprocess mode has no process collector: its own one
reads the process that serves the scrape, which is the exporter, not the
servers. So the work is split between the processes and the exporter:

* each process of the deployment registers itself with :func:`register`
  (a server from its ASGI lifespan, a management command such as the
  background worker when Django starts): it sets ``chat_process_start_time_seconds{role}``,
  a ``liveall`` gauge, so the exporter learns its pid (prometheus_client
  adds a ``pid`` label), its role and its start time;
* at each scrape the exporter reads CPU, resident memory, descriptors and
  threads of every registered process from the operating system
  (:func:`read`, :func:`resource_families`): fresh numbers, no work in the
  processes. The start time guards against a pid that was reused by another
  process before the exporter noticed the first one had died;
* what only a process can see it measures itself: its longest garbage
  collection (``gc.callbacks``) and, in a server, how late its event loop
  runs a timer. :func:`sample` (the metrics sampler thread, every
  ``perf.metrics.SAMPLE_INTERVAL`` seconds) publishes the longest of the last
  ``WINDOW`` seconds.
"""

from __future__ import annotations

import asyncio
import gc
import os
import threading
import time
from collections import deque
from typing import Any, Iterable, Iterator

import psutil
from prometheus_client import Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

ROLE_SERVER = "server"
WINDOW = 60.0  # seconds over which the longest pause and lag are kept
LOOP_LAG_INTERVAL = 0.1  # seconds between the event-loop probe's timers
START_TIME_TOLERANCE = 1.0  # seconds: the same process as registered, not a reused pid

PROCESS_START = Gauge(
    "chat_process_start_time_seconds",
    "Start time of a registered process (Unix time), by role; the exporter reads its resources.",
    ["role"],
    multiprocess_mode="liveall",
)
GC_PAUSE_MAX = Gauge(
    "chat_gc_pause_max_seconds",
    f"Longest garbage-collector pause of the process in the last {WINDOW:g} s.",
    ["role"],
    multiprocess_mode="liveall",
)
LOOP_LAG_MAX = Gauge(
    "chat_event_loop_lag_max_seconds",
    f"Longest delay of the event loop in running a due timer, in the last {WINDOW:g} s.",
    ["role"],
    multiprocess_mode="liveall",
)

_role: str | None = None
_role_lock = threading.Lock()

# Written by the GC callback and the loop probe, read and reset by the sampler thread. No lock: a
# collection can start in any thread, the sampler's too, and a callback that waited for a lock
# held by its own thread would never return. A pause ending between the read and the reset is lost.
_gc_started = 0.0
_gc_longest = 0.0
_lag_longest = 0.0
_lag_running = False
_gc_slots: deque[float] = deque()
_lag_slots: deque[float] = deque()


def role() -> str | None:
    """The role this process registered with, if any."""
    return _role


def register(role_name: str) -> None:
    """Make this process one of the deployment's: its resources exported, its GC pauses measured.

    The first role a process registers with is kept.
    """
    global _role
    from perf import metrics

    if not metrics.metrics_enabled():
        return
    with _role_lock:
        if _role is not None:
            return
        _role = role_name
    PROCESS_START.labels(role_name).set(psutil.Process(os.getpid()).create_time())
    GC_PAUSE_MAX.labels(role_name).set(0)
    if _on_gc not in gc.callbacks:
        gc.callbacks.append(_on_gc)
    metrics.start_sampler()


def server_started() -> None:
    """Called in each server process's ASGI lifespan start-up, on its event loop."""
    register(ROLE_SERVER)
    if _role is not None:
        start_loop_probe()


def _on_gc(phase: str, info: dict[str, Any]) -> None:
    global _gc_started, _gc_longest
    if phase == "start":
        _gc_started = time.perf_counter()
    else:
        pause = time.perf_counter() - _gc_started
        if pause > _gc_longest:
            _gc_longest = pause


async def _probe_loop(interval: float) -> None:
    """How late the loop runs a timer that is due: the time every callback waits behind whatever holds the loop."""
    global _lag_longest
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + interval
        await asyncio.sleep(interval)
        lag = loop.time() - due
        if lag > _lag_longest:
            _lag_longest = lag


async def _stop_probe(task: asyncio.Task) -> None:
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass


def start_loop_probe(interval: float = LOOP_LAG_INTERVAL) -> asyncio.Task:
    """Probe the running loop's lag until the loop's resources are closed (perf.redis.aclose_loop_resources)."""
    global _lag_running
    from perf.redis import loop_resource

    task = loop_resource(
        "perf.process.loop_probe",
        lambda: asyncio.get_running_loop().create_task(_probe_loop(interval), name="perf-loop-lag-probe"),
        _stop_probe,
    )
    _lag_running = True
    return task


def _windowed(slots: deque[float], latest: float, keep: int) -> float:
    slots.append(latest)
    while len(slots) > keep:
        slots.popleft()
    return max(slots)


def sample(interval: float) -> None:
    """Publish the longest GC pause and loop lag of the last ``WINDOW`` seconds (the sampler, every ``interval``)."""
    global _gc_longest, _lag_longest
    if _role is None:
        return
    keep = max(1, round(WINDOW / interval))
    gc_pause, _gc_longest = _gc_longest, 0.0
    GC_PAUSE_MAX.labels(_role).set(_windowed(_gc_slots, gc_pause, keep))
    if _lag_running:
        lag, _lag_longest = _lag_longest, 0.0
        LOOP_LAG_MAX.labels(_role).set(_windowed(_lag_slots, max(0.0, lag), keep))


# --- reading processes (the exporter, the staff page) --------------------------------------


def read(pid: int, started: float | None = None) -> dict[str, Any] | None:
    """CPU, memory, descriptors and threads of process ``pid``; None if it is gone or is not the one that started at ``started``."""
    try:
        process = psutil.Process(pid)
        with process.oneshot():
            create_time = process.create_time()
            if started is not None and abs(create_time - started) > START_TIME_TOLERANCE:
                return None  # the pid now belongs to another process
            cpu = process.cpu_times()
            found: dict[str, Any] = {
                "pid": pid,
                "cpu_seconds": cpu.user + cpu.system,
                "rss_bytes": process.memory_info().rss,
                "threads": process.num_threads(),
                "start_time": create_time,
            }
            try:
                found["open_fds"] = process.num_fds()
            except (AttributeError, psutil.AccessDenied):  # not on this platform, or another user's
                found["open_fds"] = None
            try:
                found["max_fds"] = process.rlimit(psutil.RLIMIT_NOFILE)[0]
            except (AttributeError, psutil.AccessDenied):
                found["max_fds"] = None
            return found
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return None


def _pid(labels: dict[str, str], default_pid: int | None) -> int | None:
    return int(labels["pid"]) if "pid" in labels else default_pid


def registered(families: Iterable[Metric], default_pid: int | None = None) -> list[tuple[int, str, float]]:
    """(pid, role, start time) of every process registered in ``families``.

    A multiprocess collection labels each sample with its pid; a process's own
    registry does not, and its samples are ``default_pid``'s.
    """
    found = []
    for family in families:
        if family.name != "chat_process_start_time_seconds":
            continue
        for s in family.samples:
            pid = _pid(s.labels, default_pid)
            if s.value > 0 and pid is not None:
                found.append((pid, s.labels["role"], s.value))
    return sorted(found)


def per_process(families: Iterable[Metric], default_pid: int | None = None) -> dict[tuple[int, str], dict[str, float]]:
    """The values processes publish themselves (GC pause, loop lag), by (pid, role)."""
    names = {"chat_gc_pause_max_seconds": "gc_pause_max", "chat_event_loop_lag_max_seconds": "loop_lag_max"}
    found: dict[tuple[int, str], dict[str, float]] = {}
    for family in families:
        key = names.get(family.name)
        if key is None:
            continue
        for s in family.samples:
            pid = _pid(s.labels, default_pid)
            if pid is not None:
                found.setdefault((pid, s.labels["role"]), {})[key] = s.value
    return found


def resource_families(processes: Iterable[tuple[int, str, float]]) -> Iterator[Metric]:
    """The resources of ``processes`` (from :func:`registered`) as Prometheus metric families, labelled role and pid."""
    labels = ["role", "pid"]
    cpu = CounterMetricFamily("chat_process_cpu_seconds", "User and system CPU time of the process.", labels=labels)
    rss = GaugeMetricFamily("chat_process_resident_memory_bytes", "Resident memory of the process.", labels=labels)
    fds = GaugeMetricFamily("chat_process_open_fds", "Open file descriptors of the process (sockets included).", labels=labels)
    max_fds = GaugeMetricFamily("chat_process_max_fds", "The process's limit on open file descriptors.", labels=labels)
    threads = GaugeMetricFamily("chat_process_threads", "Threads of the process.", labels=labels)
    for pid, role_name, started in processes:
        found = read(pid, started)
        if found is None:
            continue
        values = [role_name, str(pid)]
        cpu.add_metric(values, found["cpu_seconds"])
        rss.add_metric(values, found["rss_bytes"])
        threads.add_metric(values, found["threads"])
        if found["open_fds"] is not None:
            fds.add_metric(values, found["open_fds"])
        if found["max_fds"] is not None:
            max_fds.add_metric(values, found["max_fds"])
    yield from (cpu, rss, fds, max_fds, threads)
