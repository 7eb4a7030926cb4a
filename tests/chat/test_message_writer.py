"""chat.services.messages.message_create, the one message writer, on the real PostgreSQL and Redis.

The API, the pages and the WebSocket (through chat.asyncdb.db_async) all call
it; these tests call it both ways.
"""

from __future__ import annotations

import asyncio
import threading

import pytest
from channels.layers import get_channel_layer
from django.core.cache import cache

from chat import cache_keys, events
from chat.asyncdb import db_async
from chat.models import Message, Room
from chat.selectors import history as history_selectors
from chat.selectors import rooms as room_selectors
from chat.services import messages as message_services
from chatsite import env
from chatsite.errors import Conflict, Forbidden, InvalidInput, NotFound
from tests.chat.polling import poll_after_highest

pytestmark = pytest.mark.django_db(transaction=True)


async def test_creates_publishes_and_writes_through_from_the_socket_path(chat_world):
    room, member = chat_world["public"], chat_world["member"]
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(events.room_group(room.id), channel)
    create = db_async(message_services.message_create)
    first, created = await create(room=room, author=member, body="hello", client_id="a-1")
    second, _ = await create(room=room, author=member, body="again")
    assert created and (first.seq, second.seq) == (1, 2) and second.id > first.id
    event = await asyncio.wait_for(layer.receive(channel), 5)
    assert event["kind"] == "message.new" and event["seq"] == 1 and f'"id":{first.id}' in event["text"]
    stored = await db_async(Message.objects.get)(pk=first.id)
    assert (stored.body, stored.client_id, stored.author_id, stored.seq) == ("hello", "a-1", member.id, 1)
    assert stored.created_at == first.created_at
    fresh = await db_async(Room.objects.get)(pk=room.id)
    assert fresh.last_message_seq == 2 and fresh.last_message_at == second.created_at
    # Written through for history readers, for CACHE_TTL_ENTRIES like every single message.
    assert cache.get(cache_keys.message_cache_key(first.id)) == history_selectors.message_cache_entry(first)
    assert cache.ttl(cache_keys.message_cache_key(first.id)) > env.CACHE_TTL
    await layer.group_discard(events.room_group(room.id), channel)


def test_a_retried_client_id_returns_the_original_and_uses_no_seq(chat_world):
    room, member = chat_world["public"], chat_world["member"]
    first, _ = message_services.message_create(room=room, author=member, body="hi", client_id="c-1")
    again, created = message_services.message_create(room=room, author=member, body="hi (retry)", client_id="c-1")
    assert not created and again.id == first.id and again.body == "hi"
    assert Room.objects.get(pk=room.id).last_message_seq == 1
    third, _ = message_services.message_create(room=room, author=member, body="next")
    assert third.seq == 2  # no hole


def test_errors(chat_world, make_room):
    room, member = chat_world["public"], chat_world["member"]
    other = make_room(chat_world["project"], creator=member, name="other")
    message_services.message_create(room=room, author=member, body="hi", client_id="c-2")
    with pytest.raises(Conflict):
        message_services.message_create(room=other, author=member, body="hi", client_id="c-2")
    with pytest.raises(InvalidInput):
        message_services.message_create(room=room, author=member, body="  ")
    gone = Room(id=room.id + 10_000, project=room.project)
    with pytest.raises(NotFound):
        message_services.message_create(room=gone, author=member, body="to nowhere")
    type(room.project).objects.filter(pk=room.project_id).update(archived=True)  # the room object still says otherwise
    with pytest.raises(Forbidden):
        message_services.message_create(room=room, author=member, body="read-only")


async def test_concurrent_socket_senders_commit_in_id_order(make_user, make_project):
    """A reader that polls 'after the highest id seen' never skips one: ids in a room commit in order."""
    owner = await db_async(make_user)("asender0")
    project = await db_async(make_project)(owner)
    room = await db_async(Room.objects.select_related("project").get)(project=project, slug="general")
    senders = [owner]
    for i in range(1, 6):
        user = await db_async(make_user)(f"asender{i}")
        await db_async(project.memberships.create)(user=user)
        senders.append(user)
    per_sender = 30
    done = threading.Event()
    seen: list[int] = []
    reader = threading.Thread(target=poll_after_highest, args=(room.id, done, seen))
    reader.start()
    create = db_async(message_services.message_create)

    async def send(user) -> None:
        for i in range(per_sender):
            await create(room=room, author=user, body=f"{user.username} {i}", client_id=f"{user.pk}-{i}")

    try:
        await asyncio.gather(*(send(u) for u in senders))
    finally:
        done.set()
        await asyncio.get_running_loop().run_in_executor(None, reader.join)
    rows = await db_async(lambda: list(Message.objects.filter(room=room).order_by("id").values_list("id", "seq")))()
    assert [seq for _, seq in rows] == list(range(1, len(senders) * per_sender + 1))
    assert seen == [mid for mid, _ in rows]


def test_a_new_message_drops_the_rendered_newest_history_page(chat_world, api_client):
    room, member = chat_world["public"], chat_world["member"]
    client = api_client(chat_world["owner"])

    def newest_bodies() -> list[str]:
        response = client.get(f"/api/v1/rooms/{room.id}/messages")
        assert response.status_code == 200
        return [m["body"] for m in response.json()["items"]]

    message_services.message_create(room=room, author=member, body="one")
    assert newest_bodies() == ["one"]
    assert newest_bodies() == ["one"]  # the rendered page
    message_services.message_create(room=room, author=member, body="two")
    assert newest_bodies() == ["one", "two"]


