"""Benchmarks. Nothing here is imported by the server unless a benchmark turns it on."""

import os
import sys


def service_urls() -> tuple[str, str] | None:
    """DATABASE_URL and REDIS_URL from the environment, or None (after saying why) if either is unusable."""
    database_url = os.environ.get("DATABASE_URL", "")
    redis_url = os.environ.get("REDIS_URL", "")
    if not database_url.startswith("postgres") or not redis_url.startswith("redis"):
        print("Set DATABASE_URL (PostgreSQL) and REDIS_URL: the benchmark needs the real services.", file=sys.stderr)
        return None
    return database_url, redis_url
