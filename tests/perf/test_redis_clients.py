"""perf.redis_clients: one django-redis client per process, whatever the request context."""

from __future__ import annotations

import contextvars
import threading

from django.core.cache import caches

from perf.redis_clients import SharedClientConnectionFactory

def _backend_in_fresh_context():
    # A request or a WebSocket connection starts with none of the caller's context.
    return contextvars.Context().run(lambda: caches["default"])


def test_the_cache_is_configured_with_the_shared_factory(settings):
    assert settings.CACHES["default"]["OPTIONS"]["CONNECTION_FACTORY"] == "perf.redis_clients.SharedClientConnectionFactory"


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
