"""Metrics: real servers and the exporter after real traffic; the request log; the counters behind them."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import orjson
import pytest
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from chat import metrics as chat_metrics
from perf import metrics
from tests.servers import ROOT, _wait_for_port, app_servers, free_port, server_env, stop_process
from tests.waiting import wait_until
from tests.wsclient import ChatSocket

Scrape = dict[tuple[str, frozenset], float]


# --- a metrics stack: server processes and the exporter sharing one directory -----------


def scrape(port: int) -> Scrape:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Scrape, name: str, **labels: str) -> float:
    """Sum of the samples called ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, l), v in samples.items() if n == name and wanted <= l)


def wait_for(port: int, check: Callable[[Scrape], bool], timeout: float = 20) -> Scrape:
    """Scrape until ``check`` holds (events handled after a reply, or by a sampler); that scrape."""

    def checked() -> Scrape | None:
        samples = scrape(port)
        return samples if check(samples) else None

    return wait_until(checked, timeout=timeout, interval=0.2, message="no scrape passed the check")


@contextmanager
def metrics_stack(tmp_path: Path, servers: int = 1, **extra_env: str) -> Iterator[tuple[list, int]]:
    """``servers`` server processes and ``serve_metrics``, one PROMETHEUS_MULTIPROC_DIR."""
    directory = tmp_path / "prometheus-multiproc"
    directory.mkdir()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(directory), "ENABLE_METRICS": "true", **extra_env}
    with app_servers(servers, **env) as procs:
        port = free_port()
        exporter = subprocess.Popen(
            [sys.executable, "manage.py", "serve_metrics", "--port", str(port), "--bind", "127.0.0.1"],
            cwd=ROOT, env=server_env(**env), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        try:
            _wait_for_port(port, exporter)
            yield procs, port
        finally:
            stop_process(exporter)


def _api(port: int, token: str) -> httpx.Client:
    return httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {token}"}, timeout=10)


# --- real traffic -----------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_websocket_gauges_follow_connects_and_disconnects_across_processes(tmp_path, chat_world, make_token) -> None:
    room = chat_world["public"]
    token = make_token(chat_world["member"])

    async def scenario(port_a: int, port_b: int, metrics_port: int) -> None:
        base = scrape(metrics_port)
        connections = value(base, "chat_ws_connections")
        a = await ChatSocket.open(port_a, token)
        # hello is sent after the gauge moved
        assert value(scrape(metrics_port), "chat_ws_connections") == connections + 1
        b = await ChatSocket.open(port_b, token)
        both = scrape(metrics_port)
        assert value(both, "chat_ws_connections") == connections + 2  # summed over the two processes

        await a.send({"type": "subscribe", "room": room.id})
        await a.until("subscribed")
        await a.send({"type": "ping", "ref": 1})
        await a.until("pong")
        after = scrape(metrics_port)
        assert value(after, "chat_ws_subscriptions") == value(base, "chat_ws_subscriptions") + 1
        assert value(after, "chat_ws_frames_in_total", type="subscribe") == value(base, "chat_ws_frames_in_total", type="subscribe") + 1
        assert value(after, "chat_ws_frames_in_total", type="ping") == value(base, "chat_ws_frames_in_total", type="ping") + 1
        assert value(after, "chat_ws_frames_out_total") > value(base, "chat_ws_frames_out_total")
        assert value(after, "chat_ws_bytes_out_total") > value(base, "chat_ws_bytes_out_total")

        await a.close()
        one_left = wait_for(metrics_port, lambda s: value(s, "chat_ws_connections") == connections + 1)
        assert value(one_left, "chat_ws_connections") == connections + 1
        assert value(one_left, "chat_ws_subscriptions") == value(base, "chat_ws_subscriptions")
        await b.close()
        none_left = wait_for(metrics_port, lambda s: value(s, "chat_ws_connections") == connections)
        assert value(none_left, "chat_ws_connections") == connections

    with metrics_stack(tmp_path, servers=2) as (procs, metrics_port):
        (port_a, _), (port_b, _) = procs
        asyncio.run(scenario(port_a, port_b, metrics_port))


@pytest.mark.django_db(transaction=True)
def test_a_posted_message_moves_http_database_business_and_delivery_metrics(tmp_path, chat_world, make_token) -> None:
    room = chat_world["public"]
    sender, listener = make_token(chat_world["member"]), make_token(chat_world["owner"])

    async def scenario(port_a: int, port_b: int, metrics_port: int) -> None:
        sock = await ChatSocket.open(port_b, listener)
        await sock.send({"type": "subscribe", "room": room.id})
        await sock.until("subscribed")
        before = scrape(metrics_port)
        with _api(port_a, sender) as api:
            response = await asyncio.to_thread(
                api.post, f"/api/v1/rooms/{room.id}/messages", json={"body": "counted", "client_id": "m-1"}
            )
        assert response.status_code == 201, response.text
        got, _ = await sock.until("message.new")
        assert got["message"]["id"] == response.json()["id"]
        after = wait_for(
            metrics_port, lambda s: value(s, "chat_ws_delivery_seconds_count") > value(before, "chat_ws_delivery_seconds_count")
        )
        await sock.close()

        assert value(after, "chat_messages_created_total") == value(before, "chat_messages_created_total") + 1
        # django-ninja names one URL pattern per path: GET and POST share "api:message_list".
        latency = "django_http_requests_latency_seconds_by_view_method_count"
        assert value(after, latency, view="api:message_list", method="POST") == value(
            before, latency, view="api:message_list", method="POST"
        ) + 1
        status = "django_http_responses_total_by_status_view_method_total"
        assert value(after, status, status="201", view="api:message_list", method="POST") == value(
            before, status, status="201", view="api:message_list", method="POST"
        ) + 1
        # Bucket counts are cumulative; the +Inf bucket equals the count.
        assert value(
            after, "django_http_requests_latency_seconds_by_view_method_bucket", view="api:message_list", method="POST", le="+Inf"
        ) == value(after, latency, view="api:message_list", method="POST")
        assert value(after, "django_http_responses_body_total_bytes_count") > value(before, "django_http_responses_body_total_bytes_count")
        # The statements of the request, through django-prometheus's database backend over the pool.
        assert value(after, "django_db_execute_total", alias="default", vendor="postgresql") >= value(
            before, "django_db_execute_total", alias="default", vendor="postgresql"
        ) + 2
        assert value(after, "django_db_query_duration_seconds_count") > value(before, "django_db_query_duration_seconds_count")
        assert value(after, "chat_ws_events_out_total", kind="message.new") == value(before, "chat_ws_events_out_total", kind="message.new") + 1
        assert value(after, "chat_ws_delivery_seconds_count") == value(before, "chat_ws_delivery_seconds_count") + 1

    with metrics_stack(tmp_path, servers=2) as (procs, metrics_port):
        (port_a, _), (port_b, _) = procs
        asyncio.run(scenario(port_a, port_b, metrics_port))


@pytest.mark.django_db(transaction=True)
def test_cache_pool_and_active_users_after_reads(tmp_path, chat_world, make_token, make_message) -> None:
    room = chat_world["public"]
    make_message(room, chat_world["owner"], "cached later")
    token = make_token(chat_world["member"])
    with metrics_stack(tmp_path) as ([(port, _)], metrics_port):
        before = scrape(metrics_port)
        with _api(port, token) as api:
            assert api.get(f"/api/v1/rooms/{room.id}/messages").status_code == 200
            first = scrape(metrics_port)
            assert api.get(f"/api/v1/rooms/{room.id}/messages").status_code == 200
            # The room list is read with a plain cache get (django-prometheus counts gets, not get_many).
            assert api.get(f"/api/v1/projects/{room.project.slug}/rooms").status_code == 200
        second = scrape(metrics_port)

        hits = "chat_cache_requests_total"
        assert value(first, hits, result="miss") > value(before, hits, result="miss")
        assert value(second, hits, result="hit") > value(first, hits, result="hit")
        # The first read renders the page (a miss in family pages; its message was written through
        # to the cache when it was sent); the second is the rendered page.
        assert value(first, hits, family="pages", result="miss") >= value(before, hits, family="pages", result="miss") + 1
        assert value(first, hits, family="messages", result="hit") >= value(before, hits, family="messages", result="hit") + 1
        assert value(second, hits, family="pages", result="hit") >= value(first, hits, family="pages", result="hit") + 1
        assert value(second, "django_cache_get_total", backend="redis") > value(before, "django_cache_get_total", backend="redis")

        # The pool and active users are sampled by each server's background thread.
        sampled = wait_for(
            metrics_port, lambda s: value(s, "chat_db_pool_size") >= 1 and value(s, "chat_active_users") >= 1
        )
        assert value(sampled, "chat_db_pool_size", alias="default") >= 1
        assert value(sampled, "chat_db_pool_max_size", alias="default") >= value(sampled, "chat_db_pool_size")
        assert value(sampled, "chat_active_users") == 1  # one user made requests


@pytest.mark.django_db(transaction=True)
def test_a_killed_server_leaves_no_connections_behind(tmp_path, chat_world, make_token) -> None:
    token = make_token(chat_world["member"])

    async def scenario(port: int, proc: subprocess.Popen, metrics_port: int) -> None:
        connections = value(scrape(metrics_port), "chat_ws_connections")
        sock = await ChatSocket.open(port, token)
        assert value(scrape(metrics_port), "chat_ws_connections") == connections + 1
        counted = value(scrape(metrics_port), "chat_ws_frames_out_total")
        os.kill(proc.pid, signal.SIGKILL)  # no disconnect handler runs
        proc.wait(timeout=10)
        after = scrape(metrics_port)
        # The exporter drops a dead process's live gauges; its counters still count.
        assert value(after, "chat_ws_connections") == connections
        assert value(after, "chat_ws_frames_out_total") == counted
        sock.ws.transport.abort()

    with metrics_stack(tmp_path) as ([(port, proc)], metrics_port):
        asyncio.run(scenario(port, proc, metrics_port))


@pytest.mark.django_db(transaction=True)
def test_metrics_are_not_on_the_public_site(tmp_path) -> None:
    with metrics_stack(tmp_path) as ([(port, _)], metrics_port):
        assert httpx.get(f"http://127.0.0.1:{port}/metrics").status_code == 404
        assert httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").status_code == 200


@pytest.mark.django_db(transaction=True)
def test_serve_script_runs_the_exporter_and_stops_everything(tmp_path) -> None:
    directory = tmp_path / "multiproc"
    directory.mkdir()
    stale = directory / "counter_999999.db"
    stale.write_bytes(b"left over from the last run")
    port, metrics_port = free_port(), free_port()
    assert port != metrics_port
    env = server_env(
        PY=sys.executable, PORT=str(port), METRICS_PORT=str(metrics_port),
        PROMETHEUS_MULTIPROC_DIR=str(directory), SERVE_WORKER="false",
    )
    proc = subprocess.Popen(
        ["bash", "scripts/serve.sh"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        _wait_for_port(port, proc)
        _wait_for_port(metrics_port, proc)
        assert not stale.exists()  # emptied once, before the servers started
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 200
        samples = scrape(metrics_port)
        assert value(samples, "django_http_requests_latency_seconds_by_view_method_count", view="healthz") == 1

        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        for closed in (port, metrics_port):
            with pytest.raises(OSError):
                socket.create_connection(("127.0.0.1", closed), timeout=1).close()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_exporter_needs_the_multiprocess_directory(monkeypatch) -> None:
    from chatsite import env

    monkeypatch.setattr(env, "PROMETHEUS_MULTIPROC_DIR", "")
    with pytest.raises(CommandError, match="PROMETHEUS_MULTIPROC_DIR is not set"):
        call_command("serve_metrics")


def test_metrics_off_installs_nothing() -> None:
    code = (
        "import django; django.setup(); from django.conf import settings as s; import json; "
        "print(json.dumps([s.METRICS_ENABLED, [m for m in s.MIDDLEWARE if 'rometheus' in m], "
        "s.DATABASES['default']['ENGINE'], s.CACHES['default']['BACKEND'], 'django_prometheus' in s.INSTALLED_APPS]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=server_env(ENABLE_METRICS="false"), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert orjson.loads(done.stdout) == [
        False, [], "django.db.backends.postgresql", "django_redis.cache.RedisCache", False
    ]
    off = server_env(ENABLE_METRICS="false")
    off.pop("PROMETHEUS_MULTIPROC_DIR", None)
    refused = subprocess.run(
        [sys.executable, "manage.py", "serve_metrics"], cwd=ROOT, env=off, capture_output=True, text=True, timeout=60
    )
    assert refused.returncode != 0 and "ENABLE_METRICS=false" in refused.stderr


# --- the request log --------------------------------------------------------------------


def _request_lines(caplog: Any) -> list[dict[str, Any]]:
    return [orjson.loads(r.getMessage()) for r in caplog.records if r.name == "perf.request"]


@pytest.mark.django_db
def test_one_request_log_line_with_its_totals(caplog, chat_world, make_message, api_client) -> None:
    room = chat_world["public"]
    make_message(room, chat_world["owner"], "hello")
    client = api_client(chat_world["member"])
    caplog.set_level(logging.INFO, logger="perf.request")
    # Forward from an id: a page that is read, not served rendered, so it runs a query.
    client.get(f"/api/v1/rooms/{room.id}/messages?after=0", headers={"X-Request-ID": "req-abc-1"})
    response = client.get(f"/api/v1/rooms/{room.id}/messages?after=0", headers={"X-Request-ID": "req-abc-2"})

    lines = _request_lines(caplog)
    assert [line["request_id"] for line in lines] == ["req-abc-1", "req-abc-2"]
    line = lines[-1]
    assert response["X-Request-ID"] == "req-abc-2"
    assert line["method"] == "GET" and line["path"] == f"/api/v1/rooms/{room.id}/messages"  # without the query string
    assert line["status"] == 200 and line["view"] == "api:message_list"
    assert line["user_id"] == chat_world["member"].id
    assert line["duration_ms"] > 0 and line["db_ms"] >= 0
    assert line["db_queries"] >= 1
    # the second read finds the message in the cache
    assert line["cache_hits"] >= 1
    assert lines[0]["cache_misses"] >= 1


@pytest.mark.django_db
def test_request_log_counts_the_same_queries_as_server_timing(caplog, make_user) -> None:
    staff = make_user(is_staff=True)
    client = Client()
    client.force_login(staff)
    caplog.set_level(logging.INFO, logger="perf.request")
    response = client.get("/admin/")
    line = _request_lines(caplog)[-1]
    assert f'desc="{line["db_queries"]} queries"' in response["Server-Timing"]
    assert line["user_id"] == staff.id and line["status"] == 200


@pytest.mark.django_db
def test_anonymous_request_is_logged_without_a_user_and_costs_no_query(caplog, django_assert_num_queries) -> None:
    caplog.set_level(logging.INFO, logger="perf.request")
    with django_assert_num_queries(0):
        response = Client().get("/healthz-does-not-exist")
    line = _request_lines(caplog)[-1]
    assert line["status"] == response.status_code == 404
    assert line["user_id"] is None and line["view"] is None and line["db_queries"] == 0


# --- the counters behind the metrics -------------------------------------------------------


@pytest.mark.django_db
def test_messages_created_counts_commits_only(chat_world, make_message, django_capture_on_commit_callbacks) -> None:
    room, author = chat_world["public"], chat_world["owner"]
    before = chat_metrics.MESSAGES_CREATED._value.get()
    with django_capture_on_commit_callbacks(execute=True):
        make_message(room, author, "kept")
    assert chat_metrics.MESSAGES_CREATED._value.get() == before + 1

    with pytest.raises(RuntimeError):
        with django_capture_on_commit_callbacks(execute=True):
            with transaction.atomic():
                make_message(room, author, "rolled back")
                raise RuntimeError
    assert chat_metrics.MESSAGES_CREATED._value.get() == before + 1


@pytest.mark.django_db
def test_slow_statements_are_counted(settings) -> None:
    settings.SLOW_QUERY_THRESHOLD = 0.0
    before = metrics.DB_SLOW_QUERIES._value.get()
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.execute("SELECT 2")
    assert metrics.DB_SLOW_QUERIES._value.get() == before + 2


@pytest.mark.django_db
def test_pool_sample_reads_this_process_pool() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    metrics.sample_pools()
    pool = connection.pool
    stats = pool.get_stats()
    assert metrics.DB_POOL_SIZE.labels("default")._value.get() == stats["pool_size"] >= 1
    assert metrics.DB_POOL_MAX.labels("default")._value.get() == pool.max_size
    assert metrics.DB_POOL_IN_USE.labels("default")._value.get() >= 1  # this test holds one


@pytest.mark.django_db
def test_active_users_are_shared_through_redis_and_age_out() -> None:
    from django_redis import get_redis_connection

    redis = get_redis_connection("default")
    key = metrics.active_users_key()
    now = time.time()
    first, second, stale = 10**9 + 1, 10**9 + 2, 10**9 + 3
    metrics._seen.update({first: now, second: now, stale: now - metrics.ACTIVE_USERS_WINDOW - 1})
    metrics.flush_seen()
    metrics._seen.update({first: now + 1})  # seen again: still one user
    metrics.flush_seen()
    assert redis.zscore(key, str(first)) == now + 1
    assert redis.zscore(key, str(second)) == now
    assert redis.zscore(key, str(stale)) is None  # outside the window: trimmed
    assert metrics.active_users_count() >= 2
    assert 0 < redis.ttl(key) <= metrics.ACTIVE_USERS_WINDOW * 2
