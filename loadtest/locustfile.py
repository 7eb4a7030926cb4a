"""Locust: chat users that behave like people, each holding a WebSocket.

    python -m bench.make_tokens --users 500 --out var/loadtest/tokens.json
    locust -f loadtest/locustfile.py -H http://127.0.0.1:8000 --tokens-file var/loadtest/tokens.json
    # headless: add --headless -u 500 -r 50 -t 2m --only-summary

The mix follows Mattermost's published load-test mix: most actions read or
navigate, a few post. Per 100 actions, on average:

==========================  =====  ===================================================
action                      share  requests
==========================  =====  ===================================================
unread check                  24   GET /api/v1/projects/{slug}/rooms
switch room                   26   WS unsubscribe + subscribe, GET newest history page
scroll history                26   GET the next older page (``next_cursor``)
post                           8   WS ``typing``, a short pause, POST a message
read marker                   12   POST /api/v1/rooms/{id}/read
edit own message               2   PATCH /api/v1/messages/{id}
reconnect                      2   close the socket, reopen it, resubscribe with last_id
==========================  =====  ===================================================

(Reactions do not exist in the app, so there is no reaction action.)
``--mix post=20,edit=5`` changes weights. Between two actions a user waits
a random time, exponential with mean ``--think-time`` seconds (default 20,
capped at five times the mean), so N users act about N/20 times a second.
Every user also sends a ``ping`` every 25 s, as clients should.

HTTP goes through Locust's FastHttpUser client (geventhttpclient: far less
load-generator CPU than requests) with the user's bearer token. The socket is
websocket-client under gevent: one greenlet per user reads frames (a frame
may hold one event or a JSON array of them) and reports to Locust's table:

* ``WS connect``: handshake until ``hello``; ``WS subscribe``: ``subscribe``
  until ``subscribed`` (including any replay on resume);
* ``WS deliver own``: from the start of the user's POST until its own
  ``message.new`` arrives on the socket (persisted, published, delivered);
  a post not delivered within ``--deliver-timeout`` seconds is a failure;
* ``WS recv message.new``: others' live messages, from the message's
  ``created_at`` to arrival (the server's and the generator's clocks must
  agree: run both on one machine).

Users log in with tokens made beforehand (bench/make_tokens.py): the file
lists, per user, the token and the readable rooms by project. With several
server processes on several ports (no load balancer), ``--hosts`` spreads
the users over them, user k on host k mod n.

``--stats-file PATH`` writes the final numbers (with each entry's
response-time histogram and the error messages) as JSON on exit, for
programs; Locust's own table is still printed.

Only servers on this machine are loaded: a host other than 127.0.0.1,
localhost or ::1 stops the run before any user starts. Every wait here is
bounded; the run ends when Locust stops the users (``-t`` headless, or the
stop button).
"""

from __future__ import annotations

import itertools
import logging
import os
import random
import signal
import sys
import time
import uuid
from collections import deque
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import gevent
import gevent.util
import orjson
import websocket
from gevent.event import AsyncResult, Event
from locust import FastHttpUser, events, task

# `kill -USR2 <pid>` prints every greenlet's stack to stderr: a run that hangs
# shows where (tests/bench/test_locust_smoke.py sends it before giving up).
if hasattr(signal, "SIGUSR2"):
    gevent.signal_handler(signal.SIGUSR2, lambda: gevent.util.print_run_info(file=sys.stderr))

