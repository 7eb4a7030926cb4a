"""Real-time publishing. One helper names groups; one function publishes.

An event is serialized to JSON text exactly once, here, and that text is
forwarded unchanged to every subscribed socket by chat.consumers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from chat import metrics
from perf.redis import existing_loop_resource, loop_resource

logger = logging.getLogger(__name__)

# The channel-layer message type every room event travels as (handler: room_event).
ROOM_EVENT = "room.event"
USER_EVENT = "user.event"


class _Publisher:
    """One per event loop: hands layer calls to the loop in order, without making the caller wait.

    Services publish from ``transaction.on_commit`` in a worker thread.
    Waiting there for Redis (``async_to_sync``) would hold that thread, and
    the sender's ack, for several round trips. Instead the call is queued on
    the server's event loop and a single task performs queued calls one at a
    time, in the order they were committed.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.queue: asyncio.Queue = asyncio.Queue()
        self.task = loop.create_task(self._run())

    async def _run(self) -> None:
        while True:
            item = await self.queue.get()
            if item is None:
                return  # stop(): everything queued before it is sent
            method, args, what = item
            layer = get_channel_layer()
            try:
                await getattr(layer, method)(*args)
            except Exception:  # noqa: BLE001 - the write is committed; subscribers recover by resume/gap fill
                metrics.PUBLISH_FAILURES.inc()
                logger.exception("publish failed: %s", what)

    async def stop(self, timeout: float = 5.0) -> None:
        """Send what is queued, then stop (shutdown; tests between event loops)."""
        if self.task.done():
            return
        self.queue.put_nowait(None)
        try:
            await asyncio.wait_for(asyncio.shield(self.task), timeout)
        except asyncio.TimeoutError:
            self.task.cancel()


def _publisher() -> _Publisher:
    """This event loop's publisher (perf.redis.loop_resource: stopped with the loop's other resources)."""
    return loop_resource("publisher", lambda: _Publisher(asyncio.get_running_loop()), _Publisher.stop)


# The loop that serves this process (its sockets, and the HTTP worker threads' requests).
_serving_loop: asyncio.AbstractEventLoop | None = None


def start_publisher() -> None:
    """Make this loop's publisher and name it the process's serving loop (lifespan startup, a socket's connect).

    Worker threads (HTTP requests, a socket's database work) then queue their
    publishes on it instead of waiting for Redis. Elsewhere (a management
    command, Django's test client) a thread publishes and waits.
    """
    global _serving_loop
    _publisher()
    _serving_loop = asyncio.get_running_loop()


def _enqueue(item: tuple) -> None:
    _publisher().queue.put_nowait(item)


def _layer_call(method: str, *args: Any, what: str) -> None:
    """Run ``layer.<method>(*args)``: queued on the serving loop's publisher when called on a loop
    or from a thread of a serving process, else inline."""
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is not None:  # async code on the loop
        _enqueue((method, args, what))
        return
    loop = _serving_loop
    if loop is not None and loop.is_running() and existing_loop_resource(loop, "publisher") is not None:
        loop.call_soon_threadsafe(_enqueue, (method, args, what))
        return
    layer = get_channel_layer()
    try:
        async_to_sync(getattr(layer, method))(*args)
    except Exception:  # noqa: BLE001 - any layer failure must not undo a committed write
        metrics.PUBLISH_FAILURES.inc()
        logger.exception("publish failed: %s", what)


def room_group(room_id: int) -> str:
    """The channel-layer group of a room's subscribers."""
    return f"room.{int(room_id)}"


def room_event_message(*, room_id: int, kind: str, payload: dict[str, Any], seq: int | None = None) -> dict[str, Any]:
    """The channel-layer message for one event: the frame text plus routing fields."""
    text = orjson.dumps({"type": kind, **payload}).decode()
    return {"type": ROOM_EVENT, "room": room_id, "kind": kind, "seq": seq, "text": text, "ts": time.time()}


def user_group(user_id: int) -> str:
    """The channel-layer group of all sockets of one user (mentions, personal events)."""
    return f"user.{int(user_id)}"


