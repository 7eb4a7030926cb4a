"""What an open, idle chat socket holds: nothing per socket that it does not need (docs/PERFORMANCE.md, "What a socket costs").

Ten thousand idle sockets each pay for every container and task they hold
while they wait; these check the consumer's own share, through the real
router, the channel layer and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import orjson
import pytest
from channels.testing import WebsocketCommunicator

from chat import events
from chat.consumers import NO_ENTRIES, ChatConsumer
from chatsite.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)

# Per-socket maps and sets an idle socket reads from the class's shared empty defaults.
LAZY = ("filling", "checking", "typing_sent", "fill_tasks")


async def frames_until(communicator: WebsocketCommunicator, frame_type: str) -> dict[str, Any]:
    while True:
        frame = orjson.loads(await communicator.receive_from(timeout=5))
        for event in frame if isinstance(frame, list) else [frame]:
            if event["type"] == frame_type:
                return event


async def open_subscribed(token: str, room_id: int) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(application, "/ws/", headers=[(b"authorization", f"Bearer {token}".encode())])
    connected, _ = await communicator.connect()
    assert connected
    await frames_until(communicator, "hello")
    await communicator.send_to(text_data=orjson.dumps({"type": "subscribe", "room": room_id}).decode())
    await frames_until(communicator, "subscribed")
    return communicator


def consumer_of(user_id: int) -> ChatConsumer:
    found = [o for o in gc.get_objects() if type(o) is ChatConsumer and o.outbox is not None and o.user.id == user_id]
    assert len(found) == 1, found
    return found[0]


async def until(condition: Any) -> None:
    """Wait (bounded) for ``condition()``: background work of the socket finishing."""
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    assert condition()


@pytest.fixture
def member_socket_args(chat_world, make_token) -> tuple[str, int, int]:
    return make_token(chat_world["member"]), chat_world["public"].id, chat_world["member"].id


async def test_an_idle_subscribed_socket_holds_only_its_subscription(member_socket_args):
    token, room_id, user_id = member_socket_args
    communicator = await open_subscribed(token, room_id)
    try:
        consumer = consumer_of(user_id)
        own = vars(consumer)
        assert [name for name in LAZY if name in own] == []
        assert consumer.filling == {} and consumer.checking == {} and consumer.typing_sent == {}
        assert not consumer.fill_tasks
        assert consumer.cursors.keys() == {room_id} and consumer.room_projects.keys() == {room_id}
        assert isinstance(consumer.subscribes, tuple) and len(consumer.subscribes) == 1
        # The Outbox's counters are functions of the module, not a closure or bound method per socket.
        assert not hasattr(consumer.outbox._on_shed, "__self__") and consumer.outbox._on_shed.__closure__ is None
        assert not hasattr(consumer.outbox._on_batch, "__self__")
    finally:
        await communicator.disconnect()


async def test_the_socket_reads_client_frames_without_a_task_per_frame(member_socket_args):
    """Channels' loop read every message in a task of its own; an idle socket kept that task waiting."""
    token, room_id, _ = member_socket_args
    communicator = await open_subscribed(token, room_id)
    try:
        await communicator.send_to(text_data=orjson.dumps({"type": "ping", "ref": 1}).decode())
        assert (await frames_until(communicator, "pong"))["ref"] == 1
        reading = [
            task
            for task in asyncio.all_tasks()
            if task is not communicator.future
            and getattr(task.get_coro(), "cr_frame", None) is not None
            and task.get_coro().cr_frame.f_locals.get("self") is communicator.input_queue
        ]
        assert reading == []
    finally:
        await communicator.disconnect()


async def test_maps_filled_for_a_while_go_back_to_the_shared_empty_ones(member_socket_args):
    token, room_id, user_id = member_socket_args
    communicator = await open_subscribed(token, room_id)
    try:
        consumer = consumer_of(user_id)
        # Typing keeps its time for the room (the rate limit) in a map of the socket's own.
        await communicator.send_to(text_data=orjson.dumps({"type": "typing", "room": room_id}).decode())
        await until(lambda: "typing_sent" in vars(consumer))
        assert consumer.typing_sent.keys() == {room_id}
        assert ChatConsumer.typing_sent is NO_ENTRIES and ChatConsumer.typing_sent == {}

        # An access check holds the room's events and runs a task; both are let go when it ends.
        consumer.deliver_room_event({"room": room_id, "kind": events.ACCESS_CHECK})
        assert consumer.checking == {room_id: []} and len(consumer.fill_tasks) == 1
        await until(lambda: not {"checking", "fill_tasks"} & vars(consumer).keys())
        assert consumer.checking is NO_ENTRIES and consumer.fill_tasks == frozenset()
        assert consumer.cursors.keys() == {room_id}  # still readable: still subscribed

        # Unsubscribing and subscribing again leaves no held map behind either.
        await communicator.send_to(text_data=orjson.dumps({"type": "unsubscribe", "room": room_id}).decode())
        await frames_until(communicator, "unsubscribed")
        await communicator.send_to(text_data=orjson.dumps({"type": "subscribe", "room": room_id}).decode())
        await frames_until(communicator, "subscribed")
        assert "filling" not in vars(consumer) and consumer.cursors.keys() == {room_id}
    finally:
        await communicator.disconnect()
    assert NO_ENTRIES == {}


def test_the_shared_empty_map_refuses_writes():
    for write in (
        lambda: NO_ENTRIES.__setitem__(1, []),
        lambda: NO_ENTRIES.setdefault(1, []),
        lambda: NO_ENTRIES.update({1: []}),
    ):
        with pytest.raises(TypeError):
            write()
    assert NO_ENTRIES == {} and NO_ENTRIES.pop(1, None) is None
