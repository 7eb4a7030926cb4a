"""The staff performance page (/perf/): live numbers from the metrics, small trend charts.

Numbers come from the same metrics Prometheus scrapes (:func:`perf.metrics.collect`):
in multiprocess mode they are the sum over every server process, otherwise
this process's. Quantiles are computed from histogram buckets the way
PromQL's ``histogram_quantile`` does (linear within the bucket), so they
agree with Grafana to the bucket's resolution.

Trends: each time the page (or its live part, which the page's script
fetches every ``POLL_SECONDS``) is rendered, a sample of the counters is kept
in an in-process ring buffer; rates and recent p95 are the differences
between consecutive samples. The buffer belongs to the process that served
the page, so with several processes each one draws the stretch it saw.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any, Iterable

from django.contrib import admin
from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from chatsite import env
from perf import metrics, process
from perf.db import pool_stats

logger = logging.getLogger(__name__)

HTTP_LATENCY = "django_http_requests_latency_seconds_by_view_method"
HTTP_STATUS = "django_http_responses_total_by_status_total"
DB_DURATION = "django_db_query_duration_seconds"
WS_DELIVERY = "chat_ws_delivery_seconds"
ENDPOINTS_SHOWN = 20
SLOW_STATEMENTS_SHOWN = 5
POLL_SECONDS = 5
HISTORY = 120  # samples kept: ten minutes at the page's poll interval
MIN_SPACING = 1.0  # seconds: renders closer together than this share one sample

Labels = tuple[str, ...]


# --- reading samples -----------------------------------------------------------------


def samples_by_name(families: Iterable[Any]) -> dict[str, list[Any]]:
    """Every sample of every family, grouped by sample name (``x_total``, ``x_bucket`` …)."""
    found: dict[str, list[Any]] = defaultdict(list)
    for family in families:
        for sample in family.samples:
            found[sample.name].append(sample)
    return found


def total(samples: dict[str, list[Any]], name: str, **match: str) -> float:
    """Sum of the samples called ``name`` whose labels include ``match``."""
    return sum(
        s.value for s in samples.get(name, ()) if all(s.labels.get(k) == v for k, v in match.items())
    )


def by_label(samples: dict[str, list[Any]], name: str, *labels: str) -> dict[Labels, float]:
    out: dict[Labels, float] = defaultdict(float)
    for s in samples.get(name, ()):
        out[tuple(s.labels.get(label, "") for label in labels)] += s.value
    return dict(out)


@dataclass
class Histogram:
    """Cumulative bucket counts by upper bound (``inf`` included), plus sum and count."""

    buckets: dict[float, float] = field(default_factory=dict)
    sum: float = 0.0

    @property
    def count(self) -> float:
        return self.buckets.get(math.inf, 0.0)

    def add(self, other: "Histogram") -> None:
        for le, value in other.buckets.items():
            self.buckets[le] = self.buckets.get(le, 0.0) + value
        self.sum += other.sum

    def minus(self, earlier: "Histogram") -> "Histogram":
        return Histogram(
            {le: value - earlier.buckets.get(le, 0.0) for le, value in self.buckets.items()}, self.sum - earlier.sum
        )

    def quantile(self, q: float) -> float | None:
        return quantile(q, sorted(self.buckets.items()))


def histograms(samples: dict[str, list[Any]], name: str, *labels: str) -> dict[Labels, Histogram]:
    """The histogram ``name`` per combination of ``labels`` (others summed away)."""
    out: dict[Labels, Histogram] = defaultdict(Histogram)
    for s in samples.get(name + "_bucket", ()):
        key = tuple(s.labels.get(label, "") for label in labels)
        le = float(s.labels["le"])
        out[key].buckets[le] = out[key].buckets.get(le, 0.0) + s.value
    for s in samples.get(name + "_sum", ()):
        out[tuple(s.labels.get(label, "") for label in labels)].sum += s.value
    return dict(out)


def merged(parts: Iterable[Histogram]) -> Histogram:
    result = Histogram()
    for part in parts:
        result.add(part)
    return result


def quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """PromQL's ``histogram_quantile`` over sorted ``(upper bound, cumulative count)``.

    None without observations. A rank in the ``+Inf`` bucket answers the
    highest finite bound (what Prometheus does too).
    """
    if not buckets or buckets[-1][0] != math.inf:
        return None
    observed = buckets[-1][1]
    if observed <= 0:
        return None
    rank = q * observed
    lower, below = 0.0, 0.0
    for upper, count in buckets:
        if count >= rank:
            if upper == math.inf:
                return lower
            if count == below:
                return upper
            return lower + (upper - lower) * (rank - below) / (count - below)
        lower, below = upper, count
    return lower


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 2)


def _percentiles(hist: Histogram) -> dict[str, Any]:
    return {
        "count": int(hist.count),
        "p50_ms": _ms(hist.quantile(0.50)),
        "p95_ms": _ms(hist.quantile(0.95)),
        "p99_ms": _ms(hist.quantile(0.99)),
        "mean_ms": _ms(hist.sum / hist.count) if hist.count else None,
    }


# --- processes, Redis and PostgreSQL -------------------------------------------------------

# (time, CPU seconds) of each process at the last render by this process: CPU % is the difference.
_cpu_seen: dict[int, tuple[float, float]] = {}
_cpu_lock = threading.Lock()


def processes(families: list[Any], now: float) -> list[dict[str, Any]]:
    """CPU, memory, descriptors, threads, GC pause and loop lag of every registered process
    (all of them in multiprocess mode, else this one)."""
    # Without the multiprocess directory the gauges are this process's own, without a pid label.
    pid = None if env.PROMETHEUS_MULTIPROC_DIR else os.getpid()
    known = process.registered(families, default_pid=pid)
    published = process.per_process(families, default_pid=pid)
    if not known and pid is not None:
        known = [(pid, "this process", 0.0)]  # a process that never registered (development server, tests)
    rows = []
    with _cpu_lock:
        for pid, role, started in known:
            found = process.read(pid, started or None)
            if found is None:
                continue
            before = _cpu_seen.get(pid)
            _cpu_seen[pid] = (now, found["cpu_seconds"])
            cpu_percent = None
            if before is not None and now - before[0] >= MIN_SPACING:
                cpu_percent = round(100.0 * max(0.0, found["cpu_seconds"] - before[1]) / (now - before[0]), 1)
            own = published.get((pid, role), {})
            rows.append({
                "role": role,
                "pid": pid,
                "cpu_seconds": round(found["cpu_seconds"], 2),
                "cpu_percent": cpu_percent,
                "rss_bytes": found["rss_bytes"],
                "open_fds": found["open_fds"],
                "threads": found["threads"],
                "gc_pause_max_ms": _ms(own.get("gc_pause_max")),
                "loop_lag_max_ms": _ms(own.get("loop_lag_max")),
            })
        for pid in set(_cpu_seen) - {row["pid"] for row in rows}:
            del _cpu_seen[pid]
    rows.sort(key=lambda row: (row["role"] != process.ROLE_SERVER, row["role"], row["pid"]))
    return rows


def redis_health() -> dict[str, Any]:
    """Memory against maxmemory, evictions, clients, commands per second and keyspace hits of the app's Redis."""
    from perf.redis import sync_client

    client = sync_client()
    if client is None:
        return {"available": False, "reason": "No Redis: the embedded mode keeps the cache in the process."}
    try:
        info = client.info()
    except Exception:  # noqa: BLE001 - the page must render while Redis is down
        logger.warning("redis INFO failed", exc_info=True)
        return {"available": False, "reason": "Redis did not answer INFO."}
    used, limit = int(info.get("used_memory", 0)), int(info.get("maxmemory", 0))
    hits, misses = int(info.get("keyspace_hits", 0)), int(info.get("keyspace_misses", 0))
    return {
        "available": True,
        "used_memory": used,
        "maxmemory": limit,
        "memory_ratio": _ratio(used, limit),
        "maxmemory_policy": info.get("maxmemory_policy"),
        "evicted_keys": int(info.get("evicted_keys", 0)),
        "connected_clients": int(info.get("connected_clients", 0)),
        "ops_per_sec": int(info.get("instantaneous_ops_per_sec", 0)),
        "keyspace_hit_ratio": _ratio(hits, hits + misses),
    }


