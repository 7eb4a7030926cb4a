"""One load-generator worker process: a share of the benchmark's sockets.

The coordinator (bench.ws_bench) starts a few of these so that receiving and
parsing deliveries is spread over cores, and drives them through a pipe with
small command dicts. Each command is answered with one dict:

    setup   -> connected   open and subscribe this worker's sockets
    step    -> sent        send this worker's share of one load step
    drain   -> result      wait (bounded) for this worker's expected deliveries
    idle    -> idle_result heartbeats only, for a fixed time
    close   -> closed      close every socket, then the process exits

Every message body starts with ``tag|step|worker|k|send_ns|`` so any receiver
can compute send->receive latency and de-duplicate without asking anyone.
Everything here is bounded by a count or a deadline; the worker talks only to
the servers the coordinator started on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import os
import contextlib
import random
import time
from array import array
from collections import Counter
from multiprocessing.connection import Connection
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

# A send loop that falls this far behind its schedule gives up the rest of the step.
SEND_OVERRUN_S = 5.0
ERROR_SAMPLES = 5


class Client:
    __slots__ = ("idx", "room", "url", "token", "sender", "ws", "reader", "subscribed", "seen", "closed")

    def __init__(self, spec: dict[str, Any]) -> None:
        self.idx: int = spec["idx"]
        self.room: int = spec["room"]
        self.url: str = spec["url"]
        self.token: str = spec["token"]
        self.sender: bool = spec["sender"]
        self.ws: ClientConnection | None = None
        self.reader: asyncio.Task | None = None
        self.subscribed = asyncio.Event()
        self.seen: set[int] = set()
        self.closed = False


class Recorder:
    """What this worker's sockets received during the current step."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.step = -1
        self.reset()
        self.pongs = 0
        self.disconnects = 0

    def reset(self) -> None:
        self.latencies_ms = array("d")
        self.ack_latencies_ms = array("d")
        self.unique = 0
        self.duplicates = 0
        self.stale = 0  # deliveries of an earlier step that arrived late
        self.foreign = 0  # message.new not sent by this run
        self.errors: Counter[str] = Counter()
        self.error_samples: list[dict[str, Any]] = []
        self.first_recv_ns = 0
        self.last_recv_ns = 0
        self.frames = 0
        self.batched_frames = 0

    def on_text(self, client: Client, text: str | bytes) -> None:
        now = time.time_ns()
        self.frames += 1
        data = orjson.loads(text)
        if isinstance(data, list):
            # The server may batch several events into one JSON array frame.
            self.batched_frames += 1
            events = data
        else:
            events = (data,)
        for event in events:
            kind = event.get("type") if isinstance(event, dict) else None
            if kind == "message.new":
                self._on_message(client, event, now)
            elif kind == "message.ack":
                self._on_ack(event, now)
            elif kind == "subscribed":
                client.subscribed.set()
            elif kind == "pong":
                self.pongs += 1
            elif kind == "error":
                self.errors[str(event.get("code"))] += 1
                if len(self.error_samples) < ERROR_SAMPLES:
                    self.error_samples.append(event)

    def _on_message(self, client: Client, event: dict[str, Any], now: int) -> None:
        body = (event.get("message") or {}).get("body") or ""
        parts = body.split("|", 5)
        if len(parts) < 6 or parts[0] != self.tag:
            self.foreign += 1
            return
        if int(parts[1]) != self.step:
            self.stale += 1
            return
        key = (int(parts[2]) << 40) | int(parts[3])
        if key in client.seen:
            self.duplicates += 1
            return
        client.seen.add(key)
        self.unique += 1
        self.latencies_ms.append((now - int(parts[4])) / 1e6)
        if not self.first_recv_ns:
            self.first_recv_ns = now
        self.last_recv_ns = now

    def _on_ack(self, event: dict[str, Any], now: int) -> None:
        parts = str(event.get("client_id") or "").split(".")
        if len(parts) == 5 and parts[0] == self.tag and parts[1] == str(self.step):
            self.ack_latencies_ms.append((now - int(parts[4])) / 1e6)