def publish_user_event(*, user_id: int, kind: str, payload: dict[str, Any]) -> None:
    """Send one event to every socket of a user. Failures are logged and counted."""
    if get_channel_layer() is None:
        return
    text = orjson.dumps({"type": kind, **payload}).decode()
    message = {"type": USER_EVENT, "user": user_id, "kind": kind, "text": text}
    _layer_call("group_send", user_group(user_id), message, what=f"user={user_id} kind={kind}")


# Control events: read by each socket of the server, never forwarded to the client.
# "auth.check": the user's credentials changed (a token deleted, a logout, the user
# saved or deleted); each of their sockets checks its own again, and one whose
# session is ``session`` (its hash) closes at once. "access.check": what the user
# (user group; ``project`` or ``rooms`` narrow it) or anyone (room group) may read
# changed; each socket checks its subscriptions again.
AUTH_CHECK = "auth.check"
ACCESS_CHECK = "access.check"
CONTROL_KINDS = frozenset({AUTH_CHECK, ACCESS_CHECK})


def publish_user_control(*, user_id: int, kind: str, **fields: Any) -> None:
    """Send a control event to every socket of a user, on every server process. Call it after commit."""
    if get_channel_layer() is None:
        return
    message = {"type": USER_EVENT, "user": user_id, "kind": kind, "text": None, **fields}
    _layer_call("group_send", user_group(user_id), message, what=f"user={user_id} kind={kind}")


def publish_room_control(*, room_id: int, kind: str) -> None:
    """Send a control event to every socket subscribed to a room. Call it after commit."""
    if get_channel_layer() is None:
        return
    message = {"type": ROOM_EVENT, "room": room_id, "kind": kind, "seq": None, "text": None, "ts": None}
    _layer_call("group_send", room_group(room_id), message, what=f"room={room_id} kind={kind}")


def publish_room_event(*, room_id: int, kind: str, payload: dict[str, Any], seq: int | None = None) -> None:
    """Send one event to a room's group. Call it from ``transaction.on_commit``.

    A channel-layer failure (Redis down) is logged and swallowed: the write is
    already committed, and subscribers recover it through resume/gap fill.
    """
    if get_channel_layer() is None:
        return
    message = room_event_message(room_id=room_id, kind=kind, payload=payload, seq=seq)
    _layer_call("group_send", room_group(room_id), message, what=f"room={room_id} kind={kind} seq={seq}")


# Summaries of a message that change often are sent whole: its reactions
# (event ``reaction``) and its thread's replies (event ``thread.updated``).


