"""bench/bench_http.py's room-list step for a user in many rooms reports what it claims to (not how fast anything is)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.servers import ROOT, server_env

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.timeout(300)
def test_the_room_list_of_a_user_in_many_rooms_reports_latency_and_cpu(tmp_path):
    env = server_env()
    out = tmp_path / "http.json"
    cmd = [
        sys.executable, "bench/bench_http.py", "--database-url", env["DATABASE_URL"], "--redis-url", env["REDIS_URL"],
        "--scenarios", "rooms500_br", "rooms500_all_br", "--wide-rooms", "150", "--wide-users", "3",
        "--wide-rate", "10", "--duration", "2", "--json", str(out),
    ]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]

    rows = {r["scenario"]: r for r in json.loads(out.read_text())["results"]}
    assert set(rows) == {"rooms500_br", "rooms500_all_br"}
    first, walk = rows["rooms500_br"], rows["rooms500_all_br"]
    assert first["rooms"] == 150 and first["readers"] == 3 and first["pages_per_walk"] == 1
    assert walk["pages_per_walk"] == 2 and walk["http_requests"] == 2 * walk["requests"]
    for row in (first, walk):
        assert row["requests"] > 0 and row["errors"] == {}
        assert 0 < row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]
        assert row["server_cpu_ms_per_request"] > 0 and row["generator_cpu_ms_per_request"] > 0
        assert row["mean_bytes"] > 0
    assert walk["server_cpu_ms_per_walk"] > walk["server_cpu_ms_per_request"]
    assert "room list of a user in 150 rooms" in done.stdout
