"""The database performance report: plain dicts for the command and the staff page.

Everything here reads PostgreSQL's statistics views; on another database the
report says it is unavailable. Counters are cumulative since the last stats
reset (``stats_reset``), so read them after a representative workload.

Unused-index rule: an index of the project's own tables is *flagged* unused
when it has never been scanned and it is neither the primary key nor unique.
Primary keys and unique indexes are listed with their scan counts but not
flagged: they enforce integrity on every write even when no read uses them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.apps import apps
from django.conf import settings
from django.db import connections

from perf.db import pool_stats

STATEMENT_TEXT_CHARS = 200
# Tables smaller than this are cheaper to scan than to index; not flagged.
SEQ_SCAN_FLAG_ROWS = 10_000


def own_tables() -> list[str]:
    """Tables of the project's own apps (not Django's or third-party apps')."""
    base = Path(settings.BASE_DIR).resolve()
    tables: set[str] = set()
    for model in apps.get_models(include_auto_created=True):
        app_path = Path(model._meta.app_config.path).resolve()
        if "site-packages" in app_path.parts or base not in app_path.parents:
            continue
        if model._meta.proxy or not model._meta.managed:
            continue
        tables.add(model._meta.db_table)
    return sorted(tables)


def _rows(alias: str, sql: str, params: Any = None) -> list[dict[str, Any]]:
    with connections[alias].cursor() as cursor:
        cursor.execute(sql, params)
        names = [column.name for column in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]


def _ratio(hit: Any, read: Any) -> float | None:
    hit, read = int(hit or 0), int(read or 0)
    return round(hit / (hit + read), 4) if hit + read else None


def statements_status(*, alias: str = "default") -> dict[str, Any]:
    """Whether pg_stat_statements can be read here, and if not, why."""
    if connections[alias].vendor != "postgresql":
        return {"available": False, "reason": "pg_stat_statements needs PostgreSQL."}
    row = _rows(
        alias,
        "SELECT current_setting('shared_preload_libraries') AS preload, "
        "EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements') AS installed",
    )[0]
    if "pg_stat_statements" not in row["preload"]:
        return {
            "available": False,
            "reason": "pg_stat_statements is not in shared_preload_libraries; add it and restart PostgreSQL.",
        }
    if not row["installed"]:
        return {"available": False, "reason": "Run migrations: the extension is not created in this database."}
    return {"available": True, "reason": ""}


def statements_top(*, order: str, limit: int = 10, alias: str = "default") -> list[dict[str, Any]]:
    """Top statements of this database by ``order`` ("total" or "mean" execution time).

    ``max_ms`` is the slowest single call, an upper bound for the p95.
    """
    column = {"total": "total_exec_time", "mean": "mean_exec_time"}[order]
    rows = _rows(
        alias,
        "SELECT queryid, calls, total_exec_time, mean_exec_time, max_exec_time, stddev_exec_time, rows, "
        "shared_blks_hit, shared_blks_read, query "
        "FROM pg_stat_statements "
        "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
        "AND query NOT LIKE %s "
        f"ORDER BY {column} DESC LIMIT %s",
        ["%pg_stat_statements%", limit],
    )
    return [
        {
            "queryid": row["queryid"],
            "calls": row["calls"],
            "total_ms": round(row["total_exec_time"], 1),
            "mean_ms": round(row["mean_exec_time"], 3),
            "max_ms": round(row["max_exec_time"], 3),
            "stddev_ms": round(row["stddev_exec_time"], 3),
            "rows": row["rows"],
            "cache_hit_ratio": _ratio(row["shared_blks_hit"], row["shared_blks_read"]),
            "query": _short(row["query"]),
        }
        for row in rows
    ]


def _short(query: str) -> str:
    text = " ".join(query.split())
    return text if len(text) <= STATEMENT_TEXT_CHARS else text[:STATEMENT_TEXT_CHARS] + " ..."


def index_usage(*, alias: str = "default") -> list[dict[str, Any]]:
    """Every index of the project's own tables with scans, size and the unused flag."""
    rows = _rows(
        alias,
        "SELECT s.relname AS table_name, s.indexrelname AS index_name, s.idx_scan, s.idx_tup_read, "
        "pg_relation_size(s.indexrelid) AS size_bytes, i.indisprimary, i.indisunique, "
        "pg_get_indexdef(s.indexrelid) AS definition "
        "FROM pg_stat_user_indexes s JOIN pg_index i ON i.indexrelid = s.indexrelid "
        "WHERE s.relname = ANY(%s) ORDER BY s.relname, s.indexrelname",
        [own_tables()],
    )
    result = []
    for row in rows:
        kind = "primary" if row["indisprimary"] else "unique" if row["indisunique"] else "index"
        result.append(
            {
                "table": row["table_name"],
                "index": row["index_name"],
                "kind": kind,
                "scans": row["idx_scan"],
                "tuples_read": row["idx_tup_read"],
                "size_bytes": row["size_bytes"],
                "unused": row["idx_scan"] == 0 and kind == "index",
                "definition": row["definition"],
            }
        )
    return result


