"""One load-generator worker process: a share of the benchmark's sockets.

The coordinator (bench.ws_bench) starts a few of these so that receiving and
parsing deliveries is spread over cores, and drives them through a pipe with
small command dicts. Each command is answered with one dict:

    setup        -> connected   open and subscribe this worker's sockets
    step         -> sent        send this worker's share of one load step
    drain        -> result      wait (bounded) for this worker's expected deliveries
    quiet        -> quiet       wait (bounded) until no frame has arrived for a while
    counters     -> counters    bytes and frames received so far (by event type when asked)
    storm_start  -> started     at a given time: drop every storm socket at once, reconnect
                                each with resume (subscribe + last_id), senders sending throughout
    storm_status -> status      how many storm sockets are live again, pending, failed
    storm_stop   -> storm       stop sending; reconnect times, failures, the keys sent per room
    storm_check  -> accounting  wait (bounded) for the keys sent; exactly-once accounting
    reactions    -> reacted     a reaction storm: reaction.add/remove at a rate on given messages from
                                the sockets of their rooms (messages besides), then wait (bounded) for the acks
    reaction_check -> convergence wait (bounded) until every socket of those rooms holds the final summaries
    idle         -> idle_result heartbeats only, for a fixed time
    close        -> closed      close every socket, then the process exits

Sockets offer permessage-deflate as Chrome does (``permessage-deflate;
client_max_window_bits``, the ``websockets`` client's ``compression="deflate"``)
unless the setup says ``deflate: false``; the server decides, and each
socket records whether it was negotiated. Received frames are decompressed
by the library; the bytes counted on the wire are the compressed ones.

Every message body starts with ``tag|step|worker|k|send_ns|`` so any receiver
can compute send->receive latency and de-duplicate without asking anyone.
Everything here is bounded by a count or a deadline; the worker talks only to
the servers the coordinator started on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
from array import array
from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from multiprocessing.connection import Connection
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

# A send loop that falls this far behind its schedule gives up the rest of the step.
SEND_OVERRUN_S = 5.0
ERROR_SAMPLES = 5
DEFLATE = "permessage-deflate"
# After a drop, static/chat/chat.js waits a delay drawn from [ceiling/2, ceiling],
# ceiling = min(10 s, 0.5 s x 2^attempt), before it reconnects; the storm does the same.
BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 10.0
KEY_BITS = 40  # a message's key: worker << KEY_BITS | k
# A reaction's ref starts with this, so its acks and errors are never taken for a message.send's (client_id refs).
REACTION_REF = "r"


def key_name(key: int) -> str:
    """A message key as ``worker.k`` (readable in samples)."""
    return f"{key >> KEY_BITS}.{key & ((1 << KEY_BITS) - 1)}"


class CountingConnection(ClientConnection):
    """The library's client connection, counting the bytes that arrive on the wire (compressed; the handshake response
    included) and noting when they last arrived."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.bytes_in = 0
        self.arrived_ns = 0

    def data_received(self, data: bytes) -> None:
        # When the bytes reached this socket, before the library decodes them: one load process
        # plays thousands of browsers, and its own decoding backlog is not the server's latency.
        self.arrived_ns = time.time_ns()
        self.bytes_in += len(data)
        super().data_received(data)


def negotiated_deflate(ws: ClientConnection) -> bool:
    """Whether the server accepted the permessage-deflate offer on this socket."""
    return any(extension.name == DEFLATE for extension in ws.protocol.extensions)


