"""perf_report and the staff page: the same data from pg_stat_statements and the stats views."""

from __future__ import annotations

from io import StringIO

import orjson
import pytest
from django.core.management import call_command
from django.db import connection
from django.test import Client

from perf.selectors import db_report, own_tables
from tests.perf.conftest import raw_connection
from tests.waiting import wait_until

pytestmark = pytest.mark.django_db

# Slow enough to rank among the top statements by mean time whatever else the suite ran.
PROBE_SQL = "SELECT pg_sleep(0.3) AS perf_report_probe"


def run_probe() -> None:
    with connection.cursor() as cursor:
        cursor.execute(PROBE_SQL)


def report_json(*args: str) -> dict:
    out = StringIO()
    call_command("perf_report", "--json", *args, stdout=out)
    return orjson.loads(out.getvalue())


def test_statements_come_from_pg_stat_statements_of_this_database() -> None:
    run_probe()
    report = report_json("--limit", "100")
    statements = report["statements"]
    assert statements["available"] is True, statements["reason"]
    probe = [row for row in statements["by_mean_time"] if "perf_report_probe" in row["query"]]
    assert probe and probe[0]["calls"] >= 1
    assert set(probe[0]) >= {"calls", "total_ms", "mean_ms", "max_ms", "rows", "query"}
    means = [row["mean_ms"] for row in statements["by_mean_time"]]
    assert means == sorted(means, reverse=True)


def test_limit_bounds_the_statement_lists() -> None:
    report = report_json("--limit", "2")
    assert 1 <= len(report["statements"]["by_total_time"]) <= 2
    assert 1 <= len(report["statements"]["by_mean_time"]) <= 2


def test_indexes_of_the_project_tables_with_the_unused_rule() -> None:
    report = db_report()
    indexes = {row["index"]: row for row in report["indexes"]}
    assert {"message_room_id_idx", "membership_user_project_idx", "chat_message_pkey"} <= set(indexes)
    assert {row["table"] for row in report["indexes"]} <= set(own_tables())
    assert indexes["chat_message_pkey"]["kind"] == "primary"
    assert indexes["message_room_seq_uniq"]["kind"] == "unique"
    for row in report["indexes"]:
        assert row["unused"] == (row["scans"] == 0 and row["kind"] == "index")
    assert report["unused_indexes"] == [f"{r['table']}.{r['index']}" for r in report["indexes"] if r["unused"]]


def test_an_index_scan_is_counted() -> None:
    def scans() -> int:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_stat_clear_snapshot()")  # a fresh read inside the test transaction
        return {r["index"]: r for r in db_report()["indexes"]}["membership_user_project_idx"]["scans"]

    before = scans()
    # Another server process (its counters are published when it exits), and a
    # query only this index answers: user_id is its leading column.
    with raw_connection() as other:
        other.execute("SET enable_seqscan = off")
        other.execute("SELECT project_id FROM projects_membership WHERE user_id = 1")
    wait_until(lambda: scans() > before, message="the index scan was never counted")


def test_seq_scan_tables_cache_ratios_and_pool() -> None:
    report = db_report()
    for row in report["seq_scan_tables"]:
        assert row["seq_scans"] > row["index_scans"]
        assert row["flag"] == (row["live_rows"] >= 10_000)
    ratios = report["cache_hit_ratio"]
    assert ratios["database"] is None or 0.0 <= ratios["database"] <= 1.0
    assert report["pool"]["enabled"] is True
    assert report["pool"]["max_size"] >= report["pool"]["min_size"] >= 1


def test_text_output_has_every_section() -> None:
    out = StringIO()
    call_command("perf_report", "--limit", "3", stdout=out)
    text = out.getvalue()
    for heading in (
        "Top statements by total time",
        "Top statements by mean time",
        "Indexes of the project's tables",
        "Unused indexes:",
        "Tables with more sequential than index scans",
        "Buffer cache hit ratio",
        "Pool (this process)",
    ):
        assert heading in text


def test_page_is_for_staff_only(make_user) -> None:
    anonymous = Client().get("/perf/db/")
    assert anonymous.status_code == 302 and "/admin/login/" in anonymous["Location"]
    client = Client()
    client.force_login(make_user())
    member = client.get("/perf/db/")
    assert member.status_code == 302 and "/admin/login/" in member["Location"]


def test_page_shows_the_report_to_staff(make_user) -> None:
    run_probe()
    client = Client()
    client.force_login(make_user(is_staff=True))
    response = client.get("/perf/db/?limit=20")
    assert response.status_code == 200
    html = response.content.decode()
    for text in ("Statements by mean time", "perf_report_probe", "message_room_id_idx", "Connection pool"):
        assert text in html


def test_admin_index_links_the_report(make_user) -> None:
    client = Client()
    client.force_login(make_user(is_staff=True))
    html = client.get("/admin/").content.decode()
    assert 'href="/perf/db/"' in html
