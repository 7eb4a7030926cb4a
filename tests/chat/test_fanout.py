"""chat.fanout.RoomHub on the real Redis channel layer: one group membership per room per process."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from channels.layers import get_channel_layer

from chat import events
from chat.fanout import RoomHub
from tests.waiting import await_until

pytestmark = pytest.mark.django_db


class Recorder:
    def __init__(self, *, accept: bool = True) -> None:
        self.events: list[dict[str, Any]] = []
        self.accept = accept

    def deliver_room_event(self, event: dict[str, Any]) -> bool:
        self.events.append(event)
        return self.accept

    def deliver_user_event(self, event: dict[str, Any]) -> None:
        self.events.append(event)


async def publish(room_id: int, seq: int) -> None:
    await get_channel_layer().group_send(
        events.room_group(room_id), events.room_event_message(room_id=room_id, kind="message.new", payload={}, seq=seq)
    )


async def test_concurrent_first_joins_share_one_channel_and_all_receive():
    hub = RoomHub(get_channel_layer())
    subscribers = {room: [Recorder() for _ in range(5)] for room in (901, 902, 903)}
    # Every join at once, including the very first ones (before the hub has a channel).
    await asyncio.gather(*(hub.join(room, s) for room, subs in subscribers.items() for s in subs))
    assert {room: len(members) for room, members in hub.rooms.items()} == {901: 5, 902: 5, 903: 5}
    for room in subscribers:
        await publish(room, 1)
    await await_until(lambda: all(len(s.events) == 1 for subs in subscribers.values() for s in subs))
    assert all(s.events[0]["room"] == room for room, subs in subscribers.items() for s in subs)
    # The event was decoded once per process: every subscriber got the same object.
    assert len({id(s.events[0]) for s in subscribers[901]}) == 1


async def test_the_last_leave_leaves_the_group_and_a_later_join_rejoins():
    hub = RoomHub(get_channel_layer())
    a, b = Recorder(), Recorder()
    await hub.join(904, a)
    await hub.join(904, b)
    await hub.leave(904, a)
    await publish(904, 1)
    await await_until(lambda: len(b.events) == 1)
    assert a.events == []
    await hub.leave(904, b)
    assert 904 not in hub.rooms
    await publish(904, 2)
    await asyncio.sleep(0.2)
    assert len(b.events) == 1  # nobody local: the process is out of the group
    c = Recorder()
    await hub.join(904, c)
    await publish(904, 3)
    await await_until(lambda: len(c.events) == 1)
    assert c.events[0]["seq"] == 3


async def test_a_leave_racing_a_join_keeps_the_joiner_subscribed():
    hub = RoomHub(get_channel_layer())
    first, second = Recorder(), Recorder()
    await hub.join(905, first)
    await asyncio.gather(hub.leave(905, first), hub.join(905, second))
    await publish(905, 1)
    await await_until(lambda: len(second.events) == 1)
    assert first.events == []


@pytest.mark.parametrize("accept", [True, False])
async def test_events_of_other_rooms_and_types_are_not_delivered(accept):
    hub = RoomHub(get_channel_layer())
    sub = Recorder(accept=accept)
    await hub.join(906, sub)
    hub.deliver({"type": "something.else", "room": 906})
    hub.deliver({**events.room_event_message(room_id=907, kind="message.new", payload={}, seq=1)})
    assert sub.events == []
    await publish(906, 1)
    await await_until(lambda: len(sub.events) == 1)


async def test_personal_events_reach_the_users_sockets_only():
    hub = RoomHub(get_channel_layer())
    alice_a, alice_b, bob = Recorder(), Recorder(), Recorder()
    await asyncio.gather(hub.join_user(41, alice_a), hub.join_user(41, alice_b), hub.join_user(42, bob))
    events.publish_user_event(user_id=41, kind="mention", payload={"room": 1})
    await await_until(lambda: len(alice_a.events) == 1 and len(alice_b.events) == 1)
    assert alice_a.events[0]["text"] == '{"type":"mention","room":1}' and bob.events == []
    await hub.leave_user(41, alice_a)
    await hub.leave_user(41, alice_b)
    assert 41 not in hub.users
    events.publish_user_event(user_id=42, kind="mention", payload={"room": 2})
    await await_until(lambda: len(bob.events) == 1)
    assert len(alice_a.events) == 1