class Client:
    __slots__ = (
        "idx", "room", "url", "token", "sender", "storm", "ws", "reader", "subscribed", "seen", "dups", "closed",
        "last_id", "deflate", "wire_base", "live_ns", "join_ms", "resumed", "failed", "views", "held", "rng",
    )  # fmt: skip

    def __init__(self, spec: dict[str, Any]) -> None:
        self.idx: int = spec["idx"]
        self.room: int = spec["room"]
        self.url: str = spec["url"]
        self.token: str = spec["token"]
        self.sender: bool = spec["sender"]
        self.storm: bool = spec.get("storm", False)  # dropped and resumed by a storm
        self.ws: ClientConnection | None = None
        self.reader: asyncio.Task | None = None
        self.subscribed = asyncio.Event()
        self.seen: set[int] = set()  # keys of this step's messages received
        self.dups: list[int] = []  # keys received again
        self.closed = False
        self.last_id: int = spec.get("last_id", 0)  # the newest message id of its room it has seen: where a resume starts
        self.deflate = False  # permessage-deflate negotiated on the current socket
        self.wire_base = 0  # bytes received by its earlier sockets
        self.live_ns = 0  # when its last `subscribed` arrived
        self.join_ms = 0.0  # handshake -> subscribed, of its last successful attempt
        self.resumed = 0  # messages replayed by its last subscribe
        self.failed = False  # a storm reconnect that gave up
        self.views: dict[int, View] = {}  # message id -> the reaction summary with the largest version received
        self.held: dict[int, set[str]] = {}  # message id -> the emoji this socket's user has on it (after its sends)
        self.rng = random.Random(self.idx)  # which emoji it toggles next: seeded, so a run can be repeated

    def wire_bytes(self) -> int:
        ws = self.ws
        return self.wire_base + (ws.bytes_in if isinstance(ws, CountingConnection) else 0)

    def forget_socket(self) -> ClientConnection | None:
        """Detach the current socket (its bytes stay counted) and stop reading it; return it."""
        ws, self.ws = self.ws, None
        if isinstance(ws, CountingConnection):
            self.wire_base += ws.bytes_in
        reader, self.reader = self.reader, None
        if reader is not None and not reader.done():
            reader.cancel()
        self.subscribed.clear()
        return ws


def exactly_once(
    sent: Mapping[int, Collection[int]], received: Iterable[tuple[int, Iterable[int]]], *, samples: int = ERROR_SAMPLES
) -> dict[str, Any]:
    """Every socket must have received every message sent to its room exactly once.

    ``sent``: room -> keys of the messages sent to it. ``received``: one
    (room, keys received, repeats included) per socket. Lost: owed and never
    received; repeated: received more than once (each extra copy counts);
    unexpected: received but not sent to that room in this window."""
    owed_sets = {room: set(keys) for room, keys in sent.items()}
    expected = delivered = lost = repeated = unexpected = sockets = 0
    lost_samples: list[dict[str, Any]] = []
    repeated_samples: list[dict[str, Any]] = []
    for socket_no, (room, keys) in enumerate(received):
        sockets += 1
        counts = Counter(keys)
        owed = owed_sets.get(room, set())
        expected += len(owed)
        for key in owed:
            n = counts.get(key, 0)
            if n == 0:
                lost += 1
                if len(lost_samples) < samples:
                    lost_samples.append({"socket": socket_no, "room": room, "message": key_name(key)})
                continue
            delivered += 1
            if n > 1:
                repeated += n - 1
                if len(repeated_samples) < samples:
                    repeated_samples.append({"socket": socket_no, "room": room, "message": key_name(key), "times": n})
        unexpected += sum(n for key, n in counts.items() if key not in owed)
    return {
        "sockets": sockets,
        "expected": expected,
        "delivered": delivered,
        "lost": lost,
        "repeated": repeated,
        "unexpected": unexpected,
        "lost_samples": lost_samples,
        "repeated_samples": repeated_samples,
        "exactly_once": lost == 0 and repeated == 0 and unexpected == 0,
    }


Summary = dict[str, tuple[int, tuple[int, ...]]]  # emoji -> (count, user ids, ascending)


class View:
    """A socket's newest ``reaction`` event of one message: the one with the largest ``version``."""

    __slots__ = ("version", "summary", "arrived_ns")

    def __init__(self, version: int, summary: Summary | None, arrived_ns: int) -> None:
        self.version = version
        self.summary = summary  # None: the event's summary was malformed (a count that is not its number of ids)
        self.arrived_ns = arrived_ns


def summary_of(reactions: Any) -> Summary | None:
    """A ``reaction`` event's ``reactions`` as emoji -> (count, user ids); None when it is malformed."""
    if not isinstance(reactions, list):
        return None
    out: Summary = {}
    for entry in reactions:
        if not isinstance(entry, dict):
            return None
        users = entry.get("user_ids")
        if not isinstance(users, list) or entry.get("count") != len(users) or entry.get("emoji") in out:
            return None
        out[str(entry.get("emoji"))] = (len(users), tuple(sorted(users)))
    return out


