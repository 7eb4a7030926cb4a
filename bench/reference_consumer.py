"""The naive consumer the benchmark compares ours against.

This is the Channels tutorial pattern, kept on purpose: the sending socket
``group_send``s a dict, and every receiving consumer gets it through the
channel layer's default dispatch (which, per message, hops to a thread to
close old database connections) and ``json.dumps`` its own copy of the frame.
It speaks just enough of docs/PROTOCOL.md for the load generator (subscribe,
message.send -> message.new) and does LESS work than chat.consumers: no
persistence, no room permission check, no ack, no sequence numbers or gap
fill. A speed-up measured against it therefore understates ours.

Mounted at /ws/reference/ by bench/reference_asgi.py, which the benchmark
serves for its reference target, behind the same TokenAuthMiddleware as /ws/.
"""

from __future__ import annotations

import json
from typing import Any

from channels.generic.websocket import AsyncWebsocketConsumer


def reference_group(room_id: int) -> str:
    """The reference consumer's group for a room, apart from ours (chat.events.room_group)."""
    return f"reference.{int(room_id)}"


class ReferenceChatConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close()
            return
        self.rooms: set[int] = set()
        await self.accept()

    async def disconnect(self, code: int) -> None:
        for room_id in getattr(self, "rooms", ()):
            await self.channel_layer.group_discard(reference_group(room_id), self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        data = json.loads(text_data or "{}")
        kind = data.get("type")
        if kind == "subscribe":
            room_id = int(data["room"])
            await self.channel_layer.group_add(reference_group(room_id), self.channel_name)
            self.rooms.add(room_id)
            await self.send(text_data=json.dumps({"type": "subscribed", "room": room_id}))
        elif kind == "message.send":
            room_id = int(data["room"])
            user = self.scope["user"]
            message: dict[str, Any] = {
                "room": room_id,
                "author": {"id": user.id, "username": user.username},
                "body": data.get("body", ""),
                "client_id": data.get("client_id"),
            }
            await self.channel_layer.group_send(reference_group(room_id), {"type": "chat.message", "message": message})

    async def chat_message(self, event: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps({"type": "message.new", "message": event["message"]}))
