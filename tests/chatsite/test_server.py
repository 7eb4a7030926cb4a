"""The server entry point (chatsite/server.py): options, and the application it loads."""

from __future__ import annotations

import gc
import os
import subprocess
import sys

from chatsite import server


def test_gc_freeze_is_on_by_default_and_can_be_turned_off(monkeypatch):
    monkeypatch.delenv("SERVER_GC_FREEZE", raising=False)
    assert server.parse_args([]).gc_freeze is True
    assert server.parse_args(["--no-gc-freeze"]).gc_freeze is False
    monkeypatch.setenv("SERVER_GC_FREEZE", "0")
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
