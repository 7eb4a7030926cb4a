"""Real server processes for tests that need more than one (cross-process delivery, failover)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from django.conf import settings

from chatsite import env
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    def listening() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"server on port {port} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            return False

    wait_until(listening, timeout=timeout, interval=0.1, message=f"server on port {port} did not start")


def server_env(**extra: str) -> dict[str, str]:
    """Environment for a server process that uses this test run's database and Redis."""
    db = settings.DATABASES["default"]
    database_url = f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "chatsite.settings.test",
        "DATABASE_URL": database_url,
        "REDIS_URL": env.REDIS_URL,
        # The prefix this process's cache uses (named before the test database
        # was), so a change made here invalidates what the servers cached.
        "CACHE_KEY_PREFIX": settings.CACHES["default"].get("KEY_PREFIX", ""),
        "PYTHONPATH": str(ROOT),
        **extra,
    }


def stop_process(proc: subprocess.Popen, *, timeout: float = 10) -> None:
    """Terminate ``proc``, and kill it if it has not exited within ``timeout`` seconds."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


_log_paths: dict[int, Path] = {}


def server_log_path(proc: subprocess.Popen) -> Path:
    """Where ``app_servers`` writes the output of ``proc``."""
    return _log_paths[proc.pid]


@contextmanager
def app_servers(count: int, **extra_env: str) -> Iterator[list[tuple[int, subprocess.Popen]]]:
    """Start ``count`` server processes (``python -m chatsite.server``, as deployed) on free ports; stop them on exit."""
    procs: list[tuple[int, subprocess.Popen]] = []
    try:
        for _ in range(count):
            port = free_port()
            log_dir = ROOT / "test-artifacts"
            log_dir.mkdir(exist_ok=True)
            # A file, not a pipe: a server that logs a lot (an outage) must never block on it.
            log = open(log_dir / f"server-{port}.log", "wb")  # see server_log_path
            proc = subprocess.Popen(
                [sys.executable, "-m", "chatsite.server", "-b", "127.0.0.1", "-p", str(port), "chatsite.asgi:application"],
                cwd=ROOT,
                env=server_env(**extra_env),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            log.close()  # the child keeps its own descriptor
            _log_paths[proc.pid] = log_dir / f"server-{port}.log"
            procs.append((port, proc))
        for port, proc in procs:
            _wait_for_port(port, proc)
        yield procs
    finally:
        for _, proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for _, proc in procs:
            stop_process(proc)


@contextmanager
def background_worker(**extra_env: str) -> Iterator[subprocess.Popen]:
    """Run ``manage.py chat_worker`` against this test run's database and Redis."""
    log_dir = ROOT / "test-artifacts"
    log_dir.mkdir(exist_ok=True)
    log = open(log_dir / "background-worker.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "chat_worker"],
        cwd=ROOT,
        env=server_env(**extra_env),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        # Pub/sub delivers only to present listeners: wait until it has subscribed.
        import redis

        client = redis.Redis.from_url(env.REDIS_URL)
        channel = settings.CHAT_BACKGROUND_CHANNEL

        def subscribed() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"worker exited with {proc.returncode}; see test-artifacts/background-worker.log")
            return bool(dict(client.pubsub_numsub(channel)).get(channel.encode()))

        wait_until(subscribed, timeout=30, interval=0.1, message="worker did not subscribe")
        client.close()
        yield proc
    finally:
        stop_process(proc)
