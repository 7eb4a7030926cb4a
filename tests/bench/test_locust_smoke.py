"""The Locust chat mix runs against real servers and every kind of action succeeds (not how fast).

Three users, a tiny seeded data set, two daphne processes (users split over
them with --hosts), a few seconds headless with a short think time and an
even mix, so each action shows up. Locust runs in a subprocess: importing it
monkey-patches the standard library with gevent.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from bench import seeding
from bench.make_tokens import load_user_tokens
from tests.servers import ROOT, app_servers, server_env

pytestmark = pytest.mark.django_db(transaction=True)

EVEN_MIX = "unread=1,switch=1,scroll=1,post=1,read=1,edit=1,reconnect=1"
HTTP_NAMES = {
    ("GET", "/api/v1/projects/[slug]/rooms"),
    ("GET", "/api/v1/rooms/[id]/messages (newest)"),
    ("GET", "/api/v1/rooms/[id]/messages (older page)"),
    ("POST", "/api/v1/rooms/[id]/messages"),
    ("POST", "/api/v1/rooms/[id]/read"),
    ("PATCH", "/api/v1/messages/[id]"),
}
WS_NAMES = {("WS", "connect"), ("WS", "subscribe"), ("WS", "send typing"), ("WS", "deliver own"), ("WS", "recv message.new")}


def _run_or_dump_stacks(command: list[str], timeout: float) -> subprocess.CompletedProcess:
    """Run Locust; if it hangs, make it print every greenlet's (SIGUSR2) and thread's (SIGABRT) stack and fail with them."""
    proc = subprocess.Popen(command, cwd=ROOT, env=server_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGUSR2)  # the locustfile prints every greenlet's stack
        time.sleep(2)
        proc.send_signal(signal.SIGABRT)
        try:
            stdout, stderr = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
        pytest.fail(f"Locust did not finish within {timeout:.0f} s; its stacks:\n{stderr[-20000:]}")
    return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)


def test_the_chat_mix_runs_every_action_without_failures(tmp_path):
    # One project, two public rooms, three users: they meet in rooms, so they see each other's posts.
    seeding.load_seed(users=3, projects=1, rooms=2, messages=300, progress=False, log=lambda _: None)
    tokens = load_user_tokens(count=3)
    assert len(tokens["users"]) == 3
    tokens_file = tmp_path / "tokens.json"
    tokens_file.write_text(json.dumps(tokens))

    with app_servers(2) as servers:
        hosts = ",".join(f"http://127.0.0.1:{port}" for port, _ in servers)
        command = [
            sys.executable, "-X", "faulthandler", "-m", "locust", "-f", str(ROOT / "loadtest" / "locustfile.py"), "--headless",
            "-H", hosts.split(",")[0], "--hosts", hosts, "--tokens-file", str(tokens_file),
            "-u", "3", "-r", "3", "-t", "8s", "--think-time", "0.2", "--mix", EVEN_MIX,
            # A slow moment on a busy machine is not a failure of the tool.
            "--reply-timeout", "60", "--deliver-timeout", "60",
            "--only-summary", "--stop-timeout", "3", "--exit-code-on-error", "0",
            "--stats-file", str(tmp_path / "stats.json"),
        ]  # fmt: skip
        result = _run_or_dump_stacks(command, timeout=60)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    stats = json.loads((tmp_path / "stats.json").read_text())
    by_name = {(e["method"], e["name"]): e for e in stats["stats"]}

    assert HTTP_NAMES | WS_NAMES <= set(by_name), sorted(by_name)
    assert stats["errors"] == []
    assert {key: e["num_failures"] for key, e in by_name.items() if e["num_failures"]} == {}
    for key in HTTP_NAMES | WS_NAMES:
        assert by_name[key]["num_requests"] > 0, key
    # Every post reached its author's socket; reconnects opened more sockets than users.
    posts = by_name[("POST", "/api/v1/rooms/[id]/messages")]["num_requests"]
    assert posts - 1 <= by_name[("WS", "deliver own")]["num_requests"] <= posts  # the last may be cut off by the stop
    assert by_name[("WS", "connect")]["num_requests"] > 3
    assert "Aggregated" in result.stdout + result.stderr  # Locust prints its table (to stderr)