def test_a_new_message_moves_the_cached_unread_tail(chat_world):
    room, owner, member, project = chat_world["public"], chat_world["owner"], chat_world["member"], chat_world["project"]
    message_services.message_create(room=room, author=owner, body="one")
    room_selectors.rooms_for_user(user=member, project=project)  # caches the tail under seq 1
    second, _ = message_services.message_create(room=room, author=owner, body="two")
    assert cache.get(cache_keys.unread_tail_key(room.id, (2, 0)))[0] == (second.id, owner.id, False)
    assert cache.get(cache_keys.unread_tail_key(room.id, (1, 0))) is None  # the older tail is dropped
    rooms = room_selectors.rooms_for_user(user=member, project=project)
    assert {r.id: r.unread for r in rooms}[room.id] == 2


def test_one_database_round_trip_when_not_in_a_transaction(chat_world, django_assert_num_queries):
    room, member = chat_world["public"], chat_world["member"]
    with django_assert_num_queries(1):  # the counter and the insert, in one statement
        message_services.message_create(room=room, author=member, body="one trip")


def test_a_group_of_drafts_is_one_statement_in_room_and_seq_order(chat_world, make_room, django_assert_num_queries):
    room, member, owner = chat_world["public"], chat_world["member"], chat_world["owner"]
    other = make_room(chat_world["project"], creator=owner, name="second")
    Draft = message_services.Draft
    drafts = [
        Draft(room=other, author=owner, body="o1"),
        Draft(room=room, author=member, body="r1", client_id="g-1"),
        Draft(room=other, author=member, body="o2"),
        Draft(room=room, author=owner, body="r2"),
        Draft(room=room, author=member, body="r3"),
    ]
    with django_assert_num_queries(1):
        outcomes = message_services.messages_create(drafts)
    assert all(created for _, created in outcomes)
    assert [(m.room_id, m.seq, m.body) for m, _ in outcomes] == [
        (other.id, 1, "o1"), (room.id, 1, "r1"), (other.id, 2, "o2"), (room.id, 2, "r2"), (room.id, 3, "r3"),
    ]
    stored = list(Message.objects.order_by("id").values_list("room_id", "seq", "body", "client_id"))
    assert [(r, s, b) for r, s, b, _ in stored] == sorted((r, s, b) for r, s, b, _ in stored)  # ids in (room, seq) order
    assert {(m.id, m.seq, m.body) for m, _ in outcomes} == set(Message.objects.values_list("id", "seq", "body"))
    assert Room.objects.get(pk=room.id).last_message_seq == 3 and Room.objects.get(pk=other.id).last_message_seq == 2


def test_a_group_answers_each_draft_on_its_own(chat_world, make_room):
    """A retried client_id, an empty body, a room gone and an archived project: the others are written all the same."""
    room, member, owner, project = chat_world["public"], chat_world["member"], chat_world["owner"], chat_world["project"]
    original, _ = message_services.message_create(room=room, author=member, body="first", client_id="dup")
    archived_project = type(project).objects.create(name="Old", slug="old", archived=False)
    archived_room = Room.objects.create(project=archived_project, name="old", slug="old")
    type(project).objects.filter(pk=archived_project.pk).update(archived=True)  # archived after the room was read
    gone = Room(id=room.id + 10_000, project=project)
    Draft = message_services.Draft
    outcomes = message_services.messages_create(
        [
            Draft(room=room, author=owner, body="a"),
            Draft(room=room, author=member, body="again", client_id="dup"),
            Draft(room=room, author=owner, body="   "),
            Draft(room=gone, author=owner, body="nowhere"),
            Draft(room=archived_room, author=owner, body="read-only"),
            Draft(room=room, author=owner, body="b"),
        ]
    )
    (a, a_new), (retry, retry_new), empty, missing, archived, (b, b_new) = outcomes
    assert a_new and b_new and (a.seq, b.seq) == (2, 3)  # no seq used by the refused ones
    assert not retry_new and retry.id == original.id and retry.body == "first"
    assert isinstance(empty, InvalidInput) and isinstance(missing, NotFound)
    assert isinstance(archived, Forbidden) and archived.code == "archived"
    assert Room.objects.get(pk=archived_room.pk).last_message_seq == 0
    assert list(Message.objects.filter(room=room).order_by("seq").values_list("body", flat=True)) == ["first", "a", "b"]


def test_a_group_inside_a_transaction_keeps_it_usable_after_a_retry(chat_world):
    from django.db import transaction

    room, member = chat_world["public"], chat_world["member"]
    message_services.message_create(room=room, author=member, body="first", client_id="t-1")
    Draft = message_services.Draft
    with transaction.atomic():
        outcomes = message_services.messages_create(
            [Draft(room=room, author=member, body="retry", client_id="t-1"), Draft(room=room, author=member, body="new")]
        )
        assert [created for _, created in outcomes] == [False, True]
        assert Message.objects.filter(room=room).count() == 2
    assert Room.objects.get(pk=room.id).last_message_seq == 2
