"""Presence in Redis (chat/presence.py): who is online in a room, per user and socket, with a TTL, at bounded cost."""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager

import orjson
import pytest
import redis
from channels.layers import get_channel_layer

from chat import events, presence
from chatsite import env

# Room ids no other test uses: these tests read and write the keys directly.
ROOMS = (910_001, 910_002)


@pytest.fixture
def store():
    client = redis.Redis.from_url(env.REDIS_URL)

    def clear() -> None:
        for room in ROOMS:
            keys = client.keys(f"chat:presence:room:{room}:*")
            if keys:
                client.delete(*keys)

    clear()
    yield client  # each test's event loop gets its own async client (perf.redis.async_client)
    clear()


@asynccontextmanager
async def room_listener(room_id: int):
    """A channel-layer channel in the room's group: what the room's sockets would hear."""
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(events.room_group(room_id), channel)
    try:
        yield lambda timeout: asyncio.wait_for(layer.receive(channel), timeout)
    finally:
        await layer.group_discard(events.room_group(room_id), channel)


def user_score(store, room_id: int, user_id: int) -> float | None:
    return store.zscore(presence.room_users_key(room_id), user_id)


async def test_join_says_whether_the_user_was_there_how_many_are_and_who(store):
    room = ROOMS[0]
    first = await presence.presence_join(room_id=room, user_id=1, socket_id="a")
    assert first == presence.Joined(False, 1, [1])
    second = await presence.presence_join(room_id=room, user_id=2, socket_id="b")
    assert (second.was_online, second.count, sorted(second.sample)) == (False, 2, [1, 2])
    # a second socket of a user already online: the user was online before it
    again = await presence.presence_join(room_id=room, user_id=2, socket_id="c")
    assert (again.was_online, again.count) == (True, 2)
    assert await presence.presence_online(room_id=room) == {1, 2}
    ttl = store.ttl(presence.room_users_key(room))
    assert 0 < ttl <= 2 * presence.settings.CHAT_PRESENCE_TTL


async def test_a_join_in_a_big_room_reads_a_bounded_sample(store):
    room = ROOMS[0]
    now = time.time()
    store.zadd(presence.room_users_key(room), {str(user): now for user in range(1000, 3000)})
    joined = await presence.presence_join(room_id=room, user_id=1, socket_id="a")
    assert joined.count == 2001
    assert len(joined.sample) == presence.PRESENCE_LIST_MAX
    assert joined.sample[0] == 1  # the newest first


async def test_join_prunes_users_older_than_the_ttl(store, settings):
    room = ROOMS[0]
    store.zadd(presence.room_users_key(room), {"7": time.time() - settings.CHAT_PRESENCE_TTL - 5})
    joined = await presence.presence_join(room_id=room, user_id=1, socket_id="a")
    assert (joined.was_online, joined.count) == (False, 1)
    assert user_score(store, room, 7) is None


async def test_refresh_moves_the_heartbeat_of_every_room_forward(store):
    old = time.time() - 30
    for room in ROOMS:
        store.zadd(presence.room_users_key(room), {"3": old})
        store.zadd(presence.room_user_sockets_key(room, 3), {"s": old})
    await presence.presence_refresh(room_ids=ROOMS, user_id=3, socket_id="s")
    for room in ROOMS:
        assert user_score(store, room, 3) > old + 25
        assert store.zscore(presence.room_user_sockets_key(room, 3), "s") > old + 25
        assert store.ttl(presence.room_users_key(room)) > 0


async def test_refresh_of_no_rooms_writes_nothing(store):
    await presence.presence_refresh(room_ids=[], user_id=3, socket_id="s")
    assert not any(store.exists(presence.room_users_key(r)) for r in ROOMS)


