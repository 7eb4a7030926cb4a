"""HTTP benchmark: the room history API and the room page, with and without compression.

Starts one server process (chatsite.server: uvicorn) on 127.0.0.1 (or uses --server-url, which must be a
127.0.0.1 address) against a seeded database, signs in a sample of users who
can read a sample of rooms (a bearer token each for the API, a session each
for the page), and then, scenario by scenario:

- closed loop: ``--concurrency`` clients, each sending its next request as
  soon as the last one answers, for ``--requests`` requests or ``--duration``
  seconds, whichever comes first. This measures throughput; latency here is
  mostly queueing (Little's law: latency ~ clients / throughput);
- open loop (with ``--rate``, ``--page-rate`` for the page): requests at a fixed rate, Poisson arrivals, at
  most ``--concurrency`` in flight, latency counted from the scheduled start.
  This measures latency at a load the server can carry.

Scenarios: the newest history page and an older page (a ``before`` cursor at
a random position of the room) with ``Accept-Encoding: br`` and with
``identity``; the room page (session and CSRF cookies) both ways, and its
repeat visit with ``If-None-Match`` (a 304 when nothing changed). Response bytes are
the bytes on the wire (the client does not decompress). Prints a table and
writes JSON; the tokens and sessions it made are deleted at the end.

Then the room list of a user in 500 rooms (``rooms500_br``): a project of
``--wide-rooms`` public rooms (made once and reused: a few messages in each,
``--wide-users`` members with read markers in most rooms), and its members
asking for ``GET /api/v1/projects/{slug}/rooms`` (the first page: 100 rooms
with unread counts) open loop at ``--wide-rate`` requests/s, on a server of
one process of its own (so its CPU is that request's), while one message a
second (``--wide-post-rate``) lands in a random room of the project, as a
busy project has. ``rooms500_all_br`` walks every page (``next_cursor``) at
the same rate of requests: what the whole list costs. Both report p50/p95/p99,
server CPU per request and the load generator's own CPU.

    python bench/bench_http.py --database-url postgres://postgres@127.0.0.1:5432/chat_bench \\
        --redis-url redis://127.0.0.1:6379/13 --requests 1500 --duration 40 --rate 25 --page-rate 10

The server's Redis database (``--redis-url``) is used as it is, never flushed.

Load the data set first: ``python -m bench.seed --users 10000 --projects 20
--rooms 500 --messages 1000000`` with the same DATABASE_URL.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import random
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TOKEN_NAME = "bench-http"
PAGE_PATH = "/p/{project}/r/{room}/"
HISTORY_PATH = "/api/v1/rooms/{room_id}/messages"


# --- Data: who reads what -------------------------------------------------


@dataclass
class Reader:
    user_id: int
    room_id: int
    project_slug: str
    room_slug: str
    older_cursors: list[str]
    token: str = ""
    session_key: str = ""
    csrf_cookie: str = ""
    etags: dict[str, str] = field(default_factory=dict)


def setup_django(database_url: str, redis_url: str, settings_module: str) -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = settings_module
    os.environ["DATABASE_URL"] = database_url
    os.environ["REDIS_URL"] = redis_url
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def pick_readers(*, rooms: int, cursors_per_room: int, seed: int) -> list[Reader]:
    """A random sample of rooms with messages, each with a user who may read it.

    Public rooms: a member of the project; private rooms: a member of the room.
    """
    from django.db import connection

    from chatsite.api_schemas import page_cursor_encode

    rng = random.Random(seed)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT r.id, r.slug, p.slug, r.is_private FROM chat_room r JOIN projects_project p ON p.id = r.project_id "
            "WHERE r.last_message_seq > 0 AND p.slug <> %s ORDER BY r.id",
            [WIDE_PROJECT],
        )
        candidates = cursor.fetchall()
        sample = rng.sample(candidates, min(rooms, len(candidates)))
        readers = []
        for room_id, room_slug, project_slug, is_private in sample:
            if is_private:
                cursor.execute("SELECT user_id FROM chat_roommember WHERE room_id = %s", [room_id])
            else:
                cursor.execute(
                    "SELECT m.user_id FROM projects_membership m JOIN chat_room r ON r.project_id = m.project_id "
                    "WHERE r.id = %s",
                    [room_id],
                )
            users = [row[0] for row in cursor.fetchall()]
            if not users:
                continue
            cursor.execute("SELECT min(id), max(id) FROM chat_message WHERE room_id = %s", [room_id])
            low, high = cursor.fetchone()
            cursors = [page_cursor_encode({"b": rng.randint(low + 1, high)}) for _ in range(cursors_per_room)]
            readers.append(Reader(rng.choice(users), room_id, project_slug, room_slug, cursors))
    return readers


def sign_in(readers: list[Reader]) -> None:
    """A bearer token and a logged-in session per reader (through the services, as a client would get them)."""
    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
    from django.contrib.sessions.backends.cached_db import SessionStore

    from chat.services import accounts as account_services

    users = get_user_model().objects.in_bulk([r.user_id for r in readers])
    for reader in readers:
        user = users[reader.user_id]
        reader.token = account_services.token_create(user=user, name=TOKEN_NAME)[1]
        session = SessionStore()
        session[SESSION_KEY] = str(user.pk)
        session[BACKEND_SESSION_KEY] = settings.AUTHENTICATION_BACKENDS[0]
        session[HASH_SESSION_KEY] = user.get_session_auth_hash()
        session.create()
        reader.session_key = session.session_key


def sign_out(readers: list[Reader]) -> None:
    from django.contrib.sessions.backends.cached_db import SessionStore

    from chat.models import ApiToken

    ApiToken.objects.filter(name=TOKEN_NAME).delete()
    for reader in readers:
        if reader.session_key:
            SessionStore(session_key=reader.session_key).delete()


# --- A user in many rooms ---------------------------------------------------

WIDE_PROJECT = "bench-rooms500"
WIDE_USER_PREFIX = "bench-rooms500-"
WIDE_MESSAGES_PER_ROOM = 4
WIDE_SCENARIOS = ("rooms500_br", "rooms500_all_br")
ROOMS_PATH = "/api/v1/projects/{slug}/rooms?limit=100"


@dataclass
class WideProject:
    slug: str
    room_ids: list[int]
    readers: list[Reader]


def wide_project(*, rooms: int, users: int, seed: int) -> WideProject:
    """A project of ``rooms`` public rooms with a few messages each and ``users`` members, each with read markers.

    Made through the services once and reused (looked up by name); read markers
    are set where missing: most rooms read up to some earlier message, a few
    caught up, a few never opened, so unread counts differ per room.
    """
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import make_password

    from chat.models import Message, ReadMarker, Room
    from chat.services import messages as message_services
    from chat.services import rooms as room_services
    from projects import services as project_services
    from projects.models import Membership, Project

    User = get_user_model()
    unusable = make_password(None)
    names = [f"{WIDE_USER_PREFIX}{i:03d}" for i in range(users)]
    found = {u.username: u for u in User.objects.filter(username__in=names)}
    User.objects.bulk_create([User(username=n, password=unusable) for n in names if n not in found])
    members = list(User.objects.filter(username__in=names).order_by("username"))
    owner = members[0]
    project = Project.objects.filter(slug=WIDE_PROJECT).first()
    if project is None:
        project = project_services.project_create(user=owner, name="Five hundred rooms", slug=WIDE_PROJECT)
    Membership.objects.bulk_create(
        [Membership(project=project, user=u, role=Membership.Role.MEMBER) for u in members], ignore_conflicts=True
    )
    existing = Room.objects.filter(project=project).count()
    for i in range(existing, rooms):
        room_services.room_create(project=project, user=owner, name=f"room {i:04d}", slug=f"room-{i:04d}")
    room_ids = list(Room.objects.filter(project=project, kind=Room.Kind.ROOM, is_private=False).order_by("id").values_list("id", flat=True))
    quiet = [r for r in room_ids if not Message.objects.filter(room_id=r).exists()]
    if quiet:
        rng = random.Random(seed)
        drafts = [
            message_services.Draft(room=Room(id=r, project_id=project.id), author=rng.choice(members), body=f"status update {k + 1} in {r}")
            for r in quiet
            for k in range(WIDE_MESSAGES_PER_ROOM)
        ]
        for start in range(0, len(drafts), 500):
            message_services.messages_create(drafts[start : start + 500])
    marked = set(ReadMarker.objects.filter(room_id__in=room_ids, user__in=members).values_list("user_id", "room_id"))
    ids_by_room: dict[int, list[int]] = {}
    for room_id, message_id in Message.objects.filter(room_id__in=room_ids).order_by("id").values_list("room_id", "id"):
        ids_by_room.setdefault(room_id, []).append(message_id)
    rng = random.Random(f"{seed}:markers")
    markers = []
    for user in members:
        for room_id in room_ids:
            roll = rng.random()
            if (user.id, room_id) in marked or roll < 0.1 or not ids_by_room.get(room_id):
                continue  # about one room in ten never opened: no marker, everything unread
            ids = ids_by_room[room_id]
            markers.append(ReadMarker(room_id=room_id, user=user, last_read_message_id=ids[-1] if roll > 0.7 else rng.choice(ids)))
    ReadMarker.objects.bulk_create(markers, batch_size=5000, ignore_conflicts=True)
    readers = [Reader(u.id, 0, WIDE_PROJECT, "", []) for u in members]
    return WideProject(slug=WIDE_PROJECT, room_ids=room_ids, readers=readers)


# --- The server -----------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(*, port: int, env: dict[str, str], log_path: Path, workers: int = 1) -> subprocess.Popen:
    command = [
        sys.executable, "-m", "chatsite.server", "-b", "127.0.0.1", "-p", str(port), "-v", "0", "-w", str(workers),
        "chatsite.asgi:application",
    ]  # fmt: skip
    log = log_path.open("wb")
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def stop_server(proc: subprocess.Popen | None) -> None:
    if proc is None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def wait_healthy(base_url: str, proc: subprocess.Popen | None, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{base_url}/healthz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise SystemExit("server did not become healthy")


# --- Load -----------------------------------------------------------------


@dataclass
class Result:
    scenario: str
    mode: str
    latencies_ms: list[float] = field(default_factory=list)
    bytes: list[int] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    not_modified: int = 0
    elapsed_s: float = 0.0

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies_ms)
        n = len(lat)

        def pct(q: float) -> float:
            return round(lat[min(n - 1, int(q * n))], 2) if n else 0.0

        return {
            "scenario": self.scenario,
            "mode": self.mode,
            "requests": n,
            "errors": self.errors,
            "not_modified": self.not_modified,
            "rps": round(n / self.elapsed_s, 1) if self.elapsed_s else 0.0,
            "p50_ms": pct(0.50),
            "p95_ms": pct(0.95),
            "p99_ms": pct(0.99),
            "max_ms": round(lat[-1], 2) if n else 0.0,
            "mean_bytes": round(sum(self.bytes) / len(self.bytes)) if self.bytes else 0,
        }


def request_for(scenario: str, reader: Reader, rng: random.Random) -> tuple[str, dict[str, str]]:
    kind, _, coding = scenario.rpartition("_")
    headers = {"Accept-Encoding": coding}
    if kind.startswith("page"):
        headers["Cookie"] = f"sessionid={reader.session_key}; csrftoken={reader.csrf_cookie}"
        if kind == "page_revalidate":
            headers["If-None-Match"] = reader.etags[coding]
        return PAGE_PATH.format(project=reader.project_slug, room=reader.room_slug), headers
    headers["Authorization"] = f"Bearer {reader.token}"
    if kind.startswith("rooms500"):
        return ROOMS_PATH.format(slug=reader.project_slug), headers
    path = HISTORY_PATH.format(room_id=reader.room_id)
    if kind == "api_older":
        path += "?cursor=" + urllib.parse.quote(rng.choice(reader.older_cursors))
    return path, headers


async def one(session: Any, base_url: str, scenario: str, reader: Reader, rng: random.Random, result: Result, start: float) -> None:
    path, headers = request_for(scenario, reader, rng)
    try:
        async with session.get(base_url + path, headers=headers, allow_redirects=False) as response:
            body = await response.read()
            status = response.status
    except Exception as exc:  # noqa: BLE001 - every failure is counted, none stops the run
        key = type(exc).__name__
        result.errors[key] = result.errors.get(key, 0) + 1
        return
    if status not in (200, 304):
        result.errors[str(status)] = result.errors.get(str(status), 0) + 1
        return
    result.latencies_ms.append((time.perf_counter() - start) * 1000)
    result.not_modified += status == 304
    result.bytes.append(len(body))


async def closed_loop(session: Any, base_url: str, scenario: str, readers: list[Reader], *, concurrency: int, requests: int, duration: float, seed: int) -> Result:
    result = Result(scenario, f"closed x{concurrency}")
    rng = random.Random(seed)
    remaining = requests
    deadline = time.perf_counter() + duration

    async def client() -> None:
        nonlocal remaining
        while remaining > 0 and time.perf_counter() < deadline:
            remaining -= 1
            await one(session, base_url, scenario, rng.choice(readers), rng, result, time.perf_counter())

    began = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    result.elapsed_s = time.perf_counter() - began
    return result


async def open_loop(session: Any, base_url: str, scenario: str, readers: list[Reader], *, rate: float, concurrency: int, requests: int, duration: float, seed: int) -> Result:
    result = Result(scenario, f"open {rate:g}/s")
    rng = random.Random(seed)
    in_flight = asyncio.Semaphore(concurrency)
    tasks = []

    async def scheduled(start: float) -> None:
        async with in_flight:
            await one(session, base_url, scenario, rng.choice(readers), rng, result, start)

    began = time.perf_counter()
    at = began
    for _ in range(requests):
        at += rng.expovariate(rate)
        if at - began > duration:
            break
        delay = at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(scheduled(at)))
    await asyncio.gather(*tasks)
    result.elapsed_s = time.perf_counter() - began
    return result


async def prime_pages(session: Any, base_url: str, readers: list[Reader]) -> None:
    """Give each reader a CSRF cookie, as a browser keeps one, and note the page's ETag per coding."""

    async def prime(reader: Reader) -> None:
        url = base_url + PAGE_PATH.format(project=reader.project_slug, room=reader.room_slug)
        cookie = f"sessionid={reader.session_key}"
        async with session.get(url, headers={"Cookie": cookie}, allow_redirects=False) as response:
            await response.read()
            if response.status != 200 or "csrftoken" not in response.cookies:
                raise SystemExit(f"room page answered {response.status} for a signed-in reader: {url}")
            reader.csrf_cookie = response.cookies["csrftoken"].value
        for coding in ("br", "identity"):
            headers = {"Cookie": f"{cookie}; csrftoken={reader.csrf_cookie}", "Accept-Encoding": coding}
            async with session.get(url, headers=headers, allow_redirects=False) as response:
                await response.read()
                reader.etags[coding] = response.headers["ETag"]

    for start in range(0, len(readers), 20):
        await asyncio.gather(*(prime(r) for r in readers[start : start + 20]))


