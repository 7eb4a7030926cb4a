"""scripts/serve.sh under the production settings on a checkout that never ran collectstatic.

The script collects the static files first (manage.py collectstatic_if_missing)
so the login page and its assets are served; when it cannot write STATIC_ROOT
it stops with one line saying what to run. Each run uses its own STATIC_ROOT
under the test's temporary directory, and everything it started is stopped.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.servers import ROOT, free_port, server_env
from tests.waiting import wait_until

# collectstatic compresses every file with brotli and gzip: about a minute on a busy machine.
START_DEADLINE = 480


def production_serve_env(static_root: Path, port: int) -> dict[str, str]:
    return server_env(
        DJANGO_SETTINGS_MODULE="chatsite.settings.production",
        SECRET_KEY="serve-script-test-key-" + "x" * 40,
        ALLOWED_HOSTS="127.0.0.1",
        SECURE_SSL_REDIRECT="false",
        STATIC_ROOT=str(static_root),
        PY=sys.executable,
        HOST="127.0.0.1",
        PORT=str(port),
        # Nothing beside the server: no exporter on the shared metrics port, no worker.
        ENABLE_METRICS="false",
        SERVE_WORKER="false",
    )


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM the script (it stops its children), then make sure its whole process group is gone."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


@pytest.mark.django_db
@pytest.mark.timeout(START_DEADLINE + 120)
def test_serve_collects_the_missing_static_files_then_serves_pages_and_assets(tmp_path: Path) -> None:
    static_root = tmp_path / "staticfiles"
    port = free_port()
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            ["scripts/serve.sh"],
            cwd=ROOT,
            env=production_serve_env(static_root, port),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:

        def login_page() -> tuple[int, bytes] | None:
            assert proc.poll() is None, log_path.read_text()
            try:
                return get(f"http://127.0.0.1:{port}/login/")
            except OSError:
                return None

        status, page = wait_until(
            login_page, timeout=START_DEADLINE, interval=0.5, message=lambda: log_path.read_text()[-2000:]
        )
        assert status == 200, (status, page[:500], log_path.read_text()[-2000:])
        assert (static_root / "staticfiles.json").is_file()

        # The page names its assets by their fingerprinted names, and they are served.
        assets = re.findall(rb'(?:href|src)="(/static/[^"]+)"', page)
        assert assets, page[:1000]
        for asset in assets:
            assert re.search(rb"\.[0-9a-f]{12}\.\w+$", asset), asset
            asset_status, body = get(f"http://127.0.0.1:{port}{asset.decode()}")
            assert asset_status == 200 and body, asset
        # The manifest is public like every collected file (docs/SECURITY.md): names only.
        manifest_status, manifest = get(f"http://127.0.0.1:{port}/static/staticfiles.json")
        assert manifest_status == 200 and b'"paths"' in manifest
        assert "collecting the static files" in log_path.read_text()
    finally:
        stop_group(proc)


@pytest.mark.django_db
def test_serve_stops_with_one_line_when_it_cannot_write_the_static_files(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    port = free_port()
    proc = subprocess.Popen(
        ["scripts/serve.sh"],
        cwd=ROOT,
        env=production_serve_env(blocker / "staticfiles", port),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        stop_group(proc)
    assert proc.returncode != 0
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "collectstatic --noinput" in lines[0] and str(blocker) in lines[0], lines[0]
    assert "Uvicorn running" not in stdout + stderr