def postgres_health() -> dict[str, Any]:
    """Connections against max_connections, and this database's buffer cache hit ratio, commits, rollbacks, deadlocks."""
    from perf.selectors import server_activity

    try:
        return server_activity()
    except Exception:  # noqa: BLE001 - the page must render while the database is down
        logger.warning("database activity read failed", exc_info=True)
        return {"available": False, "reason": "The database did not answer."}


# --- the snapshot ----------------------------------------------------------------------


def snapshot() -> dict[str, Any]:
    """Everything the page shows, as plain data (also served as JSON)."""
    collected = metrics.collect()
    now = time.time()
    samples = samples_by_name(collected)
    http = histograms(samples, HTTP_LATENCY, "view", "method")
    endpoints = [
        {"view": view, "method": method, **_percentiles(hist)} for (view, method), hist in http.items() if hist.count
    ]
    endpoints.sort(key=lambda row: -row["count"])
    statuses = by_label(samples, HTTP_STATUS, "status")
    requests = sum(statuses.values())
    server_errors = sum(v for (status,), v in statuses.items() if status.startswith("5"))

    families = by_label(samples, "chat_cache_requests_total", "family", "result")
    cache = []
    for family in sorted({f for f, _ in families}):
        hits, misses = families.get((family, "hit"), 0.0), families.get((family, "miss"), 0.0)
        cache.append({"family": family, "hits": int(hits), "misses": int(misses), "ratio": _ratio(hits, hits + misses)})
    cache_hits = sum(row["hits"] for row in cache)
    cache_lookups = cache_hits + sum(row["misses"] for row in cache)

    return {
        "time": now,
        "multiprocess": bool(env.PROMETHEUS_MULTIPROC_DIR),
        "http": {
            "overall": _percentiles(merged(http.values())),
            "endpoints": endpoints[:ENDPOINTS_SHOWN],
            "responses": int(requests),
            "server_errors": int(server_errors),
            "by_status": {status: int(v) for (status,), v in sorted(statuses.items())},
        },
        "db": {
            "queries": int(total(samples, "django_db_execute_total")),
            "errors": int(total(samples, "django_db_errors_total")),
            "slow_queries": int(total(samples, "chat_db_slow_queries_total")),
            "duration": _percentiles(merged(histograms(samples, DB_DURATION).values())),
            "pool": {
                "this_process": pool_stats(),
                "size": int(total(samples, "chat_db_pool_size")),
                "max_size": int(total(samples, "chat_db_pool_max_size")),
                "in_use": int(total(samples, "chat_db_pool_in_use")),
                "waiting": int(total(samples, "chat_db_pool_waiting")),
                "errors": int(total(samples, "chat_db_pool_errors_total")),
            },
        },
        "cache": {
            "families": cache,
            "hits": cache_hits,
            "lookups": cache_lookups,
            "ratio": _ratio(cache_hits, cache_lookups),
            "errors": int(total(samples, "chat_cache_errors_total")),
            # The background worker's warmings (chat.warming), all processes.
            "warm": {
                "runs": int(total(samples, "chat_cache_warm_runs_total")),
                "seconds": round(total(samples, "chat_cache_warm_seconds_total"), 2),
                "filled": int(total(samples, "chat_cache_warm_filled_total")),
            },
        },
        "ws": {
            "connections": int(total(samples, "chat_ws_connections")),
            "subscriptions": int(total(samples, "chat_ws_subscriptions")),
            "frames_in": {k[0]: int(v) for k, v in sorted(by_label(samples, "chat_ws_frames_in_total", "type").items())},
            "events_out": {k[0]: int(v) for k, v in sorted(by_label(samples, "chat_ws_events_out_total", "kind").items())},
            "frames_out": int(total(samples, "chat_ws_frames_out_total")),
            "bytes_out": int(total(samples, "chat_ws_bytes_out_total")),
            "shed": int(total(samples, "chat_ws_shed_events_total")),
            "slow_closes": int(total(samples, "chat_ws_slow_consumer_closes_total")),
            "resyncs": int(total(samples, "chat_ws_resyncs_total")),
            "gap_fills": int(total(samples, "chat_ws_gap_fills_total")),
            "delivery": _percentiles(merged(histograms(samples, WS_DELIVERY).values())),
        },
        "business": {
            "messages_created": int(total(samples, "chat_messages_created_total")),
            "active_users": metrics.active_users_count(),
        },
        "processes": processes(collected, now),
        "redis": redis_health(),
        "postgres": postgres_health(),
        "_http_hist": merged(http.values()),
    }