async def run_all(args: argparse.Namespace, base_url: str, readers: list[Reader]) -> list[dict[str, Any]]:
    import aiohttp

    # auto_decompress off: count bytes as sent, and spend no client CPU decoding.
    connector = aiohttp.TCPConnector(limit=args.concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=30)
    summaries = []
    # No cookie jar: each request carries its own reader's cookies, nothing else.
    async with aiohttp.ClientSession(
        connector=connector, auto_decompress=False, timeout=timeout, cookie_jar=aiohttp.DummyCookieJar()
    ) as session:
        if any(s.startswith("page") for s in args.scenarios):
            await prime_pages(session, base_url, readers)
        for scenario in (s for s in args.scenarios if s not in WIDE_SCENARIOS):
            if scenario.startswith("page_revalidate"):
                # Fresh ETags: messages posted meanwhile change unread badges, so older ones may not match.
                await prime_pages(session, base_url, readers)
            # Warm-up: connections, caches, the server's code paths; not recorded.
            await closed_loop(session, base_url, scenario, readers, concurrency=args.concurrency,
                              requests=args.warmup, duration=args.duration, seed=args.seed + 1)  # fmt: skip
            result = await closed_loop(session, base_url, scenario, readers, concurrency=args.concurrency,
                                       requests=args.requests, duration=args.duration, seed=args.seed)  # fmt: skip
            summaries.append(result.summary())
            print_row(summaries[-1])
            if args.wrk and scenario.startswith("api"):
                row = await asyncio.to_thread(
                    wrk_closed_loop, base_url, scenario, readers, concurrency=args.concurrency,
                    duration=args.duration, seed=args.seed, work_dir=(ROOT / args.json).parent,
                )  # fmt: skip
                if row is not None:
                    summaries.append(row)
                    print_row(row)
            rate = args.page_rate if scenario.startswith("page") else args.rate
            if rate:
                result = await open_loop(session, base_url, scenario, readers, rate=rate,
                                         concurrency=args.concurrency, requests=args.requests,
                                         duration=args.duration, seed=args.seed)  # fmt: skip
                summaries.append(result.summary())
                print_row(summaries[-1])
    return summaries


