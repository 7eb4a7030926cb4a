"""The ceiling reference: a bare ``websockets`` broadcast server, no Django, no database, no Redis.

    python -m bench.bare_broadcast --port 8765 [--host 127.0.0.1] [--no-deflate]

bench.ws_bench starts it as ``--target bare`` (or with ``--bare``) to show, in
the same run and at the same load, what the plain library delivers on this
machine: the deliveries/s of every other configuration are printed as a ratio
to it. It is the ``websockets`` library's asyncio server with its defaults,
permessage-deflate included (each socket compresses with its own context,
as the library does by default), on uvloop like our uvicorn, and
:func:`websockets.asyncio.connection.broadcast` for the fan-out.

It speaks just enough of docs/PROTOCOL.md for the load generator
(bench/ws_client.py): ``hello`` on connect; ``subscribe`` (with ``last_id``:
the room's missed messages replayed first, from an in-memory history of the
last ``HISTORY`` messages per room) -> ``subscribed``; ``message.send`` ->
``message.ack`` to the sender, then ``message.new`` (id, room, seq, author,
body, created_at, client_id, the shape ours sends) to every socket
subscribed to the room, the sender's included; ``unsubscribe``; ``ping`` ->
``pong``. Anything else is an ``error`` frame. It does **no** authentication
(a bearer token is accepted and ignored), no persistence, no permission
check, no presence and no rate limiting, and one process serves every room:
rooms are not shared between processes.

It listens on 127.0.0.1 by default and runs until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import signal
from collections import deque
from typing import Any

import orjson
from websockets.asyncio.connection import broadcast
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

# Messages kept per room for resume (subscribe with last_id).
HISTORY = 1000
AUTHOR = {"id": 0, "username": "bare", "display_name": "bare"}


class Rooms:
    """Every room's subscribed sockets and recent messages; ids are global and increasing, seqs per room."""

    def __init__(self, history: int = HISTORY) -> None:
        self.sockets: dict[int, set[ServerConnection]] = {}
        self.messages: dict[int, deque[tuple[int, bytes]]] = {}
        self.seq: dict[int, int] = {}
        self.evicted: dict[int, int] = {}  # room -> id of the newest message dropped from its history
        self.history = history
        self.last_id = 0

    def subscribe(self, ws: ServerConnection, room: int, last_id: int | None) -> tuple[list[bytes], bool]:
        """Join ``room``; the frames ``ws`` missed after ``last_id`` (and whether history fell short).

        Synchronous, like broadcast(): no live message can fall between the
        backlog read here and the join."""
        self.sockets.setdefault(room, set()).add(ws)
        if last_id is None:
            return [], False
        if self.evicted.get(room, 0) > last_id:
            return [], True  # history no longer holds all of them: nothing replayed, the client resyncs
        return [frame for mid, frame in self.messages.get(room, ()) if mid > last_id], False

    def unsubscribe(self, ws: ServerConnection, room: int) -> None:
        members = self.sockets.get(room)
        if members is not None:
            members.discard(ws)
            if not members:
                del self.sockets[room]

    def post(self, room: int, body: str, client_id: str) -> tuple[dict[str, Any], bytes]:
        """Store the message in the room's history; the ack and the ``message.new`` frame."""
        self.last_id += 1
        seq = self.seq.get(room, 0) + 1
        self.seq[room] = seq
        created_at = datetime.datetime.now(datetime.timezone.utc).isoformat()
        message = {
            "id": self.last_id, "room": room, "seq": seq, "author": AUTHOR, "body": body,
            "created_at": created_at, "edited_at": None, "deleted": False, "client_id": client_id,
        }  # fmt: skip
        frame = orjson.dumps({"type": "message.new", "message": message})
        kept = self.messages.setdefault(room, deque(maxlen=self.history))
        if len(kept) == kept.maxlen:
            self.evicted[room] = kept[0][0]
        kept.append((self.last_id, frame))
        ack = {"type": "message.ack", "room": room, "client_id": client_id, "id": self.last_id, "seq": seq,
               "created_at": created_at, "duplicate": False}  # fmt: skip
        return ack, frame


def _send(ws: ServerConnection, frame: dict[str, Any] | bytes) -> None:
    # broadcast() to one socket: synchronous, so replies and fan-out keep their order.
    broadcast([ws], frame if isinstance(frame, bytes) else orjson.dumps(frame), text=True)


def _room(frame: dict[str, Any]) -> int | None:
    room = frame.get("room")
    return room if isinstance(room, int) and not isinstance(room, bool) and room >= 0 else None


async def handle(ws: ServerConnection, rooms: Rooms) -> None:
    joined: set[int] = set()
    _send(ws, {"type": "hello", "user": AUTHOR})
    try:
        async for text in ws:
            try:
                frame = orjson.loads(text)
            except orjson.JSONDecodeError:
                _send(ws, {"type": "error", "code": "bad_json", "message": "Not JSON."})
                continue
            kind = frame.get("type") if isinstance(frame, dict) else None
            room = _room(frame) if kind else None
            if kind == "ping":
                _send(ws, {"type": "pong", "ref": frame.get("ref")})
            elif kind in ("subscribe", "unsubscribe", "message.send") and room is None:
                _send(ws, {"type": "error", "code": "invalid_field", "message": "room", "ref": frame.get("ref")})
            elif kind == "subscribe":
                last_id = frame.get("last_id")
                missed, overflowed = rooms.subscribe(ws, room, last_id if isinstance(last_id, int) else None)
                joined.add(room)
                if overflowed:
                    _send(ws, {"type": "resync", "room": room, "reason": "too_many_missed", "max": rooms.history})
                for missed_frame in missed:
                    _send(ws, missed_frame)
                online = len(rooms.sockets.get(room, ()))
                _send(ws, {"type": "subscribed", "room": room, "resumed": len(missed), "seq": rooms.seq.get(room, 0), "online": [], "count": online})
            elif kind == "unsubscribe":
                rooms.unsubscribe(ws, room)
                joined.discard(room)
                _send(ws, {"type": "unsubscribed", "room": room})
            elif kind == "message.send":
                body, client_id = frame.get("body"), frame.get("client_id")
                if not isinstance(body, str) or not body or not isinstance(client_id, str) or not client_id:
                    _send(ws, {"type": "error", "code": "invalid_body", "message": "body and client_id", "ref": client_id})
                    continue
                ack, message_new = rooms.post(room, body, client_id)
                _send(ws, ack)
                broadcast(rooms.sockets.get(room, ()), message_new, text=True)
            else:
                _send(ws, {"type": "error", "code": "unknown_type", "message": "Unknown frame type.", "ref": frame.get("ref") if isinstance(frame, dict) else None})
    except ConnectionClosed:
        pass
    finally:
        for room in joined:
            rooms.unsubscribe(ws, room)


async def serve_until_stopped(host: str, port: int, *, deflate: bool = True) -> None:
    rooms = Rooms()
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    async with serve(
        lambda ws: handle(ws, rooms),
        host,
        port,
        compression="deflate" if deflate else None,
        max_size=2**20,
        backlog=4096,
    ):
        await stop


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.bare_broadcast", description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--no-deflate", dest="deflate", action="store_false", help="decline permessage-deflate")
    args = p.parse_args(argv)
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve_until_stopped(args.host, args.port, deflate=args.deflate))
    else:
        uvloop.run(serve_until_stopped(args.host, args.port, deflate=args.deflate))


if __name__ == "__main__":
    main()
