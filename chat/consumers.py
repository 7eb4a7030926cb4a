"""The chat WebSocket. Frames are documented in docs/PROTOCOL.md.

Shape: authenticate in ``connect``; ``receive`` decodes one JSON frame and
dispatches on ``type`` to one handler; handlers call selectors/services through
``chat.asyncdb.db_async``. Room events arrive from the channel layer already
serialized and are forwarded unchanged through the socket's Outbox (batching,
priorities, backpressure).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

import orjson
from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import DatabaseError

from chat import events, fanout, metrics, presence, resuming, sending
from chat.asyncdb import db_async
from chat.batching import batcher
from chat.models import Room
from chat.auth import credentials_valid, session_key
from chat.selectors import history as history_selectors
from chat.selectors import room_events
from chat.selectors import rooms as room_selectors
from chat.services import messages as message_services
from chat.services import pins as pin_services
from chat.services import reactions as reaction_services
from chat.services import rooms as room_services
from chat.services import saved as saved_services
from chat.signals import session_key_digest
from chat.outbox import (
    PRIORITY_CHANGE,
    PRIORITY_EPHEMERAL,
    PRIORITY_MESSAGE,
    PRIORITY_READ,
    PRIORITY_REPLY,
    Outbox,
)
from chatsite import ratelimit
from chatsite.errors import DATABASE_UNAVAILABLE, ChatError, InvalidInput, NotFound
from chatsite.users import user_dict
from perf import context as perf_context
from perf import metrics as perf_metrics

logger = logging.getLogger(__name__)

# Close codes (docs/PROTOCOL.md).
CLOSE_UNAUTHENTICATED = 4401  # also: the credentials were revoked while the socket was open
CLOSE_SLOW_CONSUMER = 4408
CLOSE_TOO_MANY_SOCKETS = 4429

EVENT_PRIORITY = {
    "message.new": PRIORITY_MESSAGE,
    "message.edited": PRIORITY_CHANGE,
    "message.deleted": PRIORITY_CHANGE,
    "mention": PRIORITY_CHANGE,
    "reaction": PRIORITY_CHANGE,
    "read": PRIORITY_READ,
    "typing": PRIORITY_EPHEMERAL,
    "presence": PRIORITY_EPHEMERAL,
}


def _int_field(frame: dict[str, Any], name: str, *, required: bool = True) -> int | None:
    value = frame.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0 or value > 2**63 - 1:
        raise InvalidInput(f"'{name}' must be a non-negative integer.", code="invalid_field")
    return value


def _credentials_group(checks: list[tuple[dict[str, Any], int]]) -> list[bool]:
    """Whether each socket's credentials still hold: sockets opened together come due together (WS_AUTH_RECHECK)."""
    return [credentials_valid(scope, user_id) for scope, user_id in checks]


def _gap(room_id: int, after_seq: int, before_seq: int) -> list[str]:
    return room_events.room_events_between(room_id=room_id, after_seq=after_seq, before_seq=before_seq).frames


# The Outbox's counters: functions of the module, not a closure or bound method per socket.
def _count_shed(priority: int, n: int) -> None:
    metrics.WS_SHED.labels(str(priority)).inc(n)


def _count_batch(events_in_frame: int, size: int) -> None:
    metrics.WS_FRAMES_OUT.inc()
    metrics.WS_BYTES_OUT.inc(size)
    metrics.WS_BATCH_SIZE.observe(events_in_frame)


