"""A socket's bounded, batching, prioritised send buffer.

Every frame a consumer sends goes through its Outbox. When several frames are
pending they leave as one WebSocket frame holding a JSON array of the events
(each event's text is already serialized, so batching is string joining, not
re-encoding).

Sending is paced per event loop, not per socket: ``put`` on an idle outbox
adds it to its loop's pending set and, if that loop has no flush scheduled,
schedules one ``window`` seconds later (``window=0``: at the loop's next
turn). The flush sends every pending outbox's batch. The room hub hands an
event to all of a room's local sockets in one pass, so those sockets flush at
the same moment with the same batch text, which permessage-deflate
(perf.ws_deflate) compresses once for all of them; and a burst costs the
loop one timer and one task, not a timer and a task per socket.

One task sends the whole flush as long as sends complete without waiting.
A send that waits (a client not reading: the transport is paused by flow
control) keeps that task to itself, and the rest of the flush goes on in a
new task at once, so a slow socket never delays another. While its send
waits, a socket's new frames collect and leave as soon as it completes.
An idle outbox holds no task and no timer.

Under pressure (more than ``limit`` bytes of frames pending) the
lowest-priority frames are shed first: typing/presence, then read markers.
Messages, edits, deletes and replies are never shed; if they alone exceed the
limit the socket is a slow consumer and ``on_overflow`` is called (the
consumer closes it with 4408 and the client resumes from its last id). The
limit is in bytes, not events, so a socket's buffer is bounded in memory
whatever the size of its events.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Awaitable, Callable

from perf.redis import loop_resource

logger = logging.getLogger(__name__)

# Priorities: lower is more important.
PRIORITY_REPLY = 0  # acks, errors, subscribed, hello, pong
PRIORITY_MESSAGE = 1  # message.new
PRIORITY_CHANGE = 2  # message.edited, message.deleted, resync, mention
PRIORITY_READ = 3  # read markers
PRIORITY_EPHEMERAL = 4  # typing, presence
SHEDDABLE = (PRIORITY_EPHEMERAL, PRIORITY_READ)  # shed in this order

MAX_BATCH_BYTES = 512 * 1024


_NO_ITEMS: tuple[()] = ()


class Outbox:
    def __init__(
        self,
        send_text: Callable[[str], Awaitable[None]],
        *,
        limit: int,
        window: float,
        on_overflow: Callable[[], Awaitable[None]],
        on_shed: Callable[[int, int], None] | None = None,
        on_batch: Callable[[int, int], None] | None = None,
    ) -> None:
        self._send_text = send_text
        self.limit = limit
        self._window = window
        self._on_overflow = on_overflow
        self._on_shed = on_shed
        self._on_batch = on_batch
        # A deque only while frames are pending (an empty one is 760 B, held by every idle socket otherwise).
        self._items: deque[tuple[int, str]] | tuple[()] = _NO_ITEMS
        self._bytes = 0  # pending text, in characters (frames are mostly ASCII JSON)
        self._closed = False
        self._failed = False
        self.overflowed = False
        # Waiting for its loop's next flush (in the flusher's pending set or in a flush under way).
        self._queued = False
        # The flush sending this outbox's frames right now; None otherwise (an idle socket holds nothing).
        self._flush: _Flush | None = None
        self._flusher: _Flusher | None = None  # its loop's, for the window

    def __len__(self) -> int:
        return len(self._items)

    @property
    def pending_bytes(self) -> int:
        return self._bytes

    def put(self, priority: int, text: str) -> None:
        if self._closed:
            return
        if self._items is _NO_ITEMS:
            self._items = deque()
        self._items.append((priority, text))
        self._bytes += len(text)
        if self._bytes > self.limit:
            self._shed()
        # A sending outbox sends what arrives meanwhile when its send completes.
        if not self._queued and self._flush is None and not self._closed and not self._failed:
            self._queued = True
            flusher = self._flusher
            if flusher is None or flusher.stopped:  # looked up once: an outbox lives on one loop
                flusher = self._flusher = _flusher(self._window)
            flusher.add(self)

    def _shed(self) -> None:
        for level in SHEDDABLE:
            before = len(self._items)
            self._items = deque(item for item in self._items if item[0] != level)
            dropped = before - len(self._items)
            if dropped:
                self._bytes = sum(len(text) for _, text in self._items)
                if self._on_shed:
                    self._on_shed(level, dropped)
            if self._bytes <= self.limit:
                return
        if not self.overflowed:
            self.overflowed = True
            self._items = _NO_ITEMS
            self._bytes = 0
            self._closed = True
            asyncio.ensure_future(self._on_overflow())

    def _take_batch(self) -> str:
        first = self._items.popleft()[1]
        self._bytes -= len(first)
        if not self._items:
            return first
        parts = [first]
        size = len(first)
        while self._items and size + len(self._items[0][1]) < MAX_BATCH_BYTES:
            text = self._items.popleft()[1]
            self._bytes -= len(text)
            parts.append(text)
            size += len(text) + 1
        if len(parts) == 1:
            return first
        return "[" + ",".join(parts) + "]"

    async def _drain(self, flush: _Flush) -> None:
        """Send everything pending, in batches, as part of ``flush``; a dead transport ends the writer."""
        self._queued = False
        if self._closed or self._failed or self._flush is not None:
            return
        self._flush = flush
        try:
            while self._items:
                count = len(self._items)
                text = self._take_batch()
                if self._on_batch:
                    self._on_batch(count - len(self._items), len(text))
                await self._send_text(text)
            self._items = _NO_ITEMS
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - a dead transport ends the writer; the consumer disconnects
            self._failed = True
            logger.debug("outbox writer stopped", exc_info=True)
        finally:
            self._flush = None

    async def close(self) -> None:
        self._closed = True
        self._items = _NO_ITEMS
        self._bytes = 0
        if self._queued and self._flusher is not None:
            self._flusher.discard(self)
        flush = self._flush
        if flush is None or flush.task is asyncio.current_task():
            return
        # Its send is waiting: the flush's task carries this outbox alone from now on, so it can be cancelled.
        flush.go_alone()
        flush.task.cancel()
        try:
            await flush.task
        except (asyncio.CancelledError, Exception):  # noqa: BLE001
            pass


class _Flusher:
    """One event loop's pending outboxes of one batching window, and the one timer that flushes them."""

    def __init__(self, window: float) -> None:
        self.window = window
        self.loop = asyncio.get_running_loop()
        self.pending: dict[Outbox, None] = {}  # insertion-ordered: outboxes flush in the order they got frames
        self.scheduled = False  # a flush is due (its timer runs, or its task has not started yet)
        self.timer: asyncio.TimerHandle | None = None
        self.stopped = False

    def add(self, outbox: Outbox) -> None:
        self.pending[outbox] = None
        if self.scheduled:
            return
        self.scheduled = True
        if self.window > 0:
            self.timer = self.loop.call_later(self.window, self._due)
        else:
            _Flush(self.loop, self)

    def discard(self, outbox: Outbox) -> None:
        self.pending.pop(outbox, None)

    def _due(self) -> None:
        self.timer = None
        _Flush(self.loop, self)

    def take(self) -> list[Outbox]:
        """Everything pending now; the next ``add`` schedules the next flush."""
        outboxes = list(self.pending)
        self.pending.clear()
        self.scheduled = False
        return outboxes

    async def stop(self) -> None:
        self.stopped = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        for outbox in self.pending:
            outbox._queued = False
        self.pending.clear()
        self.scheduled = False


