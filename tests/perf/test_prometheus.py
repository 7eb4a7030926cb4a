"""deploy/prometheus and deploy/grafana against the real tools (Debian package prometheus).

promtool checks the configuration and the rules and runs unit tests that make
each alert fire on made-up series; a real Prometheus scrapes a running server's
exporter and answers the dashboard's queries.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.perf.test_metrics import metrics_stack
from tests.servers import ROOT, free_port, stop_process
from tests.waiting import wait_until

DEPLOY = ROOT / "deploy"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
DASHBOARD = DEPLOY / "grafana" / "chat-performance.json"
P95 = "histogram_quantile(0.95, sum(rate(django_http_requests_latency_seconds_by_view_method_bucket[1m])) by (le))"


def _tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is missing: install the Debian package prometheus (.ci/run does)"
    return path


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


def _alert(name: str, rules: dict[str, dict[str, Any]], **extra_labels: str) -> dict[str, Any]:
    return {
        "exp_labels": {"alertname": name, **rules[name]["labels"], **extra_labels},
        "exp_annotations": rules[name]["annotations"],
    }


def test_alerts_fire_on_bad_series_and_not_on_good_ones(tmp_path: Path) -> None:
    """promtool unit tests: 30 minutes of made-up series, one sample a minute."""
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
    shutil.copy(ALERTS, tmp_path / "alerts.yml")
    tests = {
        "rule_files": ["alerts.yml"],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": series, "alert_rule_test": alerts}, down],
    }
    (tmp_path / "alerts_test.yml").write_text(yaml.safe_dump(tests, sort_keys=False))
    done = subprocess.run(
        [_tool("promtool"), "test", "rules", "alerts_test.yml"], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _query(base: str, expr: str) -> dict[str, Any]:
    response = httpx.get(f"{base}/api/v1/query", params={"query": expr}, timeout=10)
    body = response.json()
    assert body["status"] == "success", (expr, body)
    return body["data"]


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        target["expr"].replace("$__rate_interval", "1m")
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]


@pytest.mark.django_db(transaction=True)
def test_a_real_prometheus_scrapes_the_exporter(tmp_path, chat_world, make_token, make_message) -> None:
    room = chat_world["public"]
    make_message(room, chat_world["owner"], "hello")
    token = make_token(chat_world["member"])
    with metrics_stack(tmp_path) as ([(port, _)], metrics_port):
        config = yaml.safe_load(CONFIG.read_text())
        config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
        config["scrape_configs"][0]["static_configs"] = [{"targets": [f"127.0.0.1:{metrics_port}"]}]
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        shutil.copy(ALERTS, tmp_path / "alerts.yml")
        prom_port = free_port()
        assert prom_port != metrics_port
        base = f"http://127.0.0.1:{prom_port}"
        prometheus = subprocess.Popen(
            [
                _tool("prometheus"),
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=(tmp_path / "prometheus.log").open("wb"),
        )
        try:
            client = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {token}"})
            found: dict[str, Any] = {}

            def scraped_and_evaluated() -> bool:
                # traffic for the histogram, a few requests each round
                for _ in range(5):
                    assert client.get(f"/api/v1/rooms/{room.id}/messages").status_code == 200
                try:
                    targets = httpx.get(f"{base}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
                    if targets and targets[0]["health"] == "up":
                        found["target"] = targets[0]
                    result = _query(base, P95)["result"]
                    if result and result[0]["value"][1] not in ("NaN", "+Inf"):
                        found["p95"] = float(result[0]["value"][1])
                except httpx.HTTPError:
                    pass  # Prometheus still starting
                return {"target", "p95"} <= set(found)

            def prometheus_log() -> str:
                return f"found {sorted(found)}; " + (tmp_path / "prometheus.log").read_text()[-3000:]

            wait_until(scraped_and_evaluated, timeout=90, interval=0.5, message=prometheus_log)
            client.close()
            assert found["target"]["labels"]["job"] == "chat"
            assert found["p95"] > 0  # the latency histogram has samples

            # Every rule loads and evaluates; every dashboard query is valid PromQL here.
            def evaluated_rules() -> list[dict[str, Any]]:
                groups = httpx.get(f"{base}/api/v1/rules", timeout=5).json()["data"]["groups"]
                rules = [rule for group in groups for rule in group["rules"]]
                return rules if rules and all(rule["health"] != "unknown" for rule in rules) else []

            rules = wait_until(evaluated_rules, timeout=15, interval=0.5, message="the rules were never all evaluated")
            assert len(rules) == len(_rules())
            assert [rule["name"] for rule in rules if rule["health"] != "ok"] == []
            for expr in _dashboard_exprs():
                _query(base, expr)
            assert _query(base, 'sum(chat_cache_requests_total{result="hit"})')["result"]
        finally:
            stop_process(prometheus, timeout=15)