class _NoEntries(dict):
    """The shared, empty default of a socket's per-room maps: reads and pops work, writes are refused.

    A socket holds its own dict only while it has entries (``ChatConsumer._own``
    and ``_pop``): most never hold a gap fill, an access check or a typing time.
    """

    __slots__ = ()

    def _refuse(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("shared empty map: write to ChatConsumer._own(name)")

    __setitem__ = setdefault = update = __ior__ = _refuse


NO_ENTRIES: dict[Any, Any] = _NoEntries()


class ChatConsumer(AsyncWebsocketConsumer):
    """One socket per browser tab or program; many room subscriptions per socket."""

    outbox: Outbox | None = None
    user_joined = False
    # No channel-layer channel per socket (Channels skips it for an alias that
    # names no layer): one less queue, Redis subscription and waiting task each.
    channel_layer_alias = "chat.no-channel-per-socket"
    # A socket holds its own of these only while they have entries; until then,
    # and again once emptied, it reads the class's shared empty default, so an
    # idle socket holds none of them.
    # room id -> events held back while a gap fill (or the subscribe's backlog read) for that room runs
    filling: dict[int, list[dict[str, Any]]] = NO_ENTRIES
    # room id -> events held back while the socket checks its access to the room again
    checking: dict[int, list[dict[str, Any]]] = NO_ENTRIES
    # room id -> when this socket last relayed typing there
    typing_sent: dict[int, float] = NO_ENTRIES
    # gap fills, access and credential checks under way (cancelled at disconnect)
    fill_tasks: set[asyncio.Future] | frozenset[asyncio.Future] = frozenset()
    # when this socket's recent subscribes were (WS_SUBSCRIBE_RATE)
    subscribes: tuple[float, ...] = ()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Channels' ``AsyncConsumer.__call__`` without a task per client frame.

        Channels reads each message in a new task and waits for it with
        ``asyncio.wait`` (so it can also read a channel-layer channel, which this
        consumer does not have): an idle socket held that task, its coroutines,
        the wait's future and callbacks, and the last message read with the task
        that read it. Here the socket's one task reads the next message itself;
        as before, the next is read only once the last has been handled.
        """
        self.scope = scope
        self.channel_layer = get_channel_layer(self.channel_layer_alias)
        if self.channel_layer is not None:  # a subclass with a layer channel: Channels' own loop
            return await super().__call__(scope, receive, send)
        self.base_send = send
        try:
            while True:
                await self.dispatch(await receive())
        except StopConsumer:
            pass

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Channels' dispatch without its database hop before every message.

        ``AsyncConsumer.dispatch`` first runs ``close_old_connections`` on the
        process's one shared sync thread, for every client frame (each ping,
        each message.send) and for connect and disconnect. This consumer never
        uses that thread's connections: its database work runs through
        ``db_async``, which gives its thread's connections back before and
        after every call, or on the direct send path's own pool
        (chat.asyncdb). The hop was a wake-up of that thread and two of the
        event loop per frame, all of them queued behind each other.
        """
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def connect(self) -> None:
        # Names this connection's database work in the slow-query log.
        perf_context.bind(consumer=type(self).__name__, request_id=perf_context.scope_request_id(self.scope))
        self.user = self.scope.get("user")
        # room id -> seq of the last message.new delivered on this socket
        self.cursors: dict[int, int] = {}
        # Names this socket in presence (it has no channel-layer channel).
        self.socket_id = uuid.uuid4().hex
        # room id -> its project, for a project's access check
        self.room_projects: dict[int, int] = {}
        # Bumped by every access check: a subscribe that overlapped one checks its room again.
        self.access_epoch = 0
        self.revoked = False
        self.credentials_checked = time.monotonic()
        self.registered = False
        # This loop serves sockets, so sends publish through its publisher (servers without lifespan).
        events.start_publisher()
        authenticated = self.user is not None and self.user.is_authenticated
        if authenticated:
            # Personal events through the process's hub. Before accept: with the
            # channel layer down this raises and SocketSetupGuard answers 4503.
            await fanout.hub().join_user(self.user.id, self)
            self.user_joined = True
        await self.accept()
        if not authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        self.registered = await presence.socket_register(
            user_id=self.user.id, socket_id=self.socket_id, limit=settings.CHAT_WS_MAX_SOCKETS_PER_USER
        )
        if not self.registered:
            metrics.WS_ERRORS.labels("too_many_sockets").inc()
            await self.close(code=CLOSE_TOO_MANY_SOCKETS)
            return
        self.outbox = Outbox(
            self._write,
            limit=settings.CHAT_WS_SEND_BUFFER_BYTES,
            window=settings.CHAT_WS_BATCH_WINDOW,
            on_overflow=self._slow_consumer,
            on_shed=_count_shed,
            on_batch=_count_batch,
        )
        metrics.WS_CONNECTIONS.inc()
        perf_metrics.user_seen(self.user.id)
        self.send_frame({"type": "hello", "user": {"id": self.user.id, "username": self.user.username}})

    async def disconnect(self, code: int) -> None:
        if self.user_joined:
            try:
                await fanout.hub().leave_user(self.user.id, self)
            except Exception:  # noqa: BLE001 - a layer that is down has forgotten the membership anyway
                logger.warning("leaving the user's group failed", exc_info=True)
        if self.registered:
            await presence.socket_unregister(user_id=self.user.id, socket_id=self.socket_id)
        if self.outbox is None:
            return
        metrics.WS_CONNECTIONS.dec()
        await self.outbox.close()
        for task in list(self.fill_tasks):
            task.cancel()
        for room_id in list(self.cursors):
            await self._leave(room_id)

    def _own(self, name: str) -> dict[Any, Any]:
        """This socket's own ``name`` map, made at its first write (until then the shared empty one)."""
        held = getattr(self, name)
        if held is NO_ENTRIES:
            held = {}
            setattr(self, name, held)
        return held

    def _pop(self, name: str, room_id: int) -> Any:
        """Remove ``room_id`` from the socket's ``name`` map and return its value (None if absent); an emptied map is dropped."""
        held = getattr(self, name)
        value = held.pop(room_id, None)
        if not held and held is not NO_ENTRIES:
            delattr(self, name)  # back to the class's shared empty one
        return value

    # -- outgoing ------------------------------------------------------------

    async def _write(self, text: str) -> None:
        await self.send(text_data=text)

    async def _slow_consumer(self) -> None:
        metrics.WS_SLOW_CLOSES.inc()
        logger.info("closing slow consumer user=%s", getattr(self.user, "id", None))
        await self._close_quietly(CLOSE_SLOW_CONSUMER)

    async def _close_quietly(self, code: int) -> None:
        """Close with ``code``; a client that has already gone is no error (the server says so by raising)."""
        try:
            await self.close(code=code)
        except OSError:
            logger.debug("client gone before the close frame (code %s)", code)

    def send_frame(self, frame: dict[str, Any], priority: int = PRIORITY_REPLY) -> None:
        self.outbox.put(priority, orjson.dumps(frame).decode())

    def send_error(
        self, code: str, message: str, *, ref: Any = None, retryable: bool = False, retry_after: int | None = None
    ) -> None:
        frame: dict[str, Any] = {"type": "error", "code": code, "message": message}
        if retry_after is not None:
            frame["retry_after"] = retry_after
        if ref is not None:
            frame["ref"] = ref
        if retryable:
            frame["retryable"] = True
        metrics.WS_ERRORS.labels(code).inc()
        self.send_frame(frame)

    # -- channel layer -----------------------------------------------------

    # The socket owns no channel-layer channel (channel_layer_alias): room and
    # personal events come from the process's RoomHub (chat.fanout), which
    # calls deliver_room_event / deliver_user_event. Only client frames are
    # dispatched.

    def deliver_user_event(self, event: dict[str, Any]) -> None:
        """Queue one personal event (a mention, …) from the RoomHub, or act on a control event."""
        if self.outbox is None or self.revoked:
            return
        kind = event["kind"]
        if kind == events.AUTH_CHECK:
            ended = event.get("session")
            key = session_key(self.scope)
            if ended is not None and key is not None and ended == session_key_digest(key):
                self._revoke()  # this very session was logged out: no check needed
            else:
                self._spawn(self._check_credentials())
        elif kind == events.ACCESS_CHECK:
            rooms = event.get("rooms")
            project = event.get("project")
            affected = [
                rid
                for rid in [*self.cursors, *self.filling]
                if (rooms is None or rid in rooms) and (project is None or self.room_projects.get(rid) in (project, None))
            ]
            self._check_access(affected)
        else:
            self.outbox.put(EVENT_PRIORITY.get(kind, PRIORITY_CHANGE), event["text"])

    def deliver_room_event(self, event: dict[str, Any]) -> bool:
        """Queue one room event (from the RoomHub) on this socket; True if it was queued.

        Events with a ``seq`` (messages and changes: chat.selectors.room_events)
        are kept in per-room ``seq`` order: a duplicate (already replayed) is
        dropped, and a gap (a publish lost or overtaken by another process's)
        is filled from the database first; events that arrive meanwhile wait
        behind the fill.
        """
        room_id = event["room"]
        if self.outbox is None or self.revoked:
            return False
        if event["kind"] == events.ACCESS_CHECK:
            self._check_access([room_id])
            return False
        held = self.checking.get(room_id)
        if held is not None:
            held.append(event)
            return True
        waiting = self.filling.get(room_id)
        if waiting is not None:
            waiting.append(event)
            return True
        if room_id not in self.cursors:
            return False
        kind, seq = event["kind"], event.get("seq")
        if seq is not None:  # a message or a change of the room: in seq order, once, with no gaps
            cursor = self.cursors[room_id]
            if seq <= cursor:
                return False  # already delivered (backlog or duplicate)
            if seq > cursor + 1:
                metrics.WS_GAP_FILLS.inc()
                self._own("filling")[room_id] = [event]
                self._spawn(self._fill_gap(room_id, cursor, seq))
                return True
            self.cursors[room_id] = seq
        elif kind == "typing" and event.get("user") == self.user.id:
            return False  # nobody needs their own typing indicator
        self.outbox.put(EVENT_PRIORITY.get(kind, PRIORITY_CHANGE), event["text"])
        return True

    async def _fill_gap(self, room_id: int, cursor: int, seq: int) -> None:
        try:
            texts = await db_async(_gap)(room_id, cursor, seq)
        except Exception:  # noqa: BLE001 - the client can still resume; say so
            logger.exception("gap fill failed room=%s", room_id)
            texts = None
        waiting = self._pop("filling", room_id) or []
        if self.outbox is None or room_id not in self.cursors:
            return
        if texts is None:
            self.send_frame({"type": "resync", "room": room_id, "reason": "gap_fill_failed"})
            metrics.WS_RESYNCS.inc()
        else:
            for text in texts:
                self.outbox.put(PRIORITY_MESSAGE, text)
        self.cursors[room_id] = max(self.cursors[room_id], seq - 1)
        for event in waiting:
            self.deliver_room_event(event)

    # -- access and credentials that end -------------------------------------

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        if not self.fill_tasks:
            self.fill_tasks = set()  # this socket's own (the class's is a shared empty frozenset)
        self.fill_tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Future) -> None:
        tasks = self.__dict__.get("fill_tasks")
        if tasks is not None:
            tasks.discard(task)
            if not tasks:
                del self.fill_tasks  # back to the class's shared empty one

    def _check_access(self, room_ids: list[int]) -> None:
        """Hold the events of ``room_ids`` from now on and check the user's access to them again.

        Rooms still readable get their held events; the others are dropped
        with an ``access_revoked`` error frame, and nothing of them is sent again.
        """
        self.access_epoch += 1
        fresh = [rid for rid in dict.fromkeys(room_ids) if rid not in self.checking]
        if not fresh:
            return
        checking = self._own("checking")
        for rid in fresh:
            checking[rid] = []
        self._spawn(self._recheck_rooms(fresh))

    async def _recheck_rooms(self, room_ids: list[int]) -> None:
        try:
            readable = await db_async(room_selectors.rooms_readable)(user=self.user, room_ids=room_ids)
        except Exception:  # noqa: BLE001 - when in doubt, drop: the client can subscribe again
            logger.exception("access check failed user=%s", self.user.id)
            readable = set()
        for rid in room_ids:
            held = self._pop("checking", rid) or []
            if rid in readable:
                for event in held:
                    self.deliver_room_event(event)
            elif rid in self.cursors or rid in self.filling:
                await self._leave(rid)
                metrics.WS_ACCESS_REVOKED.inc()
                self.send_error("access_revoked", "You can no longer read this room.", ref=rid)

    def check_credentials_if_due(self) -> None:
        """Check the credentials again if the last check is older than WS_AUTH_RECHECK (the RoomHub asks).

        A session can also end without an event (it expires): this bounds how long a socket outlives it.
        """
        if self.outbox is None or self.revoked:
            return
        if time.monotonic() - self.credentials_checked > settings.CHAT_WS_AUTH_RECHECK:
            self.credentials_checked = time.monotonic()
            self._spawn(self._check_credentials())

    async def _check_credentials(self) -> None:
        self.credentials_checked = time.monotonic()
        try:
            valid = await batcher("credentials", _credentials_group, slots=1, max_group=500).submit((self.scope, self.user.id))
        except Exception:  # noqa: BLE001 - the store is down: keep the socket, check at the next event
            logger.warning("credential check failed user=%s", self.user.id, exc_info=True)
            return
        if not valid:
            self._revoke()

    def _revoke(self) -> None:
        """The socket's credentials ended: stop delivering and accepting at once, then close with 4401."""
        if self.revoked:
            return
        self.revoked = True
        metrics.WS_REVOKED.inc()
        if self.outbox is not None:
            self._spawn(self.outbox.close())
        self._spawn(self._close_quietly(CLOSE_UNAUTHENTICATED))

    # -- incoming ------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.outbox is None or self.revoked:
            return
        if text_data is None:
            self.send_error("binary_not_supported", "Send JSON text frames, not binary frames.")
            return
        try:
            frame = orjson.loads(text_data)
        except orjson.JSONDecodeError:
            self.send_error("bad_json", "The frame is not valid JSON.")
            return
        if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
            self.send_error("bad_frame", "A frame is a JSON object with a string 'type'.")
            return
        handler = self.HANDLERS.get(frame["type"])
        ref = frame.get("ref")
        if handler is None:
            self.send_error("unknown_type", f"Unknown frame type '{frame['type'][:50]}'.", ref=ref)
            return
        metrics.WS_EVENTS_IN.labels(frame["type"]).inc()
        perf_metrics.user_seen(self.user.id)
        try:
            await handler(self, frame)
        except ratelimit.RateLimited as exc:
            self.send_error(
                exc.code,
                exc.message,
                ref=ref if ref is not None else frame.get("client_id"),
                retryable=True,
                retry_after=exc.retry_after,
            )
        except ChatError as exc:
            self.send_error(exc.code, exc.message, ref=ref if ref is not None else frame.get("client_id"))
        except DATABASE_UNAVAILABLE:
            logger.exception("database unavailable while handling %s", frame["type"])
            self.send_error(
                "unavailable", "The database is unavailable; retry.", ref=ref or frame.get("client_id"), retryable=True
            )
        except DatabaseError:
            logger.exception("database error while handling %s", frame["type"])
            self.send_error(
                "server_error", "The request could not be completed; retry.", ref=ref or frame.get("client_id"), retryable=True
            )

    async def on_subscribe(self, frame: dict[str, Any]) -> None:
        room_id = _int_field(frame, "room")
        last_id = _int_field(frame, "last_id", required=False)
        last_seq = _int_field(frame, "last_seq", required=False)
        self._count_subscribe()
        cap = settings.CHAT_RESUME_MAX_MESSAGES
        joined = room_id in self.cursors
        epoch = self.access_epoch
        # Join before reading the backlog so no event falls between the two.
        if not joined:
            # Live events that arrive before the cursor is known wait here.
            self._own("filling")[room_id] = []
            try:
                await fanout.hub().join(room_id, self)
            except Exception:  # noqa: BLE001 - layer down: say so, the client retries
                self._pop("filling", room_id)
                logger.exception("joining the room's group failed")
                self.send_error("unavailable", "Real-time delivery is unavailable; retry.", ref=room_id, retryable=True)
                return
        try:
            resumed = await resuming.resumer().submit(
                resuming.Resume(
                    user=self.user, room_id=room_id, last_id=last_id, last_seq=last_seq, cap=cap, budget=self.outbox.limit // 2
                )
            )
            project_id, cursor, missed, overflowed = resumed.project_id, resumed.cursor, resumed.frames, resumed.overflowed
            if self.access_epoch != epoch and not await db_async(room_selectors.rooms_readable)(user=self.user, room_ids=[room_id]):
                # Access changed while this subscribe read the (possibly older) cache.
                raise NotFound("Room not found.")
        except BaseException as exc:
            if not joined:
                self._pop("filling", room_id)
                await fanout.hub().leave(room_id, self)
            elif isinstance(exc, NotFound):
                # A re-subscribe to a room the user can no longer read ends the subscription too.
                await self._leave(room_id)
            raise
        self.room_projects[room_id] = project_id
        for text in missed:
            self.outbox.put(PRIORITY_MESSAGE, text)
        self.cursors[room_id] = cursor
        if not joined:
            metrics.WS_SUBSCRIPTIONS.inc()
        if overflowed:
            metrics.WS_RESYNCS.inc()
            self.send_frame({"type": "resync", "room": room_id, "reason": "too_many_missed", "max": cap})
        # Bounded whatever the room's size: a count and a few ids, never the whole list.
        here = await presence.presence_join(room_id=room_id, user_id=self.user.id, socket_id=self.socket_id)
        online = here.sample if self.user.id in here.sample else [self.user.id, *here.sample[: presence.PRESENCE_LIST_MAX - 1]]
        self.send_frame(
            {
                "type": "subscribed",
                "room": room_id,
                "resumed": len(missed),
                "seq": cursor,
                "online": online,
                "online_count": max(here.count, 1),
            }
        )
        # Then the live events that arrived meanwhile (those the backlog already holds are dropped by seq).
        for event in (self._pop("filling", room_id) or []) if not joined else []:
            self.deliver_room_event(event)
        if not here.was_online:
            presence.announce(room_id=room_id, user_id=self.user.id, status="online")

    def _count_subscribe(self) -> None:
        """The socket's own subscribe limit (WS_SUBSCRIBE_RATE), kept in memory: no I/O for the common case."""
        limit, seconds = ratelimit.parse_rate(settings.CHAT_WS_SUBSCRIBE_RATE)
        now = time.monotonic()
        recent = tuple(t for t in self.subscribes if t > now - seconds)
        if len(recent) >= limit:
            self.subscribes = recent
            retry_after = max(1, int(recent[0] + seconds - now) + 1)
            raise ratelimit.RateLimited(f"Too many subscribes on this socket; retry in {retry_after} s.", retry_after=retry_after)
        self.subscribes = (*recent, now)

    async def on_unsubscribe(self, frame: dict[str, Any]) -> None:
        room_id = _int_field(frame, "room")
        await self._leave(room_id)
        self.send_frame({"type": "unsubscribed", "room": room_id})

    async def _leave(self, room_id: int) -> None:
        self.room_projects.pop(room_id, None)
        if self.cursors.pop(room_id, None) is None:
            if self._pop("filling", room_id) is not None:
                await fanout.hub().leave(room_id, self)  # a subscribe still reading its backlog
            return
        metrics.WS_SUBSCRIPTIONS.dec()
        self._pop("filling", room_id)
        try:
            await fanout.hub().leave(room_id, self)
        except Exception:  # noqa: BLE001 - group expiry cleans up what a dead layer could not
            logger.warning("leaving the room's group failed room=%s", room_id)
        if await presence.presence_leave(room_id=room_id, user_id=self.user.id, socket_id=self.socket_id):
            presence.announce(room_id=room_id, user_id=self.user.id, status="offline")

    async def _publish_ephemeral(self, room_id: int, kind: str, **extra: Any) -> None:
        """Send a typing event about this user to the room. Best effort: failures are logged."""
        message = events.room_event_message(
            room_id=room_id, kind=kind, payload={"room": room_id, "user": user_dict(self.user), **extra}
        )
        message["user"] = self.user.id  # lets the user's own sockets skip it
        try:
            await get_channel_layer().group_send(events.room_group(room_id), message)
        except Exception:  # noqa: BLE001 - ephemeral events are best effort
            logger.warning("%s publish failed room=%s", kind, room_id)

    async def on_message_send(self, frame: dict[str, Any]) -> None:
        room_id = _int_field(frame, "room")
        client_id = frame.get("client_id")
        if not isinstance(client_id, str) or not client_id or len(client_id) > message_services.CLIENT_ID_MAX:
            raise InvalidInput("'client_id' must be a non-empty string of at most 64 characters.", code="invalid_client_id")
        # A subscribed room's access is known (changes arrive as access.check): the writer is not asked again.
        known = room_id in self.cursors and room_id not in self.checking and room_id in self.room_projects
        room = Room(id=room_id, project_id=self.room_projects[room_id]) if known else None
        send = sending.Send(
            user=self.user, room_id=room_id, body=frame.get("body"), client_id=client_id, room=room,
            thread_root=frame.get("thread_root"),
        )  # fmt: skip
        self.send_frame(await sending.group_commit().submit(send))

    async def on_read(self, frame: dict[str, Any]) -> None:
        room_id = _int_field(frame, "room")
        last_id = _int_field(frame, "last_id")

        def mark() -> int:
            room = room_selectors.room_get_for_user(user=self.user, room_id=room_id)
            return room_services.room_mark_read(room=room, user=self.user, last_read_message_id=last_id)

        marker = await db_async(mark)()
        self.send_frame({"type": "read.ack", "room": room_id, "last_id": marker})

    async def on_typing(self, frame: dict[str, Any]) -> None:
        """Relay "user is typing" to a subscribed room, at most once per interval. No database work."""
        room_id = _int_field(frame, "room")
        if room_id not in self.cursors:
            raise InvalidInput("Subscribe to the room before sending typing events.", code="not_subscribed")
        now = time.monotonic()
        if now - self.typing_sent.get(room_id, 0.0) < settings.CHAT_WS_TYPING_INTERVAL:
            return  # rate-limited: silently coalesced, typing is ephemeral
        self._own("typing_sent")[room_id] = now
        await self._publish_ephemeral(room_id, "typing")

    async def on_presence(self, frame: dict[str, Any]) -> None:
        """Which of ``users`` are online in a subscribed room: for the people a client shows."""
        room_id = _int_field(frame, "room")
        if room_id not in self.cursors:
            raise InvalidInput("Subscribe to the room before asking who is online there.", code="not_subscribed")
        users = frame.get("users")
        if (
            not isinstance(users, list)
            or len(users) > presence.QUERY_MAX
            or not all(isinstance(u, int) and not isinstance(u, bool) and 0 < u < 2**63 for u in users)
        ):
            raise InvalidInput(f"'users' must be a list of at most {presence.QUERY_MAX} user ids.", code="invalid_users")
        count, online = await presence.presence_state(room_id=room_id, user_ids=users)
        self.send_frame(
            {"type": "presence.state", "room": room_id, "online_count": count, "online": [u for u in users if u in online]}
        )

    async def _on_reaction(self, frame: dict[str, Any], change: Any) -> None:
        message_id = _int_field(frame, "message")
        emoji = reaction_services.clean_emoji(frame.get("emoji"))

        def write() -> bool:
            message = history_selectors.message_get_for_user(user=self.user, message_id=message_id)
            return change(message=message, user=self.user, emoji=emoji)

        changed = await db_async(write)()
        self.send_frame(
            {"type": "reaction.ack", "message": message_id, "emoji": emoji, "changed": changed, "ref": frame.get("ref")}
        )

    async def on_reaction_add(self, frame: dict[str, Any]) -> None:
        await self._on_reaction(frame, reaction_services.reaction_add)

    async def on_reaction_remove(self, frame: dict[str, Any]) -> None:
        await self._on_reaction(frame, reaction_services.reaction_remove)

    async def _on_message_mark(self, frame: dict[str, Any], kind: str, change: Any) -> None:
        """Pin, unpin, save or unsave a message through its service; ``<kind>.ack`` says whether it changed."""
        message_id = _int_field(frame, "message")

        def write() -> bool:
            message = history_selectors.message_get_for_user(user=self.user, message_id=message_id)
            return change(message)

        changed = await db_async(write)()
        self.send_frame({"type": f"{kind}.ack", "message": message_id, "changed": changed, "ref": frame.get("ref")})

    async def on_pin(self, frame: dict[str, Any]) -> None:
        await self._on_message_mark(frame, "pin", lambda m: pin_services.pin_create(message=m, by=self.user)[1])

    async def on_unpin(self, frame: dict[str, Any]) -> None:
        await self._on_message_mark(frame, "unpin", lambda m: pin_services.pin_delete(message=m, by=self.user))

    async def on_save(self, frame: dict[str, Any]) -> None:
        await self._on_message_mark(frame, "save", lambda m: saved_services.message_save(message=m, user=self.user)[1])

    async def on_unsave(self, frame: dict[str, Any]) -> None:
        await self._on_message_mark(frame, "unsave", lambda m: saved_services.message_unsave(message=m, user=self.user))

    async def on_ping(self, frame: dict[str, Any]) -> None:
        await presence.presence_refresh(room_ids=self.cursors, user_id=self.user.id, socket_id=self.socket_id)
        self.send_frame({"type": "pong", "ref": frame.get("ref")})

    HANDLERS = {
        "subscribe": on_subscribe,
        "unsubscribe": on_unsubscribe,
        "message.send": on_message_send,
        "read": on_read,
        "typing": on_typing,
        "presence": on_presence,
        "ping": on_ping,
        "reaction.add": on_reaction_add,
        "reaction.remove": on_reaction_remove,
        "pin": on_pin,
        "unpin": on_unpin,
        "save": on_save,
        "unsave": on_unsave,
    }
