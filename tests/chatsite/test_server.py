"""The server entry point (chatsite/server.py): options, and the application it loads."""

from __future__ import annotations

import gc
import importlib
import os
import subprocess
import sys

import pytest

from chatsite import env, server


@pytest.fixture
def environ(monkeypatch):
    """Set environment variables and read them as chatsite.env does at start-up; restored afterwards."""

    def apply(**values: str | None) -> None:
        for name, value in values.items():
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value)
        importlib.reload(env)

    yield apply
    monkeypatch.undo()
    importlib.reload(env)


def test_gc_freeze_is_on_by_default_and_can_be_turned_off(environ):
    environ(SERVER_GC_FREEZE=None)
    assert server.parse_args([]).gc_freeze is True
    assert server.parse_args(["--no-gc-freeze"]).gc_freeze is False
    environ(SERVER_GC_FREEZE="0")
    assert server.parse_args([]).gc_freeze is False


def _frozen_after_load(freeze: bool) -> int:
    # A fresh interpreter: this one has long since loaded Django.
    code = (
        "import gc, sys; from chatsite import server; "
        f"app = server.load_application('chatsite.asgi:application', freeze={freeze}); "
        "assert callable(app); print(gc.get_freeze_count())"
    )
    # The embedded defaults (no DATABASE_URL, no REDIS_URL): loading connects to nothing.
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True, env=env)
    return int(out.stdout.strip().splitlines()[-1])


def test_load_application_freezes_what_start_up_loaded_the_urlconf_included():
    frozen = _frozen_after_load(True)
    assert frozen > 50_000  # Django, the apps, the URLconf and its views
    assert _frozen_after_load(False) == 0
    assert gc.get_freeze_count() == 0  # the test process itself is untouched


def _threshold_after_load(code: str, **extra_env: str) -> tuple[int, int, int]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE")}
    env.update(extra_env)
    code = f"import gc; from chatsite import server; {code}; print(*gc.get_threshold())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True, env=env)
    young, middle, full = out.stdout.strip().splitlines()[-1].split()
    return int(young), int(middle), int(full)


def test_full_collections_are_made_rarer_in_one_process_and_in_each_of_several(environ):
    environ(SERVER_GC_FULL_EVERY=None)
    assert server.parse_args([]).gc_full_every == 100
    assert server.parse_args(["--gc-full-every", "25"]).gc_full_every == 25
    young, middle, _ = gc.get_threshold()
    single = _threshold_after_load("server.load_application('chatsite.asgi:application', freeze=True, full_every=40)")
    assert single == (young, middle, 40)
    # Each of several processes imports the application through worker_application, from the environment.
    worker = _threshold_after_load(
        "server.worker_application()", CHAT_SERVER_APPLICATION="chatsite.asgi:application", SERVER_GC_FULL_EVERY="70"
    )
    assert worker == (young, middle, 70)


def test_workers_default_from_server_workers_then_web_concurrency(environ):
    environ(SERVER_WORKERS=None, WEB_CONCURRENCY=None)
    assert server.parse_args([]).workers == 1
    environ(WEB_CONCURRENCY="3")
    assert server.parse_args([]).workers == 3
    environ(SERVER_WORKERS="2")
    assert server.parse_args([]).workers == 2
    assert server.parse_args(["-w", "4"]).workers == 4


def test_several_workers_need_redis_and_uvicorn(environ, capsys):
    environ(REDIS_URL="redis://127.0.0.1:6379/14")
    assert server.effective_workers(server.parse_args(["-w", "2"])) == 2
    try:
        server.effective_workers(server.parse_args(["-w", "2", "--server", "daphne"]))
    except SystemExit as exc:
        assert "uvicorn" in str(exc)
    else:
        raise AssertionError("daphne with two workers must refuse")
    environ(REDIS_URL=None)
    assert server.effective_workers(server.parse_args(["-w", "2"])) == 1
    assert "REDIS_URL is not set" in capsys.readouterr().err


def _spawned_children(pid: int) -> list[int]:
    """Children of ``pid`` started by multiprocessing's spawn (uvicorn's worker processes)."""
    children = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            children += [int(c) for c in f.read().split()]
    spawned = []
    for child in children:
        try:
            with open(f"/proc/{child}/cmdline", "rb") as f:
                if b"spawn_main" in f.read():
                    spawned.append(child)
        except FileNotFoundError:
            continue
    return spawned


@pytest.mark.django_db(transaction=True)
def test_two_workers_serve_one_port():
    import urllib.request

    from tests.servers import app_servers
    from tests.waiting import wait_until

    with app_servers(1, SERVER_WORKERS="2") as [(port, proc)]:
        wait_until(lambda: len(_spawned_children(proc.pid)) >= 2, timeout=60, interval=0.2, message="the workers never started")
        assert len(_spawned_children(proc.pid)) == 2
        for _ in range(20):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as response:
                assert response.status == 200