# Action weights per 100 actions (see the table above).
WEIGHTS = {
    "unread": 24,
    "switch": 26,
    "scroll": 26,
    "post": 8,
    "read": 12,
    "edit": 2,
    "reconnect": 2,
}
# The method behind each action name.
ACTIONS = {
    "unread": "unread_check",
    "switch": "switch_room",
    "scroll": "scroll_history",
    "post": "post_message",
    "read": "mark_read",
    "edit": "edit_message",
    "reconnect": "reconnect",
}
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
PAGE_SIZE = 50
WS_PATH = "/ws/"
PING_EVERY_S = 25.0  # docs/PROTOCOL.md: a ping every ~25 s refreshes presence
RECV_POLL_S = 5.0  # the reader wakes up this often to send pings when due
OWN_MESSAGES_KEPT = 20
FRAGMENTS = (
    "sounds good", "I pushed a fix for that", "can you take a look?", "the build is green again",
    "let's discuss it at standup", "deployed to staging", "who owns this ticket?", "thanks!",
    "I'll write a test that reproduces it", "lunch anyone?", "merged", "let me check the logs",
    "latency went down after the change", "the docs are out of date there", "nice work",
)  # fmt: skip


@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any) -> None:
    parser.add_argument(
        "--tokens-file",
        default=os.environ.get("LOADTEST_TOKENS", "var/loadtest/tokens.json"),
        help="token file written by bench/make_tokens.py",
    )
    parser.add_argument(
        "--think-time", type=float, default=float(os.environ.get("LOADTEST_THINK_TIME", "20")),
        help="mean seconds between two actions of a user",
    )  # fmt: skip
    parser.add_argument(
        "--hosts", default=os.environ.get("LOADTEST_HOSTS", ""),
        help="comma-separated base URLs of several server processes; users are spread over them (default: --host)",
    )  # fmt: skip
    parser.add_argument(
        "--mix", default=os.environ.get("LOADTEST_MIX", ""),
        help="override action weights, e.g. post=20,edit=5 (actions: " + ", ".join(WEIGHTS) + ")",
    )  # fmt: skip
    parser.add_argument(
        "--stats-file", default="", include_in_web_ui=False,
        help="on exit, also write the final stats (per-entry response-time histograms, errors) here as JSON",
    )  # fmt: skip
    parser.add_argument(
        "--reply-timeout", type=float, default=10.0,
        help="seconds to wait for the server's hello after connecting, and for subscribed after subscribe",
    )  # fmt: skip
    parser.add_argument(
        "--deliver-timeout", type=float, default=10.0,
        help="seconds a post may take to arrive on its author's socket before it counts as lost",
    )  # fmt: skip


@events.init.add_listener
def _keep_environment(environment: Any, **_: Any) -> None:
    _state["environment"] = environment


def _target_hosts(environment: Any) -> list[str]:
    hosts = [h.strip().rstrip("/") for h in (environment.parsed_options.hosts or "").split(",") if h.strip()]
    return hosts or ([environment.host.rstrip("/")] if environment.host else [])


@events.test_start.add_listener
def _loopback_only(environment: Any, **_: Any) -> None:
    """This load test only ever targets a server on this machine."""
    remote = [h for h in _target_hosts(environment) if urlsplit(h).hostname not in LOOPBACK]
    _state["refused"] = bool(remote)
    if remote:
        logging.error("Refusing to load %s: this load test targets 127.0.0.1 / localhost only.", ", ".join(remote))
        environment.process_exit_code = 2
        if environment.runner is not None:
            gevent.spawn(environment.runner.quit)


@events.quit.add_listener
def _write_stats_file(**_: Any) -> None:
    """Locust's table goes to the terminal; this keeps the numbers for programs (bench/adr_bench.py).

    Unlike --json-file it leaves the table printed, and it carries the error messages.
    """
    environment = _state.get("environment")
    path = getattr(getattr(environment, "parsed_options", None), "stats_file", "")
    runner = getattr(environment, "runner", None)
    if not path or runner is None or type(runner).__name__ == "WorkerRunner":
        return
    stats = runner.stats
    content = {"stats": stats.serialize_stats(), "errors": list(stats.serialize_errors().values())}
    with open(path, "wb") as f:
        f.write(orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS))


_state: dict[str, Any] = {}
_tokens: dict[str, Any] = {}
_identity = itertools.count()


