"""What one action of the Locust mix costs every tier: ``make bench-actions``.

    python -m bench.actions                      # the table, and var/bench-actions.json
    python -m bench.actions --markdown           # the table as docs/PERFORMANCE.md has it
    python -m bench.actions --actions post,read --duration 3 --rate 20

Needs DATABASE_URL (PostgreSQL) and REDIS_URL. Seeds the load data set when it
is smaller than ``--seed-users/--seed-projects/--seed-rooms/--seed-messages``
(python -m bench.seed), issues bearer tokens to ``--users`` load users
(bench.make_tokens, deleted at the end), and starts, on 127.0.0.1 only:
``--processes`` server processes (chatsite.server, uvicorn, production
settings, serving ``bench.actions_asgi:application``: the project's
application plus a loopback-only counter of the statements each process sent), the
background worker, and, when ``redis-server`` is installed, a Redis of its
own (``--redis own``; ``--redis shared`` uses REDIS_URL's), so that INFO
commandstats counts this benchmark's commands and nothing else.

The load generator is this process: every user holds a WebSocket (offering
permessage-deflate, as browsers do) subscribed to one of its rooms, and
speaks HTTP with its bearer token (docs/API.md) and ``Accept-Encoding`` as a
browser sends it. Users are spread over the data set's projects and rooms.
After a quiet baseline (sockets open, nothing sent), each action runs alone:
``--warmup`` seconds not judged, then ``--duration`` seconds of Poisson
arrivals at ``--rate`` actions/s (each on a user not busy with another action,
at most ``--concurrency`` in flight), then the in-flight actions finish and
fan-out settles. Between snapshots taken before and after, per action:

* server CPU: user + system time of the server processes (from the kernel),
  net of the quiet baseline's rate; the worker's, the own Redis's and the
  PostgreSQL backends' of this database the same way;
* PostgreSQL: statements and their execution time from pg_stat_statements
  (this database only) when the server preloads it; always, the statements
  the server processes sent and their time in ``cursor.execute``;
* Redis: INFO commandstats deltas (calls per command, and Redis's own time);
* bytes to the client: HTTP responses (status line, headers and body as
  sent) and every WebSocket frame every socket received (compressed when
  deflate was negotiated: fan-out to other users included);
* latency p50/p99: the action's start to its end (every request answered,
  for a post its own ``message.new`` arrived); none for a bare ``typing``.

Every loop is bounded by a count or a deadline; everything started is stopped
on exit, also on errors and Ctrl-C.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

ROOT = Path(__file__).resolve().parent.parent
TOKEN_NAME = "bench-actions"
# Served by bench.actions_asgi in each server process.
STATS_PATH = "/__bench__/actions-stats"
PAGE_SIZE = 50  # as the locustfile pages history
ROOM_PAGE = 100  # as the locustfile asks for rooms
# What Chrome sends; the server picks brotli.
ACCEPT_ENCODING = "gzip, deflate, br, zstd"
PING_EVERY_S = 25.0  # docs/PROTOCOL.md: a client pings every ~25 s
SETTLE_S = 0.5  # after the last action: deliveries and worker jobs it caused finish
REPLY_TIMEOUT_S = 10.0
SEED_SIZES = {"users": 10_000, "projects": 20, "rooms": 500, "messages": 1_000_000}


@dataclass(frozen=True)
class Action:
    name: str
    label: str
    requests: str
    mix: str | None  # the locustfile's action name, for its weight


ACTIONS = (
    Action("unread", "unread check (room list)", "`GET /api/v1/projects/{slug}/rooms?limit=100`", "unread"),
    Action("switch", "switch room", "WS `unsubscribe` + `subscribe`, `GET /rooms/{id}/messages`", "switch"),
    Action("scroll", "scroll back (older page)", "`GET /rooms/{id}/messages?cursor=…`", "scroll"),
    Action("post", "post a message", "WS `typing`, `POST /rooms/{id}/messages`, own `message.new`", "post"),
    Action("read", "read marker", "`POST /rooms/{id}/read`", "read"),
    Action("edit", "edit own message", "`PATCH /messages/{id}`", "edit"),
    Action("reconnect", "reconnect + resume", "close, reopen, `subscribe` with `last_id`", "reconnect"),
    Action("typing", "WS typing (alone)", "WS `typing`", None),
    Action("ping", "WS ping", "WS `ping` → `pong`", None),
)
ACTION_NAMES = tuple(a.name for a in ACTIONS)


# --- Helpers ----------------------------------------------------------------------------------------------------


def log(text: str = "") -> None:
    print(text, flush=True)


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]


def mix_weights() -> dict[str, int]:
    """The locustfile's WEIGHTS, read from its source (importing it would load Locust and gevent)."""
    tree = ast.parse((ROOT / "loadtest" / "locustfile.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "WEIGHTS" for t in node.targets):
            return ast.literal_eval(node.value)
    return {}


def _cpu_seconds(procs: list[Any]) -> float:
    import psutil

    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


# --- Services: an own Redis, the servers and the worker ---------------------------------------------------------


@contextmanager
def own_redis(db: str) -> Iterator[tuple[str, Any]]:
    """A redis-server on a free 127.0.0.1 port, no persistence; (its URL with database ``db``, its process).

    The same database number as REDIS_URL's keeps the channel names (settings: chat:layer:<db>) the ones this process
    computes."""
    from bench.adr_bench import free_port

    port = free_port()
    work = Path(tempfile.mkdtemp(prefix="bench-actions-redis-"))
    cmd = ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
           "--dir", str(work), "--protected-mode", "yes"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import redis

        client = redis.Redis(host="127.0.0.1", port=port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)
        client.close()
        yield f"redis://127.0.0.1:{port}/{db}", proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(work, ignore_errors=True)


@dataclass
class Stack:
    urls: list[str]
    servers: list[subprocess.Popen]
    worker: subprocess.Popen | None


@contextmanager
def stack(*, processes: int, env: dict[str, str], logs: Path, worker: bool) -> Iterator[Stack]:
    """``processes`` servers of ``bench.actions_asgi:application`` and the worker, as bench.adr_bench starts them."""
    from bench.adr_bench import _raise_child_nofile, _wait_http, _wait_warmed, _wait_worker, free_port

    started: list[subprocess.Popen] = []
    try:
        urls, servers = [], []
        for i in range(processes):
            port = free_port()
            cmd = [sys.executable, "-m", "chatsite.server", "-b", "127.0.0.1", "-p", str(port), "-v", "0",
                   "--ping-interval", "20", "--ping-timeout", "30", "bench.actions_asgi:application"]  # fmt: skip
            with open(logs / f"server-{i}.log", "wb") as out:
                proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=out,
                                        preexec_fn=_raise_child_nofile)  # fmt: skip
            started.append(proc)
            servers.append(proc)
            urls.append(f"http://127.0.0.1:{port}")
        background = None
        if worker:
            with open(logs / "worker.log", "wb") as out:
                background = subprocess.Popen([sys.executable, "manage.py", "chat_worker"], cwd=ROOT,
                                              env={**env, "LOG_LEVEL": "INFO"}, stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
            started.append(background)
        for i, (url, proc) in enumerate(zip(urls, servers)):
            _wait_http(url, proc, 60, logs / f"server-{i}.log")
        if background is not None:
            _wait_worker(background, env, 60, logs / "worker.log")
            _wait_warmed(background, 300, logs / "worker.log")
        yield Stack(urls=urls, servers=servers, worker=background)
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.terminate()
        for proc in started:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


# --- What the tiers did: snapshots ------------------------------------------------------------------------------


class Meter:
    """Reads every counter at one instant; two readings give a window's deltas."""

    def __init__(self, *, stack_: Stack, redis_url: str, redis_proc: Any, own_redis_: bool) -> None:
        import psutil
        import redis
        from django.db import connection

        self.servers = [psutil.Process(p.pid) for p in stack_.servers]
        self.worker = [psutil.Process(stack_.worker.pid)] if stack_.worker else []
        self.redis_procs = [psutil.Process(redis_proc.pid)] if redis_proc is not None else []
        self.me = psutil.Process()
        self.urls = stack_.urls
        self.redis = redis.Redis.from_url(redis_url)
        self.own_redis = own_redis_
        self.connection = connection
        with connection.cursor() as cursor:
            cursor.execute("SELECT oid FROM pg_database WHERE datname = current_database()")
            self.dbid = cursor.fetchone()[0]
            cursor.execute("SELECT pg_backend_pid()")
            self.my_backend = cursor.fetchone()[0]
        self.pg_stat_statements, self.pg_stat_statements_reason = self._pgss_available()
        self.pg_cpu: dict[int, Any] = {}

    def _pgss_available(self) -> tuple[bool, str]:
        try:
            with self.connection.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM pg_stat_statements WHERE dbid = %s", [self.dbid])
            return True, ""
        except Exception as exc:  # noqa: BLE001 - not installed or not preloaded: say which
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return False, reason

    def _pg_backends(self) -> float:
        """CPU seconds of this database's backends (the benchmark's own excluded); each pid's first reading is its base."""
        import psutil

        with self.connection.cursor() as cursor:
            cursor.execute("SELECT pid FROM pg_stat_activity WHERE datid = %s AND pid <> %s", [self.dbid, self.my_backend])
            pids = [row[0] for row in cursor.fetchall()]
        total = 0.0
        for pid in pids:
            proc = self.pg_cpu.get(pid)
            if proc is None:
                try:
                    proc = self.pg_cpu[pid] = psutil.Process(pid)
                except psutil.Error:
                    continue
            total += _cpu_seconds([proc])
        return total

    def _statements(self) -> dict[str, tuple[int, float]]:
        if not self.pg_stat_statements:
            return {}
        with self.connection.cursor() as cursor:
            cursor.execute(
                "SELECT queryid::text, query, calls, total_exec_time FROM pg_stat_statements "
                "WHERE dbid = %s AND query NOT ILIKE %s AND query NOT ILIKE %s",
                [self.dbid, "%pg_stat_statements%", "%pg_stat_activity%"],
            )
            return {f"{qid}\x00{query}": (calls, ms) for qid, query, calls, ms in cursor.fetchall()}

    def _servers_db(self) -> dict[str, float]:
        import urllib.request

        totals = {"statements": 0.0, "db_seconds": 0.0, "cache_hits": 0.0, "cache_misses": 0.0}
        for url in self.urls:
            with urllib.request.urlopen(url + STATS_PATH, timeout=10) as resp:
                answer = orjson.loads(resp.read())
            for key in totals:
                totals[key] += answer[key]
        return totals

    def read(self, generator_bytes: int) -> dict[str, Any]:
        commandstats = self.redis.info("commandstats")
        return {
            "t": time.monotonic(),
            "server_cpu": _cpu_seconds(self.servers),
            "worker_cpu": _cpu_seconds(self.worker),
            "redis_cpu": _cpu_seconds(self.redis_procs),
            "postgres_cpu": self._pg_backends(),
            "generator_cpu": _cpu_seconds([self.me]),
            "statements": self._statements(),
            "servers": self._servers_db(),
            "redis": {k.removeprefix("cmdstat_"): (int(v["calls"]), int(v["usec"])) for k, v in commandstats.items()},
            "bytes": generator_bytes,
        }

    def close(self) -> None:
        self.redis.close()


def deltas(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """What happened between two readings."""
    statements = []
    for key, (calls, ms) in b["statements"].items():
        calls0, ms0 = a["statements"].get(key, (0, 0.0))
        if calls > calls0:
            statements.append({"query": key.split("\x00", 1)[1], "calls": calls - calls0, "ms": ms - ms0})
    statements.sort(key=lambda s: -s["ms"])
    redis = {}
    for command, (calls, usec) in b["redis"].items():
        calls0, usec0 = a["redis"].get(command, (0, 0))
        if command == "info":
            calls -= 1  # the reading's own INFO commandstats
        if calls > calls0:
            redis[command] = (calls - calls0, usec - usec0)
    return {
        "wall_s": b["t"] - a["t"],
        **{k: b[k] - a[k] for k in ("server_cpu", "worker_cpu", "redis_cpu", "postgres_cpu", "generator_cpu", "bytes")},
        "statements": statements,
        "servers": {k: b["servers"][k] - a["servers"][k] for k in b["servers"]},
        "redis": redis,
    }


# --- The load generator: users ------------------------------------------------------------------------------------


@dataclass
class User:
    index: int
    username: str
    token: str
    projects: list[dict[str, Any]]
    url: str  # its server
    room: int = 0
    project: str = ""
    ws: Any = None
    reader: asyncio.Task | None = None
    busy: bool = False
    newest_id: int = 0
    older_cursor: str | None = None
    first_cursor: str | None = None
    own: list[int] = field(default_factory=list)
    subscribed: dict[int, asyncio.Future] = field(default_factory=dict)
    hello: asyncio.Future | None = None
    pongs: dict[str, asyncio.Future] = field(default_factory=dict)
    pending: dict[str, asyncio.Future] = field(default_factory=dict)  # client_id -> its message.new
    wire_base: int = 0
    frames: int = 0
    errors: list[str] = field(default_factory=list)

    def wire_bytes(self) -> int:
        return self.wire_base + getattr(self.ws, "bytes_in", 0)


class Generator:
    def __init__(self, *, users: list[User], session: Any, deflate: bool, seed: int) -> None:
        self.users = users
        self.session = session
        self.deflate = deflate
        self.rng = random.Random(seed)
        self.http_bytes = 0
        self.deflate_negotiated = 0

    def bytes_received(self) -> int:
        return self.http_bytes + sum(u.wire_bytes() for u in self.users)

    # -- WebSocket --

    async def connect(self, user: User, *, last_id: int | None = None) -> None:
        from websockets.asyncio.client import connect

        from bench.ws_client import CountingConnection, negotiated_deflate

        loop = asyncio.get_running_loop()
        user.hello = loop.create_future()
        ws_url = user.url.replace("http://", "ws://") + "/ws/"
        user.ws = await connect(
            ws_url, additional_headers={"Authorization": f"Bearer {user.token}"}, open_timeout=REPLY_TIMEOUT_S,
            close_timeout=2, ping_interval=None, compression="deflate" if self.deflate else None, max_size=2**22,
            create_connection=CountingConnection,
        )  # fmt: skip
        self.deflate_negotiated += negotiated_deflate(user.ws)
        user.reader = asyncio.create_task(self.read_loop(user, user.ws))
        await asyncio.wait_for(user.hello, REPLY_TIMEOUT_S)
        await self.subscribe(user, user.room, last_id=last_id)

    async def close(self, user: User) -> None:
        ws, user.ws = user.ws, None
        if ws is not None:
            user.wire_base += ws.bytes_in
            with suppress(Exception):
                await asyncio.wait_for(ws.close(), 3)
        reader, user.reader = user.reader, None
        if reader is not None:
            reader.cancel()
            with suppress(BaseException):
                await reader
        user.subscribed.clear()

    async def send(self, user: User, frame: dict[str, Any]) -> None:
        await user.ws.send(orjson.dumps(frame), text=True)

    async def subscribe(self, user: User, room: int, *, last_id: int | None = None) -> None:
        answer = user.subscribed[room] = asyncio.get_running_loop().create_future()
        frame: dict[str, Any] = {"type": "subscribe", "room": room, "ref": f"s{room}"}
        if last_id:
            frame["last_id"] = last_id
        await self.send(user, frame)
        await asyncio.wait_for(answer, REPLY_TIMEOUT_S)

    async def read_loop(self, user: User, ws: Any) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            while True:
                data = await ws.recv(decode=False)
                try:
                    parsed = orjson.loads(data)
                except orjson.JSONDecodeError:
                    continue
                for event in parsed if isinstance(parsed, list) else (parsed,):
                    user.frames += 1
                    if isinstance(event, dict):
                        self.on_event(user, event)
        except ConnectionClosed:
            pass

    def on_event(self, user: User, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "message.new":
            message = event.get("message") or {}
            if message.get("room") == user.room:
                user.newest_id = max(user.newest_id, message.get("id") or 0)
            waiter = user.pending.pop(message.get("client_id") or "", None)
            if waiter is not None and not waiter.done():
                waiter.set_result(message.get("id"))
        elif kind == "subscribed":
            waiter = user.subscribed.get(event.get("room"))
            if waiter is not None and not waiter.done():
                waiter.set_result(event)
        elif kind == "hello":
            if user.hello is not None and not user.hello.done():
                user.hello.set_result(event)
        elif kind == "pong":
            waiter = user.pongs.pop(str(event.get("ref")), None)
            if waiter is not None and not waiter.done():
                waiter.set_result(True)
        elif kind == "error":
            ref = str(event.get("ref") or "")
            user.errors.append(f"{event.get('code')}: {event.get('message')}")
            if ref.startswith("s") and ref[1:].isdigit():
                waiter = user.subscribed.get(int(ref[1:]))
                if waiter is not None and not waiter.done():
                    waiter.set_exception(RuntimeError(f"{event.get('code')}: {event.get('message')}"))

    # -- HTTP --

    async def http(self, user: User, method: str, path: str, *, params: dict[str, Any] | None = None,
                   body: dict[str, Any] | None = None, ok: tuple[int, ...] = (200,)) -> Any:  # fmt: skip
        headers = {"Authorization": f"Bearer {user.token}", "Accept-Encoding": ACCEPT_ENCODING}
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = orjson.dumps(body)
        async with self.session.request(method, user.url + path, params=params, data=data, headers=headers,
                                        allow_redirects=False) as response:  # fmt: skip
            raw = await response.read()
            # The bytes as sent: status line, headers, body (still compressed: auto_decompress is off).
            self.http_bytes += 17 + sum(len(k) + len(v) + 4 for k, v in response.raw_headers) + 2 + len(raw)
            if response.status not in ok:
                raise RuntimeError(f"{method} {path.split('?')[0]}: HTTP {response.status} {raw[:120]!r}")
            encoding = response.headers.get("Content-Encoding", "")
        if not raw:
            return None
        return orjson.loads(_decode(raw, encoding))

    async def newest_page(self, user: User) -> None:
        page = await self.http(user, "GET", f"/api/v1/rooms/{user.room}/messages", params={"limit": PAGE_SIZE})
        user.older_cursor = user.first_cursor = page.get("next_cursor")
        if page["items"]:
            user.newest_id = max(user.newest_id, page["items"][-1]["id"])

    # -- the actions --

    async def act_unread(self, user: User) -> None:
        page = await self.http(user, "GET", f"/api/v1/projects/{user.project}/rooms", params={"limit": ROOM_PAGE})
        if not isinstance(page, dict) or "items" not in page:
            raise RuntimeError("room list without items")

    async def act_switch(self, user: User) -> None:
        rooms = next(p["rooms"] for p in user.projects if p["slug"] == user.project)
        choices = [r for r in rooms if r != user.room] or rooms
        await self.send(user, {"type": "unsubscribe", "room": user.room})
        user.room = self.rng.choice(choices)
        user.newest_id = 0
        await self.subscribe(user, user.room)
        await self.newest_page(user)

    async def act_scroll(self, user: User) -> None:
        if user.older_cursor is None:
            user.older_cursor = user.first_cursor
        if user.older_cursor is None:  # a room of one page: its newest page is the scroll
            await self.newest_page(user)
            return
        page = await self.http(user, "GET", f"/api/v1/rooms/{user.room}/messages",
                               params={"limit": PAGE_SIZE, "cursor": user.older_cursor})  # fmt: skip
        user.older_cursor = page.get("next_cursor")

    async def act_post(self, user: User) -> None:
        await self.send(user, {"type": "typing", "room": user.room})
        client_id = uuid.uuid4().hex
        delivered = user.pending[client_id] = asyncio.get_running_loop().create_future()
        body = {"body": f"cost of a post {self.rng.randrange(10**6)}", "client_id": client_id}
        try:
            message = await self.http(user, "POST", f"/api/v1/rooms/{user.room}/messages", body=body, ok=(201,))
            user.own.append(message["id"])
            await asyncio.wait_for(delivered, REPLY_TIMEOUT_S)
        finally:
            user.pending.pop(client_id, None)

    async def act_read(self, user: User) -> None:
        await self.http(user, "POST", f"/api/v1/rooms/{user.room}/read", body={"last_id": user.newest_id})

    async def act_edit(self, user: User) -> None:
        message_id = self.rng.choice(user.own)
        await self.http(user, "PATCH", f"/api/v1/messages/{message_id}", body={"body": f"edited {self.rng.randrange(10**6)}"})

    async def act_reconnect(self, user: User) -> None:
        await self.close(user)
        await self.connect(user, last_id=user.newest_id or None)

    async def act_typing(self, user: User) -> None:
        await self.send(user, {"type": "typing", "room": user.room})

    async def act_ping(self, user: User) -> None:
        ref = uuid.uuid4().hex[:12]
        answer = user.pongs[ref] = asyncio.get_running_loop().create_future()
        await self.send(user, {"type": "ping", "ref": ref})
        await asyncio.wait_for(answer, REPLY_TIMEOUT_S)


def _decode(raw: bytes, encoding: str) -> bytes:
    if encoding == "br":
        import brotli

        return brotli.decompress(raw)
    if encoding == "gzip":
        import gzip

        return gzip.decompress(raw)
    if encoding == "zstd":
        import zstandard

        return zstandard.ZstdDecompressor().decompress(raw)
    return raw


@dataclass
class Window:
    latencies_ms: list[float] = field(default_factory=list)
    done: int = 0
    errors: Counter = field(default_factory=Counter)
    no_free_user: int = 0
    offered: int = 0


async def open_loop(gen: Generator, action: str, *, rate: float, duration: float, concurrency: int,
                    eligible: Callable[[User], bool], seed: int) -> Window:  # fmt: skip
    """Poisson arrivals of ``action`` at ``rate``/s for ``duration`` s, each on a free eligible user."""
    window = Window()
    rng = random.Random(seed)
    act: Callable[[User], Awaitable[None]] = getattr(gen, f"act_{action}")
    in_flight = asyncio.Semaphore(concurrency)
    tasks: list[asyncio.Task] = []
    timed = action != "typing"  # a bare typing frame has no answer to wait for

    async def one(user: User, scheduled: float) -> None:
        async with in_flight:
            try:
                await asyncio.wait_for(act(user), 3 * REPLY_TIMEOUT_S)
            except Exception as exc:  # noqa: BLE001 - every failure is counted, none stops the run
                window.errors[f"{type(exc).__name__}: {str(exc)[:80]}"] += 1
            else:
                window.done += 1
                if timed:
                    window.latencies_ms.append((time.perf_counter() - scheduled) * 1000)
            finally:
                user.busy = False

    began = time.perf_counter()
    at = began
    while True:
        at += rng.expovariate(rate)
        if at - began > duration:
            break
        delay = at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        window.offered += 1
        free = [u for u in rng.sample(gen.users, min(len(gen.users), 64)) if not u.busy and eligible(u)]
        if not free:
            window.no_free_user += 1
            continue
        user = free[0]
        user.busy = True
        tasks.append(asyncio.create_task(one(user, at)))
    if tasks:
        await asyncio.wait(tasks, timeout=4 * REPLY_TIMEOUT_S)
    return window


# --- One run ------------------------------------------------------------------------------------------------------


@dataclass
class Options:
    actions: list[str] = field(default_factory=lambda: list(ACTION_NAMES))
    users: int = 200
    rate: float = 40.0
    duration: float = 5.0
    warmup: float = 2.0
    idle: float = 3.0
    concurrency: int = 32
    processes: int = 1
    worker: bool = True
    redis: str = "auto"  # own, shared, auto (own when redis-server is installed)
    deflate: bool = True
    seed_sizes: dict[str, int] = field(default_factory=lambda: dict(SEED_SIZES))
    no_seed: bool = False
    seed: int = 23
    settings_module: str = "chatsite.settings.production"
    json: str = "var/bench-actions.json"
    quiet: bool = False


def server_env(opts: Options, database_url: str, redis_url: str) -> dict[str, str]:
    from bench.adr_bench import Options as AdrOptions
    from bench.adr_bench import server_env as adr_server_env

    env = adr_server_env(AdrOptions())
    env["DATABASE_URL"] = database_url
    env["REDIS_URL"] = redis_url
    env["DJANGO_SETTINGS_MODULE"] = opts.settings_module
    return env


def eligible_for(action: str) -> Callable[[User], bool]:
    if action == "edit":
        return lambda u: bool(u.own)
    return lambda u: u.ws is not None


def run(opts: Options, *, database_url: str, redis_url: str) -> dict[str, Any]:
    """Measure every action of ``opts``; Django must be set up on ``database_url``. Returns the report."""
    from bench.adr_bench import code_version, raise_nofile
    from bench.make_tokens import load_user_tokens

    say = (lambda text="": None) if opts.quiet else log
    unknown = sorted(set(opts.actions) - set(ACTION_NAMES))
    if unknown:
        raise ValueError(f"unknown actions {unknown}; choose from {', '.join(ACTION_NAMES)}")
    raise_nofile()
    if not opts.no_seed:
        from bench.seed import seed

        say("Data set: python -m bench.seed " + " ".join(f"--{k} {v}" for k, v in opts.seed_sizes.items()) + " (nothing to do when present)")
        seed(**opts.seed_sizes, progress=not opts.quiet, write=say)
    mode = opts.redis
    if mode == "auto":
        mode = "own" if shutil.which("redis-server") else "shared"
    logs = Path(tempfile.mkdtemp(prefix="bench-actions-"))
    tokens = load_user_tokens(count=opts.users, name=TOKEN_NAME)["users"]
    if not tokens:
        raise RuntimeError("no load user can read a room: seed the data set first (python -m bench.seed ...)")
    try:
        with own_redis(urlsplit(redis_url).path.strip("/") or "0") if mode == "own" else _shared(redis_url) as (bench_redis_url, redis_proc):
            env = server_env(opts, database_url, bench_redis_url)
            with stack(processes=opts.processes, env=env, logs=logs, worker=opts.worker) as stack_:
                report = asyncio.run(_measure(opts, stack_, tokens, bench_redis_url, redis_proc, mode, say))
    finally:
        from chat.models import ApiToken

        ApiToken.objects.filter(name=TOKEN_NAME).delete()
    report.update(
        command="",
        date=date.today().isoformat(),
        code=code_version(),
        machine=_machine(),
        database=database_url.rsplit("/", 1)[-1],
        settings=opts.settings_module,
        logs=str(logs),
    )
    return report


@contextmanager
def _shared(redis_url: str) -> Iterator[tuple[str, None]]:
    yield redis_url, None


def _machine() -> dict[str, Any]:
    import platform

    cpu = platform.processor() or "?"
    with suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"cpu_model": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}  # fmt: skip


async def _measure(opts: Options, stack_: Stack, tokens: list[dict[str, Any]], redis_url: str, redis_proc: Any,
                   redis_mode: str, say: Callable[[str], None]) -> dict[str, Any]:  # fmt: skip
    import aiohttp
    from asgiref.sync import sync_to_async

    rng = random.Random(opts.seed)
    users = []
    for i, entry in enumerate(tokens):
        project = rng.choice(entry["projects"])
        users.append(User(index=i, username=entry["username"], token=entry["token"], projects=entry["projects"],
                          url=stack_.urls[i % len(stack_.urls)], room=rng.choice(project["rooms"]), project=project["slug"]))  # fmt: skip
    connector = aiohttp.TCPConnector(limit=opts.concurrency * 2)
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar(),
                                     timeout=aiohttp.ClientTimeout(total=30)) as session:  # fmt: skip
        gen = Generator(users=users, session=session, deflate=opts.deflate, seed=opts.seed)
        say(f"Opening {len(users)} sockets (permessage-deflate {'offered' if opts.deflate else 'not offered'}), "
            f"{len({u.room for u in users})} rooms in {len({u.project for u in users})} projects...")  # fmt: skip
        sem = asyncio.Semaphore(20)

        async def start(user: User) -> None:
            async with sem:
                await gen.connect(user)
                await gen.newest_page(user)

        started = await asyncio.gather(*(start(u) for u in users), return_exceptions=True)
        failed = [r for r in started if isinstance(r, BaseException)]
        if failed:
            raise RuntimeError(f"{len(failed)} of {len(users)} users could not connect: {failed[0]!r}")
        negotiated = gen.deflate_negotiated  # reconnects negotiate again: count the users' first sockets
        meter = await sync_to_async(Meter, thread_sensitive=True)(stack_=stack_, redis_url=redis_url, redis_proc=redis_proc,
                                                                  own_redis_=redis_mode == "own")  # fmt: skip
        read = sync_to_async(meter.read, thread_sensitive=True)
        try:
            say(f"Quiet baseline: {opts.idle:g} s, sockets open, nothing sent")
            before = await read(gen.bytes_received())
            await asyncio.sleep(opts.idle)
            idle = deltas(before, await read(gen.bytes_received()))
            rows = []
            say(HEADER)
            for index, name in enumerate(a for a in ACTION_NAMES if a in opts.actions):
                eligible = eligible_for(name)
                if name == "edit" and not any(u.own for u in users):
                    for user in users[: max(1, len(users) // 4)]:  # messages to edit, as earlier posts leave them
                        await gen.act_post(user)
                if opts.warmup > 0:
                    await open_loop(gen, name, rate=opts.rate, duration=opts.warmup, concurrency=opts.concurrency,
                                    eligible=eligible, seed=opts.seed + 100 + index)  # fmt: skip
                    await asyncio.sleep(SETTLE_S)
                before = await read(gen.bytes_received())
                window = await open_loop(gen, name, rate=opts.rate, duration=opts.duration, concurrency=opts.concurrency,
                                         eligible=eligible, seed=opts.seed + index)  # fmt: skip
                await asyncio.sleep(SETTLE_S)
                row = action_row(name, window, deltas(before, await read(gen.bytes_received())), idle, rate=opts.rate,
                                 pgss=meter.pg_stat_statements)  # fmt: skip
                rows.append(row)
                say(format_row(row))
        finally:
            await sync_to_async(meter.close, thread_sensitive=True)()
            await asyncio.gather(*(gen.close(u) for u in users), return_exceptions=True)
    return {
        "users": len(users),
        "rooms": len({u.room for u in users}),
        "projects": len({p["slug"] for u in users for p in u.projects}),
        "server_processes": opts.processes,
        "worker": opts.worker,
        "redis": redis_mode,
        "redis_url": redis_url,
        "deflate_offered": opts.deflate,
        "deflate_negotiated": negotiated,
        "pg_stat_statements": meter.pg_stat_statements,
        "pg_stat_statements_reason": meter.pg_stat_statements_reason,
        "rate": opts.rate,
        "duration_s": opts.duration,
        "warmup_s": opts.warmup,
        "idle": idle_summary(idle),
        "actions": rows,
        "mix": mix_row(rows),
    }


# --- Numbers per action -------------------------------------------------------------------------------------------


def _ms(seconds: float, n: int) -> float | None:
    return round(1000 * seconds / n, 3) if n else None


def idle_summary(idle: dict[str, Any]) -> dict[str, Any]:
    wall = idle["wall_s"] or 1.0
    return {
        "seconds": round(idle["wall_s"], 2),
        "server_cpu_pct": round(100 * idle["server_cpu"] / wall, 2),
        "worker_cpu_pct": round(100 * idle["worker_cpu"] / wall, 2),
        "redis_cpu_pct": round(100 * idle["redis_cpu"] / wall, 2),
        "postgres_cpu_pct": round(100 * idle["postgres_cpu"] / wall, 2),
        "generator_cpu_pct": round(100 * idle["generator_cpu"] / wall, 2),
        "redis_commands_per_s": round(sum(c for c, _ in idle["redis"].values()) / wall, 1),
        "statements_per_s": round(idle["servers"]["statements"] / wall, 1),
    }


def action_row(name: str, window: Window, d: dict[str, Any], idle: dict[str, Any], *, rate: float, pgss: bool) -> dict[str, Any]:
    """Per-action figures: the window's deltas, CPU net of the quiet baseline's rate, divided by the actions done."""
    action = next(a for a in ACTIONS if a.name == name)
    n = window.done
    idle_wall = idle["wall_s"] or 1.0

    def net(key: str) -> float:
        return max(0.0, d[key] - idle[key] / idle_wall * d["wall_s"])

    redis_calls = {cmd: round(calls / n, 3) for cmd, (calls, _) in sorted(d["redis"].items(), key=lambda kv: -kv[1][0])} if n else {}
    pg_calls = sum(s["calls"] for s in d["statements"])
    pg_ms = sum(s["ms"] for s in d["statements"])
    return {
        "action": name,
        "label": action.label,
        "requests": action.requests,
        "offered": window.offered,
        "done": n,
        "errors": dict(window.errors),
        "no_free_user": window.no_free_user,
        "rate": rate,
        "wall_s": round(d["wall_s"], 2),
        "latency_ms": {"p50": _round(percentile(window.latencies_ms, 50)), "p99": _round(percentile(window.latencies_ms, 99))},
        "server_cpu_ms": _ms(net("server_cpu"), n),
        "server_cpu_ms_gross": _ms(d["server_cpu"], n),
        "worker_cpu_ms": _ms(net("worker_cpu"), n),
        "redis_cpu_ms": _ms(net("redis_cpu"), n),
        "postgres_cpu_ms": _ms(net("postgres_cpu"), n),
        "generator_cpu_ms": _ms(d["generator_cpu"], n),
        "pg_statements": round(pg_calls / n, 2) if n and pgss else None,
        "pg_time_ms": round(pg_ms / n, 3) if n and pgss else None,
        "pg_top": [{"query": s["query"][:200], "calls": round(s["calls"] / n, 2), "ms": round(s["ms"] / n, 3)}
                   for s in d["statements"][:5]] if n else [],  # fmt: skip
        "statements_sent": round(d["servers"]["statements"] / n, 2) if n else None,
        "statements_sent_ms": _ms(d["servers"]["db_seconds"], n),
        "cache_lookups": round((d["servers"]["cache_hits"] + d["servers"]["cache_misses"]) / n, 2) if n else None,
        "cache_misses": round(d["servers"]["cache_misses"] / n, 2) if n else None,
        "redis_commands": round(sum(c for c, _ in d["redis"].values()) / n, 2) if n else None,
        "redis_by_command": redis_calls,
        "redis_usec": round(sum(u for _, u in d["redis"].values()) / n, 1) if n else None,
        "bytes_to_client": round(d["bytes"] / n) if n else None,
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def mix_row(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The mix's cost per 100 actions (pings as often as a client sends them at 20 s think time), and per user."""
    weights = {**mix_weights()}
    by_name = {r["action"]: r for r in rows}
    if not weights or not all(name in by_name for name in weights):
        return None
    # A user pings every 25 s and acts every 20 s: 80 pings per 100 actions.
    weights = {**weights, "ping": 80} if "ping" in by_name else weights
    total = sum(w for k, w in weights.items() if k != "ping")
    keys = ("server_cpu_ms", "worker_cpu_ms", "redis_cpu_ms", "postgres_cpu_ms", "generator_cpu_ms", "pg_statements",
            "statements_sent", "redis_commands", "bytes_to_client")  # fmt: skip
    per_action = {}
    for key in keys:
        values = [(w, by_name[name][key]) for name, w in weights.items()]
        per_action[key] = None if any(v is None for _, v in values) else round(sum(w * v for w, v in values) / total, 3)
    tiers = [per_action[k] for k in ("server_cpu_ms", "worker_cpu_ms", "redis_cpu_ms", "postgres_cpu_ms")]
    stack_ms = round(sum(t for t in tiers if t is not None), 3)
    return {
        "weights": weights,
        "per_action": per_action,
        "stack_cpu_ms_per_action": stack_ms,
        # One action every 20 s per user (the locustfile's default think time): % of one core per user.
        "stack_cpu_pct_per_user_at_20s": round(stack_ms / 20_000 * 100, 4),
    }


# --- Output -------------------------------------------------------------------------------------------------------

# CPU columns: ms per action of the servers, the worker, PostgreSQL's backends, Redis, the load generator.
HEADER = (f"{'action':<10} {'done':>5} {'err':>4} {'p50 ms':>7} {'p99 ms':>7} {'srv ms':>7} {'wrk ms':>7} {'pg ms':>6} "
          f"{'redis ms':>8} {'stmts':>6} {'stmt ms':>7} {'redis':>6} {'bytes':>7} {'gen ms':>7}")  # fmt: skip


def _fmt(value: Any, spec: str = "") -> str:
    return "–" if value is None else format(value, spec)


def format_row(r: dict[str, Any]) -> str:
    stmts = r["pg_statements"] if r["pg_statements"] is not None else r["statements_sent"]
    return (
        f"{r['action']:<10} {r['done']:>5} {sum(r['errors'].values()):>4} {_fmt(r['latency_ms']['p50'], '.1f'):>7} "
        f"{_fmt(r['latency_ms']['p99'], '.1f'):>7} {_fmt(r['server_cpu_ms'], '.2f'):>7} {_fmt(r['worker_cpu_ms'], '.2f'):>7} "
        f"{_fmt(r['postgres_cpu_ms'], '.2f'):>6} {_fmt(r['redis_cpu_ms'], '.2f'):>8} {_fmt(stmts, '.1f'):>6} "
        f"{_fmt(r['pg_time_ms'] if r['pg_statements'] is not None else r['statements_sent_ms'], '.2f'):>7} "
        f"{_fmt(r['redis_commands'], '.1f'):>6} {_fmt(r['bytes_to_client'], ','):>7} {_fmt(r['generator_cpu_ms'], '.2f'):>7}"
    )


def _top_redis(r: dict[str, Any], k: int = 3) -> str:
    return ", ".join(f"{cmd} {calls:g}" for cmd, calls in list(r["redis_by_command"].items())[:k])


def markdown(report: dict[str, Any]) -> str:
    """The table in docs/PERFORMANCE.md's form: what, command, the run's header line, the table."""
    code = report.get("code") or {}
    commit = (code.get("commit") or "?")[:7]
    if code.get("modified_files"):
        commit += f" ({code['modified_files']} tracked files modified)"
    m = report["machine"]
    pgss = report["pg_stat_statements"]
    source = "pg_stat_statements, this database" if pgss else "sent by the server processes (pg_stat_statements off)"
    lines = [
        "**Command.**",
        "",
        "```sh",
        report.get("command") or "make bench-actions",
        "```",
        "",
        f"**Latest.** {report['date']}, {m['cpu_model']} ({m['cores']} cores), commit {commit}, load average "
        f"{', '.join(str(x) for x in m['load_average_at_start'])} at the start; {report['users']} users in "
        f"{report['rooms']} rooms of {report['projects']} projects, {report['server_processes']} server process(es)"
        f"{' and the worker' if report['worker'] else ''}, Redis {'of its own' if report['redis'] == 'own' else 'shared'}, permessage-deflate negotiated by "
        f"{report['deflate_negotiated']} of {report['users']} sockets; each action alone at {report['rate']:g}/s for {report['duration_s']:g} s "
        f"after {report['warmup_s']:g} s of warm-up. Per action, CPU in ms net of the quiet baseline; statements: {source}.",
        "",
        "| action | requests | p50 / p99 ms | server CPU ms | PostgreSQL statements (ms) | PostgreSQL CPU ms "
        "| Redis commands (top) | Redis CPU ms | bytes to client | load generator CPU ms |",
        "|---|---|---|---:|---|---:|---|---:|---:|---:|",
    ]
    for r in report["actions"]:
        stmts, stmt_ms = (r["pg_statements"], r["pg_time_ms"]) if pgss else (r["statements_sent"], r["statements_sent_ms"])
        lat = r["latency_ms"]
        latency = "–" if lat["p50"] is None else f"{lat['p50']:.1f} / {lat['p99']:.1f}"
        lines.append(
            f"| {r['label']} | {r['requests']} | {latency} | {_fmt(r['server_cpu_ms'], '.2f')} | {_fmt(stmts, '.1f')} "
            f"({_fmt(stmt_ms, '.2f')}) | {_fmt(r['postgres_cpu_ms'], '.2f')} | {_fmt(r['redis_commands'], '.1f')} "
            f"({_top_redis(r)}) | {_fmt(r['redis_cpu_ms'], '.2f')} | {_fmt(r['bytes_to_client'], ',')} "
            f"| {_fmt(r['generator_cpu_ms'], '.2f')} |"
        )
    mix = report.get("mix")
    if mix:
        p = mix["per_action"]
        stmts = p["pg_statements"] if pgss else p["statements_sent"]
        lines.append(
            f"| **the mix, per action** (Locust weights, 80 pings per 100 actions) | | | {_fmt(p['server_cpu_ms'], '.2f')} "
            f"| {_fmt(stmts, '.1f')} | {_fmt(p['postgres_cpu_ms'], '.2f')} | {_fmt(p['redis_commands'], '.1f')} "
            f"| {_fmt(p['redis_cpu_ms'], '.2f')} | {_fmt(p['bytes_to_client'], ',.0f')} | {_fmt(p['generator_cpu_ms'], '.2f')} |"
        )
        lines += ["", f"Server, worker, PostgreSQL and Redis together: {mix['stack_cpu_ms_per_action']:.2f} ms of CPU per "
                      f"action of the mix, {mix['stack_cpu_pct_per_user_at_20s']:.4f} % of a core per user at 20 s think time."]  # fmt: skip
    return "\n".join(lines)


def print_summary(report: dict[str, Any]) -> None:
    idle = report["idle"]
    log(f"quiet baseline: server {idle['server_cpu_pct']} %, worker {idle['worker_cpu_pct']} %, Redis {idle['redis_cpu_pct']} %, "
        f"PostgreSQL {idle['postgres_cpu_pct']} % of a core; {idle['redis_commands_per_s']} Redis commands/s, "
        f"{idle['statements_per_s']} statements/s")  # fmt: skip
    if not report["pg_stat_statements"]:
        log(f"pg_stat_statements unavailable ({report['pg_stat_statements_reason']}): statements are those the servers sent")
    mix = report.get("mix")
    if mix:
        log(f"the mix: {mix['stack_cpu_ms_per_action']:.2f} ms of CPU per action over every tier, "
            f"{mix['stack_cpu_pct_per_user_at_20s']:.4f} % of a core per user at 20 s think time")  # fmt: skip
    for r in report["actions"]:
        if r["errors"]:
            log(f"{r['action']}: errors {r['errors']}")


def parse_args(argv: list[str] | None = None) -> tuple[Options, argparse.Namespace]:
    p = argparse.ArgumentParser(prog="python -m bench.actions", description=__doc__.split("\n\n")[0])
    p.add_argument("--actions", default=",".join(ACTION_NAMES), help=f"comma-separated, of {', '.join(ACTION_NAMES)}")
    p.add_argument("--users", type=int, default=Options.users, help="load users, each with a socket and a token")
    p.add_argument("--rate", type=float, default=Options.rate, help="actions/s, Poisson arrivals")
    p.add_argument("--duration", type=float, default=Options.duration, help="measured seconds per action")
    p.add_argument("--warmup", type=float, default=Options.warmup, help="seconds per action before the measurement")
    p.add_argument("--idle", type=float, default=Options.idle, help="seconds of the quiet baseline")
    p.add_argument("--concurrency", type=int, default=Options.concurrency, help="actions in flight at most")
    p.add_argument("--processes", type=int, default=Options.processes, help="server processes")
    p.add_argument("--no-worker", action="store_true", help="do not start the background worker")
    p.add_argument("--redis", choices=("auto", "own", "shared"), default="auto",
                   help="own: a redis-server of its own (exact commandstats); shared: REDIS_URL's; auto: own when installed")
    p.add_argument("--no-deflate", action="store_true", help="sockets offer no permessage-deflate")
    for name, value in SEED_SIZES.items():
        p.add_argument(f"--seed-{name}", type=int, default=value, help=f"data set size (python -m bench.seed --{name})")
    p.add_argument("--no-seed", action="store_true", help="measure the data set as it is")
    p.add_argument("--settings", default=Options.settings_module, help="the server processes' settings module")
    p.add_argument("--seed", type=int, default=Options.seed)
    p.add_argument("--json", default=Options.json)
    p.add_argument("--markdown", action="store_true", help="also print the table as docs/PERFORMANCE.md has it")
    args = p.parse_args(argv)
    if args.users < 1 or args.rate <= 0 or args.duration <= 0 or args.concurrency < 1 or args.processes < 1:
        p.error("--users, --rate, --duration, --concurrency and --processes must be positive")
    opts = Options(
        actions=[a.strip() for a in args.actions.split(",") if a.strip()], users=args.users, rate=args.rate,
        duration=args.duration, warmup=max(0.0, args.warmup), idle=max(0.5, args.idle), concurrency=args.concurrency,
        processes=args.processes, worker=not args.no_worker, redis=args.redis, deflate=not args.no_deflate,
        seed_sizes={name: getattr(args, f"seed_{name}") for name in SEED_SIZES}, no_seed=args.no_seed,
        seed=args.seed, settings_module=args.settings, json=args.json,
    )  # fmt: skip
    unknown = sorted(set(opts.actions) - set(ACTION_NAMES))
    if unknown:
        p.error(f"unknown actions {', '.join(unknown)}; choose from {', '.join(ACTION_NAMES)}")
    return opts, args


def main(argv: list[str] | None = None) -> int:
    from bench import service_urls, setup_django

    opts, args = parse_args(argv)
    urls = service_urls()
    if urls is None:
        return 2
    database_url, redis_url = urls
    setup_django("chatsite.settings.test")
    report = run(opts, database_url=database_url, redis_url=redis_url)
    report["command"] = " ".join(["python -m bench.actions", *(argv if argv is not None else sys.argv[1:])])
    print_summary(report)
    out = ROOT / opts.json if not Path(opts.json).is_absolute() else Path(opts.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    log(f"wrote {out}")
    if args.markdown:
        log()
        log(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
