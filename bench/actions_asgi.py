"""The chat's ASGI application, counting the statements this process sends, for the per-action benchmark.

    python -m chatsite.server bench.actions_asgi:application

Every scope goes to ``chatsite.asgi.application`` unchanged, except
``/__bench__/actions-stats`` from a loopback address, which answers this
process's totals as JSON: statements sent to the database and the seconds
spent in ``cursor.execute`` (round trips included), and the ``perf.cache``
lookups. bench/actions.py reads them before and after each action; they
count even where pg_stat_statements is not preloaded. Only that benchmark
serves this module; deployments serve ``chatsite.asgi:application``.
"""

from __future__ import annotations

# First: importing the project's application sets Django up.
from chatsite.asgi import application as chat_application  # isort: skip

import os
import threading
import time
from typing import Any, Callable

import orjson
from django.db.backends.signals import connection_created

from bench.actions import STATS_PATH
from perf.cache import cache_stats

LOOPBACK = {"127.0.0.1", "::1"}

_lock = threading.Lock()
_totals = [0, 0.0]  # statements, seconds in cursor.execute


def _count(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: dict[str, Any]) -> Any:
    started = time.perf_counter()
    try:
        return execute(sql, params, many, context)
    finally:
        elapsed = time.perf_counter() - started
        with _lock:  # statements run in several threads
            _totals[0] += 1
            _totals[1] += elapsed


def _install(sender: Any, connection: Any, **kwargs: Any) -> None:
    if _count not in connection.execute_wrappers:
        connection.execute_wrappers.append(_count)


connection_created.connect(_install, dispatch_uid="bench.actions_asgi.count")


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "http" and scope.get("path") == STATS_PATH and (scope.get("client") or ("",))[0] in LOOPBACK:
        await _stats(receive, send)
        return
    await chat_application(scope, receive, send)


async def _stats(receive: Any, send: Any) -> None:
    while (await receive()).get("more_body"):
        pass
    with _lock:
        statements, seconds = _totals
    families = cache_stats()
    body = orjson.dumps({
        "pid": os.getpid(), "statements": statements, "db_seconds": seconds,
        "cache_hits": sum(int(f["hits"]) for f in families.values()),
        "cache_misses": sum(int(f["misses"]) for f in families.values()),
    })  # fmt: skip
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
