"""perf.redis: one django-redis client per process, whatever the request context; per-loop resources with one shutdown."""

from __future__ import annotations

import contextvars
import threading

from django.core.cache import caches

import asyncio

from perf import redis as perf_redis
from perf.redis import SharedClientConnectionFactory

def _backend_in_fresh_context():
    # A request or a WebSocket connection starts with none of the caller's context.
    return contextvars.Context().run(lambda: caches["default"])


def test_the_cache_is_configured_with_the_shared_factory(settings):
    assert settings.CACHES["default"]["OPTIONS"]["CONNECTION_FACTORY"] == "perf.redis.SharedClientConnectionFactory"


def test_each_context_has_its_own_backend_but_all_share_one_redis_client():
    first, second = _backend_in_fresh_context(), _backend_in_fresh_context()
    assert first is not second  # Django's per-context cache objects, as before
    assert first.client.get_client(write=True) is second.client.get_client(write=True)
    assert isinstance(first.client.connection_factory, SharedClientConnectionFactory)


def test_the_shared_client_reads_and_writes_the_real_redis_from_many_threads():
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            backend = _backend_in_fresh_context()
            for i in range(50):
                backend.set(f"shared-client:{n}:{i}", i, 30)
                assert backend.get(f"shared-client:{n}:{i}") == i
            backend.delete_many([f"shared-client:{n}:{i}" for i in range(50)])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors


def test_the_sync_client_is_the_caches_own():
    assert perf_redis.sync_client() is caches["default"].client.get_client(write=True)
    assert perf_redis.sync_client().ping()


async def test_each_loop_gets_its_own_resources_and_one_shutdown_closes_them_all():
    closed: list[str] = []

    async def close(name: str) -> None:
        closed.append(name)

    first = perf_redis.loop_resource("probe-a", lambda: "a", close)
    assert perf_redis.loop_resource("probe-a", lambda: "other", close) == first == "a"
    perf_redis.loop_resource("probe-b", lambda: "b", close)
    client = perf_redis.async_client()
    assert await client.ping()
    await perf_redis.aclose_loop_resources()
    assert closed == ["b", "a"]  # newest first
    # after the shutdown the loop starts afresh
    assert perf_redis.loop_resource("probe-a", lambda: "again", close) == "again"
    await perf_redis.aclose_loop_resources()
    assert asyncio.get_running_loop().is_running()
