"""The room event log: every change of a room takes its seq, and resume and gap fill replay them in order.

Against the real router, the channel layer (Redis) and PostgreSQL.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.db import transaction

from chat import events
from chat.models import Room, RoomChange
from chat.resuming import Resume, Resumed, resume_group
from chat.selectors import history as history_selectors
from chat.selectors import room_events
from chat.services import messages as message_services
from chat.services import pins as pin_services
from chat.services import reactions as reaction_services
from chat.services.room_changes import room_changes_log
from tests.chat.test_consumers import hello, recv, recv_until, send

pytestmark = pytest.mark.django_db(transaction=True)


def loaded(user: Any, message: Any) -> Any:
    return history_selectors.message_get_for_user(user=user, message_id=message.id)


def post(room: Any, author: Any, body: str, **extra: Any) -> Any:
    message, _ = message_services.message_create(room=room, author=author, body=body, **extra)
    return message


def room_seq(room: Any) -> int:
    return Room.objects.get(pk=room.id).last_message_seq


async def subscribe(communicator: Any, room_id: int, **point: int) -> tuple[dict, list[dict]]:
    await send(communicator, {"type": "subscribe", "room": room_id, **point})
    return await recv_until(communicator, "subscribed")


# --- the writers take seqs ---------------------------------------------------


def test_every_change_takes_the_rooms_next_seq(chat_world):
    room, owner, member = chat_world["public"], chat_world["owner"], chat_world["member"]
    first = post(room, member, "first")
    message_services.message_edit(message=loaded(member, first), by=member, body="first, fixed")
    reaction_services.reaction_add(message=loaded(owner, first), user=owner, emoji="🎉")  # flushed at once: no loop here
    pin_services.pin_create(message=loaded(owner, first), by=owner)
    pin_services.pin_delete(message=loaded(owner, first), by=owner)
    second = post(room, owner, "second")
    message_services.message_delete(message=loaded(member, first), by=member)
    changes = list(RoomChange.objects.filter(room=room).order_by("seq").values_list("seq", "kind", "message_id"))
    assert changes == [
        (2, "edit", first.id), (3, "reaction", first.id), (4, "pin", first.id), (5, "unpin", first.id),
        (7, "delete", first.id),
    ]  # fmt: skip
    assert (first.seq, second.seq) == (1, 6)
    room.refresh_from_db()
    assert room.last_message_seq == 7 and room.messages_deleted == 1


def test_a_change_that_rolls_back_takes_no_seq(chat_world):
    room, member = chat_world["public"], chat_world["member"]
    first = post(room, member, "first")
    with pytest.raises(RuntimeError), transaction.atomic():
        message_services.message_edit(message=loaded(member, first), by=member, body="never")
        raise RuntimeError("rolled back")
    assert not RoomChange.objects.exists() and room_seq(room) == 1
    assert post(room, member, "second").seq == 2


# --- what resume replays -------------------------------------------------------


def test_resume_replays_messages_and_changes_in_seq_order_as_they_are_now(chat_world):
    room, owner, member = chat_world["public"], chat_world["owner"], chat_world["member"]
    old = post(room, member, "old")
    pinned = post(room, owner, "pinned later")
    seen = room_seq(room)
    # While away: two edits of one message, a new message that is then edited, a
    # reaction, a pin that is undone and another that stays, and a delete.
    message_services.message_edit(message=loaded(member, old), by=member, body="edit 1")
    new = post(room, owner, "new")
    message_services.message_edit(message=loaded(member, old), by=member, body="edit 2")
    reaction_services.reaction_add(message=loaded(member, new), user=member, emoji="👍")
    pin_services.pin_create(message=loaded(owner, old), by=owner)
    pin_services.pin_delete(message=loaded(owner, old), by=owner)
    pin_services.pin_create(message=loaded(owner, pinned), by=owner)
    message_services.message_edit(message=loaded(owner, new), by=owner, body="new, fixed")
    doomed = post(room, owner, "doomed")
    message_services.message_delete(message=loaded(owner, doomed), by=owner)

    missed = room_events.room_events_after_many(after_seq=[(room.id, seen)], limit=500)[("seq", room.id, seen)]
    frames = [orjson.loads(text) for text in missed.frames]
    described = [(f["type"], f["message"]["id"] if isinstance(f.get("message"), dict) else f.get("message", f.get("id"))) for f in frames]
    assert described == [
        ("message.new", new.id),
        ("message.edited", old.id),  # the second edit's place; the first says nothing more
        ("reaction", new.id),
        ("message.unpinned", old.id),  # pinned, then unpinned: the last of the two
        ("message.pinned", pinned.id),
        ("message.edited", new.id),
        ("message.new", doomed.id),
        ("message.deleted", doomed.id),
    ]
    by_type = {(f["type"], described[i][1]): f for i, f in enumerate(frames)}
    assert by_type[("message.edited", old.id)]["message"]["body"] == "edit 2"
    assert by_type[("message.new", new.id)]["message"]["body"] == "new, fixed"  # as it is now
    assert by_type[("message.new", doomed.id)]["message"]["deleted"] is True
    assert [r["emoji"] for r in by_type[("reaction", new.id)]["reactions"]] == ["👍"]
    assert by_type[("message.pinned", pinned.id)]["pinned_by"]["id"] == owner.id
    seqs = [f["seq"] if f["type"] != "message.new" else f["message"]["seq"] for f in frames]
    assert seqs == sorted(seqs) and seqs[-1] == room_seq(room) == missed.last
    assert missed.events == room_seq(room) - seen  # every event counted, the replaced ones too


def test_resume_after_missed_replies_says_how_their_threads_stand(chat_world):
    room, owner, member = chat_world["public"], chat_world["owner"], chat_world["member"]
    root = post(room, owner, "root")
    seen = room_seq(room)
    reply = post(room, member, "reply", thread_root=root.id)
    missed = room_events.room_events_after_many(after_seq=[(room.id, seen)], limit=500)[("seq", room.id, seen)]
    frames = [orjson.loads(text) for text in missed.frames]
    assert [f["type"] for f in frames] == ["message.new", "thread.updated"]
    assert frames[0]["message"]["id"] == reply.id
    assert frames[1]["root"] == root.id and frames[1]["thread"]["reply_count"] == 1


def test_a_last_id_resumes_from_that_messages_place(chat_world):
    room, owner, member = chat_world["public"], chat_world["owner"], chat_world["member"]
    first = post(room, member, "first")
    message_services.message_edit(message=loaded(member, first), by=member, body="fixed")
    second = post(room, member, "second")
    answers = resume_group(
        [
            Resume(user=owner, room_id=room.id, last_id=first.id, cap=500, budget=10**6),
            Resume(user=owner, room_id=room.id, last_id=0, cap=500, budget=10**6),
            Resume(user=owner, room_id=room.id, last_id=None, last_seq=2, cap=500, budget=10**6),
            Resume(user=owner, room_id=room.id, last_id=first.id, last_seq=3, cap=500, budget=10**6),  # last_seq wins
        ]
    )
    types = [[orjson.loads(f)["type"] for f in answer.frames] for answer in answers]
    assert types == [["message.edited", "message.new"], ["message.new", "message.edited", "message.new"], ["message.new"], []]
    assert all(isinstance(a, Resumed) and a.cursor == 3 and not a.overflowed for a in answers)
    assert orjson.loads(answers[0].frames[1])["message"]["id"] == second.id


def test_changes_count_towards_the_resume_cap(chat_world):
    room, member = chat_world["public"], chat_world["member"]
    first = post(room, member, "first")
    for i in range(3):
        message_services.message_edit(message=loaded(member, first), by=member, body=f"edit {i}")
    # Three edits replay as one frame, but they are three events missed: past a cap of 2.
    (over,) = resume_group([Resume(user=member, room_id=room.id, last_id=None, last_seq=1, cap=2, budget=10**6)])
    assert over.overflowed and over.frames == [] and over.cursor == 4
    (within,) = resume_group([Resume(user=member, room_id=room.id, last_id=None, last_seq=1, cap=3, budget=10**6)])
    assert not within.overflowed and len(within.frames) == 1


@pytest.mark.parametrize("changes", [1, 30])
def test_resume_costs_the_same_queries_whatever_the_changes(chat_world, django_assert_num_queries, changes):
    """The counters, the events, the new messages' rows, the reaction summaries and the pins; the
    changed messages themselves come from the message cache (warmed by the first read)."""
    room, owner, member = chat_world["public"], chat_world["owner"], chat_world["member"]
    messages = [post(room, member, f"m{i}") for i in range(changes)]
    seen = room_seq(room)
    for message in messages:
        message_services.message_edit(message=loaded(member, message), by=member, body="edited")
        reaction_services.reaction_add(message=loaded(owner, message), user=owner, emoji="👀")
    pin_services.pin_create(message=loaded(owner, messages[0]), by=owner)
    post(room, owner, "new")
    group = [Resume(user=owner, room_id=room.id, last_id=None, last_seq=seen, cap=500, budget=10**6)]
    resume_group(group)  # warms the access and message cache entries
    with django_assert_num_queries(5):
        (answer,) = resume_group(group)
    # Per message its edit and its reactions; the pin; the new message.
    assert len(answer.frames) == 2 * changes + 2 and not answer.overflowed


# --- over the socket -----------------------------------------------------------


async def test_a_socket_that_resumes_from_its_last_seq_misses_no_change(world):
    room, owner, member = world["public"], world["owner"], world["member"]
    bob = await hello(world["tokens"]["owner"])
    subscribed, _ = await subscribe(bob, room.id)
    alice = await hello(world["tokens"]["member"])
    await subscribe(alice, room.id)
    await send(alice, {"type": "message.send", "room": room.id, "body": "hello", "client_id": "c1"})
    ack, _ = await recv_until(alice, "message.ack")
    event = await recv(bob)
    last_seq = event["message"]["seq"]
    await bob.disconnect()

    def while_away() -> None:
        message = history_selectors.message_get_for_user(user=member, message_id=ack["id"])
        message_services.message_edit(message=message, by=member, body="hello, edited")
        pin_services.pin_create(message=loaded(owner, message), by=owner)

    await database_sync_to_async(while_away)()
    await send(alice, {"type": "reaction.add", "message": ack["id"], "emoji": "🎉"})
    await recv_until(alice, "reaction.ack")
    reaction = await recv_until(alice, "reaction")  # the coalesced event has gone out
    bob = await hello(world["tokens"]["owner"])
    subscribed, backlog = await subscribe(bob, room.id, last_seq=last_seq)
    assert [f["type"] for f in backlog] == ["message.edited", "message.pinned", "reaction"]
    assert backlog[0]["message"]["body"] == "hello, edited"
    assert backlog[2]["reactions"][0]["emoji"] == "🎉"
    assert subscribed["resumed"] == 3 and subscribed["seq"] == reaction[0]["seq"] == last_seq + 3
    # Live events go on from there, none repeated.
    await send(alice, {"type": "reaction.remove", "message": ack["id"], "emoji": "🎉"})
    await recv_until(alice, "reaction.ack")
    live = await recv(bob)
    assert live["type"] == "reaction" and live["seq"] == last_seq + 4 and live["reactions"] == []
    assert await bob.receive_nothing(timeout=0.3)
    await alice.disconnect()
    await bob.disconnect()


async def test_a_change_whose_event_was_lost_is_filled_before_the_next_event(world):
    room, member = world["public"], world["member"]
    bob = await hello(world["tokens"]["owner"])
    await subscribe(bob, room.id)
    first = await database_sync_to_async(post)(room, member, "first")
    assert (await recv(bob))["message"]["id"] == first.id

    def edit_without_its_event() -> None:
        # The edit is committed with its seq, but its publish never happens.
        with transaction.atomic():
            message = loaded(member, first)
            message.body, message.edited_at = "fixed quietly", message.created_at
            message.save(update_fields=["body", "edited_at"])
            room_changes_log(room_id=room.id, changes=[(RoomChange.Kind.EDIT, first.id)])
        from perf import cache as perf_cache

        perf_cache.invalidate(__import__("chat.cache_keys", fromlist=["x"]).message_cache_key(first.id))

    await database_sync_to_async(edit_without_its_event)()
    second = await database_sync_to_async(post)(room, member, "second")
    filled = await recv(bob)
    assert filled["type"] == "message.edited" and filled["seq"] == 2 and filled["message"]["body"] == "fixed quietly"
    live = await recv(bob)
    assert live["type"] == "message.new" and live["message"]["id"] == second.id and live["message"]["seq"] == 3
    await bob.disconnect()


async def test_a_late_change_event_is_dropped_once_replayed(world):
    room, member = world["public"], world["member"]
    first = await database_sync_to_async(post)(room, member, "first")
    await database_sync_to_async(lambda: message_services.message_edit(message=loaded(member, first), by=member, body="x"))()
    bob = await hello(world["tokens"]["owner"])
    subscribed, backlog = await subscribe(bob, room.id, last_seq=1)
    assert [f["type"] for f in backlog] == ["message.edited"] and subscribed["seq"] == 2
    # The same edit's event, arriving late from another server process: already delivered.
    await get_channel_layer().group_send(
        events.room_group(room.id),
        events.room_event_message(room_id=room.id, kind="message.edited", payload={"message": {"id": first.id}, "seq": 2}, seq=2),
    )
    assert await bob.receive_nothing(timeout=0.3)
    await bob.disconnect()


async def test_a_socket_that_resumes_gets_the_deletes_it_missed(world):
    room, member = world["public"], world["member"]
    bob = await hello(world["tokens"]["owner"])
    await subscribe(bob, room.id)
    doomed = await database_sync_to_async(post)(room, member, "soon gone")
    event = await recv(bob)
    assert event["message"]["id"] == doomed.id
    await bob.disconnect()
    await database_sync_to_async(lambda: message_services.message_delete(message=loaded(member, doomed), by=member))()
    bob = await hello(world["tokens"]["owner"])
    subscribed, backlog = await subscribe(bob, room.id, last_seq=event["message"]["seq"])
    assert backlog == [{"type": "message.deleted", "id": doomed.id, "room": room.id, "seq": doomed.seq + 1, "thread_root": None}]
    assert subscribed["seq"] == doomed.seq + 1
    await bob.disconnect()
