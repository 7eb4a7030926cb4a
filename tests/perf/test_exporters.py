"""The operator's view end to end: the app's exporter and Debian's node, PostgreSQL and Redis exporters,
scraped by a real Prometheus with deploy/prometheus's configuration and rules.

Every ADR-008 "Key Metrics" group is queried through Prometheus's HTTP API
after real traffic: response times, the database, the cache (with a real
eviction), WebSockets and resources (CPU and memory of each server process,
the worker, the host). The Grafana dashboard may only use metrics Prometheus
holds at the end.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import psutil
import pytest
import yaml
from django.conf import settings
from prometheus_client import REGISTRY

from chatsite import env
from tests.perf.operator_stack import (
    ALERTS,
    DASHBOARD,
    evicting_redis,
    fill_until_evicted,
    metric_names,
    names_in,
    node_exporter,
    numbers,
    postgres_exporter,
    prometheus,
    query,
    redis_exporter,
    wait_for_value,
)
from tests.perf.test_metrics import metrics_stack
from tests.servers import background_worker
from tests.waiting import wait_until
from tests.wsclient import ChatSocket

R = "[1m]"

# Labelled counters the app defines that have no series before their first event (no test
# makes a socket shed events or a statement fail here): the dashboard may use them when the
# app's own registry has them.
EVENT_ONLY = {"chat_ws_shed_events_total", "django_db_errors_total"}


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        target["expr"].replace("$__rate_interval", "1m")
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]


def registry_names() -> set[str]:
    """Sample names of every metric family this process's registry defines (the app's modules are imported)."""
    import chat.metrics  # noqa: F401 - the app's own metrics
    import perf.metrics  # noqa: F401

    names = set()
    for family in REGISTRY.collect():
        names.add(family.name)
        names.add(family.name + "_total")
        names.update(sample.name for sample in family.samples)
    return names


def test_names_in_reads_metric_names_only() -> None:
    expr = (
        'sum by (instance, mode) (rate(node_cpu_seconds_total{mode!="idle"}[1m])) / on (instance) group_left '
        'count by (instance) (node_cpu_seconds_total{mode="idle"}) > 0.9 and redis_memory_max_bytes > 0 '
        'or histogram_quantile(0.95, sum by (le) (rate(x_bucket{view=~"api:.*"}[5m]))) * 1e3'
    )
    assert names_in(expr) == {"node_cpu_seconds_total", "redis_memory_max_bytes", "x_bucket"}


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(300)
def test_prometheus_answers_every_adr_metric_group(tmp_path, chat_world, make_token, make_message) -> None:
    room = chat_world["public"]
    make_message(room, chat_world["owner"], "hello")
    reader, listener = make_token(chat_world["member"]), make_token(chat_world["owner"])
    multiproc = tmp_path / "prometheus-multiproc"
    database = settings.DATABASES["default"]

    with (
        metrics_stack(tmp_path, SERVER_WORKERS="2") as ([(port, supervisor)], metrics_port),
        background_worker(PROMETHEUS_MULTIPROC_DIR=str(multiproc), ENABLE_METRICS="true") as worker,
        node_exporter(tmp_path) as node,
        postgres_exporter(tmp_path, database) as pg,
        redis_exporter(tmp_path, env.REDIS_URL) as app_redis,
        evicting_redis(tmp_path) as small_url,
        redis_exporter(tmp_path, small_url, name="evicting-redis-exporter") as small_redis,
        prometheus(
            tmp_path,
            {"chat": [f"127.0.0.1:{metrics_port}"], "node": [node], "postgres": [pg], "redis": [app_redis, small_redis]},
        ) as base,
        httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {reader}"}, timeout=10) as api,
    ):

        def log_tail() -> str:
            return (tmp_path / "prometheus.log").read_text()[-2000:]

        def all_up() -> bool:
            try:
                targets = httpx.get(f"{base}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
            except httpx.HTTPError:
                return False  # still starting
            return len(targets) == 5 and all(t["health"] == "up" for t in targets)

        wait_until(all_up, timeout=60, interval=0.5, message=log_tail)

        def traffic() -> None:
            for _ in range(5):
                assert api.get(f"/api/v1/rooms/{room.id}/messages").status_code == 200
            assert api.get(f"/api/v1/projects/{room.project.slug}/rooms").status_code == 200

        def with_traffic(expr: str) -> list[float]:
            """``expr``'s values once it has a positive one, sending requests meanwhile (rates need new samples)."""

            def found() -> list[float] | None:
                traffic()
                values = numbers(base, expr)
                return values if values and max(values) > 0 else None

            return wait_until(found, timeout=60, interval=0.5, message=lambda: f"{expr}: {log_tail()}")

        # --- 1. Response times: p50, p95, p99, over all endpoints and per view ---------------------------
        http = "django_http_requests_latency_seconds_by_view_method_bucket"
        for q in (0.5, 0.95, 0.99):
            assert with_traffic(f"histogram_quantile({q}, sum by (le) (rate({http}{R})))")
        views = query(base, f"histogram_quantile(0.95, sum by (le, view) (rate({http}{R})))")
        assert "api:message_list" in {row["metric"].get("view") for row in views}

        # --- 4. WebSocket: connections, throughput, latency (a message posted to a subscribed socket) -------
        async def socket_scenario() -> None:
            sock = await ChatSocket.open(port, listener)
            await sock.send({"type": "subscribe", "room": room.id})
            await sock.until("subscribed")
            await asyncio.to_thread(wait_for_value, base, "sum(chat_ws_connections)", at_least=1)
            # A labelled counter's series starts at its first event: a rate needs a second one.
            for n, then_wait_for in [(1, 'sum(chat_ws_events_out_total{kind="message.new"})'), (2, None)]:
                response = await asyncio.to_thread(
                    api.post, f"/api/v1/rooms/{room.id}/messages", json={"body": f"watched {n}", "client_id": f"ops-{n}"}
                )
                assert response.status_code == 201, response.text
                got, _ = await sock.until("message.new")
                assert got["message"]["id"] == response.json()["id"]
                if then_wait_for:
                    await asyncio.to_thread(wait_for_value, base, then_wait_for, at_least=1)
            await sock.close()

        asyncio.run(socket_scenario())
        assert wait_for_value(base, f"sum(increase(chat_messages_created_total{R}))", at_least=2)
        assert wait_for_value(base, f'sum(rate(chat_ws_events_out_total{{kind="message.new"}}{R}))', above=0)
        assert wait_for_value(base, f"histogram_quantile(0.99, sum by (le) (rate(chat_ws_delivery_seconds_bucket{R})))", above=0)

        # --- 2. Database: statement time, pool, slow statements; PostgreSQL's own view -----------------------
        assert with_traffic(f"histogram_quantile(0.95, sum by (le) (rate(django_db_query_duration_seconds_bucket{R})))")
        assert wait_for_value(base, "sum(chat_db_pool_max_size)", at_least=1)  # sampled every 5 s
        assert numbers(base, "sum(chat_db_pool_in_use)") and numbers(base, "sum(chat_db_pool_errors_total)") == [0]
        assert numbers(base, "sum(chat_db_slow_queries_total)")
        assert numbers(base, "pg_up") == [1]
        connections = numbers(base, "sum(pg_stat_database_numbackends) / max(pg_settings_max_connections)")
        assert 0 < connections[0] < 1
        assert wait_for_value(base, f'sum(rate(pg_stat_database_xact_commit{{datname="{database["NAME"]}"}}{R}))', above=0)
        hit_ratio = numbers(base, "sum(pg_stat_database_blks_hit) / (sum(pg_stat_database_blks_hit) + sum(pg_stat_database_blks_read))")
        assert 0 < hit_ratio[0] <= 1
        assert numbers(base, f'pg_stat_database_deadlocks{{datname="{database["NAME"]}"}}') == [0]
        assert numbers(base, "pg_replication_lag") == [0]  # a primary

        # --- 3. Cache: hit and miss rate of the app's families; Redis's evictions ---------------------------
        ratio = with_traffic(
            f'sum(rate(chat_cache_requests_total{{result="hit"}}{R})) / sum(rate(chat_cache_requests_total{R}))'
        )
        assert 0 < ratio[0] <= 1
        assert numbers(base, f'sum(rate(chat_cache_requests_total{{result="miss"}}{R}))')
        evictions = query(base, "redis_evicted_keys_total")
        assert {row["metric"]["instance"] for row in evictions} == {app_redis, small_redis}
        evicted = fill_until_evicted(small_url)
        assert evicted > 0
        assert wait_for_value(base, f'redis_evicted_keys_total{{instance="{small_redis}"}}', at_least=evicted)
        assert wait_for_value(base, f'sum(rate(redis_evicted_keys_total{{instance="{small_redis}"}}{R}))', above=0)
        assert numbers(base, f'redis_memory_max_bytes{{instance="{small_redis}"}}') == [4 * 2**20]
        assert numbers(base, f'redis_memory_used_bytes{{instance="{app_redis}"}}')[0] > 0
        assert numbers(base, f'redis_connected_clients{{instance="{app_redis}"}}')[0] >= 1
        assert wait_for_value(base, f'rate(redis_commands_processed_total{{instance="{app_redis}"}}{R})', above=0)

        # --- 5. Resources: CPU and memory of each server process and the worker; the host --------------------
        servers = {int(row["metric"]["pid"]) for row in query(base, 'chat_process_cpu_seconds_total{role="server"}')}
        assert len(servers) == 2
        assert servers <= {child.pid for child in psutil.Process(supervisor.pid).children()}
        for pid, role in [(pid, "server") for pid in servers] + [(worker.pid, "chat_worker")]:
            selector = f'{{role="{role}",pid="{pid}"}}'
            assert numbers(base, f"chat_process_cpu_seconds_total{selector}")[0] > 0
            assert numbers(base, f"rate(chat_process_cpu_seconds_total{selector}{R})")  # a rate per process
            assert numbers(base, f"chat_process_resident_memory_bytes{selector}")[0] > 20 * 2**20
            assert numbers(base, f"chat_process_open_fds{selector}")[0] > 0
            assert numbers(base, f"chat_process_threads{selector}")[0] >= 2
            assert wait_for_value(base, f"chat_gc_pause_max_seconds{selector}")
        for pid in servers:
            assert wait_for_value(base, f'chat_event_loop_lag_max_seconds{{role="server",pid="{pid}"}}')
        busy = numbers(base, f'1 - avg(rate(node_cpu_seconds_total{{mode="idle"}}{R}))')
        assert 0 <= busy[0] <= 1
        available = numbers(base, "node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes")
        assert 0 < available[0] < 1
        # Network I/O: the host's interfaces (this test's own traffic is on loopback, which they leave out),
        # and what the app sent.
        assert wait_for_value(base, f"sum(rate(node_network_receive_bytes_total{R}))", at_least=0)
        assert numbers(base, f"sum(rate(node_network_transmit_bytes_total{R}))")
        assert numbers(base, f"sum(rate(chat_ws_bytes_out_total{R}))")[0] > 0
        assert with_traffic(f"sum(rate(django_http_responses_body_total_bytes_sum{R}))")

        # --- the rules: every one loads and evaluates ------------------------------------------------------
        expected = [rule["alert"] for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]

        def evaluated() -> list[dict]:
            groups = httpx.get(f"{base}/api/v1/rules", timeout=5).json()["data"]["groups"]
            rules = [rule for group in groups for rule in group["rules"]]
            return rules if rules and all(rule["health"] != "unknown" for rule in rules) else []

        rules = wait_until(evaluated, timeout=15, interval=0.5, message="the rules were never all evaluated")
        assert sorted(rule["name"] for rule in rules) == sorted(expected)
        assert [rule["name"] for rule in rules if rule["health"] != "ok"] == []
        firing = {a["labels"]["alertname"] for a in httpx.get(f"{base}/api/v1/alerts", timeout=5).json()["data"]["alerts"]}
        assert not firing & {"ChatMetricsDown", "ExporterDown", "PostgresDown", "RedisDown"}

        # --- the dashboard: valid queries over metrics this test saw ---------------------------------------
        seen = metric_names(base)
        used: set[str] = set()
        for expr in dashboard_exprs():
            query(base, expr)
            used |= names_in(expr)
        assert used - seen <= EVENT_ONLY, sorted(used - seen)
        assert used - seen <= registry_names()
