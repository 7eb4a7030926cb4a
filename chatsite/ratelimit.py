"""Per-user (and per-IP) rate limits, shared by every server process through the cache (Redis).

Fixed windows: the first hit in a window creates the counter with the
window as its TTL, later hits increment it. A limited caller gets
:class:`RateLimited` (HTTP 429 with ``Retry-After``, or a WebSocket error
frame with ``retry_after``). Limits come from settings (``RATE_LIMITS``,
environment ``RATE_LIMIT_<NAME>`` as ``count/seconds``).

If the cache is down the limiter fails open: chat keeps working.
"""

from __future__ import annotations

import logging
import time

from django.conf import settings
from django.core.cache import cache

from chatsite.errors import ChatError
from perf.cache import cache_key

logger = logging.getLogger(__name__)


class RateLimited(ChatError):
    status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def parse_rate(rate: str) -> tuple[int, int]:
    """``"120/60"`` -> (120, 60)."""
    count, _, seconds = rate.partition("/")
    return int(count), int(seconds or 1)


class _Window:
    """The fixed window a hit of ``action`` now falls in: its limit, counter key and end."""

    def __init__(self, action: str, ident: object, rate: str) -> None:
        self.action = action
        self.limit, self.seconds = parse_rate(rate)
        self.now = time.time()
        self.bucket = int(self.now // self.seconds)
        self.key = cache_key("ratelimit", action, ident, self.bucket)

    def check(self, count: int | None) -> None:
        """Raise RateLimited when ``count`` hits (this one included) exceed the limit."""
        if count is not None and count > self.limit:
            retry_after = max(1, int((self.bucket + 1) * self.seconds - self.now) + 1)
            raise RateLimited(f"Too many requests ({self.action}); retry in {retry_after} s.", retry_after=retry_after)


def _window(action: str, ident: object) -> _Window | None:
    rate = settings.RATE_LIMITS.get(action)
    return _Window(action, ident, rate) if rate else None


def hit(action: str, ident: object) -> None:
    """Count one ``action`` by ``ident``; raise RateLimited past the configured rate."""
    window = _window(action, ident)
    if window is None:
        return
    try:
        if cache.add(window.key, 1, window.seconds + 1):
            count = 1
        else:
            count = cache.incr(window.key)
    except ValueError:  # expired between add and incr
        cache.add(window.key, 1, window.seconds + 1)
        count = 1
    except Exception:  # noqa: BLE001 - fail open when the cache is unavailable
        logger.warning("rate limiter unavailable for %s", action, exc_info=True)
        return
    window.check(count)


async def ahit(action: str, ident: object) -> None:
    """:func:`hit` for async code: one pipelined round trip (INCR, EXPIRE NX) on the event loop.

    Shares the counters of :func:`hit` (same key, same integer encoding), so a
    user's WebSocket and HTTP sends count against one limit.
    """
    from perf import aredis

    window = _window(action, ident)
    if window is None:
        return
    client = aredis.client()
    if client is None:
        hit(action, ident)  # local-memory or dummy cache: no I/O
        return
    try:
        pipe = client.pipeline(transaction=False)
        pipe.incr(aredis.make_key(window.key))
        pipe.expire(aredis.make_key(window.key), window.seconds + 1, nx=True)
        count, _ = await pipe.execute()
    except Exception:  # noqa: BLE001 - fail open when the cache is unavailable
        aredis.failed(f"rate limit {action}")
        return
    window.check(count)


def client_ip(meta_or_scope: dict) -> str:
    """The client address of a request (``request.META``) or an ASGI scope."""
    if "REMOTE_ADDR" in meta_or_scope:
        return meta_or_scope.get("REMOTE_ADDR") or "unknown"
    client = meta_or_scope.get("client")
    return client[0] if client else "unknown"
