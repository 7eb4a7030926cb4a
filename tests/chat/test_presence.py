"""Presence in Redis (chat/presence.py): who is online in a room, by socket, with a TTL."""

from __future__ import annotations

import time

import pytest
import redis

from chat import presence
from chatsite import env

# Room ids no other test uses: these tests read and write the keys directly.
ROOMS = (910_001, 910_002)


@pytest.fixture
def store():
    client = redis.Redis.from_url(env.REDIS_URL)
    keys = [presence.presence_key(r) for r in ROOMS]
    client.delete(*keys)
    yield client  # each test's event loop gets its own async client (perf.redis.async_client)
    client.delete(*keys)


def score(store, room_id: int, user_id: int, socket_id: str) -> float | None:
    return store.zscore(presence.presence_key(room_id), f"{user_id}:{socket_id}")


async def test_join_returns_who_was_online_before_and_adds_the_socket(store):
    room = ROOMS[0]
    assert await presence.presence_join(room_id=room, user_id=1, socket_id="a") == set()
    assert await presence.presence_join(room_id=room, user_id=2, socket_id="b") == {1}
    # a second socket of a user already online: the user was online before it
    assert await presence.presence_join(room_id=room, user_id=2, socket_id="c") == {1, 2}
    assert await presence.presence_online(room_id=room) == {1, 2}
    ttl = store.ttl(presence.presence_key(room))
    assert 0 < ttl <= 2 * presence.settings.CHAT_PRESENCE_TTL


async def test_join_prunes_entries_older_than_the_ttl(store, settings):
    room = ROOMS[0]
    stale = time.time() - settings.CHAT_PRESENCE_TTL - 5
    store.zadd(presence.presence_key(room), {"7:gone": stale})
    assert await presence.presence_join(room_id=room, user_id=1, socket_id="a") == set()
    assert score(store, room, 7, "gone") is None


async def test_refresh_moves_the_heartbeat_of_every_room_forward(store):
    old = time.time() - 30
    for room in ROOMS:
        store.zadd(presence.presence_key(room), {"3:s": old})
    await presence.presence_refresh(room_ids=ROOMS, user_id=3, socket_id="s")
    for room in ROOMS:
        assert score(store, room, 3, "s") > old + 25
        assert store.ttl(presence.presence_key(room)) > 0


async def test_refresh_of_no_rooms_writes_nothing(store):
    await presence.presence_refresh(room_ids=[], user_id=3, socket_id="s")
    assert not any(store.exists(presence.presence_key(r)) for r in ROOMS)


async def test_leave_says_offline_only_when_the_users_last_socket_goes(store):
    room = ROOMS[1]
    await presence.presence_join(room_id=room, user_id=4, socket_id="x")
    await presence.presence_join(room_id=room, user_id=4, socket_id="y")
    await presence.presence_join(room_id=room, user_id=5, socket_id="z")
    assert await presence.presence_leave(room_id=room, user_id=4, socket_id="x") is False
    assert await presence.presence_leave(room_id=room, user_id=4, socket_id="y") is True
    assert await presence.presence_online(room_id=room) == {5}


async def test_redis_down_degrades_to_nobody_online_without_raising(store, monkeypatch):
    monkeypatch.setattr(env, "REDIS_URL", "redis://127.0.0.1:1/0")  # nothing listens there
    room = ROOMS[0]
    assert await presence.presence_join(room_id=room, user_id=1, socket_id="a") == set()
    await presence.presence_refresh(room_ids=[room], user_id=1, socket_id="a")
    assert await presence.presence_leave(room_id=room, user_id=1, socket_id="a") is False
    assert await presence.presence_online(room_id=room) == set()
