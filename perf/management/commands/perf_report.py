"""manage.py perf_report: the database report (also at /perf/db/ for staff)."""

from __future__ import annotations

from typing import Any

import orjson
from django.core.management.base import BaseCommand, CommandParser

from perf.selectors import db_report


class Command(BaseCommand):
    help = "Top statements (pg_stat_statements), index usage, seq-scanned tables, cache hit ratio, pool."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="Print the report as one JSON object.")
        parser.add_argument("--limit", type=int, default=10, help="Statements per list (default 10).")
        parser.add_argument("--database", default="default", help="Database alias (default 'default').")

    def handle(self, *args: Any, **options: Any) -> None:
        report = db_report(limit=max(1, options["limit"]), alias=options["database"])
        if options["json"]:
            self.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
            return
        self._text(report)

    def _text(self, report: dict[str, Any]) -> None:
        out = self.stdout.write
        out(f"Database: {report['database']} ({report['vendor']})")
        if not report["available"]:
            out(report["reason"])
        else:
            out(f"Counters since: {report['cache_hit_ratio']['stats_reset'] or 'server start'}")
            statements = report["statements"]
            if not statements["available"]:
                out(f"\nStatements: {statements['reason']}")
            for key, title in (("by_total_time", "total"), ("by_mean_time", "mean")):
                if not statements["available"]:
                    break
                out(f"\nTop statements by {title} time")
                out(f"{'calls':>9} {'total ms':>11} {'mean ms':>9} {'max ms':>9} {'rows':>10}  query")
                for row in statements[key]:
                    out(
                        f"{row['calls']:>9} {row['total_ms']:>11.1f} {row['mean_ms']:>9.3f} {row['max_ms']:>9.3f} "
                        f"{row['rows']:>10}  {row['query'][:120]}"
                    )
            out("\nIndexes of the project's tables (unused = never scanned, not primary key, not unique)")
            out(f"{'table':<22} {'index':<40} {'kind':<8} {'scans':>10} {'size':>10}")
            for row in report["indexes"]:
                flag = "  UNUSED" if row["unused"] else ""
                out(
                    f"{row['table']:<22} {row['index']:<40} {row['kind']:<8} {row['scans']:>10} "
                    f"{_size(row['size_bytes']):>10}{flag}"
                )
            out(f"Unused indexes: {', '.join(report['unused_indexes']) or 'none'}")
            out("\nTables with more sequential than index scans (large = at least 10,000 live rows)")
            for row in report["seq_scan_tables"]:
                flag = "  LARGE" if row["flag"] else ""
                out(
                    f"{row['table']:<32} seq {row['seq_scans']:>8} (rows {row['seq_rows_read']:>12}) "
                    f"idx {row['index_scans']:>8} live {row['live_rows']:>10}{flag}"
                )
            ratios = report["cache_hit_ratio"]
            out(
                f"\nBuffer cache hit ratio: database {ratios['database']}, "
                f"heap {ratios['tables_heap']}, indexes {ratios['tables_indexes']}"
            )
        pool = report["pool"]
        if pool["enabled"]:
            out(
                f"\nPool (this process): size {pool['size']} (min {pool['min_size']}, max {pool['max_size']}), "
                f"in use {pool['in_use']}, waiting {pool['waiting']}, errors {pool['errors']}"
            )
        else:
            out("\nPool: none for this database")


def _size(size: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(size)
