"""Fail fast with a clear message when the test services are missing."""

from __future__ import annotations

import os
import sys

import psycopg
import redis

database_url = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/chat")
redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/14")

problems = []
try:
    with psycopg.connect(database_url.rsplit("/", 1)[0] + "/postgres", connect_timeout=3) as conn:
        conn.execute("SELECT 1")
except Exception as exc:  # noqa: BLE001
    problems.append(f"PostgreSQL is not reachable at {database_url} ({exc.__class__.__name__}: {exc}).")
try:
    redis.Redis.from_url(redis_url, socket_connect_timeout=3).ping()
except Exception as exc:  # noqa: BLE001
    problems.append(f"Redis is not reachable at {redis_url} ({exc.__class__.__name__}: {exc}).")

if problems:
    print("The test suite needs PostgreSQL and Redis:", *problems, sep="\n  ", file=sys.stderr)
    print("Start them, or point DATABASE_URL / REDIS_URL at running servers.", file=sys.stderr)
    sys.exit(2)
print("services: PostgreSQL and Redis are reachable")
