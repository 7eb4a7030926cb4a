"""Per-user (and per-IP) rate limits, shared by every server process through the cache (Redis).

Fixed windows: a counter per ``(action, identity, window)``, kept in Redis
under ``cache_key("ratelimit", action, ident, bucket)`` with the window (and a
second) as its TTL. A limited caller gets :class:`RateLimited` (HTTP 429 with
``Retry-After``, or a WebSocket error frame with ``retry_after``). Limits come
from settings (``RATE_LIMITS``, environment ``RATE_LIMIT_<NAME>`` as
``count/seconds``).

:func:`hit` counts and refuses in one step, and is on the path of every chat
message, so it counts in the process (:class:`Limiter`) and reconciles with
Redis in batches: one pipelined round trip (``INCRBY`` and ``EXPIRE`` for
every counter with hits not sent yet) whose answers, the shared totals, tell
the process what the other processes have counted. A process makes that round
trip inline, in the first hit at least :data:`RECONCILE_SECONDS` after its
last one, and also before deciding the first hit on a counter it has not read
yet (its first hit for that identity in the window), so a new window, or an
identity new to this process, starts from the shared total. A hit is refused
when ``this process's hits (this one included) + the others' as last read >
limit``; refused hits count, as they always have. Counters of ended windows
are dropped.

Tolerance. One process never lets more than the limit through: it counts its
own hits exactly (with one process the limit is exact). What it cannot see
are the other processes' hits it has not read back yet. A hit waits in its
process until that process's next round trip, at most RECONCILE_SECONDS while
the process has hits to count, and the new total waits until the deciding
process's next round trip, at most RECONCILE_SECONDS while it is being hit.
So with P processes, an identity can get past its limit in a window by at
most what the other P - 1 processes counted for it in the
2 x RECONCILE_SECONDS before the deciding process let its last hit through:
for an identity sending r hits a second spread evenly over the processes,
about 2 x RECONCILE_SECONDS x r x (P - 1) / P. Two cases
reach further back, each by at most one interval's worth of hits: a process
that gets no hits at all any more keeps its last unsent ones (at most one
interval's) until its next hit; and a process that counted the identity
earlier in the window, but not since its own last round trip, decides from
the total it read then until its next round trip (at most one interval of its
own hits). Whatever the timing it is never more than P x limit, since each
process refuses past the limit on its own.

:func:`record` and :func:`usage` (the log-in policy, chatsite.login_policy:
rare and security-sensitive) write and read Redis directly and exactly;
:func:`usage` also adds this process's hits on the same counter that are not
in Redis yet, so a count is never lower than with direct writes.

If the cache is down the limiter fails open (logs a warning, never raises):
chat keeps working, and each process still limits by its own counts.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

from chatsite.errors import ChatError
from perf.cache import backend as cache_backend
from perf.cache import cache_key
from perf.redis import sync_client

logger = logging.getLogger(__name__)

# Seconds between a process's round trips to Redis for hit(): the tolerance
# above is counted in these.
RECONCILE_SECONDS = 0.25
# After a failed round trip, seconds before the next try (Redis down: hits
# neither wait on a connect timeout nor log each time).
RETRY_SECONDS = 2.0


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
        self.end = (self.bucket + 1) * self.seconds
        self.key = cache_key("ratelimit", action, ident, self.bucket)

    @property
    def retry_after(self) -> int:
        """Whole seconds until this window ends (at least 1)."""
        return max(1, int(self.end - self.now) + 1)

    def check(self, count: int | None) -> None:
        """Raise RateLimited when ``count`` hits (this one included) exceed the limit."""
        if count is not None and count > self.limit:
            retry_after = self.retry_after
            raise RateLimited(f"Too many requests ({self.action}); retry in {retry_after} s.", retry_after=retry_after)


def _window(action: str, ident: object) -> _Window | None:
    rate = settings.RATE_LIMITS.get(action)
    return _Window(action, ident, rate) if rate else None


class _Counter:
    """One counter as this process sees it: its own hits, exactly, and the other processes' as last read."""

    __slots__ = ("key", "end", "ours", "sent", "acked", "others", "known")

    def __init__(self, key: str, end: int) -> None:
        self.key = key
        self.end = end  # the window's end (time.time())
        self.ours = 0  # hits counted here
        self.sent = 0  # of those, sent to Redis (or in flight)
        self.acked = 0  # of those, answered
        self.others = 0  # the Redis total less what this process had sent, as last read back
        self.known = False  # a total has been read back


