"""Per-user (and per-IP) rate limits, shared by every server process through the cache (Redis).

Fixed windows: the first hit in a window creates the counter with the
window as its TTL, later hits increment it. A limited caller gets
:class:`RateLimited` (HTTP 429 with ``Retry-After``, or a WebSocket error
frame with ``retry_after``). Limits come from settings (``RATE_LIMITS``,
environment ``RATE_LIMIT_<NAME>`` as ``count/seconds``).

:func:`hit` counts and refuses in one step. Policies that count only some
outcomes (chatsite.login_policy counts failed log-ins) read the counters
with :func:`usage` before acting and add to them with :func:`record` after.

If the cache is down the limiter fails open: chat keeps working.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

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

    @property
    def retry_after(self) -> int:
        """Whole seconds until this window ends (at least 1)."""
        return max(1, int((self.bucket + 1) * self.seconds - self.now) + 1)

    def check(self, count: int | None) -> None:
        """Raise RateLimited when ``count`` hits (this one included) exceed the limit."""
        if count is not None and count > self.limit:
            retry_after = self.retry_after
            raise RateLimited(f"Too many requests ({self.action}); retry in {retry_after} s.", retry_after=retry_after)


def _window(action: str, ident: object) -> _Window | None:
    rate = settings.RATE_LIMITS.get(action)
    return _Window(action, ident, rate) if rate else None


def _count(window: _Window) -> int | None:
    """Add one to ``window``'s counter; its new value, or None when the cache is unavailable."""
    try:
        if cache.add(window.key, 1, window.seconds + 1):
            return 1
        return cache.incr(window.key)
    except ValueError:  # expired between add and incr
        cache.add(window.key, 1, window.seconds + 1)
        return 1
    except Exception:  # noqa: BLE001 - fail open when the cache is unavailable
        logger.warning("rate limiter unavailable for %s", window.action, exc_info=True)
        return None


def hit(action: str, ident: object) -> None:
    """Count one ``action`` by ``ident``; raise RateLimited past the configured rate."""
    window = _window(action, ident)
    if window is not None:
        window.check(_count(window))


def record(action: str, ident: object) -> None:
    """Count one ``action`` by ``ident`` and never refuse it: the caller decides with :func:`usage`."""
    window = _window(action, ident)
    if window is not None:
        _count(window)


@dataclass(frozen=True)
class Usage:
    """How much of a limit one identity has used in the current window."""

    count: int
    limit: int
    retry_after: int

    @property
    def exhausted(self) -> bool:
        """True when the limit is used up: one more counted action would be refused."""
        return self.count >= self.limit


def usage(*limits: tuple[str, object]) -> list[Usage | None]:
    """The counters of each ``(action, ident)`` in its current window, in one round trip; nothing is counted.

    None for a limit that is off. When the cache is unavailable every count
    reads 0 (fail open, as :func:`hit` does).
    """
    windows = [_window(action, ident) for action, ident in limits]
    keys = [window.key for window in windows if window is not None]
    try:
        found = cache.get_many(keys) if keys else {}
    except Exception:  # noqa: BLE001 - fail open when the cache is unavailable
        logger.warning("rate limiter unavailable for %s", ", ".join(action for action, _ in limits), exc_info=True)
        found = {}
    return [
        None if window is None else Usage(int(found.get(window.key) or 0), window.limit, window.retry_after)
        for window in windows
    ]


def client_ip(meta_or_scope: dict) -> str:
    """The client address of a request (``request.META``) or an ASGI scope."""
    if "REMOTE_ADDR" in meta_or_scope:
        return meta_or_scope.get("REMOTE_ADDR") or "unknown"
    client = meta_or_scope.get("client")
    return client[0] if client else "unknown"
