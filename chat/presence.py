"""Who is online: per room (presence), and per user (open sockets, for the per-user cap).

Rooms: a Redis sorted set per room, entries expire by TTL.

Each socket subscribed to a room is one entry ``<user_id>:<socket_id>``
scored with its last heartbeat. A user is online in a room while any of
their entries is fresher than ``CHAT_PRESENCE_TTL`` seconds, so a crashed
server process's sockets age out by themselves. Without Redis (the embedded
default) presence is kept in process memory.

All functions are async and never raise: presence is best-effort and must
not break chat when Redis is down.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Iterable

from django.conf import settings

from chatsite import env
from perf.redis import async_client

logger = logging.getLogger(__name__)

_local: dict[int, dict[str, float]] = {}
_local_sockets: dict[int, dict[str, float]] = {}


def presence_key(room_id: int) -> str:
    return f"chat:presence:room:{int(room_id)}"


def sockets_key(user_id: int) -> str:
    return f"chat:sockets:user:{int(user_id)}"


def _entry(user_id: int, socket_id: str) -> str:
    return f"{user_id}:{socket_id}"


async def presence_join(*, room_id: int, user_id: int, socket_id: str) -> set[int]:
    """Mark the socket present in the room; returns the users online there before it joined.

    One round trip on Redis: prune stale entries, read the room, add this
    socket, refresh the key's TTL. Empty set when Redis is down.
    """
    now = time.time()
    ttl = settings.CHAT_PRESENCE_TTL
    try:
        if env.REDIS_URL:
            key = presence_key(room_id)
            pipe = _fresh_members(async_client().pipeline(transaction=False), key, now - ttl)
            pipe.zadd(key, {_entry(user_id, socket_id): now})
            pipe.expire(key, ttl * 2)
            return _users((await pipe.execute())[1])
        before = await presence_online(room_id=room_id)
        _local.setdefault(room_id, {})[_entry(user_id, socket_id)] = now
        return before
    except Exception:  # noqa: BLE001
        logger.warning("presence_join failed room=%s", room_id, exc_info=True)
        return set()


async def presence_refresh(*, room_ids: Iterable[int], user_id: int, socket_id: str) -> None:
    """Heartbeat: the socket is still present in these rooms. One write-only round trip for all of them."""
    room_ids = list(room_ids)
    if not room_ids:
        return
    now = time.time()
    ttl = settings.CHAT_PRESENCE_TTL
    entry = _entry(user_id, socket_id)
    try:
        if env.REDIS_URL:
            pipe = async_client().pipeline(transaction=False)
            for room_id in room_ids:
                key = presence_key(room_id)
                pipe.zadd(key, {entry: now})
                pipe.expire(key, ttl * 2)
            await pipe.execute()
        else:
            for room_id in room_ids:
                _local.setdefault(room_id, {})[entry] = now
    except Exception:  # noqa: BLE001
        logger.warning("presence_refresh failed rooms=%s", room_ids, exc_info=True)


async def presence_leave(*, room_id: int, user_id: int, socket_id: str) -> bool:
    """Remove the socket. Returns True if the user has no other fresh socket in the room. One round trip."""
    try:
        if env.REDIS_URL:
            key = presence_key(room_id)
            pipe = async_client().pipeline(transaction=False)
            pipe.zrem(key, _entry(user_id, socket_id))
            _fresh_members(pipe, key, time.time() - settings.CHAT_PRESENCE_TTL)
            return user_id not in _users((await pipe.execute())[2])
        _local.get(room_id, {}).pop(_entry(user_id, socket_id), None)
        return user_id not in await presence_online(room_id=room_id)
    except Exception:  # noqa: BLE001
        logger.warning("presence_leave failed room=%s", room_id, exc_info=True)
        return False


async def presence_online(*, room_id: int) -> set[int]:
    """User ids with a fresh entry in the room (empty when Redis is down). Prunes stale entries."""
    cutoff = time.time() - settings.CHAT_PRESENCE_TTL
    if env.REDIS_URL:
        try:
            key = presence_key(room_id)
            members = (await _fresh_members(async_client().pipeline(transaction=False), key, cutoff).execute())[1]
        except Exception:  # noqa: BLE001 - presence is best effort
            logger.warning("presence_online failed room=%s", room_id, exc_info=True)
            return set()
        return _users(members)
    entries = _local.get(room_id, {})
    for name in [n for n, seen in entries.items() if seen < cutoff]:
        del entries[name]
    return {int(n.split(":", 1)[0]) for n in entries}


def _fresh_members(pipe: Any, key: str, cutoff: float) -> Any:
    """Queue on ``pipe``: prune entries older than ``cutoff``, then read the rest (two results)."""
    pipe.zremrangebyscore(key, "-inf", cutoff)
    pipe.zrange(key, 0, -1)
    return pipe


def _users(members: list[bytes]) -> set[int]:
    return {int(m.split(b":", 1)[0]) for m in members}


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
            pipe = async_client().pipeline(transaction=True)
            pipe.zremrangebyscore(key, "-inf", cutoff)
            pipe.zadd(key, {socket_id: now})
            pipe.zcard(key)
            pipe.expire(key, settings.CHAT_PRESENCE_TTL * 2)
            count = (await pipe.execute())[2]
            if count > limit:
                await async_client().zrem(key, socket_id)
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
            await async_client().zrem(sockets_key(user_id), socket_id)
        else:
            _local_sockets.get(user_id, {}).pop(socket_id, None)
    except Exception:  # noqa: BLE001
        logger.warning("socket_unregister failed user=%s", user_id, exc_info=True)


async def refresh_sockets(sockets: Iterable[tuple[int, str]]) -> None:
    """Vouch for this process's open sockets ((user id, socket id) pairs): one pipelined round trip."""
    now = time.time()
    sockets = list(sockets)
    if not sockets:
        return
    try:
        if env.REDIS_URL:
            pipe = async_client().pipeline(transaction=False)
            for user_id, socket_id in sockets:
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
