"""The staff performance page (/perf/): access, numbers that follow real traffic, charts."""

from __future__ import annotations

import math
import os

import pytest
from django.test import Client

from perf import cache as perf_cache
from perf import dashboard
from perf.cache import cache_key
from perf.dashboard import Histogram, quantile, sparkline, trends
from tests.servers import free_port


def _json(client: Client) -> dict:
    response = client.get("/perf/dashboard.json")
    assert response.status_code == 200
    return response.json()


def _count(view: str, method: str = "GET") -> int:
    from perf import metrics

    http = dashboard.histograms(dashboard.samples_by_name(metrics.collect()), dashboard.HTTP_LATENCY, "view", "method")
    hist = http.get((view, method))
    return int(hist.count) if hist is not None else 0


def _endpoint(data: dict, view: str, method: str = "GET") -> dict | None:
    for row in data["http"]["endpoints"]:
        if row["view"] == view and row["method"] == method:
            return row
    return None


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/perf/", "/perf/?partial=1", "/perf/dashboard.json"])
def test_anonymous_and_members_are_sent_to_the_admin_login(make_user, path) -> None:
    anonymous = Client().get(path)
    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/admin/login/")

    member = Client()
    member.force_login(make_user())
    response = member.get(path)
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")


@pytest.mark.django_db
def test_page_shows_endpoint_percentiles_after_requests(make_user, make_project, api_client, monkeypatch) -> None:
    # Every endpoint earlier tests in this process called is listed, not only the busiest.
    monkeypatch.setattr(dashboard, "ENDPOINTS_SHOWN", 10_000)
    staff = Client()
    staff.force_login(make_user(is_staff=True))
    owner = make_user()
    make_project(owner)
    before = _count("api:project_list")
    api = api_client(owner)
    for _ in range(3):
        assert api.get("/api/v1/projects").status_code == 200

    assert _count("api:project_list") == before + 3
    after = _endpoint(_json(staff), "api:project_list")
    assert after is not None and after["count"] == before + 3
    assert 0 < after["p50_ms"] <= after["p95_ms"] <= after["p99_ms"]

    page = staff.get("/perf/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "<code>api:project_list</code>" in html
    assert html.count('<figure class="perf-chart"><figcaption>') == len(dashboard.CHARTS)
    assert html.count('<svg role="img"') == len(dashboard.CHARTS)
    assert 'src="/static/perf/dashboard.js"' in html
    assert "Slowest statements" in html


@pytest.mark.django_db
def test_partial_is_the_live_part_alone(make_user) -> None:
    staff = Client()
    staff.force_login(make_user(is_staff=True))
    response = staff.get("/perf/?partial=1")
    assert response.status_code == 200
    html = response.content.decode()
    assert "<svg" in html and "Endpoints by requests" in html
    assert "<html" not in html and "Slowest statements" not in html


@pytest.mark.django_db
def test_cache_family_ratio_follows_lookups(make_user) -> None:
    staff = Client()
    staff.force_login(make_user(is_staff=True))
    key = cache_key("dashtest", 1)

    def family(data: dict) -> dict:
        rows = [row for row in data["cache"]["families"] if row["family"] == "dashtest"]
        return rows[0] if rows else {"hits": 0, "misses": 0}

    before = family(_json(staff))
    perf_cache.cached("dashtest", key, lambda: "value")  # miss, then stored
    for _ in range(3):
        perf_cache.cached("dashtest", key, lambda: "other")  # hits
    after = family(_json(staff))
    assert after["misses"] - before["misses"] == 1
    assert after["hits"] - before["hits"] == 3
    assert after["ratio"] == round(after["hits"] / (after["hits"] + after["misses"]), 4)


@pytest.mark.django_db
def test_cache_warmings_are_shown(make_user, make_project) -> None:
    from chat.warming import cache_warm

    staff = Client()
    staff.force_login(make_user(is_staff=True))
    make_project()  # a room (general) to warm
    before = _json(staff)["cache"]["warm"]
    report = cache_warm(rooms=5, pages=1)
    after = _json(staff)["cache"]["warm"]
    assert after["runs"] == before["runs"] + 1
    assert after["filled"] == before["filled"] + sum(filled for _, filled in report.families.values())
    assert after["filled"] > before["filled"]  # at least the room entry and its unread tail
    assert f"warmed {after['runs']} times" in staff.get("/perf/?partial=1").content.decode()


@pytest.mark.django_db
def test_trends_come_from_consecutive_samples(make_user, make_project, api_client, monkeypatch) -> None:
    monkeypatch.setattr(dashboard, "MIN_SPACING", 0.0)
    dashboard._history.clear()
    staff = Client()
    staff.force_login(make_user(is_staff=True))
    owner = make_user()
    make_project(owner)
    _json(staff)
    api = api_client(owner)
    for _ in range(4):
        api.get("/api/v1/projects")
    data = _json(staff)
    series = data["series"]
    assert len(series["requests_per_s"]) == 1
    # The four API calls and the first JSON request itself happened between the samples.
    assert series["requests_per_s"][0] > 0
    assert series["p95_ms"][0] is not None and series["p95_ms"][0] > 0


def test_quantile_interpolates_like_promql() -> None:
    buckets = [(0.1, 50.0), (0.2, 100.0), (math.inf, 100.0)]
    assert quantile(0.5, buckets) == pytest.approx(0.1)
    assert quantile(0.95, buckets) == pytest.approx(0.19)
    assert quantile(0.25, buckets) == pytest.approx(0.05)
    # A rank beyond the last finite bucket answers that bucket's bound.
    assert quantile(0.99, [(0.1, 10.0), (math.inf, 20.0)]) == pytest.approx(0.1)
    assert quantile(0.5, [(0.1, 0.0), (math.inf, 0.0)]) is None
    assert quantile(0.5, []) is None


def test_histogram_difference_gives_recent_quantiles() -> None:
    earlier = Histogram({0.01: 100.0, 0.1: 100.0, math.inf: 100.0}, 0.5)
    later = Histogram({0.01: 100.0, 0.1: 110.0, math.inf: 110.0}, 1.5)
    recent = later.minus(earlier)
    assert recent.count == 10
    assert recent.quantile(0.5) == pytest.approx(0.055)


def test_trends_rates_and_gaps() -> None:
    hist = Histogram({0.1: 0.0, math.inf: 0.0})
    point = {"requests": 0, "server_errors": 0, "hist": hist, "ws_connections": 1, "ws_events_out": 0,
             "ws_frames_in": 0, "messages": 0, "cache_hits": 0, "cache_lookups": 0, "pool_in_use": 0}
    points = [
        {**point, "t": 100.0},
        {**point, "t": 102.0, "requests": 10, "messages": 4, "cache_hits": 3, "cache_lookups": 4, "ws_connections": 3},
    ]
    series = trends(points)
    assert series["requests_per_s"] == [5.0]
    assert series["messages_per_s"] == [2.0]
    assert series["cache_hit_ratio"] == [0.75]
    assert series["ws_connections"] == [3]
    assert series["p95_ms"] == [None]  # no request landed in a bucket


def test_sparkline_draws_segments_and_escapes_its_title() -> None:
    svg = str(sparkline([1.0, 2.0, None, 4.0, 3.0], title="<b>x</b>", unit=" ms"))
    assert svg.count("<polyline") == 2
    assert "<b>x</b>" not in svg and "&lt;b&gt;x&lt;/b&gt;" in svg
    assert "<strong>3 ms</strong>" in svg and "max 4 ms" in svg
    empty = str(sparkline([], title="nothing"))
    assert "<polyline" not in empty and "no data yet" in empty


@pytest.mark.django_db
def test_page_shows_this_process_redis_and_postgres(make_user, monkeypatch) -> None:
    from django.db import connection
    from django_redis import get_redis_connection

    monkeypatch.setattr(dashboard, "MIN_SPACING", 0.0)
    staff = Client()
    staff.force_login(make_user(is_staff=True))
    _json(staff)
    data = _json(staff)
    # Without the multiprocess directory: this process, read from the operating system.
    [own] = [row for row in data["processes"] if row["pid"] == os.getpid()]
    assert own["cpu_seconds"] > 0 and own["rss_bytes"] > 0 and own["threads"] >= 1 and own["open_fds"] > 0
    assert own["cpu_percent"] is not None and own["cpu_percent"] >= 0  # from the first render to the second

    info = get_redis_connection("default").info()
    redis = data["redis"]
    assert redis["available"] and redis["used_memory"] > 0 and redis["connected_clients"] >= 1
    assert redis["maxmemory"] == info["maxmemory"] and redis["evicted_keys"] == info["evicted_keys"]

    with connection.cursor() as cursor:
        cursor.execute("SHOW max_connections")
        max_connections = int(cursor.fetchone()[0])
    postgres = data["postgres"]
    assert postgres["available"] and postgres["max_connections"] == max_connections
    assert 1 <= postgres["connections"] <= max_connections
    assert 0 < postgres["cache_hit_ratio"] <= 1 and postgres["commits"] > 0

    html = staff.get("/perf/?partial=1").content.decode()
    assert f'<tr data-pid="{os.getpid()}">' in html
    assert 'data-metric="redis-evicted"' in html and 'data-metric="pg-connections"' in html
    assert f"of max_connections {max_connections}" in html


@pytest.mark.django_db
def test_redis_evictions_and_its_memory_limit_are_shown(make_user, monkeypatch, tmp_path) -> None:
    """A Redis of its own that evicts (the shared one must not): the page reads it as it reads the app's."""
    import redis

    from perf import redis as perf_redis
    from tests.perf.operator_stack import evicting_redis, fill_until_evicted

    staff = Client()
    staff.force_login(make_user(is_staff=True))
    with evicting_redis(tmp_path) as url:
        evicted = fill_until_evicted(url)
        client = redis.Redis.from_url(url)
        monkeypatch.setattr(perf_redis, "sync_client", lambda: client)
        try:
            data = _json(staff)["redis"]
            html = staff.get("/perf/?partial=1").content.decode()
        finally:
            client.close()
    assert data["evicted_keys"] >= evicted > 0
    assert data["maxmemory"] == 4 * 2**20 and data["maxmemory_policy"] == "allkeys-lru"
    assert 0.5 < data["memory_ratio"] <= 1.1
    assert f'<span data-metric="redis-evicted">{data["evicted_keys"]:,}</span> keys evicted' in html


@pytest.mark.django_db
def test_page_says_when_redis_does_not_answer(make_user, monkeypatch) -> None:
    import redis

    from perf import redis as perf_redis

    staff = Client()
    staff.force_login(make_user(is_staff=True))
    closed = redis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.5)
    monkeypatch.setattr(perf_redis, "sync_client", lambda: closed)
    response = staff.get("/perf/?partial=1")
    assert response.status_code == 200
    assert "Redis did not answer INFO." in response.content.decode()
