"""bench_db runs end to end on a small data set it seeds itself (numbers are not checked here)."""

from __future__ import annotations

from io import StringIO

import orjson
import pytest
from django.core.management import call_command

from chat.models import Message

QUERIES = {
    "room_history newest",
    "room_history before=",
    "room_history after=",
    "messages_after (resume)",
    "messages_seq_between (gap)",
    "rooms_for_user (unread)",
    "room tails (unread cache fill)",
    "projects_for_user",
    "room_get_for_user",
    "project_get_for_user",
    "message by (author, client_id)",
    "user_for_token",
    "tokens of a user (user save)",
}


@pytest.mark.django_db
def test_bench_db_seeds_measures_and_leaves_no_trace() -> None:
    out, err = StringIO(), StringIO()
    call_command(
        "bench_db", "--json", "--iterations", "5",
        "--users", "40", "--projects", "2", "--rooms", "4", "--messages", "600",
        stdout=out, stderr=err,
    )
    report = orjson.loads(out.getvalue())
    assert "seeding" in err.getvalue()
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


@pytest.mark.django_db
def test_bench_db_text_table() -> None:
    out = StringIO()
    call_command(
        "bench_db", "--iterations", "3",
        "--users", "40", "--projects", "2", "--rooms", "4", "--messages", "600",
        stdout=out, stderr=StringIO(),
    )
    text = out.getvalue()
    assert "db p95" in text and "Load average" in text
    for name in QUERIES:
        assert name in text
