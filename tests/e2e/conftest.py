"""A real server and a real browser for the end-to-end checks.

The server is Daphne's ``runserver`` in a subprocess, pointed at the pytest
test database and the same Redis database, so data created through services in
a ``transaction=True`` test is what the browser sees. The browser is the
system Chromium driven by Playwright (no downloaded browser builds).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from chatsite import env
from tests.servers import stop_process
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
SERVER_START_SECONDS = 60


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _database_url() -> str:
    db = settings.DATABASES["default"]
    user = db.get("USER") or ""
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    auth = f"{user}{password}@" if user else ""
    return f"postgres://{auth}{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db['NAME']}"


@pytest.fixture
def live_server_url(transactional_db, request) -> Iterator[str]:
    """Start the ASGI server (HTTP, static files, WebSocket) on a free port; yield its base URL."""
    port = _free_port()
    ARTIFACTS.mkdir(exist_ok=True)
    log_path = ARTIFACTS / f"server-{request.node.name}.log"
    server_env = dict(
        os.environ,
        DJANGO_SETTINGS_MODULE="chatsite.settings.test",
        DATABASE_URL=_database_url(),
        REDIS_URL=env.REDIS_URL,
        # runserver serves /static/ only in DEBUG.
        DEBUG="1",
        DB_POOL_SIZE="4",
        DB_MAX_OVERFLOW="4",
        PYTHONUNBUFFERED="1",
    )
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"],
            cwd=ROOT,
            env=server_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:

        def answering() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"the server exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{base}/login/", timeout=2) as response:
                    return response.status == 200
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                return False

        wait_until(
            answering,
            timeout=SERVER_START_SECONDS,
            interval=0.2,
            message=lambda: f"the server did not answer:\n{log_path.read_text()[-3000:]}",
        )
        yield base
    finally:
        # Stop it before the database is flushed: it holds connections.
        stop_process(proc)


@pytest.fixture
def browser() -> Iterator[Any]:
    from playwright import sync_api

    if not shutil.which(CHROMIUM) and not Path(CHROMIUM).exists():
        # A failure, not a skip: a missing browser must not pass as green.
        pytest.fail(f"no Chromium at {CHROMIUM}: install Debian's chromium (.ci/run does) or set CHROMIUM_PATH")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


class Artifacts:
    """Pages to screenshot, and the WebSocket frames they exchanged, kept for a failing test."""

    def __init__(self) -> None:
        self.pages: dict[str, Any] = {}
        self.frames: list[str] = []

    def watch(self, name: str, page: Any) -> Any:
        self.pages[name] = page

        def on_socket(ws: Any) -> None:
            ws.on("framesent", lambda payload: self.frames.append(f"{name} > {payload}"))
            ws.on("framereceived", lambda payload: self.frames.append(f"{name} < {payload}"))
            ws.on("close", lambda _ws: self.frames.append(f"{name} closed"))

        page.on("websocket", on_socket)
        page.on("console", lambda msg: self.frames.append(f"{name} console.{msg.type}: {msg.text}"))
        return page

    def save(self, prefix: str) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        for name, page in self.pages.items():
            try:
                page.screenshot(path=str(ARTIFACTS / f"{prefix}-{name}.png"), full_page=True)
            except Exception:  # noqa: BLE001 - a closed page must not hide the real failure
                pass
        (ARTIFACTS / f"{prefix}-frames.log").write_text("\n".join(str(f) for f in self.frames))


@pytest.fixture
def artifacts(request) -> Iterator[Artifacts]:
    """Screenshots of every watched page and a log of its frames, written when the test fails."""
    collected = Artifacts()
    yield collected
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        collected.save(request.node.name)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
