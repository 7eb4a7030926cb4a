"""Cache warming: what the first readers of a room would fill, filled before they come.

After the cache is emptied (Redis restarted or flushed, a new cache version)
every room's first reader pays for the database: the newest page of history
alone is about 50 message lookups that miss. :func:`cache_warm` fills, for the
rooms with the newest messages, what opening them and scrolling back a few
pages reads: the room (family ``rooms``), its unread tail (``unread``), the
messages of its newest ``CACHE_WARM_PAGES`` history pages (``messages``) and
their authors' display data (``profiles``). A reader who scrolls deeper
meets the history read-ahead (chat.selectors.history.room_history_dicts). Per-user
entries (tokens, access, room lists) are not warmed: each user's come back
with that user's first request. Rendered pages are not either: a room's
newest page changes with every message.

It goes through the selectors readers use, so it fills the same keys with
the same values and only what is missing; an entry present is never
rewritten. Its lookups are kept out of the hit and miss counters
(perf.cache.lookups_apart): they are not readers' lookups. A round reads
many messages before it writes them; an edit or delete that commits in
between is caught by asking the database afterwards (_drop_changed).

The background worker runs :class:`CacheWarmer` (``manage.py chat_worker``);
``manage.py cache_warm`` runs it once.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import connections
from django.utils import timezone

from chat import cache_keys, metrics
from chat.selectors import history as history_selectors
from chat.selectors import rooms as room_selectors
from chat.selectors import unread as unread_selectors
from perf import redis as perf_redis
from perf import cache as perf_cache
from perf.cache import backend as cache_backend
from perf.cache import cache_key

logger = logging.getLogger(__name__)

# Rooms handled per round: each round is about six statements (rooms, seqs,
# tails, ids, messages, profiles, and the change check) and five MGETs,
# whatever the number of rooms in it. 10 rooms (about 2,500 messages) keep each
# statement under the slow-query threshold and the window between read and
# write short.
ROOMS_PER_ROUND = 10
# The background worker's warmer sleeps as long as each round took: half of one
# core at most, while the servers take the load an emptied cache brings.
WORKER_PAUSE = 1.0
MAX_PAUSE = 2.0
# How long before a round began an edit may be stamped and still commit after
# the round read its message (see _drop_changed).
CHANGE_MARGIN = timedelta(seconds=60)


@dataclass
class WarmReport:
    rooms: int = 0
    seconds: float = 0.0  # from start to end, pauses included
    busy: float = 0.0  # without the pauses
    # {family: [entries found, entries filled]}
    families: dict[str, list[int]] = field(default_factory=dict)

    def filled(self, family: str) -> int:
        return self.families.get(family, [0, 0])[1]

    def summary(self) -> str:
        parts = [f"{family} {found + filled:,} ({filled:,} filled)" for family, (found, filled) in sorted(self.families.items())]
        took = f"{self.seconds:.2f} s" + (f" ({self.busy:.2f} s working)" if self.seconds - self.busy > 0.01 else "")
        return f"{self.rooms} rooms in {took}: " + (", ".join(parts) or "nothing to fill")


def warm_message_count(pages: int) -> int:
    """Messages that ``pages`` default-size history pages read, newest first: each page reads one row more (whether more exist)."""
    return settings.CHAT_PAGE_SIZE * pages + 1


def cache_warm(*, rooms: int, pages: int, pause: float = 0.0) -> WarmReport:
    """Fill the cache for the ``rooms`` rooms with the newest messages, ``pages`` history pages deep each.

    Returns what was found and filled per family.

    Does nothing with caching off. Safe beside live traffic: it fills only
    missing entries, through the readers' own fill paths, so the writers'
    invalidation covers what it fills exactly as it covers a reader's fill.
    ``pause``: after each round, sleep this many times as long as the round
    took, to leave the database and the CPU to the servers meanwhile.
    """
    report = WarmReport()
    if rooms <= 0 or pages <= 0 or not perf_cache.caching_enabled():
        return report
    started = time.perf_counter()
    span = warm_message_count(pages)
    with perf_cache.lookups_apart() as tally:
        active = room_selectors.rooms_recently_active(limit=rooms)
        for start in range(0, len(active), ROOMS_PER_ROUND):
            round_started, read_from = time.perf_counter(), timezone.now()
            room_ids = active[start : start + ROOMS_PER_ROUND]
            messages_before = _messages_filled(tally)
            room_selectors.rooms_cached(room_ids=room_ids)
            # Read now, not with the list: a room's tail is kept under its current unread state.
            unread_selectors.room_unread_tails(states=room_selectors.rooms_unread_states(room_ids=room_ids))
            ids = history_selectors.rooms_newest_message_ids(room_ids=room_ids, count=span)
            history_selectors.message_dicts(ids=ids)
            if _messages_filled(tally) > messages_before:  # it wrote messages: some may have changed meanwhile
                _drop_changed(room_ids=room_ids, from_id=min(ids), since=read_from - CHANGE_MARGIN)
            took = time.perf_counter() - round_started
            report.busy += took
            if pause > 0:
                time.sleep(min(pause * took, MAX_PAUSE))
    report.rooms = len(active)
    report.families = tally
    report.seconds = time.perf_counter() - started
    metrics.CACHE_WARM_RUNS.inc()
    metrics.CACHE_WARM_SECONDS.inc(report.busy)
    for family, (_, filled) in tally.items():
        metrics.CACHE_WARM_FILLED.labels(family).inc(filled)
    return report


def _messages_filled(tally: dict[str, list[int]]) -> int:
    return tally.get("messages", [0, 0])[1]


def _drop_changed(*, room_ids: list[int], from_id: int, since: Any) -> None:
    """Drop what a round may have stored stale: messages edited or deleted while it read them.

    An edit that commits between the round's read and its write has had its
    invalidation run before the write, so the write would keep the old body
    for CACHE_TTL_ENTRIES. Asking the database afterwards which of the
    round's messages changed since it began (less CHANGE_MARGIN, for edits
    stamped before their commit) closes that window: their entries go, and
    so do their rooms' stamps (pages rendered from them meanwhile). Unread
    tails need nothing: one stored under a state a delete has since left is
    never read. Rooms and profiles filled by a round keep the same small
    window a reader's fill has: one short query between read and write.
    """
    changed = history_selectors.messages_changed_since(room_ids=room_ids, from_id=from_id, since=since)
    if not changed:
        return
    perf_cache.invalidate(
        *(cache_keys.message_cache_key(message_id) for message_id, _ in changed),
        *(cache_keys.room_stamp_key(room_id) for room_id in {room_id for _, room_id in changed}),
    )


def warm_marker_key() -> str:
    return cache_key("warm", "marker")


def cache_warm_if_due(*, rooms: int, pages: int, every: float, pause: float = 0.0) -> WarmReport | None:
    """:func:`cache_warm` unless it ran less than ``every`` seconds ago against this cache; None when not due.

    The marker lives in the cache itself: emptying the cache makes the warming
    due, and of several workers only the one whose ``add`` wins does it. With
    Redis down the ``add`` fails and nothing runs. A warming that fails
    removes the marker, so the next check tries again.
    """
    if rooms <= 0 or pages <= 0 or not perf_cache.caching_enabled():
        return None
    if not cache_backend().add(warm_marker_key(), int(time.time()), max(1, int(every))):
        return None
    try:
        return cache_warm(rooms=rooms, pages=pages, pause=pause)
    except BaseException:
        perf_cache.invalidate(warm_marker_key())  # due again at the next check
        raise


def shared_cache() -> bool:
    """True when the default cache is Redis, shared with the servers (a local-memory cache warms only this process)."""
    return perf_redis.sync_client() is not None


class CacheWarmer(threading.Thread):
    """Checks every ``check`` seconds whether warming is due (:func:`cache_warm_if_due`) and runs it.

    A daemon thread: it ends with the process, or at :meth:`stop`. Errors are
    logged and the next check tries again.
    """

    def __init__(self, *, rooms: int, pages: int, every: float, check: float) -> None:
        super().__init__(name="cache-warmer", daemon=True)
        self.rooms, self.pages, self.every, self.check = rooms, pages, every, check
        self._stopped = threading.Event()
        self.checks = 0
        self.runs = 0

    @classmethod
    def from_settings(cls) -> CacheWarmer | None:
        """The warmer the settings ask for, or None (off, caching off, or no shared cache)."""
        rooms, pages = settings.CHAT_CACHE_WARM_ROOMS, settings.CHAT_CACHE_WARM_PAGES
        if rooms <= 0 or pages <= 0 or not perf_cache.caching_enabled() or not shared_cache():
            return None
        return cls(rooms=rooms, pages=pages, every=settings.CHAT_CACHE_WARM_EVERY, check=settings.CHAT_CACHE_WARM_CHECK)

    def run(self) -> None:
        while True:
            try:
                self.check_once()
            finally:
                # This thread's database connection goes back (to the pool) between checks.
                connections.close_all()
            if self._stopped.wait(self.check):
                return

    def check_once(self) -> WarmReport | None:
        first = self.checks == 0
        self.checks += 1
        try:
            report = cache_warm_if_due(rooms=self.rooms, pages=self.pages, every=self.every, pause=WORKER_PAUSE)
        except Exception:  # noqa: BLE001 - a failed warming must not stop the worker
            logger.exception("cache warming failed")
            return None
        if report is not None:
            self.runs += 1
            logger.info("cache warmed: %s", report.summary())
        elif first:
            if cache_backend().get(warm_marker_key()) is None:
                logger.info("cache warming skipped: the cache did not answer (it is tried again every %g s)", self.check)
            else:
                logger.info("cache warming skipped: it ran less than %g s ago against this cache", self.every)
        return report

    def stop(self) -> None:
        self._stopped.set()


def report_dict(report: WarmReport) -> dict[str, Any]:
    return {"rooms": report.rooms, "seconds": round(report.seconds, 3), "busy_seconds": round(report.busy, 3), "families": report.families}
