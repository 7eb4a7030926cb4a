"""Private Redis and PostgreSQL instances that fault tests may kill and restart.

The shared services on the standard ports are used by other test runs on the
same machine: fault tests never stop, restart or flush them. Each test that
needs an outage starts its own instance on a free port:

* ``private_redis``: ``redis-server`` as a child process (no persistence);
* ``private_postgres``: a throwaway cluster made with ``initdb`` in a temporary
  directory, run as the ``postgres`` OS user (initdb refuses root), migrated
  and seeded through ``manage.py`` subprocesses pointed at it.

Server processes (tests/servers.py) are pointed at them with DATABASE_URL /
REDIS_URL in their environment. ``ServerLog`` drains a server's stderr (a pipe
nobody else reads: a server that logs a lot during an outage would otherwise
block on a full pipe) and keeps it for assertions.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from chatsite import env
from tests.servers import ROOT, free_port, server_env, server_log_path
from tests.waiting import wait_until

START_TIMEOUT = 30


class ServerLog:
    """A server process's log: tests.servers writes each server's output to a file."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.path = server_log_path(proc)

    @property
    def lines(self) -> list[str]:
        return self.path.read_text("utf-8", "replace").splitlines()

    def count(self, text: str) -> int:
        return sum(text in line for line in self.lines)

    def tail(self, n: int = 60) -> str:
        return "\n".join(self.lines[-n:])


# --- Redis --------------------------------------------------------------------


class PrivateRedis:
    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self.answers, timeout=START_TIMEOUT, interval=0.1, message="private redis did not answer")

    def answers(self) -> bool:
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.5, socket_timeout=0.5)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL: the server vanishes as in a crash, connections are reset."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    server.start()
    try:
        yield server
    finally:
        server.kill()


# --- PostgreSQL ---------------------------------------------------------------


def _pg_bin() -> Path:
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    if not versions:
        raise RuntimeError("no PostgreSQL server binaries under /usr/lib/postgresql")
    return versions[-1].parent


