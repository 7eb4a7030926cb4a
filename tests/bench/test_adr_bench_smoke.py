"""The ADR benchmark's machinery: what it reports and how (not how fast anything is).

The table never shows a number for a part that did not run; a tiny Locust
step against a real stack (daphne, the background worker, production
settings) yields a judged step with latency percentiles and the servers'
cache counters; the chart is written.
"""

from __future__ import annotations

import pytest

from bench import adr_bench, seeding
from loadtest import capacity
from tests.servers import server_env


def test_histogram_percentile_is_nearest_rank_over_buckets():
    hist = {10.0: 90, 50.0: 9, 300.0: 1}
    assert capacity.histogram_percentile(hist, 50) == 10.0
    assert capacity.histogram_percentile(hist, 95) == 50.0
    assert capacity.histogram_percentile(hist, 99) == 50.0
    assert capacity.histogram_percentile(hist, 100) == 300.0
    assert capacity.histogram_percentile({}, 99) is None


def test_summarize_merges_histograms_and_separates_http_from_deliveries():
    entries = [
        {"method": "GET", "name": "/a", "num_requests": 99, "num_failures": 1, "response_times": {"10": 99},
         "start_time": 100.0, "last_request_timestamp": 110.0},
        {"method": "POST", "name": "/b", "num_requests": 1, "num_failures": 0, "response_times": {"400": 1},
         "start_time": 100.0, "last_request_timestamp": 110.0},
        {"method": "WS", "name": "deliver own", "num_requests": 1, "num_failures": 0, "response_times": {"7": 1},
         "start_time": 100.0, "last_request_timestamp": 110.0},
        {"method": "WS", "name": "send typing", "num_requests": 1, "num_failures": 0, "response_times": {"0": 1},
         "start_time": 100.0, "last_request_timestamp": 110.0},
    ]  # fmt: skip
    summary = capacity.summarize(entries)
    assert summary["requests"] == 102 and summary["failures"] == 1
    assert summary["error_rate_pct"] == round(100 / 102, 3)
    assert summary["rps"] == 10.2
    assert summary["http"] == {"requests": 100, "p50": 10.0, "p95": 10.0, "p99": 10.0}
    assert summary["ws_delivery"] == {"requests": 1, "p50": 7.0, "p95": 7.0, "p99": 7.0}


def test_judge_names_every_limit_a_step_broke():
    limits = capacity.Limits(error_limit_pct=0.1, p99_limit_ms=200.0, cpu_limit_pct=95.0)
    fine = {"requests": 1000, "error_rate_pct": 0.1, "http": {"p99": 200.0}, "ws_delivery": {"p99": None}}
    assert capacity.judge(fine, server_cpu_pct=189.0, cores=2, limits=limits) == []
    bad = {"requests": 1000, "error_rate_pct": 0.2, "http": {"p99": 210.0}, "ws_delivery": {"p99": 300.0}}
    reasons = capacity.judge(bad, server_cpu_pct=190.0, cores=2, limits=limits)
    assert reasons == [
        "error rate 0.2% > 0.1%",
        "HTTP p99 210 ms > 200 ms",
        "WebSocket delivery p99 300 ms > 200 ms",
        "server CPU pegged (190% of 200%)",
    ]
    assert not capacity.latency_only(reasons)
    assert capacity.latency_only(reasons[1:3])


def _missing_report() -> dict:
    return {
        "parts": {
            "db": adr_bench.part_result("failed", "bench_db exited with 1"),
            "ws": adr_bench.part_result("missing", "bench/ws_bench.py is not there"),
            "throughput": adr_bench.part_result("skipped", "--skip throughput"),
            "http": adr_bench.part_result("skipped", "--skip http"),
            "locust": adr_bench.part_result("failed", "stack did not start"),
        }
    }


def test_a_part_that_did_not_run_is_reported_not_measured_never_as_a_number():
    table = adr_bench.render_table(_missing_report(), adr_bench.Options())
    rows = table.splitlines()[2:]
    assert len(rows) == 6
    for row in rows:
        measured = row.split("|")[4]
        assert measured.strip().startswith("not measured ("), row
        assert "✓" not in measured and "✗" not in measured
    assert "bench_db exited with 1" in table and "bench/ws_bench.py is not there" in table


