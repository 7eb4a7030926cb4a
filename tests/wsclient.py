"""A small WebSocket test client for real server processes (the `websockets` library)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import websockets

EPHEMERAL = ("presence", "typing")


class ChatSocket:
    """Sends frames and yields events one at a time, unpacking batched frames."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.pending: list[dict[str, Any]] = []

    @classmethod
    async def open(cls, port: int, token: str, *, timeout: float = 10) -> "ChatSocket":
        ws = await websockets.connect(
            f"ws://127.0.0.1:{port}/ws/", additional_headers={"Authorization": f"Bearer {token}"}, open_timeout=timeout
        )
        sock = cls(ws)
        hello = await sock.recv()
        assert hello["type"] == "hello", hello
        return sock

    async def send(self, frame: dict[str, Any]) -> None:
        await self.ws.send(orjson.dumps(frame).decode())

    async def recv(self, timeout: float = 10, *, skip: tuple = EPHEMERAL) -> dict[str, Any]:
        while True:
            if not self.pending:
                frame = orjson.loads(await asyncio.wait_for(self.ws.recv(), timeout))
                self.pending.extend(frame if isinstance(frame, list) else [frame])
            event = self.pending.pop(0)
            if event["type"] not in skip:
                return event

    async def until(self, frame_type: str, timeout: float = 10) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        before = []
        while True:
            event = await self.recv(timeout)
            if event["type"] == frame_type:
                return event, before
            before.append(event)

    async def close(self) -> None:
        await self.ws.close()
