"""Judging a load step: Locust's stats entries in, percentiles and a verdict out.

Plain functions (no Locust import), shared by the stepping shape
(loadtest/steps.py, inside Locust) and bench/adr_bench.py (outside).

A step holds, the Mattermost way, while
  * the error rate is at most ``error_limit_pct`` (0.1 %),
  * HTTP p99 and WebSocket delivery p99 are at most ``p99_limit_ms`` (200 ms),
  * the server processes' CPU is below ``cpu_limit_pct`` of all cores (95 %).
"""

from __future__ import annotations

import json
import math
import urllib.request
from dataclasses import dataclass
from typing import Any

# WebSocket entries that are deliveries (their time is send -> arrival).
DELIVERY_NAMES = ("deliver own", "recv message.new")
# Served by loadtest.stats_asgi in each server process the benchmark starts.
STATS_PATH = "/__bench__/cache-stats"


@dataclass(frozen=True)
class Limits:
    error_limit_pct: float = 0.1
    p99_limit_ms: float = 200.0
    cpu_limit_pct: float = 95.0  # of all cores


def histogram_percentile(hist: dict[float, int], p: float) -> float | None:
    """Nearest-rank percentile of a response-time histogram (ms bucket -> count), as Locust keeps them."""
    total = sum(hist.values())
    if not total:
        return None
    rank = math.ceil(p / 100 * total)
    seen = 0
    for value in sorted(hist):
        seen += hist[value]
        if seen >= rank:
            return value
    return max(hist)


def _is_http(entry: dict[str, Any]) -> bool:
    return entry["method"] != "WS"


def _is_delivery(entry: dict[str, Any]) -> bool:
    return entry["method"] == "WS" and entry["name"] in DELIVERY_NAMES


def summarize(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Totals and percentiles of Locust stats entries (``serialize_stats()``), histograms merged.

    ``http`` covers every HTTP request, ``ws_delivery`` the two delivery
    entries; WebSocket connects, subscribes and sends are in the totals (and
    the error rate) but not in either percentile group.
    """

    def merged(select: Any) -> dict[float, int]:
        hist: dict[float, int] = {}
        for e in entries:
            if select(e):
                for value, count in e["response_times"].items():
                    hist[float(value)] = hist.get(float(value), 0) + int(count)
        return hist

    def pcts(hist: dict[float, int]) -> dict[str, float | None]:
        return {f"p{p}": histogram_percentile(hist, p) for p in (50, 95, 99)}

    requests = sum(e["num_requests"] for e in entries)
    failures = sum(e["num_failures"] for e in entries)
    starts = [e["start_time"] for e in entries if e["num_requests"]]
    ends = [e["last_request_timestamp"] for e in entries if e["num_requests"] and e["last_request_timestamp"]]
    span = (max(ends) - min(starts)) if starts and ends else 0.0
    return {
        "requests": requests,
        "failures": failures,
        "error_rate_pct": round(100 * failures / requests, 3) if requests else None,
        "rps": round(requests / span, 1) if span else None,
        "http": {"requests": sum(e["num_requests"] for e in entries if _is_http(e)), **pcts(merged(_is_http))},
        "ws_delivery": {
            "requests": sum(e["num_requests"] for e in entries if _is_delivery(e)),
            **pcts(merged(_is_delivery)),
        },
        "entries": [
            {
                "type": e["method"],
                "name": e["name"],
                "requests": e["num_requests"],
                "failures": e["num_failures"],
                **pcts({float(k): int(v) for k, v in e["response_times"].items()}),
            }
            for e in entries
        ],
    }


def judge(summary: dict[str, Any], *, server_cpu_pct: float | None, cores: int, limits: Limits) -> list[str]:
    """Why the step failed (empty: it held). ``server_cpu_pct`` is in % of one core, summed."""
    reasons = []
    if not summary["requests"]:
        reasons.append("no requests")
    if (summary["error_rate_pct"] or 0) > limits.error_limit_pct:
        reasons.append(f"error rate {summary['error_rate_pct']}% > {limits.error_limit_pct}%")
    for key, label in (("http", "HTTP"), ("ws_delivery", "WebSocket delivery")):
        p99 = summary[key]["p99"]
        if p99 is not None and p99 > limits.p99_limit_ms:
            reasons.append(f"{label} p99 {p99:.0f} ms > {limits.p99_limit_ms:.0f} ms")
    if server_cpu_pct is not None and server_cpu_pct >= limits.cpu_limit_pct * cores:
        reasons.append(f"server CPU pegged ({server_cpu_pct:.0f}% of {cores * 100}%)")
    return reasons


def latency_only(reasons: list[str]) -> bool:
    """A failure on latency alone: worth measuring once more on a shared machine."""
    return bool(reasons) and all(" p99 " in r for r in reasons)


def cache_stats(base_urls: list[str], *, reset: bool = False) -> dict[str, Any] | None:
    """The cache counters of every server process (``loadtest.stats_asgi``), added up.

    With ``reset`` they are zeroed first. None when a server does not answer
    (it does not run ``loadtest.stats_asgi``, or is down).
    """
    families: dict[str, list[int]] = {}
    for url in base_urls:
        request = urllib.request.Request(url.rstrip("/") + STATS_PATH, method="POST" if reset else "GET")
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:
                answer = json.loads(resp.read())
        except (OSError, ValueError):
            return None
        for family, row in answer["families"].items():
            entry = families.setdefault(family, [0, 0])
            entry[0] += int(row["hits"])
            entry[1] += int(row["misses"])
    hits = sum(h for h, _ in families.values())
    misses = sum(m for _, m in families.values())
    return {
        "hits": hits,
        "misses": misses,
        "hit_rate_pct": round(100 * hits / (hits + misses), 2) if hits + misses else None,
        "families": {
            f: {"hits": h, "misses": m, "hit_rate_pct": round(100 * h / (h + m), 1) if h + m else None}
            for f, (h, m) in sorted(families.items())
        },
    }