def test_measured_parts_fill_the_table_with_verdicts_against_both_targets():
    opts = adr_bench.Options(adr_users=500)
    step = {"users": 500, "held": True, "reasons": [], "http": {"p50": 5.0, "p95": 12.0, "p99": 30.0},
            "cache": {"hits": 97, "misses": 3, "hit_rate_pct": 97.0}}  # fmt: skip
    report = {
        "parts": {
            "db": adr_bench.part_result("ok", worst_db_p95_ms=1.5, worst_query="room_history", median_db_p95_ms=0.4, queries=9),
            "ws": adr_bench.part_result("ok", p99_ms=35.0, sockets=500, sent_rate=100.0, lost=0),
            "throughput": adr_bench.part_result("ok", rate=800.0, sent_rate=800.0, deliveries_per_s=3200.0, first_failing_rate=1000.0),
            "http": adr_bench.part_result("skipped", "--skip http"),
            "locust": adr_bench.part_result(
                "ok", capacity=2000, first_failing=3000, limit=["HTTP p99 250 ms > 200 ms"], steps=[step]
            ),
        }
    }
    table = adr_bench.render_table(report, opts)
    assert "| API p95 response time | < 200 ms | ≤ 20 ms | 12 ms" in table
    assert "(ADR ✓, ours ✓)" in table.splitlines()[2]
    assert "1.50 ms" in table and "room_history" in table
    assert "35.0 ms" in table and "(ADR ✓, ours ✗)" in table.splitlines()[4]
    assert "97.0%" in table
    assert "2,000 (highest step held; 3,000 failed: HTTP p99 250 ms > 200 ms) (ADR ✓, ours ✗)" in table
    assert "800 (zero loss" in table
    assert report["table"]["users"]["value"] == 2000.0


@pytest.mark.django_db(transaction=True)
def test_a_tiny_stepped_locust_run_against_the_stack_is_judged_and_charted(tmp_path):
    seeding.load_seed(users=4, projects=1, rooms=2, messages=200, progress=False, log=lambda _: None)
    opts = adr_bench.Options(
        steps=[2, 3], step_time=3.0, step_settle=1.0, spawn_rate=10.0, think_time=0.2, adr_users=3, confirm=0,
        p99_limit_ms=60_000.0, cpu_limit_pct=1000.0, work_dir=str(tmp_path),
        locust_args="--reply-timeout 60 --deliver-timeout 60",  # a busy machine is slow, not broken
    )  # fmt: skip
    test_services = server_env()
    env = {**adr_bench.server_env(opts), "DATABASE_URL": test_services["DATABASE_URL"], "REDIS_URL": test_services["REDIS_URL"]}

    with adr_bench.stack(1, env, adr_bench.logs_dir(opts)) as stack_:
        assert stack_.alive() and len(stack_.urls) == 1
        assert capacity.cache_stats(stack_.urls, reset=True) == {"hits": 0, "misses": 0, "hit_rate_pct": None, "families": {}}
        result = adr_bench.locust_capacity(opts, stack_)

    assert result["status"] == "ok", result["reason"]
    assert result["tokens"] == 3 and result["capacity"] == 3 and result["first_failing"] is None
    assert [s["users"] for s in result["steps"]] == [2, 3]
    for step in result["steps"]:
        assert step["held"] and step["reasons"] == []
        assert step["users_running"] == step["users"] and step["requests"] > 0
        assert step["error_rate_pct"] == 0 and step["top_failures"] == []
        assert step["http"]["p99"] is not None
        assert step["server_cpu_pct"] is not None and step["generator_cpu_pct"] is not None
        cache = step["cache"]
        assert cache["hits"] + cache["misses"] > 0 and 0 <= cache["hit_rate_pct"] <= 100

    report = {
        "parts": {"locust": result},
        "machine": {"cpus": 2, "cpu_model": "test", "ram_gb": 1},
        "started_at": "now",
    }
    assert "| 3 (every step held" in adr_bench.render_table(report, opts)
    png = tmp_path / "chart.png"
    assert adr_bench.chart(report, png, opts).startswith("chart:")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