# --- The room list of a user in 500 rooms ------------------------------------


async def walk_rooms(session: Any, base_url: str, reader: Reader, *, all_pages: bool) -> tuple[int, int]:
    """The first page of the reader's room list, or every page (following ``next_cursor``): (requests, bytes)."""
    import brotli

    url = base_url + ROOMS_PATH.format(slug=reader.project_slug)
    headers = {"Authorization": f"Bearer {reader.token}", "Accept-Encoding": "br"}
    requests = size = 0
    for _ in range(100):  # bounded: 100 pages are 10,000 rooms
        async with session.get(url, headers=headers, allow_redirects=False) as response:
            body = await response.read()
            if response.status != 200:
                raise RuntimeError(f"room list answered {response.status}")
            coding = response.headers.get("Content-Encoding", "")
        requests += 1
        size += len(body)
        if not all_pages:
            break
        cursor = json.loads(brotli.decompress(body) if coding == "br" else body).get("next_cursor")
        if not cursor:
            break
        url = base_url + ROOMS_PATH.format(slug=reader.project_slug) + "&cursor=" + urllib.parse.quote(cursor)
    return requests, size


def _cpu_seconds(pids: list[int]) -> float:
    import psutil

    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


async def wide_loop(session: Any, base_url: str, scenario: str, wide: WideProject, *, rate: float, duration: float,
                    concurrency: int, post_rate: float, server_pids: list[int], seed: int) -> dict[str, Any]:  # fmt: skip
    """Open loop of room-list requests (``rate`` requests/s; whole walks for ``rooms500_all``) while messages arrive."""
    all_pages = scenario.startswith("rooms500_all")
    pages = max(1, math.ceil(len(wide.room_ids) / 100)) if all_pages else 1
    result = Result(scenario, f"open {rate:g}/s" + (f" ({pages} pages a walk)" if all_pages else ""))
    rng = random.Random(seed)
    in_flight = asyncio.Semaphore(concurrency)
    tasks = []
    requests = 0

    async def scheduled(start: float) -> None:
        nonlocal requests
        async with in_flight:
            try:
                n, size = await walk_rooms(session, base_url, rng.choice(wide.readers), all_pages=all_pages)
            except Exception as exc:  # noqa: BLE001 - every failure is counted, none stops the run
                result.errors[type(exc).__name__] = result.errors.get(type(exc).__name__, 0) + 1
                return
        requests += n
        result.latencies_ms.append((time.perf_counter() - start) * 1000)
        result.bytes.append(size)

    async def traffic(deadline: float) -> int:
        """A message a second or so, somewhere in the project, as its members post (through the API)."""
        posted = 0
        poster = wide.readers[-1]
        headers = {"Authorization": f"Bearer {poster.token}", "Content-Type": "application/json"}
        while post_rate > 0 and time.perf_counter() < deadline:
            await asyncio.sleep(rng.expovariate(post_rate))
            room_id = rng.choice(wide.room_ids)
            body = json.dumps({"body": f"news {rng.randrange(10**6)}"}).encode()
            with contextlib.suppress(Exception):
                async with session.post(f"{base_url}/api/v1/rooms/{room_id}/messages", data=body, headers=headers) as response:
                    await response.read()
                    posted += response.status == 201
        return posted

    me = [os.getpid()]
    cpu_server, cpu_me = _cpu_seconds(server_pids), _cpu_seconds(me)
    began = time.perf_counter()
    poster = asyncio.create_task(traffic(began + duration))
    at = began
    for _ in range(1_000_000):
        at += rng.expovariate(rate / pages)
        if at - began > duration:
            break
        delay = at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(scheduled(at)))
    await asyncio.gather(*tasks)
    posted = await poster
    result.elapsed_s = time.perf_counter() - began
    server_s, me_s = _cpu_seconds(server_pids) - cpu_server, _cpu_seconds(me) - cpu_me
    row = result.summary()
    row.update(
        rooms=len(wide.room_ids),
        readers=len(wide.readers),
        pages_per_walk=pages,
        http_requests=requests,
        requests_per_s=round(requests / result.elapsed_s, 1) if result.elapsed_s else 0.0,
        messages_posted=posted,
        # Per request: the server's CPU (the posts meanwhile included) and the load generator's own.
        server_cpu_ms_per_request=round(1000 * server_s / requests, 2) if requests and server_pids else None,
        generator_cpu_ms_per_request=round(1000 * me_s / requests, 2) if requests else None,
        server_cpu_pct=round(100 * server_s / result.elapsed_s, 1) if server_pids and result.elapsed_s else None,
        generator_cpu_pct=round(100 * me_s / result.elapsed_s, 1) if result.elapsed_s else None,
    )
    if all_pages:
        row["server_cpu_ms_per_walk"] = round(row["server_cpu_ms_per_request"] * requests / len(result.latencies_ms), 2) if row["server_cpu_ms_per_request"] and result.latencies_ms else None
    return row