class Worker:
    def __init__(self, conn: Connection, worker_id: int) -> None:
        self.conn = conn
        self.worker_id = worker_id
        self.clients: list[Client] = []
        self.recorder = Recorder(tag="")

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            command = await loop.run_in_executor(None, self.conn.recv)
            kind = command["cmd"]
            if kind == "setup":
                reply = await self.setup(command)
            elif kind == "step":
                reply = await self.step(command)
            elif kind == "drain":
                reply = await self.drain(command)
            elif kind == "quiet":
                reply = await self.quiet(command)
            elif kind == "idle":
                reply = await self.idle(command)
            elif kind == "close":
                reply = await self.close(command)
            else:
                reply = {"error": f"unknown command {kind!r}"}
            self.conn.send(reply)
            if kind == "close":
                return

    # -- connect -----------------------------------------------------------

    async def setup(self, command: dict[str, Any]) -> dict[str, Any]:
        if self.recorder.tag != command["tag"]:
            self.recorder = Recorder(tag=command["tag"])
        new_clients = [Client(spec) for spec in command["clients"]]
        self.clients.extend(new_clients)  # setup may come in waves (idle mode)
        open_timeout = command["open_timeout"]
        attempts = 1 + command.get("retries", 0)
        semaphore = asyncio.Semaphore(command["concurrency"])
        failures: Counter[str] = Counter()
        samples: list[str] = []

        retries = 0

        async def open_one(client: Client) -> None:
            nonlocal retries
            for attempt in range(attempts):
                if attempt:
                    retries += 1
                    await asyncio.sleep(random.uniform(0.5, 1.5) * attempt)  # backoff with jitter, like a real client
                async with semaphore:
                    try:
                        await self.open_socket(client, open_timeout)
                        return
                    except Exception as exc:  # noqa: BLE001 - counted and reported, never fatal
                        failures[type(exc).__name__] += 1
                        if len(samples) < ERROR_SAMPLES:
                            samples.append(f"{type(exc).__name__}: {exc}"[:200])
                        ws, client.ws = client.ws, None
                        if ws is not None:
                            with contextlib.suppress(Exception):
                                await asyncio.wait_for(ws.close(), 2)

        started = time.monotonic()
        tasks = [asyncio.create_task(open_one(c)) for c in new_clients]
        done, pending = await asyncio.wait(tasks, timeout=command["phase_timeout"]) if tasks else (set(), set())
        for task in pending:
            task.cancel()
        if pending:
            failures["phase_timeout"] += len(pending)
            await asyncio.wait(pending, timeout=5)
        connected = sum(1 for c in new_clients if c.subscribed.is_set())
        return {
            "connected": connected,
            "failed": len(new_clients) - connected,
            "retries": retries,
            "failures": dict(failures),
            "samples": samples,
            "seconds": time.monotonic() - started,
        }

    async def open_socket(self, client: Client, open_timeout: float) -> None:
        client.ws = await connect(
            client.url,
            additional_headers={"Authorization": f"Bearer {client.token}"},
            open_timeout=open_timeout,
            close_timeout=2,
            ping_interval=None,  # the server pings; the client answers automatically
            # ws_bench --compression deflate: offer permessage-deflate, as browsers do.
            compression="deflate" if os.environ.get("BENCH_WS_COMPRESSION") == "deflate" else None,
            max_size=2**22,
        )
        client.reader = asyncio.create_task(self.read_loop(client, client.ws))
        await client.ws.send(orjson.dumps({"type": "subscribe", "room": client.room}).decode())
        await asyncio.wait_for(client.subscribed.wait(), open_timeout)

    async def read_loop(self, client: Client, ws: ClientConnection) -> None:
        try:
            async for text in ws:
                self.recorder.on_text(client, text)
        except ConnectionClosed:
            pass
        finally:
            # A socket the server dropped after it was subscribed (not a failed attempt, not our close).
            if client.ws is ws and not client.closed and client.subscribed.is_set():
                self.recorder.disconnects += 1
                client.closed = True

    # -- load steps --------------------------------------------------------

    async def step(self, command: dict[str, Any]) -> dict[str, Any]:
        recorder = self.recorder
        recorder.step = command["step"]
        recorder.reset()
        for client in self.clients:
            client.seen = set()
        senders = [c for c in self.clients if c.sender and c.subscribed.is_set()]
        rate, duration, size = command["rate"], command["duration"], command["size"]
        planned = int(rate * duration) if senders else 0
        per_room: Counter[int] = Counter()
        send_errors = 0
        lag_max = 0.0
        await asyncio.sleep(max(0.0, command["start_at"] - time.time()))
        t0 = time.monotonic()
        first_send_ns = time.time_ns()
        interval = 1.0 / rate if rate > 0 else 0.0
        k = 0
        tag, step, wid = recorder.tag, recorder.step, self.worker_id
        while k < planned:
            due = t0 + k * interval
            now = time.monotonic()
            if due > now:
                await asyncio.sleep(due - now)
                now = time.monotonic()
            lag_max = max(lag_max, now - due)
            if now - t0 > duration + SEND_OVERRUN_S:
                break
            # Send everything that is due now, so a late wake-up does not lower the offered rate.
            while k < planned and t0 + k * interval <= now:
                client = senders[k % len(senders)]
                send_ns = time.time_ns()
                head = f"{tag}|{step}|{wid}|{k}|{send_ns}|"
                body = head + "x" * max(1, size - len(head))
                frame = orjson.dumps(
                    {"type": "message.send", "room": client.room, "body": body, "client_id": f"{tag}.{step}.{wid}.{k}.{send_ns}"}
                ).decode()
                k += 1
                try:
                    assert client.ws is not None
                    await client.ws.send(frame)
                except ConnectionClosed:
                    send_errors += 1
                    continue
                per_room[client.room] += 1
        return {
            "planned": planned,
            "sent": sum(per_room.values()),
            "per_room": dict(per_room),
            "send_errors": send_errors,
            "lag_max_ms": lag_max * 1000,
            "send_seconds": time.monotonic() - t0,
            "first_send_ns": first_send_ns if planned else 0,
        }

    async def drain(self, command: dict[str, Any]) -> dict[str, Any]:
        totals = {int(room): n for room, n in command["per_room"].items()}
        expected = sum(totals.get(c.room, 0) for c in self.clients if c.subscribed.is_set())
        deadline = time.monotonic() + command["drain_s"]
        recorder = self.recorder
        while recorder.unique < expected and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        # Acks (ours only) may trail the last delivery a little.
        await asyncio.sleep(command.get("settle_s", 0.05))
        return {
            "expected": expected,
            "unique": recorder.unique,
            "duplicates": recorder.duplicates,
            "stale": recorder.stale,
            "foreign": recorder.foreign,
            "errors": dict(recorder.errors),
            "error_samples": recorder.error_samples,
            "latencies_ms": recorder.latencies_ms.tobytes(),
            "ack_latencies_ms": recorder.ack_latencies_ms.tobytes(),
            "first_recv_ns": recorder.first_recv_ns,
            "last_recv_ns": recorder.last_recv_ns,
            "frames": recorder.frames,
            "batched_frames": recorder.batched_frames,
            "disconnects": recorder.disconnects,
        }

    async def quiet(self, command: dict[str, Any]) -> dict[str, Any]:
        """Wait until no frame has arrived for ``quiet_s`` seconds, at most ``timeout`` seconds."""
        deadline = time.monotonic() + command["timeout"]
        frames, still_since = self.recorder.frames, time.monotonic()
        while time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            if self.recorder.frames != frames:
                frames, still_since = self.recorder.frames, time.monotonic()
            elif time.monotonic() - still_since >= command["quiet_s"]:
                return {"quiet": True}
        return {"quiet": False}

    # -- idle --------------------------------------------------------------

    async def idle(self, command: dict[str, Any]) -> dict[str, Any]:
        """Hold the sockets for ``duration`` seconds; each sends a ping every ``heartbeat`` seconds."""
        duration, heartbeat = command["duration"], command["heartbeat"]
        live = [c for c in self.clients if c.subscribed.is_set() and c.ws is not None]
        rng = random.Random(self.worker_id)
        schedule = sorted((rng.uniform(0, heartbeat), i) for i in range(len(live)))
        self.recorder.pongs = 0
        pings = 0
        t0 = time.monotonic()
        rounds = int(duration // heartbeat) + 1 if heartbeat > 0 else 0
        for r in range(rounds):
            for offset, i in schedule:
                due = t0 + r * heartbeat + offset
                if due - t0 >= duration:
                    break
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                try:
                    await live[i].ws.send(orjson.dumps({"type": "ping", "ref": pings}).decode())  # type: ignore[union-attr]
                    pings += 1
                except ConnectionClosed:
                    pass
        await asyncio.sleep(max(0.0, t0 + duration - time.monotonic()))
        deadline = time.monotonic() + 5
        while self.recorder.pongs < pings and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return {
            "pings": pings,
            "pongs": self.recorder.pongs,
            "open": sum(1 for c in live if not c.closed),
            "disconnects": self.recorder.disconnects,
        }

    # -- close -------------------------------------------------------------

    async def close(self, command: dict[str, Any]) -> dict[str, Any]:
        semaphore = asyncio.Semaphore(200)

        async def close_one(client: Client) -> None:
            client.closed = True
            if client.ws is None:
                return
            async with semaphore:
                try:
                    await asyncio.wait_for(client.ws.close(), 3)
                except Exception:  # noqa: BLE001 - the server may be gone already
                    pass

        tasks = [asyncio.create_task(close_one(c)) for c in self.clients]
        if tasks:
            await asyncio.wait(tasks, timeout=command.get("timeout", 20))
        readers = [c.reader for c in self.clients if c.reader is not None and not c.reader.done()]
        for reader in readers:
            reader.cancel()
        if readers:
            await asyncio.wait(readers, timeout=5)
        return {"closed": len(self.clients)}


def worker_main(conn: Connection, worker_id: int) -> None:
    """Process entry point (multiprocessing, spawn)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    worker = Worker(conn, worker_id)
    try:
        import uvloop
    except ImportError:
        asyncio.run(worker.serve())
    else:
        uvloop.run(worker.serve())
