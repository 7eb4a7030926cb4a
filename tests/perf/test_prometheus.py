"""deploy/prometheus against the real tools (Debian package prometheus), and the compose file's monitoring services.

promtool checks the configuration and the rules and runs unit tests that make
each alert fire on made-up series (and stay quiet on healthy ones). A real
Prometheus scraping the app's exporter and the standard exporters, with the
dashboard's queries, is tests/perf/test_exporters.py.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.perf.operator_stack import ALERTS, CONFIG, POSTGRES_QUERIES, tool, version
from tests.servers import ROOT


def _tool(name: str) -> str:
    return tool(name)


def _rules() -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]}


def test_promtool_accepts_the_rules_and_the_config() -> None:
    rules = subprocess.run([_tool("promtool"), "check", "rules", str(ALERTS)], capture_output=True, text=True)
    assert rules.returncode == 0, rules.stdout + rules.stderr
    config = subprocess.run([_tool("promtool"), "check", "config", str(CONFIG)], capture_output=True, text=True)
    assert config.returncode == 0, config.stdout + config.stderr


def test_alerts_cover_the_adr_success_criteria() -> None:
    rules = _rules()
    expected = {
        "ApiLatencyP95High": "> 0.2",
        "DatabaseQueryP95High": "> 0.1",
        "CacheHitRateLow": "< 0.7",
        "WebSocketDeliveryP99High": "> 0.05",
        "HttpErrorRateHigh": "> 0.01",
        "DatabasePoolSaturated": "> 0.9",
    }
    for alert, threshold in expected.items():
        assert threshold in " ".join(rules[alert]["expr"].split()), alert
    assert "DatabasePoolExhausted" in rules and "ChatMetricsDown" in rules


def test_alerts_cover_the_host_postgresql_and_redis() -> None:
    rules = _rules()
    expected = {
        "HostCpuSaturated": ("node_cpu_seconds_total", "> 0.9"),
        "HostMemoryLow": ("node_memory_MemAvailable_bytes", "< 0.1"),
        "RedisEvicting": ("redis_evicted_keys_total", "> 0"),
        "RedisMemoryNearLimit": ("redis_memory_max_bytes", "> 0.9"),
        "PostgresConnectionsNearMax": ("pg_settings_max_connections", "> 0.8"),
        "PostgresDeadlocks": ("pg_stat_database_deadlocks", "> 0"),
        "PostgresReplicationLag": ("pg_replication_lag", "> 30"),
    }
    for alert, (metric, threshold) in expected.items():
        expr = " ".join(rules[alert]["expr"].split())
        assert metric in expr and threshold in expr, alert
    assert {"ExporterDown", "PostgresDown", "RedisDown"} <= set(rules)


def _alert(name: str, rules: dict[str, dict[str, Any]], **extra_labels: str) -> dict[str, Any]:
    return {
        "exp_labels": {"alertname": name, **rules[name]["labels"], **extra_labels},
        "exp_annotations": rules[name]["annotations"],
    }


def _adr_tests() -> list[dict[str, Any]]:
    """ADR-008's targets and the app's own failures: 30 minutes of made-up series, one sample a minute."""
    rules = _rules()
    bucket = "django_http_requests_latency_seconds_by_view_method_bucket"
    cache = "chat_cache_requests_total"
    series = [
        # API: every request between 0.3 s and 0.5 s (p95 0.49 s); a page view stays fast.
        {"series": f'{bucket}{{view="api:message_list",method="GET",le="0.3"}}', "values": "0+0x30"},
        {"series": f'{bucket}{{view="api:message_list",method="GET",le="0.5"}}', "values": "0+60x30"},
        {"series": f'{bucket}{{view="api:message_list",method="GET",le="+Inf"}}', "values": "0+60x30"},
        {"series": f'{bucket}{{view="room-detail",method="GET",le="0.05"}}', "values": "0+600x30"},
        {"series": f'{bucket}{{view="room-detail",method="GET",le="+Inf"}}', "values": "0+600x30"},
        # Database queries: fast.
        {"series": 'django_db_query_duration_seconds_bucket{alias="default",vendor="postgresql",le="0.01"}', "values": "0+100x30"},
        {"series": 'django_db_query_duration_seconds_bucket{alias="default",vendor="postgresql",le="+Inf"}', "values": "0+100x30"},
        # Cache: 50 % hits in "profiles", 90 % in "messages": 70 % overall is missed (0.7 exactly is not below).
        {"series": f'{cache}{{family="profiles",result="hit"}}', "values": "0+100x30"},
        {"series": f'{cache}{{family="profiles",result="miss"}}', "values": "0+100x30"},
        {"series": f'{cache}{{family="messages",result="hit"}}', "values": "0+90x30"},
        {"series": f'{cache}{{family="messages",result="miss"}}', "values": "0+10x30"},
        # Pool: 28 of 30 connections in use in one process, none waiting.
        {"series": 'chat_db_pool_in_use{alias="default"}', "values": "28x30"},
        {"series": 'chat_db_pool_max_size{alias="default"}', "values": "30x30"},
        {"series": 'chat_db_pool_waiting{alias="default"}', "values": "0x30"},
        {"series": 'chat_db_pool_errors_total{alias="default"}', "values": "0x30"},
        # WebSocket deliveries within 10 ms.
        {"series": 'chat_ws_delivery_seconds_bucket{le="0.01"}', "values": "0+100x30"},
        {"series": 'chat_ws_delivery_seconds_bucket{le="+Inf"}', "values": "0+100x30"},
        # 2 % of responses are 5xx.
        {"series": 'django_http_responses_total_by_status_view_method_total{status="200",view="room-detail",method="GET"}', "values": "0+98x30"},
        {"series": 'django_http_responses_total_by_status_view_method_total{status="503",view="room-detail",method="GET"}', "values": "0+2x30"},
        {"series": 'up{job="chat",instance="web:9090"}', "values": "1x30"},
    ]
    firing = ["ApiLatencyP95High", "CacheHitRateLow", "DatabasePoolSaturated", "HttpErrorRateHigh"]
    quiet = ["DatabaseQueryP95High", "WebSocketDeliveryP99High", "DatabasePoolExhausted", "ChatMetricsDown", "CacheErrors"]
    alerts = [{"eval_time": "25m", "alertname": name, "exp_alerts": [_alert(name, rules)]} for name in firing]
    alerts += [{"eval_time": "25m", "alertname": name, "exp_alerts": []} for name in quiet]
    # Not yet: each needs its `for:` duration first.
    alerts += [{"eval_time": "3m", "alertname": name, "exp_alerts": []} for name in firing]
    down = {
        "interval": "1m",
        "input_series": [{"series": 'up{job="chat",instance="web:9090"}', "values": "1 1 0 0 0 0 0"}],
        "alert_rule_test": [
            {"eval_time": "6m", "alertname": "ChatMetricsDown",
             "exp_alerts": [_alert("ChatMetricsDown", rules, job="chat", instance="web:9090")]}
        ],
    }
    # Sockets closed for not keeping up (2 a minute: 20 in 10 min) and failed publishes, beside a calm hour.
    websocket = {
        "interval": "1m",
        "input_series": [
            {"series": "chat_ws_slow_consumer_closes_total", "values": "0+2x30"},
            {"series": "chat_publish_failures_total", "values": "0+1x30"},
        ],
        "alert_rule_test": [
            {"eval_time": "25m", "alertname": "WebSocketSlowConsumers", "exp_alerts": [_alert("WebSocketSlowConsumers", rules)]},
            {"eval_time": "25m", "alertname": "PublishFailures", "exp_alerts": [_alert("PublishFailures", rules)]},
            {"eval_time": "4m", "alertname": "WebSocketSlowConsumers", "exp_alerts": []},  # 8 closes so far
        ],
    }
    calm = {
        "interval": "1m",
        "input_series": [
            {"series": "chat_ws_slow_consumer_closes_total", "values": "0+0.5x30"},  # 5 in 10 min
            {"series": "chat_publish_failures_total", "values": "0x30"},
        ],
        "alert_rule_test": [
            {"eval_time": "25m", "alertname": "WebSocketSlowConsumers", "exp_alerts": []},
            {"eval_time": "25m", "alertname": "PublishFailures", "exp_alerts": []},
        ],
    }
    # The other half: slow statements and deliveries, a pool with waiters, a failing cache.
    slow = {
        "interval": "1m",
        "input_series": [
            {"series": 'django_db_query_duration_seconds_bucket{alias="default",vendor="postgresql",le="0.1"}', "values": "0x30"},
            {"series": 'django_db_query_duration_seconds_bucket{alias="default",vendor="postgresql",le="0.25"}', "values": "0+100x30"},
            {"series": 'django_db_query_duration_seconds_bucket{alias="default",vendor="postgresql",le="+Inf"}', "values": "0+100x30"},
            {"series": 'chat_ws_delivery_seconds_bucket{le="0.05"}', "values": "0x30"},
            {"series": 'chat_ws_delivery_seconds_bucket{le="0.25"}', "values": "0+100x30"},
            {"series": 'chat_ws_delivery_seconds_bucket{le="+Inf"}', "values": "0+100x30"},
            {"series": 'chat_db_pool_waiting{alias="default"}', "values": "3x30"},
            {"series": "chat_cache_errors_total", "values": "0+5x30"},
        ],
        "alert_rule_test": [
            {"eval_time": "25m", "alertname": name, "exp_alerts": [_alert(name, rules)]}
            for name in ("DatabaseQueryP95High", "WebSocketDeliveryP99High", "CacheErrors")
        ] + [
            {"eval_time": "25m", "alertname": "DatabasePoolExhausted", "exp_alerts": [_alert("DatabasePoolExhausted", rules)]},
        ],
    }
    return [{"interval": "1m", "input_series": series, "alert_rule_test": alerts}, down, websocket, calm, slow]


def test_alerts_fire_on_bad_series_and_not_on_good_ones(tmp_path: Path) -> None:
    _promtool_test(tmp_path, _adr_tests())




def _promtool_test(tmp_path: Path, tests: list[dict[str, Any]]) -> None:
    shutil.copy(ALERTS, tmp_path / "alerts.yml")
    spec = {"rule_files": ["alerts.yml"], "evaluation_interval": "1m", "tests": tests}
    (tmp_path / "alerts_test.yml").write_text(yaml.safe_dump(spec, sort_keys=False))
    done = subprocess.run(
        [_tool("promtool"), "test", "rules", "alerts_test.yml"], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _host_and_services_tests() -> list[dict[str, Any]]:
    """Two of each: a saturated host, Redis and PostgreSQL beside a healthy one, 30 minutes, one sample a minute."""
    rules = _rules()
    cpu = "node_cpu_seconds_total"
    series = [
        # busy: 3 s idle a minute per CPU (95 % busy); calm: 54 s (10 % busy).
        *({"series": f'{cpu}{{instance="busy",job="node",cpu="{n}",mode="idle"}}', "values": "0+3x30"} for n in (0, 1)),
        *({"series": f'{cpu}{{instance="calm",job="node",cpu="{n}",mode="idle"}}', "values": "0+54x30"} for n in (0, 1)),
        {"series": 'node_memory_MemAvailable_bytes{instance="busy",job="node"}', "values": "500000000x30"},
        {"series": 'node_memory_MemTotal_bytes{instance="busy",job="node"}', "values": "8000000000x30"},
        {"series": 'node_memory_MemAvailable_bytes{instance="calm",job="node"}', "values": "4000000000x30"},
        {"series": 'node_memory_MemTotal_bytes{instance="calm",job="node"}', "values": "8000000000x30"},
        # full: at 95 % of maxmemory and evicting; roomy: no maxmemory (0), nothing evicted.
        {"series": 'redis_evicted_keys_total{instance="full",job="redis"}', "values": "0+100x30"},
        {"series": 'redis_evicted_keys_total{instance="roomy",job="redis"}', "values": "0x30"},
        {"series": 'redis_memory_used_bytes{instance="full",job="redis"}', "values": "95000000x30"},
        {"series": 'redis_memory_max_bytes{instance="full",job="redis"}', "values": "100000000x30"},
        {"series": 'redis_memory_used_bytes{instance="roomy",job="redis"}', "values": "50000000x30"},
        {"series": 'redis_memory_max_bytes{instance="roomy",job="redis"}', "values": "0x30"},
        {"series": 'redis_up{instance="full",job="redis"}', "values": "1x30"},
        {"series": 'redis_up{instance="roomy",job="redis"}', "values": "1x30"},
        # crowded: 90 of 100 connections, a deadlock at minute 20, a standby 2 minutes behind; quiet: 10, none, 0 s.
        {"series": 'pg_stat_database_numbackends{instance="crowded",job="postgres",datname="chat"}', "values": "85x30"},
        {"series": 'pg_stat_database_numbackends{instance="crowded",job="postgres",datname="postgres"}', "values": "5x30"},
        {"series": 'pg_settings_max_connections{instance="crowded",job="postgres"}', "values": "100x30"},
        {"series": 'pg_stat_database_numbackends{instance="quiet",job="postgres",datname="chat"}', "values": "10x30"},
        {"series": 'pg_settings_max_connections{instance="quiet",job="postgres"}', "values": "100x30"},
        {"series": 'pg_stat_database_deadlocks{instance="crowded",job="postgres",datname="chat"}', "values": "0x19 1x10"},
        {"series": 'pg_stat_database_deadlocks{instance="quiet",job="postgres",datname="chat"}', "values": "0x30"},
        {"series": 'pg_replication_lag{instance="crowded",job="postgres"}', "values": "120x30"},
        {"series": 'pg_replication_lag{instance="quiet",job="postgres"}', "values": "0x30"},
        {"series": 'pg_up{instance="crowded",job="postgres"}', "values": "1x30"},
        {"series": 'pg_up{instance="quiet",job="postgres"}', "values": "1x30"},
        *({"series": f'up{{job="{job}",instance="{job}:1"}}', "values": "1x30"} for job in ("node", "postgres", "redis")),
    ]
    firing = {
        "HostCpuSaturated": [{"instance": "busy"}],
        "HostMemoryLow": [{"instance": "busy", "job": "node"}],
        "RedisEvicting": [{"instance": "full"}],
        "RedisMemoryNearLimit": [{"instance": "full", "job": "redis"}],
        "PostgresConnectionsNearMax": [{"instance": "crowded"}],
        "PostgresDeadlocks": [{"instance": "crowded", "datname": "chat"}],
        "PostgresReplicationLag": [{"instance": "crowded", "job": "postgres"}],
    }
    quiet = ["ExporterDown", "PostgresDown", "RedisDown"]
    checks = [
        {"eval_time": "25m", "alertname": name, "exp_alerts": [_alert(name, rules, **labels) for labels in found]}
        for name, found in firing.items()
    ]
    checks += [{"eval_time": "25m", "alertname": name, "exp_alerts": []} for name in quiet]
    # Not yet: the ones with a `for:` wait for it; the deadlock has not happened.
    checks += [{"eval_time": "3m", "alertname": name, "exp_alerts": []} for name in firing]
    down = {
        "interval": "1m",
        "input_series": [
            {"series": 'up{job="redis",instance="redis-exporter:9121"}', "values": "1 1 0 0 0 0 0 0 0"},
            {"series": 'up{job="chat",instance="web:9090"}', "values": "0x8"},  # not an exporter of this group
            {"series": 'pg_up{job="postgres",instance="postgres-exporter:9187"}', "values": "1 0 0 0 0"},
            {"series": 'redis_up{job="redis",instance="redis-exporter:9121"}', "values": "1 0 0 0 0"},
        ],
        "alert_rule_test": [
            {"eval_time": "8m", "alertname": "ExporterDown",
             "exp_alerts": [_alert("ExporterDown", rules, job="redis", instance="redis-exporter:9121")]},
            {"eval_time": "4m", "alertname": "ExporterDown", "exp_alerts": []},
            {"eval_time": "4m", "alertname": "PostgresDown",
             "exp_alerts": [_alert("PostgresDown", rules, job="postgres", instance="postgres-exporter:9187")]},
            {"eval_time": "4m", "alertname": "RedisDown",
             "exp_alerts": [_alert("RedisDown", rules, job="redis", instance="redis-exporter:9121")]},
        ],
    }
    return [{"interval": "1m", "input_series": series, "alert_rule_test": checks}, down]


def test_host_postgresql_and_redis_alerts_fire_on_bad_series_only(tmp_path: Path) -> None:
    _promtool_test(tmp_path, _host_and_services_tests())


def test_every_alert_has_a_unit_test_that_makes_it_fire() -> None:
    fired = {
        check["alertname"]
        for group in _adr_tests() + _host_and_services_tests()
        for check in group["alert_rule_test"]
        if check["exp_alerts"]
    }
    assert sorted(set(_rules()) - fired) == []


def test_the_postgres_exporter_queries_are_valid() -> None:
    queries = yaml.safe_load(POSTGRES_QUERIES.read_text())
    assert queries["pg_replication"]["metrics"] == [
        {"lag": {"usage": "GAUGE", "description": queries["pg_replication"]["metrics"][0]["lag"]["description"]}}
    ]


def test_compose_runs_the_exporters_the_tests_run() -> None:
    """The images are the versions of Debian's packages that tests/perf/test_exporters.py runs; every job has its service."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    images = {
        "node-exporter": ("prometheus-node-exporter", "quay.io/prometheus/node-exporter:v"),
        "postgres-exporter": ("prometheus-postgres-exporter", "quay.io/prometheuscommunity/postgres-exporter:v"),
        "redis-exporter": ("prometheus-redis-exporter", "oliver006/redis_exporter:v"),
    }
    for service, (program, image) in images.items():
        assert services[service]["image"] == image + version(program), service
    # Prometheus reaches each job's target: a compose service, or the host for node-exporter on the host's network.
    config = yaml.safe_load(CONFIG.read_text())
    for job in config["scrape_configs"]:
        for target in (t for group in job["static_configs"] for t in group["targets"]):
            host = target.rsplit(":", 1)[0]
            if host == "host.docker.internal":
                assert services["node-exporter"]["network_mode"] == "host"
                assert "host.docker.internal:host-gateway" in services["prometheus"]["extra_hosts"]
            else:
                assert host in services, target
    assert set(services["prometheus"]["depends_on"]) >= {"web", "node-exporter", "postgres-exporter", "redis-exporter"}
    assert "--extend.query-path=/etc/postgres-exporter/queries.yml" in services["postgres-exporter"]["command"][0]
    # The worker's metrics and resources are exported by web's exporter: same directory, same pids.
    worker, web = services["worker"], services["web"]
    assert worker["pid"] == "service:web"
    assert worker["environment"]["PROMETHEUS_MULTIPROC_DIR"] == web["environment"]["PROMETHEUS_MULTIPROC_DIR"]
    assert [v for v in worker["volumes"] if v.startswith("metrics:")] == [v for v in web["volumes"] if v.startswith("metrics:")]
    assert worker["depends_on"]["web"]["condition"] == "service_healthy"