async def run_wide(args: argparse.Namespace, base_url: str, wide: WideProject, server_pids: list[int]) -> list[dict[str, Any]]:
    import aiohttp

    connector = aiohttp.TCPConnector(limit=args.concurrency)
    timeout = aiohttp.ClientTimeout(total=30)
    rows = []
    async with aiohttp.ClientSession(
        connector=connector, auto_decompress=False, timeout=timeout, cookie_jar=aiohttp.DummyCookieJar()
    ) as session:
        # Warm-up: every member's first list (a cache miss each), then the code paths; not recorded.
        await asyncio.gather(*(walk_rooms(session, base_url, r, all_pages=True) for r in wide.readers))
        for scenario in (s for s in args.scenarios if s in WIDE_SCENARIOS):
            warm = min(args.duration, 3.0)
            await wide_loop(session, base_url, scenario, wide, rate=args.wide_rate, duration=warm, concurrency=args.concurrency,
                            post_rate=args.wide_post_rate, server_pids=server_pids, seed=args.seed + 1)  # fmt: skip
            row = await wide_loop(session, base_url, scenario, wide, rate=args.wide_rate, duration=args.duration,
                                  concurrency=args.concurrency, post_rate=args.wide_post_rate, server_pids=server_pids,
                                  seed=args.seed)  # fmt: skip
            rows.append(row)
            print_row(row)
            what = f"a walk of {row['pages_per_walk']} pages" if row["pages_per_walk"] > 1 else "the first page"
            print(f"  {row['rooms']} rooms, {what}: {row['requests_per_s']} requests/s; server CPU "
                  f"{row['server_cpu_ms_per_request']} ms a request ({row['server_cpu_pct']} % of a core)"
                  + (f", {row['server_cpu_ms_per_walk']} ms a walk" if row.get("server_cpu_ms_per_walk") else "")
                  + f"; load generator {row['generator_cpu_ms_per_request']} ms a request ({row['generator_cpu_pct']} %); "
                  f"{row['messages_posted']} messages posted meanwhile", flush=True)  # fmt: skip
    return rows