class Limiter:
    """Counts hits in the process and reconciles them with Redis in batches (see the module docstring).

    Thread-safe: the lock guards only dictionary and integer updates; the round
    trip runs outside it, so other threads keep counting meanwhile. ``client``
    returns the Redis client (default: the cache's, from perf.redis), or None
    for a cache that is not Redis (embedded mode), which is then used through
    its own API. Server processes use one instance each; tests make more to
    stand for more processes.
    """

    def __init__(
        self,
        *,
        client: Callable[[], Any | None] = sync_client,
        reconcile_seconds: float = RECONCILE_SECONDS,
        retry_seconds: float = RETRY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self.reconcile_seconds = reconcile_seconds
        self.retry_seconds = retry_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[int, dict[str, _Counter]] = {}  # window end -> key -> counter
        self._dirty: dict[str, _Counter] = {}  # counters with hits not sent
        self._due = clock()  # the next reconcile, on the first hit from then on
        self._retry_at = 0.0  # no round trips before this (after a failure)

    # --- hits ---------------------------------------------------------------------------

    def hit(self, window: _Window) -> int:
        """Count one hit in ``window``; the count to decide on (this hit included)."""
        return self.hit_many([window])[0]

    def hit_many(self, windows: list[_Window]) -> list[int]:
        """:meth:`hit` for each of ``windows`` in order, with one round trip at most for all of them.

        Each count is what ``hit`` would have returned had the hits come one
        after another: the first hit on a counter not read yet waits for the
        shared total, and that round trip carries every other hit of the group.
        """
        now = self._clock()
        with self._lock:
            counted = []
            trip = now >= self._retry_at and now >= self._due
            for window in windows:
                counters = self._windows.get(window.end)
                if counters is None:
                    counters = self._windows[window.end] = {}
                counter = counters.get(window.key)
                if counter is None:
                    counter = counters[window.key] = _Counter(window.key, window.end)
                counter.ours += 1
                self._dirty[window.key] = counter
                counted.append((counter, counter.ours))  # this hit's place among this process's: exact
                trip = trip or (now >= self._retry_at and not counter.known)
            batch = self._take(now, min(w.now for w in windows)) if trip and windows else []
        self._send(batch, now)
        with self._lock:
            return [position + counter.others for counter, position in counted]

    def reconcile(self) -> None:
        """Send every unsent hit and read the totals back now (tests; a process that stops)."""
        now = self._clock()
        with self._lock:
            batch = self._take(now, time.time())
        self._send(batch, now)

    def _take(self, now: float, wall: float) -> list[tuple[_Counter, int]]:
        """Under the lock: drop ended windows; mark every unsent hit sent and return them, per counter."""
        self._due = now + self.reconcile_seconds
        for end in [end for end in self._windows if end <= wall]:
            for key in self._windows.pop(end):
                self._dirty.pop(key, None)
        batch = []
        for counter in self._dirty.values():
            if counter.ours > counter.sent:
                batch.append((counter, counter.ours - counter.sent))
                counter.sent = counter.ours
        self._dirty = {}
        return batch

    def _send(self, batch: list[tuple[_Counter, int]], now: float) -> None:
        """The round trip (outside the lock), then the totals applied under it."""
        if not batch:
            return
        try:
            totals = self._incr(batch)
        except Exception:  # noqa: BLE001 - fail open when the cache is unavailable
            logger.warning("rate limiter unavailable: %d counters kept in this process", len(batch), exc_info=True)
            with self._lock:
                self._retry_at = self._due = now + self.retry_seconds
                for counter, sent in batch:  # sent again with the next round trip
                    counter.sent -= sent
                    if self._windows.get(counter.end, {}).get(counter.key) is counter:
                        self._dirty[counter.key] = counter
            return
        with self._lock:
            for (counter, sent), total in zip(batch, totals):
                counter.acked += sent
                if total is not None:  # None: a cache that cannot count (caching off), this process's hits only
                    # The total holds at most what this process has sent: at least the rest is the others'.
                    # (With round trips overlapping, a little less: it is read again at the next.)
                    counter.others = max(counter.others, int(total) - counter.sent)
                counter.known = True

    def _incr(self, batch: list[tuple[_Counter, int]]) -> list[int | None]:
        wall = time.time()
        client = self._client()
        if client is None:  # not Redis: the cache's own API, one counter at a time
            totals: list[int | None] = []
            for counter, sent in batch:
                cache_backend().add(counter.key, 0, _ttl(counter, wall))
                try:
                    totals.append(cache_backend().incr(counter.key, sent))
                except ValueError:  # not stored (DummyCache) or evicted
                    totals.append(None)
            return totals
        pipe = client.pipeline(transaction=False)
        for counter, sent in batch:
            key = cache_backend().make_key(counter.key)
            pipe.incrby(key, sent)
            pipe.expire(key, _ttl(counter, wall))
        return pipe.execute()[0::2]

    # --- for record() and usage() -------------------------------------------------------

    def unsent(self, key: str) -> int:
        """Hits on ``key`` counted here and possibly not in Redis yet (not sent, or not answered)."""
        with self._lock:
            for counters in self._windows.values():
                counter = counters.get(key)
                if counter is not None:
                    return counter.ours - counter.acked
        return 0

    def saw(self, window: _Window, total: int) -> None:
        """``window``'s counter was read as ``total`` in Redis (record()): a later hit here counts it."""
        with self._lock:
            counter = self._windows.get(window.end, {}).get(window.key)
            if counter is not None:
                counter.others = max(counter.others, total - counter.sent)

    def tracked(self) -> int:
        """How many counters this process holds (ended windows are dropped at the next round trip)."""
        with self._lock:
            return sum(len(counters) for counters in self._windows.values())

    def reset(self) -> None:
        """Forget every count (limits changed); hits not sent yet are dropped."""
        with self._lock:
            self._forget()

    def _forget(self) -> None:
        self._windows = {}
        self._dirty = {}
        self._due = self._clock()
        self._retry_at = 0.0

    def _after_fork(self) -> None:
        # A forked child is another process: its own lock (another thread may
        # have held the parent's), and none of the parent's counts.
        self._lock = threading.Lock()
        self._forget()


def _ttl(counter: _Counter, wall: float) -> int:
    """Seconds a counter stays in Redis: until its window ends, and a second."""
    return max(1, math.ceil(counter.end - wall)) + 1


# This process's limiter.
limiter = Limiter()
os.register_at_fork(after_in_child=lambda: limiter._after_fork())


@receiver(setting_changed)
def _limits_changed(*, setting: str, **kwargs: Any) -> None:
    if setting in ("RATE_LIMITS", "CACHES"):
        limiter.reset()


def _count(window: _Window) -> int | None:
    """Add one to ``window``'s counter in the cache; its new value, or None when the cache is unavailable."""
    try:
        if cache_backend().add(window.key, 1, window.seconds + 1):
            return 1
        return cache_backend().incr(window.key)
    except ValueError:  # expired between add and incr
        cache_backend().add(window.key, 1, window.seconds + 1)
        return 1
    except Exception:  # noqa: BLE001 - fail open when the cache is unavailable
        logger.warning("rate limiter unavailable for %s", window.action, exc_info=True)
        return None


def hit(action: str, ident: object) -> None:
    """Count one ``action`` by ``ident``; raise RateLimited past the configured rate.

    Counted in the process and shared through Redis in batches, within the
    module docstring's tolerance.
    """
    window = _window(action, ident)
    if window is not None:
        window.check(limiter.hit(window))


def hit_many(action: str, idents: list[object]) -> list[RateLimited | None]:
    """:func:`hit` for a group of requests (sends or subscribes written together): per ident, in order,
    its refusal or None. One round trip at most for the whole group, not one per identity new to this process."""
    rate = settings.RATE_LIMITS.get(action)
    if not rate or not idents:
        return [None] * len(idents)
    windows = [_Window(action, ident, rate) for ident in idents]
    refusals: list[RateLimited | None] = []
    for window, count in zip(windows, limiter.hit_many(windows)):
        try:
            window.check(count)
        except RateLimited as exc:
            refusals.append(exc)
        else:
            refusals.append(None)
    return refusals


def record(action: str, ident: object) -> None:
    """Count one ``action`` by ``ident`` in Redis at once and never refuse it: the caller decides with :func:`usage`."""
    window = _window(action, ident)
    if window is not None:
        total = _count(window)
        if total is not None:
            limiter.saw(window, total)


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

    Each count is the counter in Redis plus this process's :func:`hit` counts
    on it that may not be there yet. None for a limit that is off. When the
    cache is unavailable the counters read 0 (fail open, as :func:`hit` does).
    """
    windows = [_window(action, ident) for action, ident in limits]
    keys = [window.key for window in windows if window is not None]
    try:
        found = cache_backend().get_many(keys) if keys else {}
    except Exception:  # noqa: BLE001 - fail open when the cache is unavailable
        logger.warning("rate limiter unavailable for %s", ", ".join(action for action, _ in limits), exc_info=True)
        found = {}
    return [
        None
        if window is None
        else Usage(int(found.get(window.key) or 0) + limiter.unsent(window.key), window.limit, window.retry_after)
        for window in windows
    ]


def client_ip(meta_or_scope: dict) -> str:
    """The client address of a request (``request.META``) or an ASGI scope."""
    if "REMOTE_ADDR" in meta_or_scope:
        return meta_or_scope.get("REMOTE_ADDR") or "unknown"
    client = meta_or_scope.get("client")
    return client[0] if client else "unknown"
