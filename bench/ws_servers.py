"""Server processes for the WebSocket benchmark, and CPU/RSS sampling of them.

Servers listen on 127.0.0.1 only, on free ports, with the open-files limit
raised to the hard limit. They are always stopped by the context manager.
``uvicorn`` and ``daphne`` run the project's entry point (chatsite.server);
``bare`` runs bench.bare_broadcast, the plain ``websockets`` broadcast server
the benchmark uses as its ceiling.
"""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_INTERVAL_S = 0.5


def raise_nofile_limit() -> int:
    """Raise this process's open-files soft limit to the hard limit; return the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CHAT_APP = "chatsite.asgi:application"
BARE_APP = "bench.bare_broadcast"
SERVERS = ("uvicorn", "daphne", "bare")


def server_command(server: str, port: int, app: str = CHAT_APP) -> list[str]:
    """The production entry point (chatsite.server) with ``server`` = uvicorn or daphne, serving ``app``;
    or, with ``server`` = bare, the bare websockets broadcast server (``app`` is ignored)."""
    if server not in SERVERS:
        raise ValueError(f"unknown server {server!r}")
    if server == "bare":
        return [sys.executable, "-m", BARE_APP, "--host", "127.0.0.1", "--port", str(port)]
    return [sys.executable, "-m", "chatsite.server", "--server", server, "-b", "127.0.0.1", "-p", str(port), "-v", "0",
            app]  # fmt: skip


@dataclass
class ServerProcess:
    port: int
    proc: subprocess.Popen
    log_path: Path

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _raise_child_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _wait_for_port(server: ServerProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"server on port {server.port} exited with {server.proc.returncode}:\n{server.log_tail()}")
        try:
            with socket.create_connection(("127.0.0.1", server.port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"server on port {server.port} did not start in {timeout}s:\n{server.log_tail()}")


@contextmanager
def run_servers(
    *, server: str, count: int, env: dict[str, str], app: str = CHAT_APP, start_timeout: float = 60
) -> Iterator[list[ServerProcess]]:
    """Start ``count`` server processes of ``app`` on free 127.0.0.1 ports; terminate them on exit."""
    logdir = Path(tempfile.mkdtemp(prefix="ws-bench-"))
    servers: list[ServerProcess] = []
    try:
        for i in range(count):
            port = free_port()
            log_path = logdir / f"server-{i}.log"
            with open(log_path, "wb") as log:
                proc = subprocess.Popen(
                    server_command(server, port, app),
                    cwd=ROOT,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                    preexec_fn=_raise_child_limit,
                )
            servers.append(ServerProcess(port=port, proc=proc, log_path=log_path))
        for s in servers:
            _wait_for_port(s, start_timeout)
        yield servers
    finally:
        for s in servers:
            if s.proc.poll() is None:
                s.proc.terminate()
        for s in servers:
            try:
                s.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                s.proc.kill()
                s.proc.wait(timeout=10)


@dataclass
class Sample:
    t: float
    server_cpu: float  # % of one core, summed over server processes
    server_rss: int  # bytes, summed
    client_cpu: float
    redis_cpu: float
    postgres_cpu: float
    system_cpu: float  # % of the whole machine (all cores), every process on it


@dataclass
class Sampler:
    """Samples CPU and RSS every 0.5 s in a thread until stopped."""

    server_pids: list[int]
    client_pids: list[int] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ws-bench-sampler", daemon=True)
        self._servers = [psutil.Process(pid) for pid in self.server_pids]
        self._clients = [psutil.Process(pid) for pid in self.client_pids]
        # Redis and PostgreSQL are shared with anything else on the machine:
        # their CPU is context, not a measurement of this benchmark alone.
        self._redis = [p for p in psutil.process_iter(["name"]) if (p.info["name"] or "").startswith("redis-server")]

    def __enter__(self) -> Sampler:
        for p in self._servers + self._clients + self._redis + _postgres():
            _cpu(p)
        psutil.cpu_percent()
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_INTERVAL_S):
            self.samples.append(self.sample_now())

    def sample_now(self) -> Sample:
        return Sample(
            t=time.time(),
            server_cpu=sum(_cpu(p) for p in self._servers),
            server_rss=sum(_rss(p) for p in self._servers),
            client_cpu=sum(_cpu(p) for p in self._clients),
            redis_cpu=sum(_cpu(p) for p in self._redis),
            postgres_cpu=sum(_cpu(p) for p in _postgres()),
            system_cpu=psutil.cpu_percent(),
        )

    def cpu_seconds(self) -> float:
        """User + system CPU time consumed so far by the server processes (exact, not sampled)."""
        return _cpu_seconds(self._servers)

    def client_cpu_seconds(self) -> float:
        """User + system CPU time consumed so far by the load-generator processes (exact, not sampled)."""
        return _cpu_seconds(self._clients)

    def rss_now(self) -> int:
        return sum(_rss(p) for p in self._servers)

    def window(self, start: float, end: float) -> dict[str, float]:
        """Mean CPU and peak RSS over samples taken in [start, end] (wall time)."""
        picked = [s for s in self.samples if start <= s.t <= end]
        if not picked:
            return {}

        def mean(attr: str) -> float:
            return round(sum(getattr(s, attr) for s in picked) / len(picked), 1)

        return {
            "server_cpu_pct": mean("server_cpu"),
            "server_cpu_pct_max": round(max(s.server_cpu for s in picked), 1),
            "server_rss_mb": round(max(s.server_rss for s in picked) / 2**20, 1),
            "client_cpu_pct": mean("client_cpu"),
            "redis_cpu_pct": mean("redis_cpu"),
            "postgres_cpu_pct": mean("postgres_cpu"),
            "system_cpu_pct": mean("system_cpu"),
            "samples": len(picked),
        }


def _cpu_seconds(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return total


def _postgres() -> list[psutil.Process]:
    # Re-listed every sample: backends come and go with connections. psutil
    # caches Process objects across process_iter calls, so cpu_percent works.
    return [p for p in psutil.process_iter(["name"]) if (p.info["name"] or "") in ("postgres", "postmaster")]


def _cpu(p: psutil.Process) -> float:
    try:
        return p.cpu_percent(None)
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return 0.0


def _rss(p: psutil.Process) -> int:
    try:
        return p.memory_info().rss
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return 0


def base_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    env.update(extra)
    return env