# --- The same closed loop from wrk ------------------------------------------
# The Python client above costs about as much CPU per request as the fast lane
# serving it: past ~3,000 requests a second on two cores it measures itself.
# wrk (C) drives the same 50 keep-alive clients for a fraction of that.

WRK_SCRIPT = """
local targets = {%(targets)s}
local coding = "%(coding)s"
init = function(args)
  math.randomseed(%(seed)d)
end
request = function()
  local t = targets[math.random(#targets)]
  return wrk.format("GET", t[1], {["Authorization"] = "Bearer " .. t[2], ["Accept-Encoding"] = coding})
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRK %%d %%d %%d %%d %%d %%d %%d %%d %%d %%d %%d\\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max))
end
"""


def wrk_closed_loop(base_url: str, scenario: str, readers: list[Reader], *, concurrency: int, duration: float, seed: int, work_dir: Path) -> dict[str, Any] | None:
    """``scenario``'s closed loop from wrk (one thread, ``concurrency`` connections); None when wrk is not installed."""
    import shutil

    wrk = shutil.which("wrk")
    if wrk is None:
        print("wrk is not installed (apt-get install wrk): its closed loop is skipped", flush=True)
        return None
    rng = random.Random(seed)
    targets = []
    for _ in range(4000):
        reader = rng.choice(readers)
        path, headers = request_for(scenario, reader, rng)
        targets.append('{"%s", "%s"}' % (path, reader.token))
    coding = scenario.rpartition("_")[2]
    script = work_dir / f"wrk-{scenario}.lua"
    script.write_text(WRK_SCRIPT % {"targets": ", ".join(targets), "coding": coding, "seed": seed})
    out = subprocess.run(
        [wrk, "-t1", f"-c{concurrency}", f"-d{max(1, int(duration))}s", "--timeout", "10s", "-s", str(script), base_url],
        capture_output=True, text=True, timeout=duration + 60,
    )  # fmt: skip
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("WRK ")), None)
    if line is None:
        raise SystemExit(f"wrk failed: {out.stdout}\n{out.stderr}")
    requests, duration_us, connect, read, write, status, timeout, p50, p95, p99, top = (int(x) for x in line.split()[1:])
    errors = {k: v for k, v in {"connect": connect, "read": read, "write": write, "status": status, "timeout": timeout}.items() if v}
    return {
        "scenario": scenario,
        "mode": f"wrk x{concurrency}",
        "requests": requests,
        "errors": errors,
        "not_modified": 0,
        "rps": round(requests / (duration_us / 1e6), 1),
        "p50_ms": round(p50 / 1000, 2),
        "p95_ms": round(p95 / 1000, 2),
        "p99_ms": round(p99 / 1000, 2),
        "max_ms": round(top / 1000, 2),
        "mean_bytes": 0,  # wrk counts headers too; the Python rows give the body size
    }


