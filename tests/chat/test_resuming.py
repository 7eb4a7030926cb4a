"""chat.resuming: subscribes read in groups (real PostgreSQL and Redis)."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from chat.batching import ThreadBatcher
from chat.resuming import Resume, Resumed, resume_group
from chat.selectors import rooms as room_selectors
from chatsite.errors import NotFound

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize("missed", [1, 100])
@pytest.mark.parametrize("sockets", [1, 40])
def test_a_group_costs_three_queries_whatever_its_size_and_backlog(
    chat_world, make_room, make_message, django_assert_num_queries, missed, sockets
):
    """Room counters; the missed ids of every (room, last id); their rows with authors."""
    room, owner, member, admin = chat_world["public"], chat_world["owner"], chat_world["member"], chat_world["admin"]
    other = make_room(chat_world["project"], creator=owner, name="other")
    first, other_first = make_message(room, owner), make_message(other, owner)
    for _ in range(missed):
        make_message(room, admin)
        make_message(other, admin)
    users = [owner, member, admin]
    group = [
        Resume(user=users[i % 3], room_id=(room, other)[i % 2].id, last_id=(first, other_first)[i % 2].id, cap=500, budget=10**6)
        for i in range(sockets)
    ]
    resume_group(group)  # warms the room and access cache entries
    with django_assert_num_queries(3):
        answers = resume_group(group)
    for request, answer in zip(group, answers):
        assert isinstance(answer, Resumed) and not answer.overflowed
        assert len(answer.frames) == missed and answer.cursor == missed + 1
        bodies = [orjson.loads(f)["message"] for f in answer.frames]
        assert all(m["room"] == request.room_id and m["id"] > request.last_id for m in bodies)
        assert [m["seq"] for m in bodies] == list(range(2, missed + 2))


def test_each_subscribe_of_a_group_gets_its_own_answer(chat_world, make_message):
    room, private = chat_world["public"], chat_world["private"]
    owner, member, outsider = chat_world["owner"], chat_world["member"], chat_world["outsider"]
    first = make_message(room, owner)
    for _ in range(5):
        make_message(room, owner)
    answers = resume_group(
        [
            Resume(user=member, room_id=room.id, last_id=first.id, cap=500, budget=10**6),
            Resume(user=outsider, room_id=private.id, last_id=None, cap=500, budget=10**6),
            Resume(user=member, room_id=room.id, last_id=first.id, cap=3, budget=10**6),  # too many missed
            Resume(user=member, room_id=room.id, last_id=first.id, cap=500, budget=100),  # too many bytes
            Resume(user=owner, room_id=room.id, last_id=None, cap=500, budget=10**6),
            Resume(user=member, room_id=room.id + 10_000, last_id=None, cap=500, budget=10**6),
        ]
    )
    full, refused, by_count, by_bytes, fresh, missing = answers
    assert len(full.frames) == 5 and full.cursor == 6 and not full.overflowed
    assert isinstance(refused, NotFound) and isinstance(missing, NotFound)
    assert by_count.overflowed and by_count.frames == [] and by_count.cursor == 6
    assert by_bytes.overflowed and by_bytes.frames == []
    assert fresh.frames == [] and fresh.cursor == 6 and fresh.project_id == room.project_id


def test_users_of_one_group_keep_their_own_role(chat_world):
    room, owner, member = chat_world["public"], chat_world["owner"], chat_world["member"]
    room_selectors.room_get_for_user(user=owner, room_id=room.id)  # the room is cached: one object for the group
    as_owner, as_member = room_selectors.rooms_get_for_users([(owner, room.id), (member, room.id)])
    assert (as_owner.my_role, as_member.my_role) == ("owner", "member")


async def test_subscribes_that_arrive_together_are_one_trip(chat_world):
    room, users = chat_world["public"], [chat_world[name] for name in ("owner", "member", "admin")]
    reader = ThreadBatcher(resume_group, slots=1, max_group=500)
    answers = await asyncio.gather(
        *(reader.submit(Resume(user=users[i % 3], room_id=room.id, last_id=None, cap=500, budget=10**6)) for i in range(30))
    )
    assert reader.groups == 1 and reader.requests == 30 and all(a.cursor == 0 for a in answers)
