"""Who is online: per room (presence), and per user (open sockets, for the per-user cap).

Rooms: two kinds of Redis sorted sets, entries expire by their score.

* ``chat:presence:room:<room>:users``: one entry per user online in the room,
  scored with the last heartbeat of any of their sockets there. Its size and
  any bounded slice are O(log n) to read, so a join costs the same in a room
  of 5 or 5,000.
* ``chat:presence:room:<room>:user:<user>``: that user's sockets in the room
  (to know when their last one leaves).

A user is online in a room while their entry is fresher than
``CHAT_PRESENCE_TTL`` seconds, so a crashed server process's sockets age out
by themselves. Without Redis (the embedded default) presence is kept in
process memory.

What a room hears about it is bounded too: joins and leaves are gathered per
room and sent as one ``presence`` digest per ``CHAT_PRESENCE_INTERVAL`` per
server process (:func:`announce`), with the room's count and at most
``PRESENCE_LIST_MAX`` ids each way, and only while the room has at most
``CHAT_PRESENCE_BROADCAST_MAX`` people online; a socket's ``subscribed``
frame carries the count and at most that many ids, and a client asks about
the people it shows (:func:`presence_state`). So a join costs the others a
bounded number of bytes, whatever the room's size (docs/PROTOCOL.md,
"Presence").

All functions are async and never raise: presence is best-effort and must
not break chat when Redis is down.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Iterable

from django.conf import settings

from chatsite import env
from perf.redis import async_client, loop_resource, pipelined

logger = logging.getLogger(__name__)

# Most ids a subscribed frame's ``online`` list, a digest's ``joined`` or ``left``, or a query holds.
PRESENCE_LIST_MAX = 50
QUERY_MAX = 100

# Embedded mode: room -> user -> last seen; (room, user) -> socket -> last seen.
_local_users: dict[int, dict[int, float]] = {}
_local_user_sockets: dict[tuple[int, int], dict[str, float]] = {}
_local_sockets: dict[int, dict[str, float]] = {}


def room_users_key(room_id: int) -> str:
    return f"chat:presence:room:{int(room_id)}:users"


def room_user_sockets_key(room_id: int, user_id: int) -> str:
    return f"chat:presence:room:{int(room_id)}:user:{int(user_id)}"


def sockets_key(user_id: int) -> str:
    return f"chat:sockets:user:{int(user_id)}"


@dataclass(frozen=True)
class Joined:
    """What a joining socket learns: whether its user was already there, how many are, and some of them."""

    was_online: bool
    count: int
    sample: list[int] = field(default_factory=list)


def _prune_local(entries: dict[Any, float], cutoff: float) -> None:
    for name in [n for n, seen in entries.items() if seen < cutoff]:
        del entries[name]


async def presence_join(*, room_id: int, user_id: int, socket_id: str) -> Joined:
    """Mark the socket present in the room. One round trip on Redis (shared with every socket joining in the
    same turn of the loop: perf.redis.pipelined); whatever the room's size, bounded work.

    When Redis is down: the user alone, as if nobody else were there.
    """
    now = time.time()
    ttl = settings.CHAT_PRESENCE_TTL
    cutoff = now - ttl
    try:
        if env.REDIS_URL:
            users, mine = room_users_key(room_id), room_user_sockets_key(room_id, user_id)

            def join(pipe: Any) -> None:
                pipe.zscore(users, user_id)
                pipe.zadd(mine, {socket_id: now})
                pipe.expire(mine, ttl * 2)
                pipe.zadd(users, {user_id: now})
                pipe.expire(users, ttl * 2)
                pipe.zremrangebyscore(users, "-inf", cutoff)
                pipe.zcard(users)
                pipe.zrevrange(users, 0, PRESENCE_LIST_MAX - 1)

            before, *_, count, sample = await pipelined(join)
            return Joined(before is not None and before >= cutoff, int(count), [int(u) for u in sample])
        room = _local_users.setdefault(room_id, {})
        _prune_local(room, cutoff)
        was_online = user_id in room
        room[user_id] = now
        _local_user_sockets.setdefault((room_id, user_id), {})[socket_id] = now
        newest = sorted(room, key=room.__getitem__, reverse=True)[:PRESENCE_LIST_MAX]
        return Joined(was_online, len(room), newest)
    except Exception:  # noqa: BLE001
        logger.warning("presence_join failed room=%s", room_id, exc_info=True)
        return Joined(False, 1, [user_id])


async def presence_refresh(*, room_ids: Iterable[int], user_id: int, socket_id: str) -> None:
    """Heartbeat: the socket is still present in these rooms. One write-only round trip for all of them."""
    room_ids = list(room_ids)
    if not room_ids:
        return
    now = time.time()
    ttl = settings.CHAT_PRESENCE_TTL
    try:
        if env.REDIS_URL:

            def refresh(pipe: Any) -> None:
                for room_id in room_ids:
                    users, mine = room_users_key(room_id), room_user_sockets_key(room_id, user_id)
                    pipe.zadd(mine, {socket_id: now})
                    pipe.expire(mine, ttl * 2)
                    pipe.zadd(users, {user_id: now})
                    pipe.expire(users, ttl * 2)

            await pipelined(refresh)
        else:
            for room_id in room_ids:
                _local_users.setdefault(room_id, {})[user_id] = now
                _local_user_sockets.setdefault((room_id, user_id), {})[socket_id] = now
    except Exception:  # noqa: BLE001
        logger.warning("presence_refresh failed rooms=%s", room_ids, exc_info=True)


async def presence_leave(*, room_id: int, user_id: int, socket_id: str) -> bool:
    """Remove the socket. Returns True if that was the user's last fresh socket in the room (they left it)."""
    cutoff = time.time() - settings.CHAT_PRESENCE_TTL
    try:
        if env.REDIS_URL:
            mine = room_user_sockets_key(room_id, user_id)

            def leave(pipe: Any) -> None:
                pipe.zrem(mine, socket_id)
                pipe.zremrangebyscore(mine, "-inf", cutoff)
                pipe.zcard(mine)

            if (await pipelined(leave))[2]:
                return False
            await pipelined(lambda pipe: pipe.zrem(room_users_key(room_id), user_id))
            return True
        sockets = _local_user_sockets.get((room_id, user_id), {})
        sockets.pop(socket_id, None)
        _prune_local(sockets, cutoff)
        if sockets:
            return False
        _local_user_sockets.pop((room_id, user_id), None)
        _local_users.get(room_id, {}).pop(user_id, None)
        return True
    except Exception:  # noqa: BLE001
        logger.warning("presence_leave failed room=%s", room_id, exc_info=True)
        return False


