"""The one place that makes Redis clients, and the one registry of per-event-loop resources.

Four ways reach Redis, each from one function here:

* the cache (django-redis, configured in settings): :class:`SharedClientConnectionFactory`
  makes its client once per URL and process;
* :func:`sync_client`: that same client, for code that needs Redis itself
  (active users, rate limits); None without a Redis cache;
* :func:`async_client`: one ``redis.asyncio`` client per event loop on
  ``REDIS_URL`` (presence and socket counts), from :func:`loop_resource`;
* :func:`ping`: the health check's own short-lived connection.

The channel layer's connections are channels-redis's own; where they go
(the server of ``REDIS_URL``, or the primary the Sentinels name) is said here
too, by :func:`channel_layer_host`, as the cache's is by :func:`cache_options`.

With ``REDIS_SENTINELS`` set, every client asks the Sentinels where the
primary of the service named by ``REDIS_URL``'s host is, and asks again when
its connection breaks or the server it reaches turns out to be a replica: a
failover needs no restart. Without it, each client connects to ``REDIS_URL``.

Async resources live as long as their event loop: a server's loop lives as
long as the server, a test's only as long as the test. :func:`loop_resource`
keeps one of each kind per loop and :func:`aclose_loop_resources` closes all of
this loop's, in the order they were made, backwards.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any, Awaitable, Callable, TypeVar
from urllib.parse import unquote, urlparse

from django_redis.pool import ConnectionFactory, SentinelConnectionFactory
from redis.asyncio.connection import BlockingConnectionPool
from redis.asyncio.sentinel import SentinelConnectionPool

from chatsite import env

logger = logging.getLogger(__name__)

T = TypeVar("T")


class SharedClientConnectionFactory(ConnectionFactory):
    """django-redis's ``CONNECTION_FACTORY``: one client per URL per process, as it keeps pools.

    Django keeps cache objects per context (every HTTP request and every
    WebSocket connection), and django-redis builds a ``redis.Redis`` for each:
    CPU at every connect and memory that a socket keeps for its whole life.
    The client holds no per-caller state and is thread-safe, so it is shared.
    """

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


class SharedSentinelConnectionFactory(SharedClientConnectionFactory, SentinelConnectionFactory):
    """django-redis's Sentinel factory, with the client shared as above.

    django-redis's own ``__init__`` makes a Sentinel manager (a client per
    Sentinel) for every factory, so for every request context; here only the
    one client's first connection makes it.
    """

    def __init__(self, options: dict[str, Any]) -> None:
        self._sentinel_options = options
        ConnectionFactory.__init__(self, {"CONNECTION_POOL_CLASS": "redis.sentinel.SentinelConnectionPool", **options})

    def get_connection_pool(self, params: dict[str, Any]) -> Any:
        SentinelConnectionFactory.__init__(self, self._sentinel_options)
        return SentinelConnectionFactory.get_connection_pool(self, params)


# --- where Redis is ------------------------------------------------------------------------

def sentinel_kwargs(*, for_asyncio: bool = False) -> dict[str, Any]:
    """Options of the connections to the Sentinels themselves: one that does not answer at once is skipped for the next.

    No retries: redis-py's client retries a refused connection ten times with
    backoff, seconds per Sentinel that is down, while the next one would answer.
    """
    from redis.backoff import NoBackoff

    if for_asyncio:
        from redis.asyncio.retry import Retry
    else:
        from redis.retry import Retry  # type: ignore[assignment]
    return {"socket_connect_timeout": 0.5, "socket_timeout": 0.5, "retry": Retry(NoBackoff(), 0)}


def sentinels() -> list[tuple[str, int]]:
    """The Sentinels of REDIS_SENTINELS as (host, port); empty when REDIS_URL names the server itself."""
    found = []
    for entry in env.REDIS_SENTINELS:
        host, _, port = entry.rpartition(":")
        found.append((host.strip("[]") or "127.0.0.1", int(port)))
    return found


def _url_parts() -> dict[str, Any]:
    """The service name, database number and credentials in REDIS_URL (Sentinel mode)."""
    url = urlparse(env.REDIS_URL)
    parts: dict[str, Any] = {"db": int(url.path.strip("/") or 0)}
    if url.username:
        parts["username"] = unquote(url.username)
    if url.password:
        parts["password"] = unquote(url.password)
    return {"service": url.hostname or "", **parts}


def cache_options() -> dict[str, Any]:
    """The django-redis OPTIONS that say how the cache reaches Redis (settings: CACHES).

    Through the Sentinels, django-redis's SentinelConnectionFactory with the
    default client: every read and write goes to the primary. (django-redis's
    SentinelClient would read from replicas, which could return an entry a
    write on the primary has just invalidated.)
    """
    if not sentinels():
        return {"CONNECTION_FACTORY": "perf.redis.SharedClientConnectionFactory"}
    return {
        "CONNECTION_FACTORY": "perf.redis.SharedSentinelConnectionFactory",
        "SENTINELS": sentinels(),
        "SENTINEL_KWARGS": sentinel_kwargs(),
    }


def channel_layer_host(**options: Any) -> str | dict[str, Any]:
    """One entry of the channel layer's ``hosts`` (channels-redis), with ``options`` for its pool.

    Through the Sentinels it is channels-redis's Sentinel form (``master_name``,
    ``sentinels``): its pools ask them for the primary at every new connection,
    and its pub/sub connection reconnects and subscribes again by itself.
    """
    if not sentinels():
        return {"address": env.REDIS_URL, **options} if options else env.REDIS_URL
    parts = _url_parts()
    service = parts.pop("service")
    return {
        "master_name": service,
        "sentinels": sentinels(),
        "sentinel_kwargs": sentinel_kwargs(for_asyncio=True),
        # A primary that vanished is given up on quickly, so the Sentinels are asked again.
        "socket_connect_timeout": 1,
        **parts,
        **options,
    }


def ping() -> bool:
    """PING the Redis server (the primary, through the Sentinels) on a connection of its own; False when none answers.

    The health check asks this: its answer does not depend on a pool that a
    busy process has exhausted.
    """
    import redis

    if not env.REDIS_URL:
        return False
    if sentinels():
        from redis.sentinel import Sentinel

        parts = _url_parts()
        service = parts.pop("service")
        manager = Sentinel(sentinels(), sentinel_kwargs=sentinel_kwargs())
        client = manager.master_for(service, socket_connect_timeout=1, socket_timeout=1, **parts)
        try:
            return bool(client.ping())
        finally:
            client.close()
            for sentinel in manager.sentinels:
                sentinel.close()
    client = redis.Redis.from_url(env.REDIS_URL, socket_connect_timeout=1, socket_timeout=1)
    try:
        return bool(client.ping())
    finally:
        client.close()


def sync_client() -> Any | None:
    """The default cache's Redis client, or None when the cache is not django-redis (embedded mode, caching off)."""
    if not env.REDIS_URL:
        return None
    from perf.cache import backend

    # What django_redis.get_redis_connection does, on the process's one backend
    # rather than on caches["default"], which builds one per calling context.
    get_client = getattr(getattr(backend(), "client", None), "get_client", None)
    if get_client is None:  # not a django-redis cache
        return None
    return get_client(True)


