"""The WebSocket send path's async services on the real PostgreSQL and Redis:
services.amessage_create (chat.asyncdb's direct pool), selectors.aroom_get_for_user, ratelimit.ahit."""

from __future__ import annotations

import asyncio
import threading

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.core.cache import cache

from chat import events, selectors, services
from chat.models import Message, Room
from chatsite import env, ratelimit
from chatsite.errors import Conflict, Forbidden, InvalidInput, NotFound
from tests.chat.polling import poll_after_highest

pytestmark = pytest.mark.django_db(transaction=True)


async def test_creates_publishes_and_writes_through(chat_world):
    room, member = chat_world["public"], chat_world["member"]
    cache.set(selectors.room_count_key(room.id), 41)
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(events.room_group(room.id), channel)
    first, created = await services.amessage_create(room=room, author=member, body="hello", client_id="a-1")
    second, _ = await services.amessage_create(room=room, author=member, body="again")
    assert created and (first.seq, second.seq) == (1, 2) and second.id > first.id
    event = await asyncio.wait_for(layer.receive(channel), 5)
    assert event["kind"] == "message.new" and event["seq"] == 1 and f'"id":{first.id}' in event["text"]
    stored = await database_sync_to_async(Message.objects.get)(pk=first.id)
    assert (stored.body, stored.client_id, stored.author_id, stored.seq) == ("hello", "a-1", member.id, 1)
    assert stored.created_at == first.created_at
    fresh = await database_sync_to_async(Room.objects.get)(pk=room.id)
    assert fresh.last_message_seq == 2 and fresh.last_message_at == second.created_at
    # Write-through for history readers; the stale room count is gone.
    assert cache.get(selectors.message_cache_key(first.id)) == selectors.message_cache_entry(first)
    assert cache.ttl(selectors.message_cache_key(first.id)) > env.CACHE_TTL  # a single message: CACHE_TTL_ENTRIES
    assert cache.get(selectors.room_count_key(room.id)) is None
    await layer.group_discard(events.room_group(room.id), channel)


async def test_a_retried_client_id_returns_the_original_and_uses_no_seq(chat_world):
    room, member = chat_world["public"], chat_world["member"]
    first, _ = await services.amessage_create(room=room, author=member, body="hi", client_id="c-1")
    again, created = await services.amessage_create(room=room, author=member, body="hi (retry)", client_id="c-1")
    assert not created and again.id == first.id and again.body == "hi"
    fresh = await database_sync_to_async(Room.objects.get)(pk=room.id)
    assert fresh.last_message_seq == 1
    third, _ = await services.amessage_create(room=room, author=member, body="next")
    assert third.seq == 2  # no hole


async def test_errors(chat_world, make_room):
    room, member = chat_world["public"], chat_world["member"]
    other = await database_sync_to_async(make_room)(chat_world["project"], creator=member, name="other")
    await services.amessage_create(room=room, author=member, body="hi", client_id="c-2")
    with pytest.raises(Conflict):
        await services.amessage_create(room=other, author=member, body="hi", client_id="c-2")
    with pytest.raises(InvalidInput):
        await services.amessage_create(room=room, author=member, body="  ")
    gone = Room(id=room.id + 10_000, project=room.project)
    with pytest.raises(NotFound):
        await services.amessage_create(room=gone, author=member, body="to nowhere")
    room.project.archived = True
    with pytest.raises(Forbidden):
        await services.amessage_create(room=room, author=member, body="read-only")