# --- Report ---------------------------------------------------------------

HEADER = f"{'scenario':<19} {'mode':<12} {'reqs':>6} {'err':>5} {'304':>5} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8} {'bytes':>8}"


def print_row(s: dict[str, Any]) -> None:
    errors = sum(s["errors"].values())
    print(
        f"{s['scenario']:<19} {s['mode']:<12} {s['requests']:>6} {errors:>5} {s['not_modified']:>5} {s['rps']:>8} {s['p50_ms']:>8} "
        f"{s['p95_ms']:>8} {s['p99_ms']:>8} {s['max_ms']:>8} {s['mean_bytes']:>8}",
        flush=True,
    )


def compression_ratios(summaries: list[dict[str, Any]]) -> dict[str, float]:
    sizes: dict[str, dict[str, int]] = {}
    for s in summaries:
        kind, _, coding = s["scenario"].rpartition("_")
        if s["mean_bytes"]:
            sizes.setdefault(kind, {})[coding] = s["mean_bytes"]
    return {
        kind: round(by["identity"] / by["br"], 2) for kind, by in sizes.items() if "identity" in by and "br" in by
    }


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kb = next(
            int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")
        )
    except (OSError, StopIteration):
        mem_kb = 0
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram_gb": round(mem_kb / 1024 / 1024, 1),
        "loadavg_at_start": list(os.getloadavg()),
        "python": platform.python_version(),
    }


