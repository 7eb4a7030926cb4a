"""Fan-out inside one server process: one group membership per room (and per user) per process.

With plain Channels groups every socket's channel is a group member: the layer
puts each event into every member channel's queue, and every consumer wakes,
decodes the event (msgpack) and dispatches it on its own. With thousands of
sockets that per-socket machinery, not the network, is the cost of a
broadcast.

Here each server process has one :class:`RoomHub` per event loop with one
layer channel of its own. The hub joins a room's group when the first local
socket subscribes and leaves it when the last one goes; it receives each
event once, decodes it once, counts it once, and hands the frame text (already
serialized by the publisher) to every local subscriber's
``deliver_room_event`` in one loop. Cross-process delivery is unchanged:
every process with subscribers in a room is in that room's group. Personal
events (``user.<id>`` groups: mentions) come the same way, so a socket needs
no channel-layer channel of its own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Protocol

from channels.layers import get_channel_layer

from chat import events, metrics, presence
from perf.redis import loop_resource

logger = logging.getLogger(__name__)


class Subscriber(Protocol):
    socket_id: str

    def check_credentials_if_due(self) -> None: ...

    def deliver_room_event(self, event: dict[str, Any]) -> bool: ...

    def deliver_user_event(self, event: dict[str, Any]) -> None: ...


class RoomHub:
    """The process's members of room groups (``room.<id>``) and personal groups (``user.<id>``)."""

    def __init__(self, layer: Any) -> None:
        self.layer = layer
        self.channel: str | None = None
        self.rooms: dict[int, set[Subscriber]] = {}
        self.users: dict[int, set[Subscriber]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._task: asyncio.Task | None = None
        self._refresh_task: asyncio.Task | None = None
        self._start_lock = asyncio.Lock()

    async def join(self, room_id: int, subscriber: Subscriber) -> None:
        """Add a local subscriber; the first one of a room joins the room's group.

        When this returns, every event published to the room from now on
        reaches ``subscriber``. Raises if the channel layer is unavailable.
        """
        await self._join(self.rooms, room_id, events.room_group(room_id), subscriber)

    async def leave(self, room_id: int, subscriber: Subscriber) -> None:
        """Remove a local subscriber; the last one of a room leaves the room's group."""
        await self._leave(self.rooms, room_id, events.room_group(room_id), subscriber)

    async def join_user(self, user_id: int, subscriber: Subscriber) -> None:
        """Personal events (mentions, …) of ``user_id`` reach ``subscriber`` from now on."""
        await self._join(self.users, user_id, events.user_group(user_id), subscriber)

    async def leave_user(self, user_id: int, subscriber: Subscriber) -> None:
        await self._leave(self.users, user_id, events.user_group(user_id), subscriber)

    async def _join(self, table: dict[int, set[Subscriber]], key: int, group: str, subscriber: Subscriber) -> None:
        members = table.get(key)
        if members is not None:
            members.add(subscriber)
            return
        await self._start()
        async with self._lock(group):
            members = table.get(key)
            if members is None:
                await self.layer.group_add(group, self.channel)
                members = table[key] = set()
            members.add(subscriber)

    async def _leave(self, table: dict[int, set[Subscriber]], key: int, group: str, subscriber: Subscriber) -> None:
        members = table.get(key)
        if members is None or subscriber not in members:
            return
        members.discard(subscriber)
        if members:
            return
        async with self._lock(group):
            if table.get(key) is members and not members:
                del table[key]
                await self.layer.group_discard(group, self.channel)

    def _lock(self, group: str) -> asyncio.Lock:
        # Kept for the hub's lifetime (one per group ever joined): a lock dropped
        # while a joiner waits on it would let a second joiner run beside it.
        lock = self._locks.get(group)
        if lock is None:
            lock = self._locks[group] = asyncio.Lock()
        return lock

    async def _start(self) -> None:
        if self.channel is None:
            async with self._start_lock:  # one channel, even when the first joins come at once
                if self.channel is None:
                    self.channel = await self.layer.new_channel("room-hub.")
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())
        if self._refresh_task is None or self._refresh_task.done():
            self._refresh_task = asyncio.ensure_future(self._refresh_sockets())

    async def _refresh_sockets(self) -> None:
        """Keep this process's sockets counted in their users' socket sets (chat.presence) while they are open,
        and have each check its credentials again every WS_AUTH_RECHECK seconds."""
        from django.conf import settings

        while True:
            await asyncio.sleep(max(1.0, settings.CHAT_PRESENCE_TTL / 3))
            sockets = [(user_id, subscriber) for user_id, members in list(self.users.items()) for subscriber in list(members)]
            await presence.refresh_sockets((user_id, subscriber.socket_id) for user_id, subscriber in sockets)
            # Credentials that end without an event (an expired session) end here too, quiet sockets included.
            for _, subscriber in sockets:
                subscriber.check_credentials_if_due()

    async def stop(self) -> None:
        """Stop receiving and refreshing (shutdown; tests between event loops)."""
        for task in (self._task, self._refresh_task):
            if task is None:
                continue
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass

    async def _run(self) -> None:
        while True:
            try:
                event = await self.layer.receive(self.channel)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - layer down: retry; subscribers recover by gap fill/resume
                logger.warning("room hub receive failed", exc_info=True)
                await asyncio.sleep(0.5)
                continue
            try:
                self.deliver(event)
            except Exception:  # noqa: BLE001 - one bad event must not stop delivery
                logger.exception("room hub delivery failed")

    def deliver(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == events.USER_EVENT:
            for subscriber in list(self.users.get(event.get("user"), ())):
                subscriber.deliver_user_event(event)
            return
        if kind != events.ROOM_EVENT:
            return
        members = self.rooms.get(event["room"])
        if not members:
            return
        if event["kind"] == "message.new" and event.get("ts"):
            # Commit to hand-off, once per message and server process.
            metrics.WS_DELIVERY_LATENCY.observe(max(0.0, time.time() - event["ts"]))
        delivered = 0
        for subscriber in list(members):
            if subscriber.deliver_room_event(event):
                delivered += 1
        if delivered:
            metrics.WS_EVENTS_OUT.labels(event["kind"]).inc(delivered)


def hub() -> RoomHub:
    """This event loop's hub (one per server process in production; perf.redis.loop_resource)."""
    return loop_resource("room-hub", lambda: RoomHub(get_channel_layer()), RoomHub.stop)
