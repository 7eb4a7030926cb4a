"""The application's CPU per acknowledged message and per reconnect, in one process.

    python -m bench.ws_app_cost acks --messages 5000 --in-flight 8
    python -m bench.ws_app_cost storm --rounds 4 --in-flight 50

Runs ``chatsite.asgi:application`` under Channels' ``WebsocketCommunicator``
(no uvicorn, no ``websockets`` protocol, no sockets) against the real
PostgreSQL and Redis, and prints the process's CPU (user + system, every
thread) per unit of work. The server's own layers above the application are
left out, and so is most of the machine's other load: two commits of the
application compare more steadily here than in ``bench.ws_bench`` (see
bench/README.md). It uses ``bench.ws_bench``'s fixtures (rooms ``bench-*``,
users ``ws-bench-*``): run that once on the same database first.

``acks``: 100 rooms of 2 subscribed sockets; ``--in-flight`` senders each send
``message.send`` and wait for its ack, until ``--messages`` are acknowledged
and every ``message.new`` has arrived. ``storm``: 500 users, each socket
connects with its token, subscribes with ``last_id`` (its room's newest
message, as a reconnecting client would) and closes, ``--in-flight`` at once,
``--rounds`` times over after one warm-up round.

``--without-cache-writes`` skips the cache writes that follow a group's
commit (entries, stamps, unread tails): a measuring aid that says what they
cost, never a configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import time
import uuid
from typing import Any

from bench import service_urls, setup_django

# As the benchmark's servers run (no query log), with limits no run reaches.
SERVER_ENV = {
    "DEBUG": "0",
    "RATE_LIMIT_MESSAGES": "1000000/60",
    "RATE_LIMIT_SUBSCRIBES": "1000000/60",
    "RATE_LIMIT_TOKENS": "1000000/300",
    "WS_SUBSCRIBE_RATE": "1000000/60",
}


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def fixtures(users: int, rooms: int) -> tuple[list[int], list[str], dict[int, int]]:
    """Room ids, a fresh token per user, and each room's newest message id."""
    from django.contrib.auth import get_user_model
    from django.db.models import Max

    from chat.models import Message, Room
    from chat.services.accounts import token_create

    room_ids = list(Room.objects.filter(slug__startswith="bench-").order_by("id").values_list("id", flat=True)[:rooms])
    people = list(get_user_model().objects.filter(username__startswith="ws-bench-").order_by("id")[:users])
    if len(room_ids) < rooms or len(people) < users:
        raise SystemExit("Too few bench rooms or users: run python -m bench.ws_bench once on this database first.")
    tokens = [token_create(user=user, name="ws-app-cost")[1] for user in people]
    newest = Message.objects.filter(room_id__in=room_ids).values("room_id").annotate(m=Max("id")).values_list("room_id", "m")
    return room_ids, tokens, dict(newest)


class Socket:
    """One communicator and the events it received, a batched frame split into its events."""

    def __init__(self, application: Any, token: str) -> None:
        from channels.testing import WebsocketCommunicator

        self.communicator = WebsocketCommunicator(application, "/ws/", headers=[(b"authorization", f"Bearer {token}".encode())])
        self.events: asyncio.Queue = asyncio.Queue()
        self.reader: asyncio.Task | None = None

    async def open(self) -> None:
        connected, _ = await self.communicator.connect(timeout=30)
        if not connected:
            raise RuntimeError("the socket was refused")
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        import orjson

        while True:
            message = await self.communicator.output_queue.get()
            if message["type"] != "websocket.send":
                return
            frame = orjson.loads(message["text"])
            for event in frame if isinstance(frame, list) else [frame]:
                self.events.put_nowait(event)

    async def until(self, kind: str) -> dict[str, Any]:
        while True:
            event = await asyncio.wait_for(self.events.get(), 30)
            if event.get("type") == kind:
                return event

    async def send(self, frame: dict[str, Any]) -> None:
        import orjson

        await self.communicator.send_to(text_data=orjson.dumps(frame).decode())

    async def close(self) -> None:
        await self.communicator.disconnect(timeout=30)
        if self.reader is not None:
            self.reader.cancel()


