"""Bad WebSocket input against a real server (chatsite.server): every frame gets a documented answer
(an error frame with a code from docs/PROTOCOL.md, or the normal reply), the
socket stays open, the server stays up, and a bystander in the room keeps
receiving messages the whole time.

Three rounds: a table of hand-written malformed frames, structured fuzzing with
Hypothesis (bounded number of examples), and a flood of 500 frames sent
without reading.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import urllib.request
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chat.models import Message
from tests.security.conftest import MISSING_ID, World
from tests.wsclient import ChatSocket

pytestmark = pytest.mark.django_db(transaction=True)

# docs/PROTOCOL.md "Errors".
DOCUMENTED_ERRORS = {
    "bad_json", "bad_frame", "binary_not_supported", "unknown_type", "invalid_field", "invalid_client_id",
    "empty_body", "body_too_long", "invalid_body", "not_found", "forbidden", "archived", "client_id_reused",
    "rate_limited", "not_subscribed", "invalid_users", "unavailable", "server_error",
}
REPLIES = {"error", "subscribed", "unsubscribed", "message.ack", "read.ack", "presence.state", "pong"}
EVENTS = {"message.new", "message.edited", "message.deleted", "resync", "presence", "typing", "mention"}
CLIENT_TYPES = ["subscribe", "unsubscribe", "message.send", "read", "typing", "presence", "ping"]

_fence = itertools.count()
_canary = itertools.count()


class Room:
    """Three sockets: the one under attack, a sender and a bystander subscribed to the public room."""

    def __init__(self, world: World, port: int) -> None:
        self.world, self.port = world, port

    async def open(self) -> "Room":
        tokens = self.world.tokens
        self.target = await ChatSocket.open(self.port, tokens["member"])
        self.sender = await ChatSocket.open(self.port, tokens["admin"])
        self.bystander = await ChatSocket.open(self.port, tokens["private_member"])
        await self.bystander.send({"type": "subscribe", "room": self.world.public.id})
        await self.bystander.until("subscribed")
        return self

    async def close(self) -> None:
        for sock in (self.target, self.sender, self.bystander):
            await sock.close()

    async def answers(self, raw: str | bytes) -> list[dict[str, Any]]:
        """Send ``raw``, then a ping fence; the target's replies to ``raw`` (events left out)."""
        fence = f"fence-{next(_fence)}"
        await self.target.ws.send(raw)
        await self.target.send({"type": "ping", "ref": fence})
        replies = []
        for _ in range(2000):
            event = await self.target.recv(skip=())
            if event["type"] == "pong" and event.get("ref") == fence:
                return replies
            assert event["type"] in REPLIES | EVENTS, event
            if event["type"] in REPLIES:
                replies.append(event)
        raise AssertionError("no fence pong")

    async def canary(self) -> None:
        """The bystander still gets a message the sender posts now."""
        client_id = f"canary-{next(_canary)}"
        await self.sender.send({"type": "message.send", "room": self.world.public.id, "body": client_id, "client_id": client_id})
        ack, _ = await self.sender.until("message.ack")
        for _ in range(5000):
            event, _ = await self.bystander.until("message.new")
            if event["message"]["id"] == ack["id"]:
                assert event["message"]["body"] == client_id
                return
        raise AssertionError("the canary never arrived")


def assert_documented(reply: dict[str, Any]) -> None:
    if reply["type"] == "error":
        assert reply["code"] in DOCUMENTED_ERRORS, reply
        assert isinstance(reply["message"], str) and 0 < len(reply["message"]) < 200, reply
        assert "Traceback" not in reply["message"]


def run(world: World, port: int, scenario) -> None:
    async def main() -> None:
        room = await Room(world, port).open()
        try:
            await scenario(room)
            await room.canary()
        finally:
            await room.close()

    asyncio.run(main())
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as response:
        assert response.status == 200


# --- A table of malformed frames ------------------------------------------------


