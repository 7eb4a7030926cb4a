"""A socket's bounded, batching, prioritised send buffer.

Every frame a consumer sends goes through its Outbox. A writer task drains
the buffer: when several frames are pending they leave as one WebSocket frame
holding a JSON array of the events (each event's text is already serialized,
so batching is string joining, not re-encoding).

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

logger = logging.getLogger(__name__)

# Priorities: lower is more important.
PRIORITY_REPLY = 0  # acks, errors, subscribed, hello, pong
PRIORITY_MESSAGE = 1  # message.new
PRIORITY_CHANGE = 2  # message.edited, message.deleted, resync, mention
PRIORITY_READ = 3  # read markers
PRIORITY_EPHEMERAL = 4  # typing, presence
SHEDDABLE = (PRIORITY_EPHEMERAL, PRIORITY_READ)  # shed in this order

MAX_BATCH_BYTES = 512 * 1024


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
        self._items: deque[tuple[int, str]] = deque()
        self._bytes = 0  # pending text, in characters (frames are mostly ASCII JSON)
        self._closed = False
        self._failed = False
        self.overflowed = False
        # The writer task exists only while frames are pending: an idle socket holds none.
        self._task: asyncio.Future | None = None

    def __len__(self) -> int:
        return len(self._items)

    @property
    def pending_bytes(self) -> int:
        return self._bytes

    def put(self, priority: int, text: str) -> None:
        if self._closed:
            return
        self._items.append((priority, text))
        self._bytes += len(text)
        if self._bytes > self.limit:
            self._shed()
        if self._task is None and not self._closed and not self._failed:
            self._task = asyncio.ensure_future(self._run())

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
            self._items.clear()
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

    async def _run(self) -> None:
        """Wait the batching window, send everything pending, and end (put starts the next one)."""
        try:
            if self._window:
                await asyncio.sleep(self._window)
            while self._items:
                count = len(self._items)
                text = self._take_batch()
                if self._on_batch:
                    self._on_batch(count - len(self._items), len(text))
                await self._send_text(text)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - a dead transport ends the writer; the consumer disconnects
            self._failed = True
            logger.debug("outbox writer stopped", exc_info=True)
        finally:
            self._task = None

    async def close(self) -> None:
        self._closed = True
        self._items.clear()
        self._bytes = 0
        task = self._task
        if task is None:
            return
        task.cancel()
        try:
            await task
        except (asyncio.CancelledError, Exception):  # noqa: BLE001
            pass