async def presence_state(*, room_id: int, user_ids: Iterable[int]) -> tuple[int, set[int]]:
    """How many users are online in the room, and which of ``user_ids`` are. One round trip; (0, set()) when Redis is down."""
    user_ids = list(dict.fromkeys(int(u) for u in user_ids))
    cutoff = time.time() - settings.CHAT_PRESENCE_TTL
    try:
        if env.REDIS_URL:
            users = room_users_key(room_id)
            pipe = async_client().pipeline(transaction=False)
            pipe.zremrangebyscore(users, "-inf", cutoff)
            pipe.zcard(users)
            if user_ids:
                pipe.zmscore(users, user_ids)
            results = await pipe.execute()
            scores = results[2] if user_ids else []
            return int(results[1]), {u for u, score in zip(user_ids, scores) if score is not None}
        room = _local_users.get(room_id, {})
        _prune_local(room, cutoff)
        return len(room), {u for u in user_ids if u in room}
    except Exception:  # noqa: BLE001 - presence is best effort
        logger.warning("presence_state failed room=%s", room_id, exc_info=True)
        return 0, set()


async def presence_online(*, room_id: int) -> set[int]:
    """Every user id online in the room: O(room) to read, for tests and small rooms (sockets use presence_state)."""
    cutoff = time.time() - settings.CHAT_PRESENCE_TTL
    try:
        if env.REDIS_URL:
            users = await async_client().zrangebyscore(room_users_key(room_id), cutoff, "+inf")
            return {int(u) for u in users}
        room = _local_users.get(room_id, {})
        _prune_local(room, cutoff)
        return set(room)
    except Exception:  # noqa: BLE001 - presence is best effort
        logger.warning("presence_online failed room=%s", room_id, exc_info=True)
        return set()


# --- what a room hears ----------------------------------------------------------------