def malformed(world: World) -> list[tuple[str | bytes, str]]:
    public = world.public.id

    def frame(**fields: Any) -> str:
        return orjson.dumps(fields).decode()

    def send(**fields: Any) -> str:
        return frame(**{"type": "message.send", "room": public, "body": "hi", "client_id": "fuzz", **fields})

    return [
        ("not json", "bad_json"),
        ("", "bad_json"),
        ("{", "bad_json"),
        ('{"type": "ping", "ref": NaN}', "bad_json"),
        ("1e400", "bad_json"),
        ("x" * 512 * 1024, "bad_json"),
        ("[]", "bad_frame"),
        ("42", "bad_frame"),
        ("null", "bad_frame"),
        ('"subscribe"', "bad_frame"),
        ("{}", "bad_frame"),
        (frame(type=5), "bad_frame"),
        (frame(type=None), "bad_frame"),
        (frame(type=["subscribe"]), "bad_frame"),
        (frame(type={"nested": "subscribe"}), "bad_frame"),
        (frame(type="nope"), "unknown_type"),
        (frame(type=""), "unknown_type"),
        (frame(type="x" * 100_000), "unknown_type"),
        (frame(type="SUBSCRIBE", room=public), "unknown_type"),
        (b"\x00\xff\x00", "binary_not_supported"),
        (b'{"type": "ping"}', "binary_not_supported"),
        (frame(type="subscribe"), "invalid_field"),
        (frame(type="subscribe", room=str(public)), "invalid_field"),
        (frame(type="subscribe", room=float(public)), "invalid_field"),
        (frame(type="subscribe", room=1.5), "invalid_field"),
        (frame(type="subscribe", room=-1), "invalid_field"),
        (frame(type="subscribe", room=True), "invalid_field"),
        (frame(type="subscribe", room=None), "invalid_field"),
        (frame(type="subscribe", room=[public]), "invalid_field"),
        (frame(type="subscribe", room={"id": public}), "invalid_field"),
        ('{"type": "subscribe", "room": 9223372036854775808}', "invalid_field"),  # 2**63
        ('{"type": "subscribe", "room": 18446744073709551616}', "invalid_field"),  # 2**64
        ('{"type": "subscribe", "room": 1000000000000000000000000000000}', "invalid_field"),
        ('{"type": "subscribe", "room": -9223372036854775809}', "invalid_field"),
        (frame(type="subscribe", room=9223372036854775807), "not_found"),  # 2**63 - 1: a valid id, no such room
        (frame(type="subscribe", room=MISSING_ID), "not_found"),
        (frame(type="subscribe", room=public, last_id="0"), "invalid_field"),
        (frame(type="subscribe", room=public, last_id=-5), "invalid_field"),
        (frame(type="subscribe", room=public, last_id=0.0), "invalid_field"),
        (frame(type="unsubscribe", room="x"), "invalid_field"),
        (frame(type="read", room=public, last_id=-1), "invalid_field"),
        (frame(type="read", room=public, last_id="5"), "invalid_field"),
        (frame(type="read", last_id=1), "invalid_field"),
        (frame(type="typing", room=public), "not_subscribed"),
        (frame(type="typing", room="x"), "invalid_field"),
        (send(room=str(public)), "invalid_field"),
        (send(room=2**62), "not_found"),
        (send(body=5), "invalid_body"),
        (send(body=None), "invalid_body"),
        (send(body=["hi"]), "invalid_body"),
        (send(body={"text": "hi"}), "invalid_body"),
        (send(body=""), "empty_body"),
        (send(body=" \n\t "), "empty_body"),
        (send(body="a\x00b"), "invalid_body"),
        (send(body="x" * 10_001), "body_too_long"),
        (frame(type="message.send", room=public, body="hi"), "invalid_client_id"),
        (send(client_id=7), "invalid_client_id"),
        (send(client_id=""), "invalid_client_id"),
        (send(client_id="c" * 65), "invalid_client_id"),
        (send(client_id=["a"]), "invalid_client_id"),
        (send(client_id="a\x00b"), "invalid_client_id"),
    ]


def test_malformed_frames_get_documented_error_frames(world: World, server_port: int) -> None:
    cases = malformed(world)

    async def scenario(room: Room) -> None:
        for index, (raw, code) in enumerate(cases):
            replies = await room.answers(raw)
            assert [r.get("code") for r in replies] == [code], (raw[:80], replies)
            assert replies[0]["type"] == "error"
            assert_documented(replies[0])
            if index % 10 == 0:
                await room.canary()

    run(world, server_port, scenario)
    assert not Message.objects.filter(client_id="fuzz").exists()


