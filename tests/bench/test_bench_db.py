"""python -m bench.bench_db runs end to end on a small data set it seeds itself (numbers are not checked here)."""

from __future__ import annotations

import subprocess
import sys
from io import StringIO

import orjson
import pytest

from bench import bench_db
from chat.models import ApiToken, Message
from tests.servers import ROOT, server_env

QUERIES = {
    "room_history newest",
    "room_history before=",
    "room_history after=",
    "room_events_after (resume)",
    "room_events_between (gap)",
    "rooms_for_user (unread)",
    "room tails (unread cache fill)",
    "projects_for_user",
    "room_get_for_user",
    "project_get_for_user",
    "message by (author, client_id)",
    "user_for_token",
    "tokens of a user (user save)",
}
SMALL = ["--users", "40", "--projects", "2", "--rooms", "4", "--messages", "600"]


@pytest.mark.django_db(transaction=True)
def test_the_command_seeds_measures_prints_json_alone_and_leaves_no_trace() -> None:
    # As make bench-db and bench/adr_bench.py run it: its own process, the report alone on stdout.
    done = subprocess.run(
        [sys.executable, "-m", "bench.bench_db", "--json", "--iterations", "5", *SMALL],
        cwd=ROOT, env=server_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = orjson.loads(done.stdout)
    assert "seeding" in done.stderr
    rows = {row["query"]: row for row in report["results"]}
    assert set(rows) == QUERIES
    for row in rows.values():
        assert row["calls"] == 5
        assert row["queries_per_call"] >= 1
        assert 0 <= row["db_p50_ms"] <= row["db_p95_ms"] <= row["db_p99_ms"]
        assert row["db_p50_ms"] <= row["call_p50_ms"]
    assert report["machine"]["messages"] >= 600
    # The tokens and client ids it needed were rolled back.
    assert not Message.objects.filter(client_id__startswith="bench-").exists()
    assert not ApiToken.objects.filter(name="bench").exists()


@pytest.mark.django_db
def test_bench_db_text_table() -> None:
    out = StringIO()
    bench_db.run(bench_db.parser().parse_args(["--iterations", "3", *SMALL]), out=out, err=StringIO())
    text = out.getvalue()
    assert "db p95" in text and "Load average" in text
    for name in QUERIES:
        assert name in text