class _Digests:
    """This event loop's joins and leaves per room, sent as one ``presence`` event per room per interval."""

    def __init__(self) -> None:
        self.pending: dict[int, dict[int, str]] = {}
        self.task: asyncio.Task | None = None

    def note(self, room_id: int, user_id: int, status: str) -> None:
        self.pending.setdefault(room_id, {})[user_id] = status  # the last change of a user wins
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._flush_later())

    async def _flush_later(self) -> None:
        await asyncio.sleep(settings.CHAT_PRESENCE_INTERVAL)
        pending, self.pending = self.pending, {}
        for room_id, changes in pending.items():
            try:
                await _send_digest(room_id, changes)
            except Exception:  # noqa: BLE001 - presence is best effort
                logger.warning("presence digest failed room=%s", room_id, exc_info=True)

    async def stop(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()


async def _send_digest(room_id: int, changes: dict[int, str]) -> None:
    from channels.layers import get_channel_layer

    from chat import events

    count, online = await presence_state(room_id=room_id, user_ids=changes)
    if count > settings.CHAT_PRESENCE_BROADCAST_MAX:
        # A big room hears nothing of single people coming and going: clients ask about those they show.
        return
    # What still holds when the digest leaves: a user who came and went within the interval is left.
    joined = [u for u, status in changes.items() if status == "online" and u in online]
    left = [u for u, status in changes.items() if status == "offline" and u not in online]
    if not joined and not left:
        return
    payload = {
        "room": room_id,
        "online_count": count,
        "joined": joined[:PRESENCE_LIST_MAX],
        "left": left[:PRESENCE_LIST_MAX],
        "more": len(joined) > PRESENCE_LIST_MAX or len(left) > PRESENCE_LIST_MAX,
    }
    layer = get_channel_layer()
    if layer is not None:
        await layer.group_send(events.room_group(room_id), events.room_event_message(room_id=room_id, kind="presence", payload=payload))


def announce(*, room_id: int, user_id: int, status: str) -> None:
    """A user came online (``online``) or left (``offline``) in the room: it goes out in the room's next digest."""

    loop_resource("presence-digests", _Digests, _Digests.stop).note(room_id, user_id, status)


# --- a user's open sockets -----------------------------------------------------------
#
# One sorted set per user, entry = socket id, score = when its server process
# last vouched for it. Each process refreshes the entries of its own sockets
# (refresh_sockets, from its RoomHub), so a crashed process's sockets age out
# after CHAT_PRESENCE_TTL, and a client cannot hide a socket by never pinging.


async def socket_register(*, user_id: int, socket_id: str, limit: int) -> bool:
    """Count a new socket of the user; False (and nothing counted) when the user already has ``limit`` open.

    One round trip: prune stale entries, add this one, count. Fails open
    (True) when Redis is down: the cap is a guard, not a dependency.
    """
    if limit <= 0:
        return True
    now = time.time()
    cutoff = now - settings.CHAT_PRESENCE_TTL
    try:
        if env.REDIS_URL:
            key = sockets_key(user_id)

            def register(pipe: Any) -> None:
                pipe.zremrangebyscore(key, "-inf", cutoff)
                pipe.zadd(key, {socket_id: now})
                pipe.zcard(key)
                pipe.expire(key, settings.CHAT_PRESENCE_TTL * 2)

            # Not atomic: two sockets registering at once may both count each other and
            # both be refused, never both let in past the cap.
            count = (await pipelined(register))[2]
            if count > limit:
                await pipelined(lambda pipe: pipe.zrem(key, socket_id))
                return False
            return True
        entries = _local_sockets.setdefault(user_id, {})
        for name in [n for n, seen in entries.items() if seen < cutoff]:
            del entries[name]
        if len(entries) >= limit:
            return False
        entries[socket_id] = now
        return True
    except Exception:  # noqa: BLE001
        logger.warning("socket_register failed user=%s", user_id, exc_info=True)
        return True


async def socket_unregister(*, user_id: int, socket_id: str) -> None:
    try:
        if env.REDIS_URL:
            await pipelined(lambda pipe: pipe.zrem(sockets_key(user_id), socket_id))
        else:
            _local_sockets.get(user_id, {}).pop(socket_id, None)
    except Exception:  # noqa: BLE001
        logger.warning("socket_unregister failed user=%s", user_id, exc_info=True)


# Sockets vouched for per pipeline: one pipeline for 2,000 sockets held the event loop
# for 56 ms (packing 4,000 commands, parsing their replies), a stall every socket felt.
REFRESH_CHUNK = 250


async def refresh_sockets(sockets: Iterable[tuple[int, str]]) -> None:
    """Vouch for this process's open sockets ((user id, socket id) pairs): a pipelined round trip per
    REFRESH_CHUNK sockets, the loop free between them."""
    now = time.time()
    sockets = list(sockets)
    if not sockets:
        return
    try:
        if env.REDIS_URL:
            for start in range(0, len(sockets), REFRESH_CHUNK):
                pipe = async_client().pipeline(transaction=False)
                for user_id, socket_id in sockets[start : start + REFRESH_CHUNK]:
                    key = sockets_key(user_id)
                    pipe.zadd(key, {socket_id: now}, xx=True)
                    pipe.expire(key, settings.CHAT_PRESENCE_TTL * 2)
                await pipe.execute()
        else:
            for user_id, socket_id in sockets:
                entries = _local_sockets.get(user_id)
                if entries is not None and socket_id in entries:
                    entries[socket_id] = now
    except Exception:  # noqa: BLE001
        logger.warning("refresh_sockets failed", exc_info=True)