def reaction_convergence(
    views: Iterable[tuple[int, Mapping[int, View]]],
    messages: Mapping[int, Collection[int]],
    expected: Mapping[int, Summary],
    last_ack_ns: Mapping[int, int],
    *,
    samples: int = ERROR_SAMPLES,
) -> dict[str, Any]:
    """Whether each socket's newest summary of every reacted message of its room equals the final state.

    ``views``: one (room, message id -> View) per socket. ``messages``: room ->
    the reacted messages in it. ``expected``: message id -> the summary in the
    database after the last ack (an emoji nobody has any more is left out).
    ``last_ack_ns``: message id -> when its last reaction was acknowledged; a
    converged socket's time is the arrival of its final summary after that
    (the latest over its messages, at least 0)."""
    sockets = converged = 0
    converge_ms = array("d")
    mismatch_samples: list[dict[str, Any]] = []
    for socket_no, (room, held) in enumerate(views):
        owed = messages.get(room)
        if not owed:
            continue
        sockets += 1
        worst = 0.0
        ok = True
        for message_id in owed:
            view = held.get(message_id)
            want = expected.get(message_id, {})
            if view is None or view.summary != want:
                ok = False
                if len(mismatch_samples) < samples:
                    mismatch_samples.append(
                        {"socket": socket_no, "room": room, "message": message_id, "version": view.version if view else None,
                         "got": view.summary if view else None, "expected": want}
                    )  # fmt: skip
                break
            worst = max(worst, (view.arrived_ns - last_ack_ns.get(message_id, view.arrived_ns)) / 1e6)
        if ok:
            converged += 1
            converge_ms.append(max(0.0, worst))
    return {
        "sockets": sockets,
        "converged": converged,
        "converge_ms": converge_ms.tobytes(),
        "mismatch_samples": mismatch_samples,
    }