def _ratio(part: float, whole: float) -> float | None:
    return round(part / whole, 4) if whole else None


# --- trends ------------------------------------------------------------------------------

_history: deque[dict[str, Any]] = deque(maxlen=HISTORY)
_history_lock = threading.Lock()


def _point(snap: dict[str, Any]) -> dict[str, Any]:
    """What a trend needs from a snapshot: counters, a few gauges, the request histogram."""
    return {
        "t": snap["time"],
        "requests": snap["http"]["overall"]["count"],
        "server_errors": snap["http"]["server_errors"],
        "hist": snap["_http_hist"],
        "ws_connections": snap["ws"]["connections"],
        "ws_events_out": sum(snap["ws"]["events_out"].values()),
        "ws_frames_in": sum(snap["ws"]["frames_in"].values()),
        "messages": snap["business"]["messages_created"],
        "cache_hits": snap["cache"]["hits"],
        "cache_lookups": snap["cache"]["lookups"],
        "pool_in_use": snap["db"]["pool"]["in_use"] or snap["db"]["pool"]["this_process"].get("in_use", 0),
        "cpu_percent": _sum_known(row["cpu_percent"] for row in snap["processes"]),
        "rss_bytes": sum(row["rss_bytes"] for row in snap["processes"]),
        "redis_evicted": snap["redis"].get("evicted_keys"),
    }