class PrivatePostgres:
    """A throwaway cluster owned by the ``postgres`` OS user, on a free port."""

    database = "chat"

    def __init__(self) -> None:
        self.bin = _pg_bin()
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="chat-faults-pg-"))
        owner = pwd.getpwnam("postgres")
        os.chown(self.dir, owner.pw_uid, owner.pw_gid)
        self.data = self.dir / "data"

    def _as_postgres(self, *args: str) -> None:
        command = [str(a) for a in args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def init(self) -> None:
        self._as_postgres(self.bin / "initdb", "-D", self.data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50"
        self._as_postgres(self.bin / "pg_ctl", "-D", self.data, "-o", options, "-l", self.dir / "server.log", "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self._as_postgres(self.bin / "pg_ctl", "-D", self.data, "-m", mode, "-w", "-t", "60", "stop")

    def url(self, database: str | None = None) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database or self.database}"

    def execute(self, sql: str, *, database: str = "postgres") -> list[tuple]:
        with psycopg.connect(self.url(database), autocommit=True, connect_timeout=5) as conn:
            cursor = conn.execute(sql)
            return cursor.fetchall() if cursor.description else []

    def terminate_backends(self) -> int:
        """pg_terminate_backend on every connection to the app database; how many were ended."""
        rows = self.execute(
            f"SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE datname = '{self.database}' AND pid <> pg_backend_pid()"
        )
        return sum(1 for (ended,) in rows if ended)

    def remove(self) -> None:
        try:
            self.stop("immediate")
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


# Runs in ``manage.py shell`` against the private cluster: two users in one
# project, a token each; prints what the test needs.
SEED = """
import json
from chat.services import accounts as account_services
from chat.models import Room
from projects import services as project_services
from projects.models import Membership
alice = account_services.user_create(username="alice", password="faults-pass-1")
bob = account_services.user_create(username="bob", password="faults-pass-2")
project = project_services.project_create(user=alice, name="Faults", slug="faults")
Membership.objects.create(project=project, user=bob)
room = Room.objects.get(project=project, slug="general")
print("SEED " + json.dumps({
    "room": room.id,
    "tokens": {"alice": account_services.token_create(user=alice)[1], "bob": account_services.token_create(user=bob)[1]},
}))
"""


def manage(*args: str, environ: dict[str, str]) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=environ, capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def private_postgres() -> Iterator[tuple[PrivatePostgres, dict[str, Any]]]:
    """A migrated, seeded private cluster (module scope: initdb and migrate take a while)."""
    cluster = PrivatePostgres()
    try:
        cluster.init()
        cluster.start()
        cluster.execute(f"CREATE DATABASE {cluster.database}")
        environ = server_env(DATABASE_URL=cluster.url(), REDIS_URL=env.REDIS_URL)
        manage("migrate", "--no-input", "-v", "0", environ=environ)
        output = manage("shell", "-c", SEED, environ=environ)
        seed = json.loads(next(line for line in output.splitlines() if line.startswith("SEED "))[len("SEED ") :])
        yield cluster, seed
    finally:
        cluster.remove()


# --- HTTP against a server process ------------------------------------------------


def http(
    port: int, method: str, path: str, *, token: str | None = None, cookie: str | None = None, body: Any = None, timeout: float = 20
) -> tuple[int, Any, bytes]:
    """One request to a server on 127.0.0.1: (status, headers, body), errors included.

    ``headers`` is the response's ``HTTPMessage``: names are case-insensitive, as in HTTP.
    """
    import urllib.error
    import urllib.request

    headers = {"Content-Type": "application/json"} if body is not None else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if cookie:
        headers["Cookie"] = cookie
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.headers, response.read()  # case-insensitive names
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


# --- A chat client that reconnects and resumes ---------------------------------------


class Reader:
    """One person in one room: remembers every message id it received, per connection.

    ``connect`` (re)opens a socket and subscribes with ``last_id`` = the newest id
    received so far, retrying a bounded number of times when the server refuses
    or drops the socket (as the browser client does, with backoff).
    """

    def __init__(self, name: str, token: str, room_id: int) -> None:
        self.name, self.token, self.room_id = name, token, room_id
        self.sessions: list[list[int]] = []
        self.sock: Any = None

    @property
    def ids(self) -> set[int]:
        return {i for session in self.sessions for i in session}

    @property
    def last_id(self) -> int | None:
        return max(self.ids) if self.ids else None

    async def connect(self, port: int, *, attempts: int = 10, resume: bool = True) -> None:
        import asyncio

        from tests.wsclient import ChatSocket

        errors = []
        for _ in range(attempts):
            try:
                sock = await ChatSocket.open(port, self.token)
                frame: dict[str, Any] = {"type": "subscribe", "room": self.room_id, "ref": "sub"}
                if resume and self.last_id is not None:
                    frame["last_id"] = self.last_id
                elif resume:
                    frame["last_id"] = 0
                await sock.send(frame)
                session: list[int] = []
                while True:
                    event = await sock.recv()
                    if event["type"] == "message.new":
                        session.append(event["message"]["id"])
                    elif event["type"] == "subscribed":
                        break
                    elif event["type"] == "error":
                        raise RuntimeError(f"subscribe refused: {event}")
                self.sock = sock
                self.sessions.append(session)
                return
            except Exception as exc:  # noqa: BLE001 - refused, dropped or not yet back: try again
                errors.append(repr(exc))
                await asyncio.sleep(0.5)
        raise AssertionError(f"{self.name} could not reconnect: {errors}")

    async def read_until(self, wanted: set[int], *, max_events: int = 5000, timeout: float = 10) -> None:
        """Read live events until every id in ``wanted`` has been received."""
        for _ in range(max_events):
            if wanted <= self.ids:
                return
            event = await self.sock.recv(timeout=timeout)
            if event["type"] == "message.new":
                self.sessions[-1].append(event["message"]["id"])
        raise AssertionError(f"{self.name} is missing {sorted(wanted - self.ids)}")

    async def send(self, client_id: str, body: str | None = None) -> dict[str, Any]:
        """message.send; the ack or error frame (live events read meanwhile are kept)."""
        await self.sock.send({"type": "message.send", "room": self.room_id, "body": body or client_id, "client_id": client_id})
        for _ in range(5000):
            event = await self.sock.recv()
            if event["type"] == "message.new":
                self.sessions[-1].append(event["message"]["id"])
            elif event["type"] in ("message.ack", "error"):
                return event
        raise AssertionError("no answer to message.send")

    def assert_sessions_clean(self) -> None:
        """Within one connection: ids strictly increase (no repeats, in room order)."""
        for session in self.sessions:
            assert session == sorted(set(session)), f"{self.name}: {session}"