def _token_entries(path: str) -> list[dict[str, Any]]:
    if path not in _tokens:
        with open(path, "rb") as f:
            users = orjson.loads(f.read())["users"]
        if not users:
            raise RuntimeError(f"{path} lists no users: run bench/make_tokens.py first")
        _tokens[path] = users
    return _tokens[path]


def parse_mix(text: str) -> dict[str, int]:
    """``WEIGHTS`` with the overrides in ``text`` (``name=weight,…``); unknown names are an error."""
    weights = dict(WEIGHTS)
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        name, _, value = part.partition("=")
        if name.strip() not in weights:
            raise ValueError(f"unknown action {name.strip()!r} in --mix; choose from {', '.join(WEIGHTS)}")
        weights[name.strip()] = max(0, int(value))
    if not any(weights.values()):
        raise ValueError("--mix leaves no action with a weight above 0")
    return weights


def _ws_url(base: str) -> str:
    parts = urlsplit(base)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return f"{scheme}://{parts.netloc}{WS_PATH}"


def _body(rng: random.Random) -> str:
    return ". ".join(rng.choice(FRAGMENTS) for _ in range(rng.choice((1, 1, 1, 2, 3))))


class ChatUser(FastHttpUser):
    """One person: a socket held for the whole run, and the action mix above."""

    network_timeout = 30.0
    connection_timeout = 30.0
    # Filled in per user before FastHttpUser builds its client.
    host: str | None = None

    def __init__(self, environment: Any) -> None:
        options = environment.parsed_options
        entries = _token_entries(options.tokens_file)
        # Distinct users across forked worker processes (--processes): worker w
        # takes identities w, w + P, w + 2P, …
        workers = getattr(options, "processes", None) or 1
        if workers == -1:  # Locust's "one per core"
            workers = os.cpu_count() or 1
        worker = max(0, getattr(environment.runner, "worker_index", 0) or 0)
        self.index = worker + workers * next(_identity)
        self.me = entries[self.index % len(entries)]
        hosts = _target_hosts(environment)
        if hosts:
            self.host = hosts[self.index % len(hosts)]
        self.default_headers = {"Authorization": f"Bearer {self.me['token']}", "Content-Type": "application/json"}
        super().__init__(environment)
        self.think = max(0.0, float(options.think_time))
        mix = parse_mix(options.mix)
        self.actions = [getattr(self, ACTIONS[name]) for name in mix]
        self.action_weights = list(mix.values())
        self.deliver_timeout = float(options.deliver_timeout)
        self.reply_timeout = float(options.reply_timeout)
        self.rng = random.Random(f"{self.me['username']}:{time.time_ns()}")
        self.project = self.me["projects"][0]
        self.room: int = self.rng.choice(self.project["rooms"])
        self.newest_id = 0  # newest message id this user has in the current room
        self.older_cursor: str | None = None
        self.own: deque[int] = deque(maxlen=OWN_MESSAGES_KEPT)
        self.ws: websocket.WebSocket | None = None
        self.reader: gevent.Greenlet | None = None
        self.hello: AsyncResult | None = None
        self.subscribed: dict[int, AsyncResult] = {}
        self.replaying: set[int] = set()  # rooms whose subscribe has not been answered yet
        self.pending: dict[str, tuple[float, int, Event]] = {}  # client_id -> (start, room, delivered)
        self.last_ping = 0.0

    def wait_time(self) -> float:
        if self.think <= 0:
            return 0.0
        return min(self.rng.expovariate(1.0 / self.think), 5 * self.think)

    # -- lifecycle ---------------------------------------------------------------

    def on_start(self) -> None:
        """Open the app: connect the socket, follow a room, load the room list and the room's newest page."""
        if _state.get("refused"):
            return
        if self.connect():
            self.subscribe(self.room)
        self.load_rooms()
        self.load_newest()

    def on_stop(self) -> None:
        self.disconnect()

    # -- the mix --------------------------------------------------------------------

    @task
    def act(self) -> None:
        """One action, drawn by the mix's weights."""
        if _state.get("refused"):
            return
        self.rng.choices(self.actions, weights=self.action_weights)[0]()

    def unread_check(self) -> None:
        self.ensure_socket()
        if len(self.me["projects"]) > 1 and self.rng.random() < 0.2:
            self.project = self.rng.choice(self.me["projects"])
        self.load_rooms()

    def switch_room(self) -> None:
        self.ensure_socket()
        choices = [r for r in self.project["rooms"] if r != self.room] or self.project["rooms"]
        new_room = self.rng.choice(choices)
        self.settle_deliveries()
        self.send({"type": "unsubscribe", "room": self.room})
        self.room = new_room
        self.newest_id = 0
        self.older_cursor = None
        self.subscribe(new_room)
        self.load_newest()

    def scroll_history(self) -> None:
        self.ensure_socket()
        if self.older_cursor is None:
            self.load_newest()
            return
        with self.client.get(
            f"/api/v1/rooms/{self.room}/messages",
            params={"limit": PAGE_SIZE, "cursor": self.older_cursor},
            name="/api/v1/rooms/[id]/messages (older page)",
            catch_response=True,
        ) as resp:
            page = self._page(resp)
            if page is not None:
                self.older_cursor = page.get("next_cursor")

    def post_message(self) -> None:
        self.ensure_socket()
        self.send({"type": "typing", "room": self.room}, name="typing")
        # People take a moment to type; scaled with the think time so short test runs stay short.
        gevent.sleep(self.rng.uniform(0.5, 2.0) * min(1.0, self.think / 20.0))
        client_id = uuid.uuid4().hex
        delivered = Event()
        started = time.perf_counter()
        self.pending[client_id] = (started, self.room, delivered)
        with self.client.post(
            f"/api/v1/rooms/{self.room}/messages",
            data=orjson.dumps({"body": _body(self.rng), "client_id": client_id}),
            name="/api/v1/rooms/[id]/messages",
            catch_response=True,
        ) as resp:
            if resp.status_code != 201:
                self.pending.pop(client_id, None)
                resp.failure(f"HTTP {resp.status_code}: {_text(resp)[:200]}")
                return
            # newest_id follows what arrived on the socket, so a resume after
            # a reconnect asks for this message too if it had not arrived.
            self.own.append(resp.json()["id"])
        self.expire_pending()

    def mark_read(self) -> None:
        self.ensure_socket()
        with self.client.post(
            f"/api/v1/rooms/{self.room}/read",
            data=orjson.dumps({"last_id": self.newest_id}),
            name="/api/v1/rooms/[id]/read",
            catch_response=True,
        ) as resp:
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}: {_text(resp)[:200]}")

    def edit_message(self) -> None:
        self.ensure_socket()
        if not self.own:
            self.post_message()
            return
        message_id = self.rng.choice(self.own)
        with self.client.request(
            "PATCH",
            f"/api/v1/messages/{message_id}",
            data=orjson.dumps({"body": _body(self.rng) + " (edited)"}),
            name="/api/v1/messages/[id]",
            catch_response=True,
        ) as resp:
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}: {_text(resp)[:200]}")

    def reconnect(self) -> None:
        """A flaky network: drop the socket, reopen it, resume the room from the newest id seen."""
        self.disconnect()
        if self.connect():
            self.subscribe(self.room, last_id=self.newest_id)

    # -- HTTP helpers ----------------------------------------------------------------

    def load_rooms(self) -> None:
        with self.client.get(
            f"/api/v1/projects/{self.project['slug']}/rooms",
            params={"limit": 100},
            name="/api/v1/projects/[slug]/rooms",
            catch_response=True,
        ) as resp:
            self._page(resp)

    def load_newest(self) -> None:
        with self.client.get(
            f"/api/v1/rooms/{self.room}/messages",
            params={"limit": PAGE_SIZE},
            name="/api/v1/rooms/[id]/messages (newest)",
            catch_response=True,
        ) as resp:
            page = self._page(resp)
            if page is not None:
                self.older_cursor = page.get("next_cursor")
                if page["items"]:
                    self.newest_id = max(self.newest_id, page["items"][-1]["id"])

    @staticmethod
    def _page(resp: Any) -> dict[str, Any] | None:
        if resp.status_code != 200:
            resp.failure(f"HTTP {resp.status_code}: {_text(resp)[:200]}")
            return None
        try:
            page = resp.json()
            page["items"]  # noqa: B018 - the shape every list has
        except Exception as exc:  # a body that is not the documented page is a failure
            resp.failure(f"bad page: {exc!r}")
            return None
        return page

    # -- WebSocket ----------------------------------------------------------------------

    def fire(self, name: str, started: float, *, exception: Any = None, length: int = 0) -> None:
        self.environment.events.request.fire(
            request_type="WS",
            name=name,
            response_time=(time.perf_counter() - started) * 1000,
            response_length=length,
            exception=exception,
            context={},
        )

    def connect(self) -> bool:
        started = time.perf_counter()
        self.hello = AsyncResult()
        try:
            ws = websocket.create_connection(
                _ws_url(self.host or ""),
                timeout=self.reply_timeout,
                header=[f"Authorization: Bearer {self.me['token']}"],
                suppress_origin=True,
                enable_multithread=True,  # the reader greenlet answers pings while this one sends
            )
        except Exception as exc:
            self.fire("connect", started, exception=exc)
            return False
        ws.settimeout(RECV_POLL_S)
        self.ws = ws
        self.last_ping = time.monotonic()
        self.reader = gevent.spawn(self._read, ws)
        try:
            self.hello.get(timeout=self.reply_timeout)
        except gevent.Timeout:  # not an Exception; and one message for all, so the error report groups them
            self.fire("connect", started, exception=TimeoutError(f"no hello within {self.reply_timeout:g} s"))
            self.disconnect()
            return False
        except Exception as exc:
            self.fire("connect", started, exception=exc)
            self.disconnect()
            return False
        self.fire("connect", started)
        return True

    def disconnect(self) -> None:
        ws, self.ws = self.ws, None
        if ws is not None:
            # Not ws.close(): it waits for the server's close frame inside a bare
            # `except: pass`, which swallows the GreenletExit of a Locust stop that
            # lands meanwhile; the user then lives on and the run never ends.
            try:
                ws.send_close()
            except Exception:
                pass
            ws.shutdown()
        reader, self.reader = self.reader, None
        if reader is not None:
            reader.kill(block=True, timeout=2)
        self.subscribed.clear()
        self.replaying.clear()

    def ensure_socket(self) -> None:
        """The server may have closed the socket (restart, slow consumer): come back like a client would."""
        if self.ws is None or self.reader is None or self.reader.dead:
            self.disconnect()
            if self.connect():
                self.subscribe(self.room, last_id=self.newest_id or None)

    def send(self, frame: dict[str, Any], *, name: str | None = None) -> bool:
        """Send one frame; with ``name`` the send itself is reported (time to write it)."""
        started = time.perf_counter()
        data = orjson.dumps(frame).decode()
        ws = self.ws
        try:
            if ws is None:
                raise ConnectionError("no socket")
            ws.send(data)
        except Exception as exc:
            if name:
                self.fire(f"send {name}", started, exception=exc)
            return False
        if name:
            self.fire(f"send {name}", started, length=len(data))
        return True

    def subscribe(self, room: int, last_id: int | None = None) -> None:
        started = time.perf_counter()
        answer = self.subscribed[room] = AsyncResult()
        frame: dict[str, Any] = {"type": "subscribe", "room": room, "ref": f"s{room}"}
        if last_id:
            frame["last_id"] = last_id
        self.replaying.add(room)
        if not self.send(frame):
            self.fire("subscribe", started, exception=ConnectionError("socket closed"))
            return
        try:
            answer.get(timeout=self.reply_timeout)
        except gevent.Timeout:  # not an Exception; and one message for all, so the error report groups them
            self.fire("subscribe", started, exception=TimeoutError(f"no subscribed within {self.reply_timeout:g} s"))
            return
        except Exception as exc:
            self.fire("subscribe", started, exception=exc)
            return
        self.fire("subscribe", started)

    def settle_deliveries(self) -> None:
        """Before leaving a room, wait (bounded) for the user's own posts there to arrive."""
        waits = [event for _, room, event in self.pending.values() if room == self.room]
        deadline = time.perf_counter() + self.deliver_timeout
        for event in waits:
            event.wait(timeout=max(0.0, deadline - time.perf_counter()))
        self.expire_pending()

    def expire_pending(self) -> None:
        now = time.perf_counter()
        for client_id, (started, room, _) in list(self.pending.items()):
            if now - started > self.deliver_timeout or (room != self.room and now - started > 1.0):
                del self.pending[client_id]
                self.environment.events.request.fire(
                    request_type="WS",
                    name="deliver own",
                    response_time=(now - started) * 1000,
                    response_length=0,
                    exception=TimeoutError(f"own message not delivered within {self.deliver_timeout:.0f} s"),
                    context={},
                )

    def _read(self, ws: websocket.WebSocket) -> None:
        """Read frames until the socket closes (the user closes it on stop or reconnect)."""
        while True:
            try:
                opcode, data = ws.recv_data()
            except websocket.WebSocketTimeoutException:
                if time.monotonic() - self.last_ping >= PING_EVERY_S:
                    self.last_ping = time.monotonic()
                    try:
                        ws.send('{"type":"ping"}')
                    except Exception:
                        return
                continue
            except Exception:
                return
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                return
            if opcode != websocket.ABNF.OPCODE_TEXT:
                continue
            try:
                parsed = orjson.loads(data)
            except orjson.JSONDecodeError:
                continue
            for event in parsed if isinstance(parsed, list) else (parsed,):
                if isinstance(event, dict):
                    self._on_event(event, len(data))

    def _on_event(self, event: dict[str, Any], length: int) -> None:
        kind = event.get("type")
        if kind == "message.new":
            message = event.get("message") or {}
            room = message.get("room")
            if room == self.room:
                self.newest_id = max(self.newest_id, message.get("id") or 0)
            own = self.pending.pop(message.get("client_id") or "", None)
            if own is not None:
                started, _, delivered = own
                delivered.set()
                self.fire("deliver own", started, length=length)
            elif room not in self.replaying:
                self._fire_age(message, length)
        elif kind == "subscribed":
            room = event.get("room")
            self.replaying.discard(room)
            answer = self.subscribed.get(room)
            if answer is not None and not answer.ready():
                answer.set(event)
        elif kind == "hello":
            if self.hello is not None and not self.hello.ready():
                self.hello.set(event)
        elif kind == "error":
            ref = str(event.get("ref") or "")
            if ref.startswith("s"):
                answer = self.subscribed.get(int(ref[1:]) if ref[1:].isdigit() else -1)
                if answer is not None and not answer.ready():
                    answer.set_exception(RuntimeError(f"{event.get('code')}: {event.get('message')}"))

    def _fire_age(self, message: dict[str, Any], length: int) -> None:
        try:
            created = datetime.fromisoformat(message["created_at"]).timestamp()
        except (KeyError, TypeError, ValueError):
            return
        self.environment.events.request.fire(
            request_type="WS",
            name="recv message.new",
            response_time=max(0.0, (time.time() - created) * 1000),
            response_length=length,
            exception=None,
            context={},
        )


def _text(resp: Any) -> str:
    try:
        return resp.text or ""
    except Exception:
        return ""