class _Flushers(dict[float, _Flusher]):
    """An event loop's flushers by window (one in a server: every socket has the configured window)."""

    def __missing__(self, window: float) -> _Flusher:
        flusher = self[window] = _Flusher(window)
        return flusher

    async def stop(self) -> None:
        for flusher in self.values():
            await flusher.stop()


def _flusher(window: float) -> _Flusher:
    """This event loop's flusher for ``window`` (perf.redis.loop_resource: nothing outlives its loop)."""
    return loop_resource("outbox-flushers", _Flushers, _Flushers.stop)[window]


class _Flush:
    """Sends outboxes' batches in one task while no send waits.

    A send that waits suspends the task; right after the task's first step a
    check (queued behind it on the loop) sees it suspended, leaves the waiting
    outbox to that task alone and starts a new flush for the outboxes after
    it. Only a task's first step can carry several outboxes, so no send ever
    waits behind another's.
    """

    __slots__ = ("loop", "flusher", "outboxes", "next", "started", "alone", "task")

    def __init__(self, loop: asyncio.AbstractEventLoop, flusher: _Flusher | None, outboxes: list[Outbox] | None = None, start: int = 0) -> None:
        self.loop = loop
        self.flusher = flusher  # the first flush of a batch takes the flusher's pending set when it starts
        self.outboxes = outboxes
        self.next = start
        self.started = False
        self.alone = False
        self.task = loop.create_task(self._run())
        loop.call_soon(self._check)

    async def _run(self) -> None:
        self.started = True
        if self.outboxes is None:
            self.outboxes = self.flusher.take()
            self.flusher = None
        try:
            while not self.alone and self.next < len(self.outboxes):
                outbox = self.outboxes[self.next]
                self.next += 1
                await outbox._drain(self)
        finally:
            if not self.alone:  # cancelled with outboxes still to go (the loop is shutting down)
                for outbox in self.outboxes[self.next :]:
                    outbox._queued = False
            self.outboxes = ()

    def _check(self) -> None:
        if self.task.done() or self.alone:
            return
        if not self.started:  # a task factory that runs it later: look again next turn
            self.loop.call_soon(self._check)
            return
        self.go_alone()

    def go_alone(self) -> None:
        """The task waits in the send of ``outboxes[next - 1]``: keep it to that outbox, flush the rest in a new task."""
        if self.alone:
            return
        self.alone = True
        rest, self.outboxes = self.outboxes, ()  # a send may wait long: hold no other outbox meanwhile
        if rest and self.next < len(rest):
            _Flush(self.loop, None, rest, self.next)
