"""One django-redis client per Redis URL per process.

Django keeps its cache objects per context (``django.core.cache.caches`` is an
asgiref ``Local``), and every HTTP request and every WebSocket connection runs
in a context of its own. django-redis then builds a new ``redis.Redis`` per
context: about 185 µs of CPU each time (it copies redis-py's table of
response callbacks, key by key), and 6.5 KB of memory that a WebSocket
connection keeps for its whole life (measured with tracemalloc: 85 objects
per socket, docs/PERFORMANCE.md "What a socket costs").

The connection pool under that client is already shared per process by
django-redis; the client object on top of it holds no per-caller state and is
thread-safe (redis-py), so it is shared the same way.
"""

from __future__ import annotations

import threading
from typing import Any

from django_redis.pool import ConnectionFactory


class SharedClientConnectionFactory(ConnectionFactory):
    """django-redis's ``CONNECTION_FACTORY`` that hands out one client per URL (as it does pools)."""

    _clients: dict[str, Any] = {}
    _lock = threading.Lock()

    def get_connection(self, params: dict[str, Any]) -> Any:
        key = params["url"]
        client = self._clients.get(key)
        if client is None:
            with self._lock:
                client = self._clients.get(key)
                if client is None:
                    client = self._clients[key] = super().get_connection(params)
        return client