# --- per event loop ---------------------------------------------------------------------

_resources: dict[asyncio.AbstractEventLoop, dict[str, tuple[Any, Callable[[Any], Awaitable[None]] | None]]] = {}


def loop_resource(name: str, make: Callable[[], T], close: Callable[[T], Awaitable[None]] | None = None) -> T:
    """This event loop's resource ``name``, made by ``make()`` on first use; ``close`` ends it at shutdown."""
    loop = asyncio.get_running_loop()
    owned = _resources.get(loop)
    if owned is None:
        for old in [other for other in _resources if other.is_closed()]:
            del _resources[old]
        owned = _resources[loop] = {}
    found = owned.get(name)
    if found is None:
        found = owned[name] = (make(), close)
    return found[0]


def existing_loop_resource(loop: asyncio.AbstractEventLoop, name: str) -> Any | None:
    """``loop``'s resource ``name`` if it has been made, else None; callable from any thread."""
    found = _resources.get(loop, {}).get(name)
    return None if found is None else found[0]


async def aclose_loop_resources() -> None:
    """Close every resource of this event loop, newest first (server shutdown; tests between loops)."""
    owned = _resources.pop(asyncio.get_running_loop(), {})
    for name, (resource, close) in reversed(list(owned.items())):
        if close is None:
            continue
        try:
            await close(resource)
        except Exception:  # noqa: BLE001 - shutting down: the next one still closes
            logger.warning("closing %s failed", name, exc_info=True)