def tables_scans(*, alias: str = "default") -> list[dict[str, Any]]:
    """Tables read by more sequential than index scans; ``flag`` when also large."""
    own = set(own_tables())
    rows = _rows(
        alias,
        "SELECT relname AS table_name, seq_scan, seq_tup_read, COALESCE(idx_scan, 0) AS idx_scan, n_live_tup "
        "FROM pg_stat_user_tables WHERE seq_scan > COALESCE(idx_scan, 0) ORDER BY seq_tup_read DESC",
    )
    return [
        {
            "table": row["table_name"],
            "own": row["table_name"] in own,
            "seq_scans": row["seq_scan"],
            "seq_rows_read": row["seq_tup_read"],
            "index_scans": row["idx_scan"],
            "live_rows": row["n_live_tup"],
            "flag": row["n_live_tup"] >= SEQ_SCAN_FLAG_ROWS,
        }
        for row in rows
    ]


def cache_hit_ratios(*, alias: str = "default") -> dict[str, Any]:
    """Shared-buffer hit ratios: the whole database, and user tables' heap and indexes."""
    database = _rows(
        alias,
        "SELECT blks_hit, blks_read, stats_reset FROM pg_stat_database WHERE datname = current_database()",
    )[0]
    tables = _rows(
        alias,
        "SELECT SUM(heap_blks_hit) AS heap_hit, SUM(heap_blks_read) AS heap_read, "
        "SUM(idx_blks_hit) AS idx_hit, SUM(idx_blks_read) AS idx_read FROM pg_statio_user_tables",
    )[0]
    return {
        "database": _ratio(database["blks_hit"], database["blks_read"]),
        "tables_heap": _ratio(tables["heap_hit"], tables["heap_read"]),
        "tables_indexes": _ratio(tables["idx_hit"], tables["idx_read"]),
        "stats_reset": database["stats_reset"].isoformat() if database["stats_reset"] else None,
    }


def server_activity(*, alias: str = "default") -> dict[str, Any]:
    """Client connections against ``max_connections`` (the whole server), and this database's
    buffer cache hit ratio, commits, rollbacks and deadlocks since the last stats reset."""
    if connections[alias].vendor != "postgresql":
        return {"available": False, "reason": "Connections and cache hit ratio are read from PostgreSQL."}
    row = _rows(
        alias,
        "SELECT (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend') AS connections, "
        "current_setting('max_connections')::int AS max_connections, "
        "current_setting('superuser_reserved_connections')::int AS reserved_connections, "
        "xact_commit, xact_rollback, deadlocks, blks_hit, blks_read "
        "FROM pg_stat_database WHERE datname = current_database()",
    )[0]
    return {
        "available": True,
        "connections": row["connections"],
        "max_connections": row["max_connections"],
        "reserved_connections": row["reserved_connections"],
        "connections_ratio": round(row["connections"] / row["max_connections"], 4) if row["max_connections"] else None,
        "cache_hit_ratio": _ratio(row["blks_hit"], row["blks_read"]),
        "commits": row["xact_commit"],
        "rollbacks": row["xact_rollback"],
        "deadlocks": row["deadlocks"],
    }


def db_report(*, limit: int = 10, alias: str = "default") -> dict[str, Any]:
    """The whole report. Pool numbers are those of the process that builds it."""
    report: dict[str, Any] = {
        "database": connections[alias].settings_dict.get("NAME") and str(connections[alias].settings_dict["NAME"]),
        "vendor": connections[alias].vendor,
        "pool": pool_stats(alias),
    }
    if connections[alias].vendor != "postgresql":
        report["available"] = False
        report["reason"] = "The database report reads PostgreSQL statistics views."
        return report
    report["available"] = True
    status = statements_status(alias=alias)
    report["statements"] = {
        **status,
        "by_total_time": statements_top(order="total", limit=limit, alias=alias) if status["available"] else [],
        "by_mean_time": statements_top(order="mean", limit=limit, alias=alias) if status["available"] else [],
    }
    indexes = index_usage(alias=alias)
    report["indexes"] = indexes
    report["unused_indexes"] = [f"{row['table']}.{row['index']}" for row in indexes if row["unused"]]
    report["seq_scan_tables"] = tables_scans(alias=alias)
    report["cache_hit_ratio"] = cache_hit_ratios(alias=alias)
    return report