def test_error_frames_echo_the_ref(world: World, server_port: int) -> None:
    async def scenario(room: Room) -> None:
        for ref in ("r-1", 17, {"deep": ["ref"]}):
            replies = await room.answers(json.dumps({"type": "subscribe", "room": "x", "ref": ref}))
            assert replies == [{"type": "error", "code": "invalid_field", "message": "'room' must be a non-negative integer.", "ref": ref}]
        replies = await room.answers(json.dumps({"type": "message.send", "room": world.public.id, "body": "", "client_id": "cid"}))
        assert replies[0]["ref"] == "cid"

    run(world, server_port, scenario)


# --- Structured fuzzing ---------------------------------------------------------

JSON_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
JSON_VALUES = st.recursive(JSON_LEAVES, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)


def frames(world: World) -> st.SearchStrategy[dict[str, Any]]:
    ids = st.sampled_from([world.public.id, world.private.id, MISSING_ID, 0]) | JSON_VALUES
    message_ids = st.sampled_from([m.id for m in world.public_messages] + [0]) | JSON_VALUES
    return st.fixed_dictionaries(
        {"type": st.sampled_from(CLIENT_TYPES) | JSON_VALUES},
        optional={
            "room": ids,
            "last_id": message_ids,
            "body": st.text(max_size=60) | JSON_VALUES,
            "client_id": st.text(max_size=70) | JSON_VALUES,
            "ref": JSON_VALUES,
            "extra": JSON_VALUES,
        },
    )


def test_structured_fuzz_answers_every_frame(world: World, server_port: int) -> None:
    loop = asyncio.new_event_loop()
    room = loop.run_until_complete(Room(world, server_port).open())
    examples = itertools.count()

    @settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(frame=frames(world))
    def exchange(frame: dict[str, Any]) -> None:
        # The standard library writes integers of any size (orjson stops at 64 bits).
        replies = loop.run_until_complete(room.answers(json.dumps(frame)))
        for reply in replies:
            assert_documented(reply)
        expected = (0, 1) if frame.get("type") == "typing" else (1,)
        assert len(replies) in expected, (frame, replies)
        if next(examples) % 25 == 0:
            loop.run_until_complete(room.canary())

    try:
        exchange()
        loop.run_until_complete(room.canary())
    finally:
        loop.run_until_complete(room.close())
        loop.close()


# --- A flood --------------------------------------------------------------------


def test_a_flood_of_500_frames_is_answered_in_full_while_the_room_carries_on(world: World, server_port: int) -> None:
    public = world.public.id
    flood = []
    for i in range(500):
        kind = i % 5
        if kind == 0:
            flood.append(orjson.dumps({"type": "message.send", "room": public, "body": f"flood {i}", "client_id": f"flood-{i}"}).decode())
        elif kind == 1:
            flood.append("garbage" * 10)
        elif kind == 2:
            flood.append(orjson.dumps({"type": "subscribe", "room": "x"}).decode())
        elif kind == 3:
            flood.append(b"\x01\x02")
        else:
            flood.append(orjson.dumps({"type": "ping", "ref": i}).decode())

    async def scenario(room: Room) -> None:
        async def attack() -> None:
            for raw in flood:
                await room.target.ws.send(raw)

        async def chat() -> None:
            for _ in range(10):
                await room.canary()

        await asyncio.gather(attack(), chat())
        replies = []
        while len(replies) < len(flood):
            event = await room.target.recv(skip=())
            if event["type"] in REPLIES:
                replies.append(event)
        for reply in replies:
            assert_documented(reply)
        kinds = [r["type"] if r["type"] != "error" else r["code"] for r in replies]
        assert kinds.count("message.ack") == 100
        assert kinds.count("bad_json") == 100
        assert kinds.count("invalid_field") == 100
        assert kinds.count("binary_not_supported") == 100
        assert [r["ref"] for r in replies if r["type"] == "pong"] == [i for i in range(500) if i % 5 == 4]

    run(world, server_port, scenario)
    assert Message.objects.filter(client_id__startswith="flood-").count() == 100