def _sum_known(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return round(sum(known), 1) if known else None


def record(snap: dict[str, Any]) -> list[dict[str, Any]]:
    """Keep ``snap`` in the ring buffer (unless the last sample is too recent); return the buffer."""
    point = _point(snap)
    with _history_lock:
        if not _history or point["t"] - _history[-1]["t"] >= MIN_SPACING:
            _history.append(point)
        return list(_history)


def trends(points: list[dict[str, Any]]) -> dict[str, list[float | None]]:
    """Per interval between consecutive samples: rates, recent p95, and gauges."""
    series: dict[str, list[float | None]] = defaultdict(list)
    for before, after in zip(points, points[1:]):
        seconds = after["t"] - before["t"]
        if seconds <= 0:
            continue

        def rate(key: str) -> float:
            return max(0.0, after[key] - before[key]) / seconds

        series["requests_per_s"].append(round(rate("requests"), 3))
        series["p95_ms"].append(_ms(after["hist"].minus(before["hist"]).quantile(0.95)))
        series["errors_per_s"].append(round(rate("server_errors"), 3))
        series["ws_connections"].append(after["ws_connections"])
        series["ws_events_out_per_s"].append(round(rate("ws_events_out"), 3))
        series["ws_frames_in_per_s"].append(round(rate("ws_frames_in"), 3))
        series["messages_per_s"].append(round(rate("messages"), 3))
        lookups = after["cache_lookups"] - before["cache_lookups"]
        hits = after["cache_hits"] - before["cache_hits"]
        series["cache_hit_ratio"].append(round(hits / lookups, 4) if lookups > 0 else None)
        series["pool_in_use"].append(after["pool_in_use"])
        series["cpu_percent"].append(after.get("cpu_percent"))
        rss = after.get("rss_bytes")
        series["rss_mb"].append(round(rss / 2**20, 1) if rss is not None else None)
        evicted = [before.get("redis_evicted"), after.get("redis_evicted")]
        series["redis_evictions_per_s"].append(
            round(max(0.0, evicted[1] - evicted[0]) / seconds, 3) if None not in evicted else None
        )
    return dict(series)


CHARTS = (
    ("requests_per_s", "Requests", "/s"),
    ("p95_ms", "HTTP p95", " ms"),
    ("errors_per_s", "5xx responses", "/s"),
    ("ws_connections", "WebSocket connections", ""),
    ("ws_events_out_per_s", "WebSocket events out", "/s"),
    ("ws_frames_in_per_s", "WebSocket frames in", "/s"),
    ("messages_per_s", "Messages created", "/s"),
    ("cache_hit_ratio", "Cache hit ratio", ""),
    ("pool_in_use", "Pool connections in use", ""),
    ("cpu_percent", "CPU, all processes", " % of a core"),
    ("rss_mb", "Resident memory, all processes", " MB"),
    ("redis_evictions_per_s", "Redis evictions", "/s"),
)


def sparkline(values: list[float | None], *, title: str, unit: str = "", width: int = 240, height: int = 48) -> SafeString:
    """A small server-rendered SVG line chart; gaps (None) break the line."""
    known = [v for v in values if v is not None]
    top = max(known) if known else 0.0
    scale = top if top > 0 else 1.0
    step = width / max(1, len(values) - 1)
    lines: list[list[str]] = [[]]
    for i, value in enumerate(values):
        if value is None:
            lines.append([])
            continue
        y = height - 2 - (value / scale) * (height - 4)
        lines[-1].append(f"{i * step:.1f},{y:.1f}")
    polylines = format_html_join(
        "", '<polyline fill="none" stroke="currentColor" stroke-width="1.5" points="{}"/>',
        ((" ".join(points),) for points in lines if points),
    )
    latest = f"{known[-1]:g}{unit}" if known else "no data yet"
    return format_html(
        '<figure class="perf-chart"><figcaption>{} <strong>{}</strong> <small>max {}{}</small></figcaption>'
        '<svg role="img" aria-label="{}" width="{}" height="{}" viewBox="0 0 {} {}" preserveAspectRatio="none">'
        '<line x1="0" y1="{}" x2="{}" y2="{}" stroke="#ccc"/>{}</svg></figure>',
        title, latest, f"{top:g}", unit, title, width, height, width, height, height - 1, width, height - 1, polylines,
    )


# --- the page ----------------------------------------------------------------------------


def dashboard_data() -> dict[str, Any]:
    """A snapshot plus the trends of this process's recent samples (JSON-ready)."""
    snap = snapshot()
    series = trends(record(snap))
    snap.pop("_http_hist")
    snap["series"] = series
    return snap


def slow_statements() -> dict[str, Any]:
    """The slowest statements by mean time from pg_stat_statements (as on /perf/db/)."""
    from perf.selectors import statements_status, statements_top

    status = statements_status()
    if not status["available"]:
        return status
    return {**status, "rows": statements_top(order="mean", limit=SLOW_STATEMENTS_SHOWN)}


@staff_member_required
def dashboard(request: HttpRequest) -> HttpResponse:
    """Live performance numbers and trends. Staff only. ``?partial=1`` is the live part alone."""
    data = dashboard_data()
    charts = [sparkline(data["series"].get(key, []), title=title, unit=unit) for key, title, unit in CHARTS]
    context = {"data": data, "charts": charts, "poll_seconds": POLL_SECONDS}
    if request.GET.get("partial"):
        return render(request, "perf/_dashboard_live.html", context)
    context.update(admin.site.each_context(request), title="Performance", statements=slow_statements())
    return render(request, "perf/dashboard.html", context)


@staff_member_required
def dashboard_json(request: HttpRequest) -> JsonResponse:
    """The page's data as JSON (scripts, benchmarks). Staff only."""
    return JsonResponse(dashboard_data())

