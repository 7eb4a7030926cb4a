"""Who is online in a room: a Redis sorted set per room, entries expire by TTL.

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

from django.conf import settings

from chatsite import env

logger = logging.getLogger(__name__)

_local: dict[int, dict[str, float]] = {}
_clients: dict[int, object] = {}


def presence_key(room_id: int) -> str:
    return f"chat:presence:room:{int(room_id)}"


def _client():
    import asyncio

    import redis.asyncio as aioredis

    loop_id = id(asyncio.get_running_loop())
    client = _clients.get(loop_id)
    if client is None:
        # A bounded pool that waits for a free connection: a mass disconnect
        # (thousands of presence_leave at once) queues instead of failing.
        pool = aioredis.BlockingConnectionPool.from_url(
            env.REDIS_URL, max_connections=32, timeout=5, socket_connect_timeout=1, socket_timeout=1
        )
        client = aioredis.Redis(connection_pool=pool)
        _clients[loop_id] = client
    return client


def _entry(user_id: int, socket_id: str) -> str:
    return f"{user_id}:{socket_id}"


async def presence_touch(*, room_id: int, user_id: int, socket_id: str) -> bool:
    """Mark the socket present in the room. Returns True if the user was not online before."""
    now = time.time()
    ttl = settings.CHAT_PRESENCE_TTL
    try:
        before = await presence_online(room_id=room_id)
        if env.REDIS_URL:
            client = _client()
            key = presence_key(room_id)
            await client.zadd(key, {_entry(user_id, socket_id): now})
            await client.expire(key, ttl * 2)
        else:
            _local.setdefault(room_id, {})[_entry(user_id, socket_id)] = now
        return user_id not in before
    except Exception:  # noqa: BLE001
        logger.warning("presence_touch failed room=%s", room_id, exc_info=True)
        return False


async def presence_leave(*, room_id: int, user_id: int, socket_id: str) -> bool:
    """Remove the socket. Returns True if the user has no other fresh socket in the room."""
    try:
        if env.REDIS_URL:
            await _client().zrem(presence_key(room_id), _entry(user_id, socket_id))
        else:
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
            client = _client()
            key = presence_key(room_id)
            await client.zremrangebyscore(key, "-inf", cutoff)
            members = await client.zrange(key, 0, -1)
        except Exception:  # noqa: BLE001 - presence is best effort
            logger.warning("presence_online failed room=%s", room_id, exc_info=True)
            return set()
        return {int(m.split(b":", 1)[0]) for m in members}
    entries = _local.get(room_id, {})
    for name in [n for n, seen in entries.items() if seen < cutoff]:
        del entries[name]
    return {int(n.split(":", 1)[0]) for n in entries}