async def acks(application: Any, messages: int, in_flight: int) -> str:
    from chat.asyncdb import db_async

    per_room = 2
    room_ids, tokens, _ = await db_async(fixtures)(100 * per_room, 100)
    sockets = [Socket(application, token) for token in tokens]
    for i, sock in enumerate(sockets):
        await sock.open()
        await sock.send({"type": "subscribe", "room": room_ids[i // per_room]})
        await sock.until("subscribed")
    owed, delivered, all_in = messages * per_room, 0, asyncio.Event()
    acked: list[asyncio.Queue] = [asyncio.Queue() for _ in sockets]

    async def sort(i: int) -> None:
        nonlocal delivered
        while True:
            event = await sockets[i].events.get()
            if event.get("type") == "message.new":
                delivered += 1
                if delivered == owed:
                    all_in.set()
            elif event.get("type") == "message.ack":
                acked[i].put_nowait(event)

    sorters = [asyncio.ensure_future(sort(i)) for i in range(len(sockets))]
    numbers = iter(range(messages))

    async def sender(k: int) -> None:
        for n in numbers:
            i = (n * 7 + k) % len(sockets)
            await sockets[i].send(
                {"type": "message.send", "room": room_ids[i // per_room], "body": "x" * 100, "client_id": uuid.uuid4().hex}
            )
            await asyncio.wait_for(acked[i].get(), 30)

    cpu, wall = cpu_seconds(), time.perf_counter()
    await asyncio.gather(*(sender(k) for k in range(in_flight)))
    await asyncio.wait_for(all_in.wait(), 60)
    cpu, wall = cpu_seconds() - cpu, time.perf_counter() - wall
    for task in sorters:
        task.cancel()
    for sock in sockets:
        await sock.close()
    return (
        f"acks: {messages} messages acknowledged, {delivered} deliveries, {in_flight} in flight: "
        f"{cpu / messages * 1e6:.0f} us CPU per message ({messages / wall:.0f} msg/s)"
    )


async def storm(application: Any, rounds: int, in_flight: int) -> str:
    from chat.asyncdb import db_async

    per_room = 10
    room_ids, tokens, newest = await db_async(fixtures)(50 * per_room, 50)
    gate = asyncio.Semaphore(in_flight)

    async def reconnect(i: int) -> None:
        async with gate:
            sock = Socket(application, tokens[i])
            await sock.open()
            await sock.until("hello")
            room = room_ids[i // per_room]
            await sock.send({"type": "subscribe", "room": room, "last_id": newest.get(room, 1)})
            await sock.until("subscribed")
            await sock.close()

    await asyncio.gather(*(reconnect(i) for i in range(len(tokens))))  # warm-up round
    cpu, wall = cpu_seconds(), time.perf_counter()
    for _ in range(rounds):
        await asyncio.gather(*(reconnect(i) for i in range(len(tokens))))
    cpu, wall = cpu_seconds() - cpu, time.perf_counter() - wall
    n = rounds * len(tokens)
    return (
        f"storm: {n} sockets connected, subscribed with last_id and closed, {in_flight} at once: "
        f"{cpu / n * 1e6:.0f} us CPU per socket ({n / wall:.0f} sockets/s)"
    )


async def run(args: argparse.Namespace) -> str:
    from chatsite.asgi import application
    from perf.redis import aclose_loop_resources

    try:
        if args.mode == "acks":
            return await acks(application, args.messages, args.in_flight)
        return await storm(application, args.rounds, args.in_flight)
    finally:
        await aclose_loop_resources()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=("acks", "storm"))
    parser.add_argument("--messages", type=int, default=5000, help="acks: messages to have acknowledged")
    parser.add_argument("--rounds", type=int, default=4, help="storm: reconnects of every socket, after a warm-up round")
    parser.add_argument("--in-flight", type=int, default=None, help="sends (acks: 8) or reconnects (storm: 50) at once")
    parser.add_argument("--without-cache-writes", action="store_true", help="skip the after-commit cache writes (what they cost)")
    args = parser.parse_args(argv)
    args.in_flight = args.in_flight or (8 if args.mode == "acks" else 50)
    if service_urls() is None:
        return 2
    for name, value in SERVER_ENV.items():
        os.environ.setdefault(name, value)
    setup_django("chatsite.settings.test")
    if args.without_cache_writes:
        from perf import cache

        # The names chat.services.messages calls after a group's commit.
        cache.get_many_counted = lambda families: {}
        cache.store_many = lambda entries, **kwargs: None
        cache.invalidate = lambda *keys: None
    print(asyncio.run(run(args)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