def data_set() -> dict[str, int]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT (SELECT count(*) FROM auth_user), (SELECT count(*) FROM chat_room), "
            "(SELECT reltuples::bigint FROM pg_class WHERE relname = 'chat_message')"
        )
        users, rooms, messages = cursor.fetchone()
    return {"users": users, "rooms": rooms, "messages_estimate": messages}


SCENARIOS = [
    "api_newest_br",
    "api_newest_identity",
    "api_older_br",
    "api_older_identity",
    "page_br",
    "page_identity",
    "page_revalidate_br",
    *WIDE_SCENARIOS,
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/chat_bench")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/13")
    parser.add_argument("--settings", default="chatsite.settings.test")
    parser.add_argument("--server-url", default="", help="use this running server (127.0.0.1 only) instead of starting one")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--workers", type=int, default=1, help="server processes (chatsite.server -w)")
    parser.add_argument("--wrk", action="store_true", help="also run each API scenario's closed loop from wrk (C), after the Python one")
    parser.add_argument("--requests", type=int, default=3000, help="per scenario and mode")
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds, per scenario and mode")
    parser.add_argument("--rate", type=float, default=0.0, help="also run each API scenario open-loop at this many req/s")
    parser.add_argument("--page-rate", type=float, default=0.0, help="the same for the room page scenarios")
    parser.add_argument("--rooms", type=int, default=200, help="rooms sampled (one reader each)")
    parser.add_argument("--scenarios", nargs="+", default=SCENARIOS, choices=SCENARIOS)
    parser.add_argument("--wide-rooms", type=int, default=500, help="rooms of the project for rooms500_*")
    parser.add_argument("--wide-users", type=int, default=20, help="members of that project who ask for their room list")
    parser.add_argument("--wide-rate", type=float, default=100.0, help="room-list requests/s for rooms500_*, on one process")
    parser.add_argument("--wide-post-rate", type=float, default=1.0, help="messages/s posted in that project meanwhile")
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument("--json", default="var/bench/http.json")
    args = parser.parse_args()
    if args.server_url and urllib.parse.urlsplit(args.server_url).hostname != "127.0.0.1":
        raise SystemExit("--server-url must be on 127.0.0.1")
    args.requests = max(1, args.requests)

    setup_django(args.database_url, args.redis_url, args.settings)
    wide_wanted = any(s in WIDE_SCENARIOS for s in args.scenarios)
    readers = pick_readers(rooms=args.rooms, cursors_per_room=5, seed=args.seed)
    if not readers and not all(s in WIDE_SCENARIOS for s in args.scenarios):
        raise SystemExit("no room with messages: load a data set first (python -m bench.seed ...)")
    wide = wide_project(rooms=args.wide_rooms, users=args.wide_users, seed=args.seed) if wide_wanted else None
    sign_in(readers + (wide.readers if wide else []))
    proc = None
    out_path = ROOT / args.json
    out_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": args.settings, "DEBUG": "false"}
    summaries: list[dict[str, Any]] = []
    try:
        base_url = args.server_url.rstrip("/")
        if not base_url:
            port = free_port()
            proc = start_server(port=port, env=env, log_path=out_path.with_suffix(".server.log"), workers=args.workers)
            base_url = f"http://127.0.0.1:{port}"
        wait_healthy(base_url, proc)
        info = {"machine": machine(), "data_set": data_set(), "readers": len(readers), "server_workers": args.workers}
        print(f"machine: {info['machine']}; server processes: {args.workers}")
        print(f"data set: {info['data_set']}; {len(readers)} rooms sampled, one reader each")
        print(HEADER)
        if readers:
            summaries = asyncio.run(run_all(args, base_url, readers))
        if wide is not None:
            server_pids: list[int] = []
            if not args.server_url:
                # One process of its own, whatever --workers says: the goal is per process, and its CPU is the list's.
                stop_server(proc)
                port = free_port()
                proc = start_server(port=port, env=env, log_path=out_path.with_suffix(".rooms500.server.log"), workers=1)
                base_url = f"http://127.0.0.1:{port}"
                wait_healthy(base_url, proc)
                server_pids = [proc.pid]
            print(f"room list of a user in {len(wide.room_ids)} rooms ({len(wide.readers)} such users), "
                  f"{'one server process' if server_pids else 'the given server (its CPU unknown)'}:")  # fmt: skip
            summaries += asyncio.run(run_wide(args, base_url, wide, server_pids))
    finally:
        stop_server(proc)
        sign_out(readers + (wide.readers if wide else []))
    ratios = compression_ratios(summaries)
    print("compression ratio (identity bytes / br bytes): " + ", ".join(f"{k} {v}x" for k, v in ratios.items()))
    report = {
        **info,
        "command": " ".join(sys.argv),
        "settings": args.settings,
        "concurrency": args.concurrency,
        "loadavg_at_end": list(os.getloadavg()),
        "results": summaries,
        "compression_ratio": ratios,
    }
    out_path.write_text(json.dumps(report, indent=2))
    print(f"wrote {out_path.relative_to(ROOT) if out_path.is_relative_to(ROOT) else out_path}")


if __name__ == "__main__":
    main()