class Recorder:
    """What this worker's sockets received during the current step (and a few running totals)."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.step = -1
        self.reset()
        self.pongs = 0
        self.disconnects = 0
        self.resyncs = 0
        # Running totals, never reset (the coordinator takes differences).
        self.text_bytes = 0  # decompressed frame bytes
        self.frames_total = 0
        self.count_types = False  # also count events and bytes by event type (join phases: it costs a dumps per event)
        self.by_type: dict[str, list[int]] = {}

    def reset(self) -> None:
        self.latencies_ms = array("d")
        self.ack_latencies_ms = array("d")
        self.unique = 0
        self.duplicates = 0
        self.stale = 0  # deliveries of an earlier step that arrived late (or were replayed)
        self.foreign = 0  # message.new not sent by this run
        self.errors: Counter[str] = Counter()
        self.error_samples: list[dict[str, Any]] = []
        self.first_recv_ns = 0
        self.last_recv_ns = 0
        self.frames = 0
        self.batched_frames = 0
        self.reaction_ack_latencies_ms = array("d")
        self.reaction_acked = 0
        self.reaction_changed = 0
        self.reaction_errors = 0  # error frames answering this step's reactions
        self.reaction_last_ack_ns: dict[int, int] = {}  # message id -> its last reaction.ack of this step
        self.reaction_changed_by_message: Counter[int] = Counter()
        self.reaction_events = 0
        self.reaction_bytes = 0  # decompressed, the frame's share when several events came batched
        self.reaction_older = 0  # events older (smaller version) than one already received: kept out
        self.reaction_malformed = 0

    def on_text(self, client: Client, data: str | bytes) -> None:
        # The arrival of the socket's newest bytes: never earlier than this frame's own.
        now = getattr(client.ws, "arrived_ns", 0) or time.time_ns()
        self.frames += 1
        self.frames_total += 1
        self.text_bytes += len(data)
        parsed = orjson.loads(data)
        if isinstance(parsed, list):
            # The server may batch several events into one JSON array frame.
            self.batched_frames += 1
            events = parsed
        else:
            events = (parsed,)
        if self.count_types:
            self._count_types(events, len(data))
        for event in events:
            kind = event.get("type") if isinstance(event, dict) else None
            if kind == "message.new":
                self._on_message(client, event, now)
            elif kind == "message.ack":
                self._on_ack(event, now)
            elif kind == "reaction":
                self._on_reaction(client, event, now, len(data) if len(events) == 1 else len(orjson.dumps(event)))
            elif kind == "reaction.ack":
                self._on_reaction_ack(event, now)
            elif kind == "subscribed":
                client.resumed = int(event.get("resumed") or 0)
                client.live_ns = now
                client.subscribed.set()
            elif kind == "pong":
                self.pongs += 1
            elif kind == "resync":
                self.resyncs += 1
            elif kind == "error":
                self.errors[str(event.get("code"))] += 1
                if len(self.error_samples) < ERROR_SAMPLES:
                    self.error_samples.append(event)
                if str(event.get("ref") or "").startswith(f"{REACTION_REF}.{self.tag}.{self.step}."):
                    self.reaction_errors += 1

    def _count_types(self, events: Any, frame_bytes: int) -> None:
        single = len(events) == 1
        for event in events:
            kind = str(event.get("type")) if isinstance(event, dict) else "?"
            entry = self.by_type.setdefault(kind, [0, 0])
            entry[0] += 1
            entry[1] += frame_bytes if single else len(orjson.dumps(event))

    def _on_message(self, client: Client, event: dict[str, Any], now: int) -> None:
        message = event.get("message") or {}
        message_id = message.get("id")
        if isinstance(message_id, int) and message_id > client.last_id and message.get("room", client.room) == client.room:
            client.last_id = message_id
        body = message.get("body") or ""
        parts = body.split("|", 5)
        if len(parts) < 6 or parts[0] != self.tag:
            self.foreign += 1
            return
        if int(parts[1]) != self.step:
            self.stale += 1
            return
        key = (int(parts[2]) << KEY_BITS) | int(parts[3])
        if key in client.seen:
            self.duplicates += 1
            client.dups.append(key)
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

    def _on_reaction(self, client: Client, event: dict[str, Any], now: int, size: int) -> None:
        self.reaction_events += 1
        self.reaction_bytes += size
        message_id, version = event.get("message"), event.get("version")
        if not isinstance(message_id, int) or not isinstance(version, int):
            self.reaction_malformed += 1
            return
        summary = summary_of(event.get("reactions"))
        if summary is None:
            self.reaction_malformed += 1
        view = client.views.get(message_id)
        if view is not None and version < view.version:
            self.reaction_older += 1  # two processes' summaries crossed: the client keeps the newer one
            return
        client.views[message_id] = View(version, summary, now)

    def _on_reaction_ack(self, event: dict[str, Any], now: int) -> None:
        parts = str(event.get("ref") or "").split(".")
        if len(parts) != 6 or parts[0] != REACTION_REF or parts[1] != self.tag or parts[2] != str(self.step):
            return
        self.reaction_acked += 1
        self.reaction_ack_latencies_ms.append((now - int(parts[5])) / 1e6)
        message_id = event.get("message")
        if isinstance(message_id, int):
            self.reaction_last_ack_ns[message_id] = now
            if event.get("changed"):
                self.reaction_changed += 1
                self.reaction_changed_by_message[message_id] += 1


class Storm:
    """One reconnect storm in this worker: the sockets it dropped, the reconnects, the messages sent meanwhile."""

    def __init__(self, targets: list[Client], senders: list[Client]) -> None:
        self.targets = targets
        self.senders = senders
        self.keys: dict[int, list[int]] = {}  # room -> keys sent during the storm
        self.stop = asyncio.Event()
        self.failures: Counter[str] = Counter()
        self.samples: list[str] = []
        self.retries = 0
        self.drop_ns = 0
        self.task: asyncio.Task | None = None
        self.send_task: asyncio.Task | None = None
        self.reconnects: list[asyncio.Task] = []

    def live(self, client: Client) -> bool:
        return bool(self.drop_ns) and client.subscribed.is_set() and client.live_ns > self.drop_ns and client.ws is not None


class Worker:
    def __init__(self, conn: Connection, worker_id: int) -> None:
        self.conn = conn
        self.worker_id = worker_id
        self.clients: list[Client] = []
        self.recorder = Recorder(tag="")
        self.storm: Storm | None = None

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        handlers = {
            "setup": self.setup, "step": self.step, "drain": self.drain, "quiet": self.quiet, "counters": self.counters,
            "storm_start": self.storm_start, "storm_status": self.storm_status, "storm_stop": self.storm_stop,
            "storm_check": self.storm_check, "reactions": self.reactions, "reaction_check": self.reaction_check,
            "idle": self.idle, "close": self.close,
        }  # fmt: skip
        while True:
            command = await loop.run_in_executor(None, self.conn.recv)
            kind = command["cmd"]
            handler = handlers.get(kind)
            reply = await handler(command) if handler else {"error": f"unknown command {kind!r}"}
            self.conn.send(reply)
            if kind == "close":
                return

    # -- connect -----------------------------------------------------------

    async def setup(self, command: dict[str, Any]) -> dict[str, Any]:
        if self.recorder.tag != command["tag"]:
            self.recorder = Recorder(tag=command["tag"])
        new_clients = [Client(spec) for spec in command["clients"]]
        self.clients.extend(new_clients)  # setup may come in waves (idle mode, big room)
        open_timeout = command["open_timeout"]
        deflate = command.get("deflate", True)
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
                        await self.open_socket(client, open_timeout, deflate=deflate)
                        return
                    except Exception as exc:  # noqa: BLE001 - counted and reported, never fatal
                        failures[type(exc).__name__] += 1
                        if len(samples) < ERROR_SAMPLES:
                            samples.append(f"{type(exc).__name__}: {exc}"[:200])
                        ws = client.forget_socket()
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
        live = [c for c in new_clients if c.subscribed.is_set()]
        return {
            "connected": len(live),
            "failed": len(new_clients) - len(live),
            "retries": retries,
            "failures": dict(failures),
            "samples": samples,
            "seconds": time.monotonic() - started,
            "deflate_negotiated": sum(1 for c in live if c.deflate),
            "join_ms": array("d", (c.join_ms for c in live)).tobytes(),
        }

    async def open_socket(self, client: Client, open_timeout: float, *, deflate: bool, last_id: int | None = None) -> None:
        """Handshake (offering permessage-deflate unless ``deflate`` is false), then subscribe (resuming after ``last_id``)."""
        started = time.monotonic()
        client.subscribed.clear()
        client.ws = await connect(
            client.url,
            additional_headers={"Authorization": f"Bearer {client.token}"},
            open_timeout=open_timeout,
            close_timeout=2,
            ping_interval=None,  # the server pings; the client answers automatically
            # What Chrome offers: "permessage-deflate; client_max_window_bits". The server decides.
            compression="deflate" if deflate else None,
            max_size=2**22,
            create_connection=CountingConnection,
        )
        client.deflate = negotiated_deflate(client.ws)
        client.reader = asyncio.create_task(self.read_loop(client, client.ws))
        frame: dict[str, Any] = {"type": "subscribe", "room": client.room}
        if last_id is not None:
            frame["last_id"] = last_id
        await client.ws.send(orjson.dumps(frame), text=True)
        await asyncio.wait_for(client.subscribed.wait(), open_timeout)
        client.join_ms = (time.monotonic() - started) * 1000

    async def read_loop(self, client: Client, ws: ClientConnection) -> None:
        try:
            while True:
                # Bytes, not str: orjson parses UTF-8 itself, so skip the library's decode.
                self.recorder.on_text(client, await ws.recv(decode=False))
        except ConnectionClosed:
            pass
        finally:
            # A socket the server dropped after it was subscribed (not a failed attempt, not our close or drop).
            if client.ws is ws and not client.closed and client.subscribed.is_set():
                self.recorder.disconnects += 1
                client.closed = True

    # -- load steps --------------------------------------------------------

    def begin_step(self, step: int) -> None:
        self.recorder.step = step
        self.recorder.reset()
        for client in self.clients:
            client.seen = set()
            client.dups = []

    async def send_loop(
        self,
        senders: list[Client],
        *,
        rate: float,
        duration: float,
        size: int,
        stop: asyncio.Event | None = None,
        keys: dict[int, list[int]] | None = None,
    ) -> dict[str, Any]:
        """Send ``rate`` messages/s, evenly spaced, round-robin over ``senders``, for ``duration`` s (or until ``stop``).

        With ``keys``, the key of every message written is recorded per room."""
        recorder = self.recorder
        planned = int(rate * duration) if senders and rate > 0 else 0
        per_room: Counter[int] = Counter()
        send_errors = 0
        lag_max = 0.0
        t0 = time.monotonic()
        first_send_ns = time.time_ns()
        interval = 1.0 / rate if rate > 0 else 0.0
        k = 0
        tag, step, wid = recorder.tag, recorder.step, self.worker_id
        while k < planned and not (stop is not None and stop.is_set()):
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
                )
                key = (wid << KEY_BITS) | k
                k += 1
                ws = client.ws
                if ws is None:
                    send_errors += 1
                    continue
                try:
                    await ws.send(frame, text=True)
                except ConnectionClosed:
                    send_errors += 1
                    continue
                per_room[client.room] += 1
                if keys is not None:
                    keys.setdefault(client.room, []).append(key)
        return {
            "planned": planned if stop is None else k,
            "sent": sum(per_room.values()),
            "per_room": dict(per_room),
            "send_errors": send_errors,
            "lag_max_ms": lag_max * 1000,
            "send_seconds": time.monotonic() - t0,
            "first_send_ns": first_send_ns if planned else 0,
        }

    async def step(self, command: dict[str, Any]) -> dict[str, Any]:
        self.begin_step(command["step"])
        senders = [c for c in self.clients if c.sender and c.subscribed.is_set()]
        await asyncio.sleep(max(0.0, command["start_at"] - time.time()))
        return await self.send_loop(senders, rate=command["rate"], duration=command["duration"], size=command["size"])

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

    async def counters(self, command: dict[str, Any]) -> dict[str, Any]:
        """Running totals of what arrived: wire bytes (compressed), decompressed bytes, frames, by event type."""
        recorder = self.recorder
        if "count_types" in command:
            recorder.count_types = bool(command["count_types"])
        return {
            "wire_bytes": sum(c.wire_bytes() for c in self.clients),
            "text_bytes": recorder.text_bytes,
            "frames": recorder.frames_total,
            "by_type": {kind: list(v) for kind, v in recorder.by_type.items()},
            "live": sum(1 for c in self.clients if c.subscribed.is_set()),
        }

    # -- reconnect storm -----------------------------------------------------

    async def storm_start(self, command: dict[str, Any]) -> dict[str, Any]:
        """Schedule the storm and answer at once; storm_status follows it, storm_stop ends it."""
        self.begin_step(command["step"])
        targets = [c for c in self.clients if c.storm and c.subscribed.is_set() and c.ws is not None]
        senders = [c for c in self.clients if c.sender and not c.storm and c.subscribed.is_set()]
        self.storm = storm = Storm(targets, senders)
        storm.task = asyncio.create_task(self._storm(storm, command))
        return {"storm_sockets": len(targets), "senders": len(senders)}

    async def _storm(self, storm: Storm, command: dict[str, Any]) -> None:
        await asyncio.sleep(max(0.0, command["start_at"] - time.time()))
        # The senders keep sending from before the drop until storm_stop (bounded by max_seconds).
        storm.send_task = asyncio.create_task(
            self.send_loop(
                storm.senders, rate=command["rate"], duration=command["max_seconds"], size=command["size"],
                stop=storm.stop, keys=storm.keys,
            )
        )  # fmt: skip
        await asyncio.sleep(command["lead_s"])
        # Every storm socket at once, like a network drop: the TCP connection is aborted, no close frame.
        storm.drop_ns = time.time_ns()
        for client in storm.targets:
            ws = client.forget_socket()
            if ws is not None and ws.transport is not None:
                ws.transport.abort()
        semaphore = asyncio.Semaphore(command["concurrency"]) if command.get("concurrency") else None
        storm.reconnects = [asyncio.create_task(self._reconnect(storm, c, command, semaphore)) for c in storm.targets]
        if storm.reconnects:
            _, pending = await asyncio.wait(storm.reconnects, timeout=command["timeout"])
            for task in pending:
                task.cancel()
            if pending:
                storm.failures["storm_timeout"] += len(pending)
                await asyncio.wait(pending, timeout=5)

    async def _reconnect(self, storm: Storm, client: Client, command: dict[str, Any], semaphore: asyncio.Semaphore | None) -> None:
        """Reconnect as chat.js does: backoff with jitter, then subscribe with last_id (resume)."""
        base = command.get("backoff_s", BACKOFF_BASE_S)
        try:
            for attempt in range(1 + command.get("retries", 0)):
                if attempt:
                    storm.retries += 1
                if base > 0:
                    ceiling = min(BACKOFF_CAP_S, base * 2**attempt)
                    await asyncio.sleep(random.uniform(ceiling / 2, ceiling))
                try:
                    async with semaphore if semaphore is not None else contextlib.nullcontext():
                        await self.open_socket(client, command["open_timeout"], deflate=command["deflate"], last_id=client.last_id)
                    return
                except Exception as exc:  # noqa: BLE001 - counted and reported, never fatal
                    storm.failures[type(exc).__name__] += 1
                    if len(storm.samples) < ERROR_SAMPLES:
                        storm.samples.append(f"{type(exc).__name__}: {exc}"[:200])
                    ws = client.forget_socket()
                    if ws is not None and ws.transport is not None:
                        ws.transport.abort()
            client.failed = True
        except asyncio.CancelledError:
            client.failed = True
            raise

    async def storm_status(self, command: dict[str, Any]) -> dict[str, Any]:
        storm = self.storm
        if storm is None:
            return {"error": "no storm"}
        live = sum(1 for c in storm.targets if storm.live(c))
        failed = sum(1 for c in storm.targets if c.failed)
        return {
            "dropped": bool(storm.drop_ns),
            "live": live,
            "failed": failed,
            "pending": len(storm.targets) - live - failed,
            "done": bool(storm.drop_ns) and all(t.done() for t in storm.reconnects),
        }

    async def storm_stop(self, command: dict[str, Any]) -> dict[str, Any]:
        """Stop sending, end the storm (bounded); reconnect times and the keys sent per room."""
        storm = self.storm
        if storm is None:
            return {"error": "no storm"}
        storm.stop.set()
        sent: dict[str, Any] = {}
        for task in (storm.send_task, storm.task):
            if task is None:
                continue
            done, _ = await asyncio.wait([task], timeout=command.get("timeout", 20))
            if not done:
                task.cancel()
                await asyncio.wait([task], timeout=5)
            elif task is storm.send_task and not task.cancelled() and task.exception() is None:
                sent = task.result()
        back = [c for c in storm.targets if storm.live(c) and not c.failed]
        return {
            "storm_sockets": len(storm.targets),
            "drop_ns": storm.drop_ns,
            "reconnected": len(back),
            "failed": len(storm.targets) - len(back),
            "failures": dict(storm.failures),
            "samples": storm.samples,
            "retries": storm.retries,
            "reconnect_ms": array("d", ((c.live_ns - storm.drop_ns) / 1e6 for c in back)).tobytes(),
            "last_live_ns": max((c.live_ns for c in back), default=0),
            "resumed": sum(c.resumed for c in back),
            "deflate_negotiated": sum(1 for c in back if c.deflate),
            "sent": sent,
            "keys": storm.keys,
        }

    async def storm_check(self, command: dict[str, Any]) -> dict[str, Any]:
        """Wait (bounded) until every live socket has every key sent to its room; then account exactly once."""
        sent = {int(room): set(keys) for room, keys in command["keys"].items()}
        live = [c for c in self.clients if c.subscribed.is_set() and c.ws is not None and not c.failed]
        deadline = time.monotonic() + command["drain_s"]
        while time.monotonic() < deadline and not all(sent.get(c.room, set()) <= c.seen for c in live):
            await asyncio.sleep(0.05)
        await asyncio.sleep(command.get("settle_s", 0.5))  # a repeat may trail the first copy
        recorder = self.recorder
        result = exactly_once(sent, [(c.room, itertools.chain(c.seen, c.dups)) for c in live])
        result.update(
            {
                "storm_sockets_checked": sum(1 for c in live if c.storm),
                "stale": recorder.stale,
                "resyncs": recorder.resyncs,
                "errors": dict(recorder.errors),
                "error_samples": recorder.error_samples,
                "disconnects": recorder.disconnects,
                "latencies_ms": recorder.latencies_ms.tobytes(),
            }
        )
        return result

    # -- reaction storm ----------------------------------------------------

    async def reaction_loop(
        self, reactors: list[Client], messages: Mapping[int, list[int]], *, emoji: list[str], rate: float, duration: float
    ) -> dict[str, Any]:
        """Send ``rate`` reactions/s, evenly spaced, round-robin over ``reactors``, for ``duration`` s.

        Each socket's user picks one of its room's messages and one of its own
        first 1 + idx mod len(emoji) emoji (so counts differ per emoji) at
        random, and adds it if it does not have it, else removes it: a user can
        react as long as the step lasts, and the final state is no fixed pattern."""
        recorder = self.recorder
        planned = int(rate * duration) if reactors and rate > 0 else 0
        per_message: Counter[int] = Counter()
        send_errors = 0
        lag_max = 0.0
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
            while k < planned and t0 + k * interval <= now:
                client = reactors[k % len(reactors)]
                k += 1
                message_id = client.rng.choice(messages[client.room])
                chosen = client.rng.choice(emoji[: 1 + client.idx % len(emoji)])
                held = client.held.setdefault(message_id, set())
                ws = client.ws
                if ws is None:
                    send_errors += 1
                    continue
                kind = "reaction.remove" if chosen in held else "reaction.add"
                ref = f"{REACTION_REF}.{tag}.{step}.{wid}.{k}.{time.time_ns()}"
                try:
                    await ws.send(orjson.dumps({"type": kind, "message": message_id, "emoji": chosen, "ref": ref}), text=True)
                except ConnectionClosed:
                    send_errors += 1
                    continue
                # The server handles a socket's frames in order, so this is the user's state once all are handled.
                held.symmetric_difference_update((chosen,))
                per_message[message_id] += 1
        return {
            "planned": planned,
            "sent": sum(per_message.values()),
            "per_message": dict(per_message),
            "send_errors": send_errors,
            "lag_max_ms": lag_max * 1000,
            "send_seconds": time.monotonic() - t0,
            "first_send_ns": first_send_ns if planned else 0,
        }

    async def reactions(self, command: dict[str, Any]) -> dict[str, Any]:
        """A reaction storm on ``messages`` (room -> message ids) from the sockets of those rooms, with
        ``message_rate`` messages/s from the senders at the same time; then wait (bounded) for the reactions' acks."""
        self.begin_step(command["step"])
        messages = {int(room): list(ids) for room, ids in command["messages"].items()}
        reactors = [c for c in self.clients if c.room in messages and c.subscribed.is_set()]
        senders = [c for c in self.clients if c.sender and c.subscribed.is_set()]
        wire0 = sum(c.wire_bytes() for c in reactors)
        await asyncio.sleep(max(0.0, command["start_at"] - time.time()))
        duration = command["duration"]
        sent_messages, sent = await asyncio.gather(
            self.send_loop(senders, rate=command["message_rate"], duration=duration, size=command["size"]),
            self.reaction_loop(reactors, messages, emoji=command["emoji"], rate=command["rate"], duration=duration),
        )
        recorder = self.recorder
        deadline = time.monotonic() + command["ack_timeout"]
        while recorder.reaction_acked + recorder.reaction_errors < sent["sent"] and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        # What the users hold once every sent reaction is handled, per message and emoji (the database must agree).
        model: dict[int, Counter[str]] = {}
        for client in reactors:
            for message_id, held in client.held.items():
                model.setdefault(message_id, Counter()).update(held)
        return {
            "messages": sent_messages,
            "reactions": {
                **sent,
                "reactors": len(reactors),
                "acked": recorder.reaction_acked,
                "changed": recorder.reaction_changed,
                "changed_by_message": dict(recorder.reaction_changed_by_message),
                "errors": recorder.reaction_errors,
                "ack_latencies_ms": recorder.reaction_ack_latencies_ms.tobytes(),
                "last_ack_ns": dict(recorder.reaction_last_ack_ns),
                "model": {message_id: dict(counts) for message_id, counts in model.items()},
                "wire_bytes_start": wire0,
            },
        }

    async def reaction_check(self, command: dict[str, Any]) -> dict[str, Any]:
        """Wait until ``deadline_ns`` (wall clock) at most for every socket of the reacted rooms to hold the final summary
        of each of their messages; then, after ``settle_s`` (a later event must not undo it), account for convergence."""
        messages = {int(room): list(ids) for room, ids in command["messages"].items()}
        expected = {int(m): summary for m, summary in command["expected"].items()}
        last_ack_ns = {int(m): ns for m, ns in command["last_ack_ns"].items()}
        watched = [c for c in self.clients if c.room in messages and c.subscribed.is_set() and c.ws is not None]

        def check() -> dict[str, Any]:
            return reaction_convergence([(c.room, c.views) for c in watched], messages, expected, last_ack_ns)

        while time.time_ns() < command["deadline_ns"] and check()["converged"] < len(watched):
            await asyncio.sleep(0.02)
        await asyncio.sleep(command.get("settle_s", 0.3))
        recorder = self.recorder
        return {
            **check(),
            "events": recorder.reaction_events,
            "bytes": recorder.reaction_bytes,
            "older": recorder.reaction_older,
            "malformed": recorder.reaction_malformed,
            "wire_bytes_end": sum(c.wire_bytes() for c in watched),
        }

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
        storm = self.storm
        if storm is not None:
            storm.stop.set()
            tasks = [t for t in (storm.task, storm.send_task, *storm.reconnects) if t is not None and not t.done()]
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks, timeout=5)
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