async def test_leave_says_offline_only_when_the_users_last_socket_goes(store):
    room = ROOMS[1]
    await presence.presence_join(room_id=room, user_id=4, socket_id="x")
    await presence.presence_join(room_id=room, user_id=4, socket_id="y")
    await presence.presence_join(room_id=room, user_id=5, socket_id="z")
    assert await presence.presence_leave(room_id=room, user_id=4, socket_id="x") is False
    assert await presence.presence_leave(room_id=room, user_id=4, socket_id="y") is True
    assert await presence.presence_online(room_id=room) == {5}


async def test_a_dead_socket_does_not_keep_its_user_in_the_room(store, settings):
    room = ROOMS[1]
    # The user's other socket died with its server process: its entry is stale.
    store.zadd(presence.room_user_sockets_key(room, 6), {"dead": time.time() - settings.CHAT_PRESENCE_TTL - 5})
    await presence.presence_join(room_id=room, user_id=6, socket_id="live")
    assert await presence.presence_leave(room_id=room, user_id=6, socket_id="live") is True


async def test_state_counts_the_room_and_answers_for_the_users_asked_about(store):
    room = ROOMS[0]
    for user in (1, 2, 3):
        await presence.presence_join(room_id=room, user_id=user, socket_id=f"s{user}")
    assert await presence.presence_state(room_id=room, user_ids=[2, 3, 9]) == (3, {2, 3})
    assert await presence.presence_state(room_id=room, user_ids=[]) == (3, set())


async def test_joins_and_leaves_go_out_as_one_bounded_digest_per_interval(store, settings):
    settings.CHAT_PRESENCE_INTERVAL = 0.2
    settings.CHAT_PRESENCE_BROADCAST_MAX = 1000
    room = ROOMS[0]
    async with room_listener(room) as receive:
        for user in range(1, 121):  # more than a digest lists
            await presence.presence_join(room_id=room, user_id=user, socket_id="s")
            presence.announce(room_id=room, user_id=user, status="online")
        # a user who comes and goes within the interval is not announced as joined
        await presence.presence_join(room_id=room, user_id=500, socket_id="s")
        presence.announce(room_id=room, user_id=500, status="online")
        await presence.presence_leave(room_id=room, user_id=500, socket_id="s")
        presence.announce(room_id=room, user_id=500, status="offline")
        digest = orjson.loads((await receive(5))["text"])
        assert digest["type"] == "presence" and digest["room"] == room
        assert digest["online_count"] == 120
        assert len(digest["joined"]) == presence.PRESENCE_LIST_MAX and digest["more"] is True
        assert 500 not in digest["joined"] and digest["left"] == [500]
        # one digest for all of it: nothing else arrives
        with pytest.raises(asyncio.TimeoutError):
            await receive(0.6)


async def test_redis_down_degrades_to_the_user_alone_without_raising(store, monkeypatch):
    monkeypatch.setattr(env, "REDIS_URL", "redis://127.0.0.1:1/0")  # nothing listens there
    room = ROOMS[0]
    assert await presence.presence_join(room_id=room, user_id=1, socket_id="a") == presence.Joined(False, 1, [1])
    await presence.presence_refresh(room_ids=[room], user_id=1, socket_id="a")
    assert await presence.presence_leave(room_id=room, user_id=1, socket_id="a") is False
    assert await presence.presence_online(room_id=room) == set()
    assert await presence.presence_state(room_id=room, user_ids=[1]) == (0, set())


async def test_a_big_room_gets_no_digests(store, settings):
    settings.CHAT_PRESENCE_INTERVAL = 0.1
    settings.CHAT_PRESENCE_BROADCAST_MAX = 5
    room = ROOMS[1]
    async with room_listener(room) as receive:
        for user in range(1, 7):
            await presence.presence_join(room_id=room, user_id=user, socket_id="s")
            presence.announce(room_id=room, user_id=user, status="online")
        with pytest.raises(asyncio.TimeoutError):
            await receive(0.5)
        assert (await presence.presence_state(room_id=room, user_ids=[6]))[0] == 6