async def test_concurrent_async_senders_commit_in_id_order(make_user, make_project):
    """As in the synchronous test: a reader that polls 'after the highest id seen' never skips one."""
    owner = await database_sync_to_async(make_user)("asender0")
    project = await database_sync_to_async(make_project)(owner)
    room = await database_sync_to_async(Room.objects.select_related("project").get)(project=project, slug="general")
    senders = [owner]
    for i in range(1, 6):
        user = await database_sync_to_async(make_user)(f"asender{i}")
        await database_sync_to_async(project.memberships.create)(user=user)
        senders.append(user)
    per_sender = 30
    done = threading.Event()
    seen: list[int] = []

    reader = threading.Thread(target=poll_after_highest, args=(room.id, done, seen))
    reader.start()

    async def send(user) -> None:
        for i in range(per_sender):
            await services.amessage_create(room=room, author=user, body=f"{user.username} {i}", client_id=f"{user.pk}-{i}")

    try:
        await asyncio.gather(*(send(u) for u in senders))
    finally:
        done.set()
        await asyncio.get_running_loop().run_in_executor(None, reader.join)
    rows = await database_sync_to_async(lambda: list(Message.objects.filter(room=room).order_by("id").values_list("id", "seq")))()
    assert [seq for _, seq in rows] == list(range(1, len(senders) * per_sender + 1))
    assert seen == [mid for mid, _ in rows]


async def test_room_access_from_the_loop(chat_world):
    member, outsider, private = chat_world["member"], chat_world["outsider"], chat_world["private"]
    room = await selectors.aroom_get_for_user(user=member, room_id=chat_world["public"].id)  # cold: database
    again = await selectors.aroom_get_for_user(user=member, room_id=chat_world["public"].id)  # warm: cache only
    assert room.id == again.id == chat_world["public"].id and again.my_role == room.my_role == "member"
    for _ in range(2):
        with pytest.raises(NotFound):
            await selectors.aroom_get_for_user(user=member, room_id=private.id)
        with pytest.raises(NotFound):
            await selectors.aroom_get_for_user(user=outsider, room_id=chat_world["public"].id)
    with pytest.raises(NotFound):
        await selectors.aroom_get_for_user(user=member, room_id=private.id + 10_000)


async def test_async_rate_limit_shares_the_counter_with_the_sync_one(settings, chat_world):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "message": "3/60"}
    user_id = chat_world["member"].id
    ratelimit.hit("message", user_id)
    await ratelimit.ahit("message", user_id)
    ratelimit.hit("message", user_id)
    with pytest.raises(ratelimit.RateLimited) as exc:
        await ratelimit.ahit("message", user_id)
    assert 1 <= exc.value.retry_after <= 61
    with pytest.raises(ratelimit.RateLimited):
        ratelimit.hit("message", user_id)
    await ratelimit.ahit("message", user_id + 1)  # another user's own counter


async def test_a_message_sent_over_the_socket_path_drops_the_rendered_history_page(chat_world, api_client):
    room, member = chat_world["public"], chat_world["member"]
    client = await database_sync_to_async(api_client)(chat_world["owner"])

    def newest_bodies() -> list[str]:
        response = client.get(f"/api/v1/rooms/{room.id}/messages")
        assert response.status_code == 200
        return [m["body"] for m in response.json()["items"]]

    await services.amessage_create(room=room, author=member, body="one")
    assert await database_sync_to_async(newest_bodies)() == ["one"]
    assert await database_sync_to_async(newest_bodies)() == ["one"]  # the rendered page
    await services.amessage_create(room=room, author=member, body="two")
    assert await database_sync_to_async(newest_bodies)() == ["one", "two"]


async def test_the_socket_path_moves_the_cached_unread_tail_too(chat_world):
    room, owner, member, project = chat_world["public"], chat_world["owner"], chat_world["member"], chat_world["project"]
    await services.amessage_create(room=room, author=owner, body="one")
    await database_sync_to_async(selectors.rooms_for_user)(user=member, project=project)  # caches the tail under seq 1
    second, _ = await services.amessage_create(room=room, author=owner, body="two")
    assert cache.get(selectors.unread_tail_key(room.id, (2, 0)))[0] == (second.id, owner.id, False)
    rooms = await database_sync_to_async(selectors.rooms_for_user)(user=member, project=project)
    assert {r.id: r.unread for r in rooms}[room.id] == 2