class _SummaryCoalescer:
    """One per event loop: gathers the messages whose summaries changed and publishes each once per window.

    A storm of reactions (or replies) on one message then costs one summary
    read and one event per window per server process, however many arrived.
    The summary is read when the window closes, so it holds every change
    committed before; each event carries ``version`` (the time the read
    started) and clients keep the newest per message, since two processes
    may publish the same message's summary in either order.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.pending: dict[tuple[str, int], int] = {}  # (kind, message id) -> room id
        self.handle: asyncio.TimerHandle | None = None

    def mark(self, kind: str, room_id: int, message_id: int) -> None:
        self.pending[(kind, message_id)] = room_id
        if self.handle is None:
            from django.conf import settings

            self.handle = self.loop.call_later(settings.CHAT_REACTION_WINDOW, self._flush)

    async def stop(self) -> None:
        """Publish what is waiting now (shutdown): the publisher, stopped after this, still sends it."""
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None
        pending, self.pending = self.pending, {}
        if pending:
            await self._publish(pending)

    def _flush(self) -> None:
        self.handle = None
        pending, self.pending = self.pending, {}
        self.loop.create_task(self._publish(pending))

    async def _publish(self, pending: dict[tuple[str, int], int]) -> None:
        from chat.asyncdb import db_async

        try:
            found = await db_async(summary_event_messages)(pending)
        except Exception:  # noqa: BLE001 - the changes are committed; the next change or a reload shows them
            metrics.PUBLISH_FAILURES.inc()
            logger.exception("message summaries could not be read for %d messages", len(pending))
            return
        for room_id, message in found:
            _enqueue(("group_send", (room_group(room_id), message), f"room={room_id} kind={message['kind']}"))


def summary_event_messages(pending: dict[tuple[str, int], int]) -> list[tuple[int, dict[str, Any]]]:
    """The event of each (kind, message id) in ``pending`` (-> room id): one read per kind for all.

    A ``reaction`` event is a change of its room: each message's new summary
    takes the room's next ``seq`` (chat.services.room_changes) and is read
    under the room's lock, so it holds every reaction committed before that
    seq, and resume replays it. ``thread.updated`` follows from replies,
    which have seqs of their own, and takes none.
    """
    from django.db import transaction

    from chat.models import Message, RoomChange
    from chat.selectors import history as history_selectors
    from chat.services.room_changes import room_changes_log

    reacted = [message_id for kind, message_id in pending if kind == "reaction"]
    seqs: dict[int, int] = {}
    reactions: dict[int, list[dict[str, Any]]] = {}
    if reacted:
        with transaction.atomic():
            # Messages gone with their room or author have nothing left to announce.
            rooms: dict[int, list[int]] = {}
            for message_id, room_id in sorted(Message.objects.filter(id__in=reacted).values_list("id", "room_id")):
                rooms.setdefault(room_id, []).append(message_id)
            # Rooms in id order, as the message writer locks them.
            for room_id in sorted(rooms):
                ids = rooms[room_id]
                seqs.update(zip(ids, room_changes_log(room_id=room_id, changes=[(RoomChange.Kind.REACTION, m) for m in ids])))
            version = time.time_ns()
            reactions = history_selectors.messages_reactions(message_ids=list(seqs))
    else:
        version = time.time_ns()
    threads = history_selectors.thread_summaries(root_ids=[m for kind, m in pending if kind == "thread.updated"])
    found = []
    for (kind, message_id), room_id in pending.items():
        if kind == "reaction":
            seq = seqs.get(message_id)
            if seq is None:
                continue
            payload = {"room": room_id, "message": message_id, "version": version, "seq": seq,
                       "reactions": reactions.get(message_id, [])}  # fmt: skip
        else:
            seq = None
            payload = {"room": room_id, "root": message_id, "version": version, "thread": threads.get(message_id)}
        found.append((room_id, room_event_message(room_id=room_id, kind=kind, payload=payload, seq=seq)))
    return found


def publish_summary(*, kind: str, room_id: int, message_id: int) -> None:
    """Announce that a message's ``kind`` summary changed (call it after commit): coalesced on a serving loop, else now."""
    if get_channel_layer() is None:
        return
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is not None:
        _summary_coalescer().mark(kind, room_id, message_id)
        return
    loop = _serving_loop
    if loop is not None and loop.is_running() and existing_loop_resource(loop, "publisher") is not None:
        loop.call_soon_threadsafe(lambda: _summary_coalescer().mark(kind, room_id, message_id))
        return
    for room, message in summary_event_messages({(kind, message_id): room_id}):
        _layer_call("group_send", room_group(room), message, what=f"room={room} kind={kind}")


def publish_reactions(*, room_id: int, message_id: int) -> None:
    publish_summary(kind="reaction", room_id=room_id, message_id=message_id)


def _summary_coalescer() -> _SummaryCoalescer:
    return loop_resource("summaries", lambda: _SummaryCoalescer(asyncio.get_running_loop()), _SummaryCoalescer.stop)


def background_channel() -> str:
    """The worker's channel name (settings.CHAT_BACKGROUND_CHANNEL; ``manage.py chat_worker`` runs it)."""
    from django.conf import settings

    return settings.CHAT_BACKGROUND_CHANNEL


def enqueue_background(message: dict[str, Any]) -> None:
    """Hand work that is not the message itself (mentions, …) to the background worker."""
    if get_channel_layer() is None:
        return
    _layer_call("send", background_channel(), message, what=f"background {message.get('type')}")
