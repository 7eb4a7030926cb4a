"""The chat's ASGI application as served in production, plus the cache counters for the benchmark.

    python -m chatsite.server loadtest.stats_asgi:application

Everything goes to ``chatsite.asgi.application`` unchanged, except
``/__bench__/cache-stats`` from a loopback address: ``GET`` answers this
process's ``perf.cache.cache_stats()`` as JSON, ``POST`` resets them. The
counters live in each server process, so the benchmark (bench/adr_bench.py)
asks every process and adds them up. Only the benchmark starts servers with
this module; deployments serve ``chatsite.asgi:application``.
"""

from __future__ import annotations

import os
from typing import Any

import orjson

from chatsite.asgi import application as chat_application
from loadtest.capacity import STATS_PATH
from perf.cache import cache_stats, cache_stats_reset
LOOPBACK = {"127.0.0.1", "::1"}


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "http" and scope.get("path") == STATS_PATH and (scope.get("client") or ("",))[0] in LOOPBACK:
        await _stats(scope, receive, send)
        return
    await chat_application(scope, receive, send)


async def _stats(scope: dict[str, Any], receive: Any, send: Any) -> None:
    while True:  # drain the (empty) request body
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body"):
            break
    if scope["method"] == "POST":
        cache_stats_reset()
    body = orjson.dumps({"pid": os.getpid(), "families": cache_stats()})
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