def async_client() -> Any:
    """This event loop's ``redis.asyncio`` client on REDIS_URL.

    A bounded pool that waits for a free connection: a mass disconnect
    (thousands of sockets leaving at once) queues instead of failing.
    """

    def make() -> Any:
        import redis.asyncio as aioredis

        if sentinels():
            from redis.asyncio.sentinel import Sentinel

            parts = _url_parts()
            service = parts.pop("service")
            manager = Sentinel(sentinels(), sentinel_kwargs=sentinel_kwargs(for_asyncio=True))
            pool = _BlockingSentinelConnectionPool(
                service, manager, max_connections=32, timeout=5, socket_connect_timeout=1, socket_timeout=1, **parts
            )
        else:
            pool = aioredis.BlockingConnectionPool.from_url(
                env.REDIS_URL, max_connections=32, timeout=5, socket_connect_timeout=1, socket_timeout=1
            )
        return aioredis.Redis(connection_pool=pool)

    async def close(client: Any) -> None:
        await client.aclose()
        manager = getattr(client.connection_pool, "sentinel_manager", None)
        for sentinel in getattr(manager, "sentinels", ()):
            await sentinel.aclose()

    return loop_resource("redis", make, close)


class _BlockingSentinelConnectionPool(SentinelConnectionPool, BlockingConnectionPool):
    """redis-py's Sentinel pool, waiting for a free connection as :func:`async_client`'s pool does without Sentinel."""


class _TurnPipeline:
    """The commands of every caller in one turn of the event loop, sent as one pipeline: one round trip for all.

    With thousands of sockets arriving or leaving at once, each socket's few
    commands cost less than the pipeline around them (a pooled connection, a
    write, a read, a task): gathered, they share one.
    """

    def __init__(self) -> None:
        self.pipe: Any = None
        self.waiting: list[tuple[int, int, asyncio.Future]] = []

    async def run(self, build: Callable[[Any], None]) -> list[Any]:
        if self.pipe is None:
            self.pipe = async_client().pipeline(transaction=False)
            asyncio.get_running_loop().call_soon(self._send)
        start = len(self.pipe)
        build(self.pipe)
        future = asyncio.get_running_loop().create_future()
        self.waiting.append((start, len(self.pipe), future))
        return await future

    def _send(self) -> None:
        pipe, waiting = self.pipe, self.waiting
        self.pipe, self.waiting = None, []
        asyncio.ensure_future(self._execute(pipe, waiting))

    @staticmethod
    async def _execute(pipe: Any, waiting: list[tuple[int, int, asyncio.Future]]) -> None:
        try:
            results = await pipe.execute(raise_on_error=False)
        except Exception as exc:  # noqa: BLE001 - the round trip failed: every caller hears it
            for _, _, future in waiting:
                if not future.done():
                    future.set_exception(exc)
            return
        for start, end, future in waiting:
            if future.done():
                continue
            mine = results[start:end]
            failed = next((r for r in mine if isinstance(r, Exception)), None)
            if failed is not None:
                future.set_exception(failed)
            else:
                future.set_result(mine)


async def pipelined(build: Callable[[Any], None]) -> list[Any]:
    """Run the commands ``build`` adds to a ``redis.asyncio`` pipeline (no MULTI), in one round trip with those
    of every other caller in this turn of the loop. Returns this caller's results; raises the first error among them."""
    return await loop_resource("redis-turn-pipeline", _TurnPipeline).run(build)
