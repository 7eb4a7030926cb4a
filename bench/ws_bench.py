"""Real-time benchmark: WebSocket fan-out through real server processes.

    python -m bench.ws_bench --rooms 100 --clients-per-room 20 --senders 100 \
        --target both --ramp --processes 1,2 --json var/bench-ws.json

Prepares users, tokens and rooms in DATABASE_URL, starts the server processes
itself on 127.0.0.1, opens every socket, subscribes each to its room, offers
``--rate`` messages/s spread evenly over the senders, and measures what every
receiver got: deliveries/s, loss, send->receive latency, server CPU and RSS.
``--ramp`` steps the offered rate up to find the sustainable rate (every
message arrives and p99 <= --p99-limit). ``--target both`` measures the naive
tutorial-style consumer (bench/reference_consumer.py, served by
bench/reference_asgi.py) and ours in the same invocation and prints the ratio;
``--bare`` adds the ceiling, a bare ``websockets`` broadcast server
(bench/bare_broadcast.py), and prints every configuration's deliveries/s as a
ratio to it. The clients offer permessage-deflate as browsers do (with
``--no-deflate`` they do not); the server decides, and the report says how
many sockets negotiated it.
``--storm N`` drops N subscribed sockets at once and measures their resumed
reconnect (time until all are live again, exactly-once delivery across it);
``--big-room N`` puts N sockets in one room (join time, presence bytes per
join at two sizes, delivery at ``--big-room-rate``). ``--reactions`` runs a
reaction storm on a few messages (acks, coalesced ``reaction`` events per
socket, convergence on the database's final state, a few messages besides).
``--idle N`` holds N
mostly-idle sockets and reports RSS per connection and idle CPU. See
bench/README.md.

Every loop here ends by count or deadline, and all traffic goes to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import logging
import math
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from array import array
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import orjson

from bench import service_urls

from bench.ws_servers import BARE_APP, CHAT_APP, Sampler, base_env, raise_nofile_limit, run_servers

PATHS = {"ours": "/ws/", "reference": "/ws/reference/", "bare": "/ws/"}
# The ASGI application each target's servers run: the reference route exists only in the benchmark's own.
# The bare target is no ASGI application: bench.bare_broadcast is a websockets server of its own.
APPS = {"ours": CHAT_APP, "reference": "bench.reference_asgi:application", "bare": BARE_APP}

# Where the reference consumer runs. "tutorial" is the deployment the Channels
# tutorial teaches, which the issue's 800/s was measured on: daphne and
# RedisChannelLayer with channels_redis's defaults (capacity 100, expiry 60 s,
# group expiry 1 day), and Redis connections as redis-py had them when the
# tutorial was written (no socket read timeout, a pool larger than the sockets).
# redis-py 8's new defaults break that layer whatever the consumer: a 5 s read
# timeout under its 5 s BZPOPMIN (consumers die while idle, channels_redis#422)
# and a pool of 100 (MaxConnectionsError in a subscribe storm);
# "tutorial-defaults" keeps them, to show it. "ours" puts the same consumer on
# our server and layer (uvicorn, the pub/sub layer), which isolates what the
# consumer itself costs.
_TUTORIAL_LAYER = {
    "CHANNEL_LAYER": "core",
    "CHANNEL_LAYER_CAPACITY": "100",
    "CHANNEL_LAYER_EXPIRY": "60",
    "CHANNEL_LAYER_GROUP_EXPIRY": "86400",
}
REFERENCE_STACKS: dict[str, dict[str, Any]] = {
    "tutorial": {
        "server": "daphne",
        "env": {**_TUTORIAL_LAYER, "CHANNEL_LAYER_MAX_CONNECTIONS": "10000", "CHANNEL_LAYER_SOCKET_TIMEOUT": "3600"},
    },
    "tutorial-defaults": {
        "server": "daphne",
        "env": {**_TUTORIAL_LAYER, "CHANNEL_LAYER_MAX_CONNECTIONS": "0", "CHANNEL_LAYER_SOCKET_TIMEOUT": "0"},
    },
    "ours": {"server": None, "env": {}},  # None: --server, like ours
}


def run_label(target: str, stack: str | None) -> str:
    if target == "bare":
        return "bare websockets"
    return f"reference ({stack} stack)" if stack else target


@dataclass
class Options:
    rooms: int = 100
    clients_per_room: int = 20
    senders: int = 100
    rate: float = 400.0
    size: int = 100
    duration: float = 5.0
    processes: list[int] = field(default_factory=lambda: [1])
    server: str = "uvicorn"
    compression: str = "deflate"  # what the clients offer; the server decides
    target: str = "ours"
    bare: bool = False  # also run the bare websockets server (the ceiling)
    load: bool = True  # the load runs (--no-load: only --storm / --big-room / --reactions)
    reference_stacks: list[str] = field(default_factory=lambda: ["tutorial"])
    ramp: bool = False
    ramp_start: float = 20.0
    ramp_factor: float = 1.5
    ramp_max_steps: int = 10
    ramp_refine: int = 2
    warmup: float = 2.0
    confirm: int = 1
    idle: int = 0
    heartbeat: float = 20.0
    storm: int = 0  # sockets dropped at once and resumed
    storm_rate: float = 20.0  # messages/s sent throughout the storm (and in the step before it)
    storm_pre: float = 2.0  # seconds of traffic before the storm, all delivered
    storm_lead: float = 1.0  # seconds of sending before the drop
    storm_tail: float = 1.0  # seconds of sending after every socket is live again
    storm_timeout: float = 60.0  # reconnects still pending then are failures
    storm_backoff: float = 0.5  # chat.js's first reconnect ceiling; 0: reconnect at once
    storm_concurrency: int = 0  # handshakes in flight at once, over all load processes; 0: no limit (browsers have none)
    storm_target: float = 10.0  # seconds within which every socket should be live again
    big_room: int = 0  # sockets in one room
    big_room_rate: float = 2.0  # messages/s sent to it
    big_room_senders: int = 2
    big_room_probe_at: int = 500  # the smaller room size where bytes per join are measured (the other: --big-room)
    big_room_probe: int = 20  # sockets joined (and measured) at each probe
    # People join a big room each from their own browser: no shared limit but the server's listen backlog.
    big_room_concurrency: int = 500
    reactions: bool = False  # a reaction storm on ours, at the largest --processes
    reaction_rate: float = 200.0  # reactions/s offered in total
    reaction_duration: float = 10.0  # seconds of reacting
    reaction_messages: int = 1  # messages reacted to, one per room over the first rooms (round-robin beyond)
    reaction_message_rate: float = 5.0  # messages/s sent meanwhile, all of which must arrive
    reaction_deadline: float = 5.0  # seconds after the last ack within which every socket must hold the final summary
    p99_limit_ms: float = 50.0
    drain: float = 5.0
    client_procs: int = 2
    connect_concurrency: int = 50
    connect_timeout: float = 300.0  # 10,000 idle sockets took 150 s to open on a slow machine
    connect_retries: int = 2
    profile_dir: str | None = None
    settings_module: str = "chatsite.settings.production"
    json: str | None = None
    quiet: bool = False


# -- worker processes ---------------------------------------------------------


class Workers:
    """The load-generator processes and their pipes."""

    def __init__(self, count: int) -> None:
        from bench.ws_client import worker_main

        ctx = multiprocessing.get_context("spawn")
        self.pipes: list[Connection] = []
        self.procs: list[multiprocessing.process.BaseProcess] = []
        for i in range(count):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=worker_main, args=(child, i), name=f"ws-bench-client-{i}", daemon=True)
            proc.start()
            child.close()
            self.pipes.append(parent)
            self.procs.append(proc)
        # Wait until every process has imported its modules: that start-up CPU is not the load generator's work.
        self.ask([{"cmd": "counters"}] * count, timeout=120)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.pid is not None]

    def ask(self, commands: list[dict[str, Any]], timeout: float) -> list[dict[str, Any]]:
        """Send one command to each worker; wait (bounded) for every reply."""
        for pipe, command in zip(self.pipes, commands):
            pipe.send(command)
        deadline = time.monotonic() + timeout
        replies = []
        for i, pipe in enumerate(self.pipes):
            if not pipe.poll(max(0.0, deadline - time.monotonic())):
                raise TimeoutError(f"load worker {i} did not answer {commands[i]['cmd']!r} within {timeout:.0f}s")
            replies.append(pipe.recv())
        return replies

    def close(self) -> None:
        try:
            self.ask([{"cmd": "close"}] * len(self.pipes), timeout=40)
        except (TimeoutError, OSError, EOFError):
            pass
        for proc in self.procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)


# -- statistics ---------------------------------------------------------------


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an ascending list (None when empty)."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return round(sorted_values[rank - 1], 2)


def latency_summary(chunks: list[bytes]) -> dict[str, float | None]:
    values = array("d")
    for chunk in chunks:
        values.frombytes(chunk)
    ordered = sorted(values)
    return {
        "p50": percentile(ordered, 50),
        "p95": percentile(ordered, 95),
        "p99": percentile(ordered, 99),
        "max": round(ordered[-1], 2) if ordered else None,
        "count": len(ordered),
    }


def expected_deliveries(per_room_sent: dict[int, int], subscribers: dict[int, int]) -> int:
    """Every message is due once to every subscribed socket of its room, the sender's included."""
    return sum(n * subscribers.get(room, 0) for room, n in per_room_sent.items())


MIN_CPU_WINDOW_S = 0.5


class Meter:
    """Exact CPU of the servers and of the load generator over a window (the kernel's counters, not samples)."""

    def __init__(self, sampler: Sampler) -> None:
        self.sampler = sampler
        self.wall0, self.t0 = time.time(), time.monotonic()
        self.server0, self.client0 = sampler.cpu_seconds(), sampler.client_cpu_seconds()

    def stop(self) -> dict[str, Any]:
        seconds = max(1e-6, time.monotonic() - self.t0)
        server = self.sampler.cpu_seconds() - self.server0
        client = self.sampler.client_cpu_seconds() - self.client0
        return {
            "seconds": round(seconds, 2),
            "server_cpu_s": round(server, 2),
            "client_cpu_s": round(client, 2),
            # A window of a few milliseconds (a handful of sockets) gives no meaningful percentage.
            "server_cpu_pct": round(100 * server / seconds, 1) if seconds >= MIN_CPU_WINDOW_S else None,
            "client_cpu_pct": round(100 * client / seconds, 1) if seconds >= MIN_CPU_WINDOW_S else None,
            "system_cpu_pct": self.sampler.window(self.wall0, time.time()).get("system_cpu_pct"),
        }


def cpu_text(res: dict[str, Any] | None) -> str:
    """Server and load-generator CPU, as the log lines print them."""
    if not res:
        return "cpu -"
    return (
        f"srvCPU {_fmt(res.get('server_cpu_pct'))}%, cliCPU {_fmt(res.get('client_cpu_pct'))}% "
        f"(load generator), sys {_fmt(res.get('system_cpu_pct'))}%"
    )


# -- one target (reference or ours) at one process count -------------------------


@dataclass
class Plan:
    """Who connects where: client j is in room j // C, uses user j, talks to server (j % C) % P."""

    specs: list[list[dict[str, Any]]]  # per worker
    subscribers: dict[int, int]  # room id -> sockets planned in it
    senders_per_worker: list[int]


def make_plan(opts: Options, room_ids: list[int], tokens: list[str], ports: list[int], path: str) -> Plan:
    rooms, per_room = len(room_ids), opts.clients_per_room
    senders = {(i % rooms) * per_room + i // rooms for i in range(opts.senders)}
    specs: list[list[dict[str, Any]]] = [[] for _ in range(opts.client_procs)]
    subscribers: dict[int, int] = {}
    for j in range(rooms * per_room):
        room = room_ids[j // per_room]
        port = ports[(j % per_room) % len(ports)]  # each room spans every server process
        specs[j % opts.client_procs].append(
            {"idx": j, "room": room, "url": f"ws://127.0.0.1:{port}{path}", "token": tokens[j], "sender": j in senders}
        )
        subscribers[room] = subscribers.get(room, 0) + 1
    return Plan(
        specs=specs,
        subscribers=subscribers,
        senders_per_worker=[sum(1 for s in worker if s["sender"]) for worker in specs],
    )


def storm_plan(opts: Options, room_ids: list[int], tokens: list[str], ports: list[int], path: str) -> Plan:
    """``--storm`` sockets spread over the rooms, plus one sender socket in each of the first rooms.

    The senders are not dropped: they keep sending while the others reconnect."""
    rooms = room_ids[: max(1, min(len(room_ids), opts.storm))]
    n_senders = max(1, min(opts.senders, len(rooms)))
    specs: list[list[dict[str, Any]]] = [[] for _ in range(opts.client_procs)]
    subscribers: dict[int, int] = {}
    for j in range(opts.storm + n_senders):
        sender = j >= opts.storm
        room = rooms[(j - opts.storm) if sender else j % len(rooms)]
        specs[j % opts.client_procs].append(
            {"idx": j, "room": room, "url": f"ws://127.0.0.1:{ports[j % len(ports)]}{path}", "token": tokens[j],
             "sender": sender, "storm": not sender}
        )  # fmt: skip
        subscribers[room] = subscribers.get(room, 0) + 1
    return Plan(
        specs=specs, subscribers=subscribers, senders_per_worker=[sum(1 for s in w if s["sender"]) for w in specs]
    )


def big_room_plan(opts: Options, room: int, tokens: list[str], ports: list[int], path: str) -> tuple[Plan, list[dict[str, Any]]]:
    """``--big-room`` sockets in one room; the first ``--big-room-senders`` of them send. Also every spec in join order."""
    senders = max(1, min(opts.big_room_senders, opts.big_room))
    ordered = [
        {"idx": j, "room": room, "url": f"ws://127.0.0.1:{ports[j % len(ports)]}{path}", "token": tokens[j], "sender": j < senders}
        for j in range(opts.big_room)
    ]
    specs: list[list[dict[str, Any]]] = [[] for _ in range(opts.client_procs)]
    for spec in ordered:
        specs[spec["idx"] % opts.client_procs].append(spec)
    plan = Plan(specs=specs, subscribers={room: opts.big_room}, senders_per_worker=[sum(1 for s in w if s["sender"]) for w in specs])
    return plan, ordered


def big_room_phases(opts: Options) -> list[tuple[str, int, int]]:
    """Join phases (kind, from, to) over the socket indexes: fill, then a probe of ``--big-room-probe`` sockets at each size.

    The sizes are ``--big-room-probe-at`` (when smaller than the room) and ``--big-room``."""
    total, probe = opts.big_room, max(1, min(opts.big_room_probe, opts.big_room))
    sizes = sorted({size for size in (opts.big_room_probe_at, total) if probe <= size <= total})
    phases: list[tuple[str, int, int]] = []
    at = 0
    for size in sizes:
        if size - probe > at:
            phases.append(("fill", at, size - probe))
        phases.append(("probe", max(at, size - probe), size))
        at = size
    return phases


def ramp_rates(opts: Options) -> list[float]:
    if not opts.ramp:
        return [opts.rate]
    rates, rate = [], opts.ramp_start
    while len(rates) < opts.ramp_max_steps and rate <= opts.rate:
        rates.append(round(rate, 1))
        rate *= opts.ramp_factor
    return rates


def server_env(opts: Options, database_url: str, redis_url: str, **extra: str) -> dict[str, str]:
    return base_env(
        **extra,
        DJANGO_SETTINGS_MODULE=opts.settings_module,
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        SECRET_KEY=os.environ.get("SECRET_KEY") or "ws-bench-only-" + uuid.uuid4().hex,
        SECURE_SSL_REDIRECT="0",
        DEBUG="0",
        # 100 senders at several messages/s each are a load test, not abuse: the
        # per-user limit would refuse them (error frames counted as lost) past ~5/s.
        RATE_LIMIT_MESSAGES=os.environ.get("BENCH_RATE_LIMIT_MESSAGES", "100000/60"),
        # A reaction storm from a room's 20 users is several reactions/s each, past the default 300/60.
        RATE_LIMIT_REACTIONS=bench_reaction_limit(),
    )


def bench_reaction_limit() -> str:
    """The per-user reaction limit the benchmark's servers run with (BENCH_RATE_LIMIT_REACTIONS overrides it)."""
    return os.environ.get("BENCH_RATE_LIMIT_REACTIONS", "100000/60")


def clear_channel_layer(redis_url: str) -> int:
    """Delete the channel layer's keys, so groups of servers from earlier runs do not linger."""
    import redis
    from django.conf import settings

    prefix = settings.CHANNEL_LAYERS["default"].get("CONFIG", {}).get("prefix", "asgi")
    client = redis.Redis.from_url(redis_url)
    deleted = 0
    try:
        batch = []
        for key in client.scan_iter(match=f"{prefix}*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                deleted += client.delete(*batch)
                batch = []
        if batch:
            deleted += client.delete(*batch)
    finally:
        client.close()
    return deleted


def py_spy_binary() -> str:
    beside = Path(sys.executable).parent / "py-spy"
    found = str(beside) if beside.exists() else shutil.which("py-spy")
    if not found:
        raise RuntimeError("--profile-dir needs py-spy (pip install -r requirements-dev.txt)")
    return found


def connect_summary(
    specs: list[list[dict[str, Any]]], replies: list[dict[str, Any]], opts: Options, resources: dict[str, Any]
) -> dict[str, Any]:
    failures: dict[str, int] = {}
    for reply in replies:
        for name, n in reply["failures"].items():
            failures[name] = failures.get(name, 0) + n
    return {
        "requested": sum(len(s) for s in specs),
        "connected": sum(r["connected"] for r in replies),
        "failed": sum(r["failed"] for r in replies),
        "retries": sum(r["retries"] for r in replies),
        "failures": failures,
        "failure_samples": [s for r in replies for s in r["samples"]][:5],
        "seconds": round(max(r["seconds"] for r in replies), 2),
        # Offered by the clients unless --no-deflate; whether a socket has it is the server's answer.
        "deflate_offered": opts.compression == "deflate",
        "deflate_negotiated": sum(r["deflate_negotiated"] for r in replies),
        "join_ms": latency_summary([r["join_ms"] for r in replies]),
        "resources": resources,
    }


def sockets_text(sockets: dict[str, Any]) -> str:
    """One log line: connected, deflate, join time, CPU while connecting."""
    offered = "offered" if sockets.get("deflate_offered") else "not offered (--no-deflate)"
    join = sockets.get("join_ms") or {}
    return (
        f"sockets: {sockets['connected']}/{sockets['requested']} connected in {sockets['seconds']:.1f}s "
        f"(join p50 {_fmt(join.get('p50'))} ms, p99 {_fmt(join.get('p99'))} ms); "
        f"permessage-deflate {offered}, negotiated by {sockets.get('deflate_negotiated', 0)}/{sockets['connected']}; "
        f"{cpu_text(sockets.get('resources'))}"
    )


class Run:
    def __init__(
        self, opts: Options, target: str, processes: int, database_url: str, redis_url: str, fixture: Any, stack: str | None = None
    ) -> None:
        self.opts, self.target = opts, target
        self.processes = 1 if target == "bare" else processes  # the bare server's rooms live in its one process
        self.stack = stack  # the reference's stack (REFERENCE_STACKS); None for ours
        spec = REFERENCE_STACKS[stack or "ours"]
        self.server, self.stack_env = "bare" if target == "bare" else spec["server"] or opts.server, spec["env"]
        self.database_url, self.redis_url, self.fixture = database_url, redis_url, fixture
        self.tag = uuid.uuid4().hex[:12]
        self.idle_cpu_s_per_s = 0.0
        self.server_pids: list[int] = []

    @property
    def label(self) -> str:
        return run_label(self.target, self.stack)

    def log(self, text: str) -> None:
        if not self.opts.quiet:
            print(text, flush=True)

    def execute(self) -> dict[str, Any]:
        opts = self.opts
        clear_channel_layer(self.redis_url)
        env = server_env(opts, self.database_url, self.redis_url, **self.stack_env)
        result: dict[str, Any] = {
            "target": self.target, "stack": self.stack, "server": self.server, "app": APPS[self.target],
            "layer": self.layer(env), "server_deflate": self.deflate_setting(env), "processes": self.processes, "steps": [],
        }  # fmt: skip
        self.log(
            f"\n== {self.label}: {self.server} x{self.processes}, {result['layer']} layer, "
            f"{opts.rooms} rooms x {opts.clients_per_room} sockets, {opts.senders} senders"
        )
        with run_servers(server=self.server, count=self.processes, env=env, app=APPS[self.target]) as servers:
            self.server_pids = [s.proc.pid for s in servers]
            plan = make_plan(opts, self.fixture.room_ids[: opts.rooms], self.fixture.tokens, [s.port for s in servers], PATHS[self.target])
            workers = Workers(opts.client_procs)
            try:
                with Sampler(server_pids=[s.proc.pid for s in servers], client_pids=workers.pids) as sampler:
                    result["server_rss_idle_mb"] = round(sampler.rss_now() / 2**20, 1)
                    profilers = self.start_profilers("connect", None)
                    try:
                        result["sockets"] = self.connect(workers, plan.specs, sampler)
                    finally:
                        self.stop_profilers(profilers, interrupt=True)
                    self.log(f"   {sockets_text(result['sockets'])}; server RSS {sampler.rss_now() / 2**20:.0f} MB")
                    if result["sockets"]["connected"] == 0:
                        result["error"] = "no socket connected"
                        return result
                    self.idle_cpu_s_per_s = self.measure_idle_cpu(sampler)
                    result["server_idle_cpu_pct"] = round(100 * self.idle_cpu_s_per_s, 1)
                    self.ramp(workers, plan, sampler, result)
            finally:
                workers.close()
                for s in servers:
                    if s.proc.poll() is not None:
                        result.setdefault("server_exits", []).append({"code": s.proc.returncode, "log": s.log_tail()})
        return result

    def deflate_setting(self, env: dict[str, str]) -> str:
        """What decides permessage-deflate on the server side: the benchmark passes no flag, so the server's own default or WS_DEFLATE."""
        if self.server == "uvicorn":
            return f"WS_DEFLATE={env['WS_DEFLATE']}" if "WS_DEFLATE" in env else "chatsite.server's default"
        return {"daphne": "daphne's default", "bare": "websockets' default (a zlib context per socket)"}.get(self.server, "?")

    def layer(self, env: dict[str, str]) -> str:
        return "none (one process)" if self.target == "bare" else env.get("CHANNEL_LAYER", "pubsub")

    @staticmethod
    def measure_idle_cpu(sampler: Sampler, seconds: float = 2.0) -> float:
        """Server CPU seconds per second with every socket open and no traffic (keepalives, timers)."""
        time.sleep(1.0)  # the last subscribe's work settles
        c0, t0 = sampler.cpu_seconds(), time.monotonic()
        time.sleep(seconds)
        return max(0.0, (sampler.cpu_seconds() - c0) / (time.monotonic() - t0))

    def connect(
        self,
        workers: Workers,
        specs: list[list[dict[str, Any]]],
        sampler: Sampler,
        join_ms: list[bytes] | None = None,
        concurrency: int | None = None,
    ) -> dict[str, Any]:
        """Open and subscribe the sockets of ``specs`` (one list per load process); what it took.

        With ``join_ms``, every socket's handshake -> subscribed time is added to it (raw, for percentiles over phases).
        ``concurrency``: handshakes in flight at once over all load processes (default --connect-concurrency)."""
        opts = self.opts
        concurrency = max(1, (concurrency or opts.connect_concurrency) // opts.client_procs)
        meter = Meter(sampler)
        replies = workers.ask(
            [
                {
                    "cmd": "setup",
                    "tag": self.tag,
                    "clients": worker_specs,
                    "concurrency": concurrency,
                    "open_timeout": 30.0,
                    "phase_timeout": opts.connect_timeout,
                    "retries": opts.connect_retries,
                    "deflate": opts.compression == "deflate",
                }
                for worker_specs in specs
            ],
            timeout=opts.connect_timeout + 30,
        )
        if join_ms is not None:
            join_ms.extend(r["join_ms"] for r in replies)
        return connect_summary(specs, replies, opts, meter.stop())

    def ramp(self, workers: Workers, plan: Plan, sampler: Sampler, result: dict[str, Any]) -> None:
        """Warm up, then run the load steps; with --ramp, find the sustainable rate."""
        opts = self.opts
        rates = ramp_rates(opts)
        self.log(step_header())
        self.step_no = 0
        if opts.warmup > 0:
            # The first seconds of traffic pay one-time costs (connections,
            # caches) that would fail the first step on latency alone.
            warmup = self.step(workers, plan, sampler, rates[0], duration=opts.warmup)
            result["warmup"] = warmup
            self.log(step_row(warmup, label="warm"))
            self.quiet(workers)
        passed: float | None = None
        failed: float | None = None
        for rate in rates:
            if self.checked_step(workers, plan, sampler, rate, result):
                passed = rate
            else:
                failed = rate
                break
        if opts.ramp and failed is not None:
            for _ in range(opts.ramp_refine):
                low = passed or 0.0
                if failed - low < max(1.0, 0.05 * failed):
                    break
                rate = round(math.sqrt(low * failed) if low else failed / 2, 1)
                if self.checked_step(workers, plan, sampler, rate, result):
                    passed = rate
                else:
                    failed = rate
        if opts.ramp:
            result["sustainable"] = {
                "rate": passed or 0.0,
                "deliveries_per_s": next((s["offered_deliveries_per_s"] for s in result["steps"] if s["offered_rate"] == passed and s["ok"]), 0.0),
                "first_failing_rate": failed,
                "subscribers_per_room": sum(plan.subscribers.values()) / max(1, len(plan.subscribers)),
            }

    def checked_step(self, workers: Workers, plan: Plan, sampler: Sampler, rate: float, result: dict[str, Any]) -> bool:
        """One load step at ``rate``. A step that lost nothing but failed on latency
        alone is run once more (the machine is shared; one noisy moment should not
        decide); loss is never retried."""
        for attempt in range(1 + self.opts.confirm):
            if result["steps"] and not result["steps"][-1]["ok"]:
                self.quiet(workers)
            step = self.step(workers, plan, sampler, rate)
            step["attempt"] = attempt + 1
            result["steps"].append(step)
            self.log(step_row(step))
            if step["ok"] or step["lost"] or step["errors"] or not step["generator_kept_up"]:
                return bool(step["ok"])
        return False

    def quiet(self, workers: Workers, seconds: float = 15.0, quiet_s: float = 1.0) -> None:
        """After an overloaded step, wait (bounded) until late deliveries stop arriving (no frame for ``quiet_s``)."""
        time.sleep(1.0)
        workers.ask([{"cmd": "quiet", "quiet_s": quiet_s, "timeout": seconds}] * len(workers.pipes), timeout=seconds + 10)

    def start_profilers(self, label: str, duration: float | None) -> list[subprocess.Popen]:
        """py-spy on every server process (raw collapsed stacks, see bench.ws_profile).

        With a duration it stops by itself; without one, stop_profilers ends it."""
        if not self.opts.profile_dir:
            return []
        out = Path(self.opts.profile_dir)
        out.mkdir(parents=True, exist_ok=True)
        procs = []
        for i, pid in enumerate(self.server_pids):
            path = out / f"{self.target}{'-' + self.stack if self.stack else ''}-p{self.processes}-{label}-server{i}.txt"
            limit = ["--duration", str(max(1, int(duration)))] if duration else []
            procs.append(
                subprocess.Popen(
                    [py_spy_binary(), "record", "--pid", str(pid), *limit,
                     "--rate", "100", "--format", "raw", "--threads", "--idle", "--nonblocking", "--output", str(path)],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )  # fmt: skip
        return procs

    @staticmethod
    def stop_profilers(procs: list[subprocess.Popen], *, interrupt: bool) -> None:
        for proc in procs:
            if interrupt and proc.poll() is None:
                proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)

    def step(
        self, workers: Workers, plan: Plan, sampler: Sampler, rate: float, duration: float | None = None
    ) -> dict[str, Any]:
        opts = self.opts
        measured = duration is None
        duration = duration or opts.duration
        step_no = self.step_no
        self.step_no += 1
        start_at = time.time() + 0.5
        commands = [
            {
                "cmd": "step",
                "step": step_no,
                "rate": rate * n / max(1, sum(plan.senders_per_worker)),
                "start_at": start_at,
                "duration": duration,
                "size": opts.size,
            }
            for n in plan.senders_per_worker
        ]
        cpu0, wall0 = sampler.cpu_seconds(), time.monotonic()
        profilers = self.start_profilers(f"step{step_no}", duration) if measured else []
        try:
            sent = workers.ask(commands, timeout=duration + 30)
        finally:
            self.stop_profilers(profilers, interrupt=False)
        send_end = time.time()
        per_room: dict[int, int] = {}
        for reply in sent:
            for room, n in reply["per_room"].items():
                per_room[int(room)] = per_room.get(int(room), 0) + n
        drained = workers.ask(
            [{"cmd": "drain", "per_room": per_room, "drain_s": opts.drain}] * len(workers.pipes),
            timeout=opts.drain + 30,
        )
        cpu_used = sampler.cpu_seconds() - cpu0
        cpu_net = max(0.0, cpu_used - self.idle_cpu_s_per_s * (time.monotonic() - wall0))
        expected = sum(r["expected"] for r in drained)
        delivered = sum(r["unique"] for r in drained)
        latency = latency_summary([r["latencies_ms"] for r in drained])
        acks = latency_summary([r["ack_latencies_ms"] for r in drained])
        first_send = min((r["first_send_ns"] for r in sent if r["first_send_ns"]), default=0)
        last_recv = max((r["last_recv_ns"] for r in drained), default=0)
        span = (last_recv - first_send) / 1e9 if first_send and last_recv > first_send else 0.0
        planned = sum(r["planned"] for r in sent)
        total_sent = sum(r["sent"] for r in sent)
        errors: dict[str, int] = {}
        for r in drained:
            for code, n in r["errors"].items():
                errors[code] = errors.get(code, 0) + n
        lost = expected - delivered
        generator_kept_up = total_sent >= 0.97 * planned
        ok = (
            total_sent > 0
            and lost == 0
            and not errors
            and latency["p99"] is not None
            and latency["p99"] <= opts.p99_limit_ms
            and generator_kept_up
        )
        return {
            "step": step_no,
            "offered_rate": rate,
            "duration_s": duration,
            "planned": planned,
            "sent": total_sent,
            # Over the step's duration at least: a step of a few messages is sent in far less.
            "sent_rate": round(total_sent / max(duration, *(r["send_seconds"] for r in sent)), 1) if total_sent else 0.0,
            "send_lag_max_ms": round(max(r["lag_max_ms"] for r in sent), 1),
            "generator_kept_up": generator_kept_up,
            "expected": expected,
            "expected_check": expected_deliveries(per_room, plan.subscribers),
            "delivered": delivered,
            "lost": lost,
            "loss_pct": round(100.0 * lost / expected, 3) if expected else 0.0,
            "duplicates": sum(r["duplicates"] for r in drained),
            "stale": sum(r["stale"] for r in drained),
            "errors": errors,
            "error_samples": [s for r in drained for s in r["error_samples"]][:5],
            "disconnects": sum(r["disconnects"] for r in drained),
            "offered_deliveries_per_s": round(expected / duration, 1),
            # Over the step's duration at least: with few messages, first send -> last receive is far shorter.
            "deliveries_per_s": round(delivered / max(span, duration), 1) if span else 0.0,
            "latency_ms": latency,
            "ack_latency_ms": acks,
            "frames": sum(r["frames"] for r in drained),
            "batched_frames": sum(r["batched_frames"] for r in drained),
            "resources": sampler.window(start_at, send_end),
            # Server CPU time per unit of work, net of the idle cost of the open sockets:
            # far less sensitive to other load on the machine than latency is.
            "server_cpu_ms_per_message": round(1000 * cpu_net / total_sent, 3) if total_sent else None,
            "server_cpu_us_per_delivery": round(1e6 * cpu_net / delivered, 1) if delivered else None,
            # Deliveries/s one whole core would carry at that cost (CPU-bound estimate, per process).
            "cpu_bound_deliveries_per_core_s": round(delivered / cpu_net) if delivered and cpu_net else None,
            "ok": ok,
        }


# -- reconnect storm and big room -----------------------------------------------------


def clear_presence(redis_url: str, room_ids: list[int]) -> int:
    """Delete the rooms' presence keys, so sockets of earlier runs (within the presence TTL) do not count as online."""
    import redis

    rooms = {str(room) for room in room_ids}
    client = redis.Redis.from_url(redis_url)
    try:
        # chat:presence:room:<room> and chat:presence:room:<room>:<anything>
        keys = [key for key in client.scan_iter(match="chat:presence:room:*", count=1000) if key.decode().split(":")[3] in rooms]
        return client.delete(*keys) if keys else 0
    finally:
        client.close()


def newest_message_ids(room_ids: list[int]) -> dict[int, int]:
    """Each room's newest message id: where a client that rendered the room now would resume from (chat.js's last id)."""
    from django.db.models import Max

    from chat.models import Message

    rows = Message.objects.filter(room_id__in=room_ids).values("room_id").annotate(newest=Max("id"))
    return {row["room_id"]: row["newest"] for row in rows}


def merge_exactly_once(checked: list[dict[str, Any]]) -> dict[str, Any]:
    """The load processes' exactly-once accounting, summed."""
    total: dict[str, Any] = {
        name: sum(r[name] for r in checked)
        for name in ("sockets", "storm_sockets_checked", "expected", "delivered", "lost", "repeated", "unexpected", "stale", "resyncs", "disconnects")
    }  # fmt: skip
    errors: dict[str, int] = {}
    for r in checked:
        for code, n in r["errors"].items():
            errors[code] = errors.get(code, 0) + n
    total["errors"] = errors
    total["error_samples"] = [s for r in checked for s in r["error_samples"]][:5]
    total["lost_samples"] = [s for r in checked for s in r["lost_samples"]][:5]
    total["repeated_samples"] = [s for r in checked for s in r["repeated_samples"]][:5]
    # A replay of a message delivered before the storm is a repeat too (its step is an earlier one).
    total["exactly_once"] = all(r["exactly_once"] for r in checked) and total["stale"] == 0
    total["latency_ms"] = latency_summary([r["latencies_ms"] for r in checked])
    return total


class StormRun(Run):
    """``--storm N``: N subscribed sockets (and a few senders that stay) on ours; a step of traffic, all of it
    delivered; then every one of the N is dropped at once (TCP aborted, as in a network cut) and reconnects as
    chat.js does (backoff with jitter, then ``subscribe`` with ``last_id``) while the senders keep sending.
    Measured: how long until each and all are live again, the failures, and whether every message sent
    across the storm reached every socket of its room exactly once."""

    def __init__(self, opts: Options, processes: int, database_url: str, redis_url: str, fixture: Any) -> None:
        super().__init__(opts, "ours", processes, database_url, redis_url, fixture)

    @property
    def label(self) -> str:
        return "storm"

    def execute(self) -> dict[str, Any]:
        opts = self.opts
        clear_channel_layer(self.redis_url)
        rooms = self.fixture.room_ids[: max(1, min(opts.rooms, opts.storm))]
        clear_presence(self.redis_url, rooms)
        env = server_env(opts, self.database_url, self.redis_url)
        result: dict[str, Any] = {
            "target": "ours", "server": self.server, "processes": self.processes, "layer": self.layer(env), "server_deflate": self.deflate_setting(env),
            "storm_sockets": opts.storm, "rooms": len(rooms), "target_s": opts.storm_target,
        }  # fmt: skip
        newest = newest_message_ids(rooms)
        self.log(
            f"\n== reconnect storm: {opts.storm} sockets over {len(rooms)} rooms (+{max(1, min(opts.senders, len(rooms)))} senders "
            f"that stay), ours on {self.server} x{self.processes}, {opts.storm_rate:g} messages/s throughout"
        )
        with run_servers(server=self.server, count=self.processes, env=env, app=CHAT_APP) as servers:
            self.server_pids = [s.proc.pid for s in servers]
            plan = storm_plan(opts, rooms, self.fixture.tokens, [s.port for s in servers], PATHS["ours"])
            for worker_specs in plan.specs:
                for spec in worker_specs:
                    # A room that gets no message before the drop still resumes from what its page showed.
                    spec["last_id"] = newest.get(spec["room"], 0)
            result["senders"] = sum(plan.senders_per_worker)
            workers = Workers(opts.client_procs)
            try:
                with Sampler(server_pids=self.server_pids, client_pids=workers.pids) as sampler:
                    result["sockets"] = self.connect(workers, plan.specs, sampler)
                    self.log(f"   before: {sockets_text(result['sockets'])}")
                    if result["sockets"]["connected"] == 0:
                        result["error"] = "no socket connected"
                        return result
                    self.step_no = 0
                    # "Some messages already delivered": every socket has a last_id to resume from.
                    before = self.step(workers, plan, sampler, opts.storm_rate, duration=opts.storm_pre)
                    result["before"] = before
                    self.log(step_header())
                    self.log(step_row(before, label="pre"))
                    result["storm"] = self.storm(workers, plan, sampler)
                    for line in storm_text(result["storm"]):
                        self.log(line)
            finally:
                workers.close()
                for s in servers:
                    if s.proc.poll() is not None:
                        result.setdefault("server_exits", []).append({"code": s.proc.returncode, "log": s.log_tail()})
        return result

    def storm(self, workers: Workers, plan: Plan, sampler: Sampler) -> dict[str, Any]:
        opts = self.opts
        step_no = self.step_no
        self.step_no += 1
        n_workers = len(workers.pipes)
        start_at = time.time() + 0.5
        senders = max(1, sum(plan.senders_per_worker))
        # Bounds the send loop: the storm's own deadline, with room to spare.
        max_seconds = opts.storm_lead + opts.storm_timeout + opts.storm_tail + 15
        meter = Meter(sampler)
        workers.ask(
            [
                {
                    "cmd": "storm_start", "step": step_no, "start_at": start_at, "rate": opts.storm_rate * n / senders,
                    "size": opts.size, "lead_s": opts.storm_lead, "max_seconds": max_seconds, "timeout": opts.storm_timeout,
                    "open_timeout": 30.0, "retries": opts.connect_retries, "backoff_s": opts.storm_backoff,
                    "concurrency": max(1, opts.storm_concurrency // n_workers) if opts.storm_concurrency else 0,
                    "deflate": opts.compression == "deflate",
                }
                for n in plan.senders_per_worker
            ],
            timeout=30,
        )  # fmt: skip
        deadline = start_at + opts.storm_lead + opts.storm_timeout + 15
        status: list[dict[str, Any]] = []
        profilers = self.start_profilers("storm", None)
        try:
            while time.time() < deadline:
                time.sleep(0.1)
                status = workers.ask([{"cmd": "storm_status"}] * n_workers, timeout=30)
                if all(s["dropped"] and s["done"] for s in status):
                    break
        finally:
            self.stop_profilers(profilers, interrupt=True)
        time.sleep(opts.storm_tail)  # live traffic to sockets that are all back
        stopped = workers.ask([{"cmd": "storm_stop", "timeout": 20}] * n_workers, timeout=60)
        resources = meter.stop()
        keys: dict[int, list[int]] = {}
        for reply in stopped:
            for room, room_keys in reply["keys"].items():
                keys.setdefault(int(room), []).extend(room_keys)
        checked = workers.ask(
            [{"cmd": "storm_check", "keys": keys, "drain_s": opts.drain, "settle_s": 0.5}] * n_workers, timeout=opts.drain + 60
        )
        drop_ns = min((r["drop_ns"] for r in stopped if r["drop_ns"]), default=0)
        last_live_ns = max((r["last_live_ns"] for r in stopped), default=0)
        failures: dict[str, int] = {}
        for reply in stopped:
            for name, n in reply["failures"].items():
                failures[name] = failures.get(name, 0) + n
        dropped = sum(r["storm_sockets"] for r in stopped)
        reconnected = sum(r["reconnected"] for r in stopped)
        all_live_s = round((last_live_ns - drop_ns) / 1e9, 2) if drop_ns and last_live_ns > drop_ns and reconnected == dropped else None
        sent = [r["sent"] for r in stopped if r["sent"]]
        accounting = merge_exactly_once(checked)
        ok = (
            dropped > 0 and reconnected == dropped and accounting["exactly_once"] and not accounting["errors"]
            and accounting["resyncs"] == 0 and all_live_s is not None and all_live_s <= opts.storm_target
        )  # fmt: skip
        return {
            "dropped": dropped,
            "reconnected": reconnected,
            "failed": dropped - reconnected,
            "failures": failures,
            "failure_samples": [s for r in stopped for s in r["samples"]][:5],
            "retries": sum(r["retries"] for r in stopped),
            "all_live_s": all_live_s,  # drop -> the last socket's `subscribed` (None if any failed)
            "within_target": all_live_s is not None and all_live_s <= opts.storm_target,
            "reconnect_ms": latency_summary([r["reconnect_ms"] for r in stopped]),  # per socket: drop -> its `subscribed`
            "resumed_messages": sum(r["resumed"] for r in stopped),
            "deflate_negotiated": sum(r["deflate_negotiated"] for r in stopped),
            "sent": sum(x["sent"] for x in sent),
            "send_errors": sum(x["send_errors"] for x in sent),
            "send_seconds": round(max((x["send_seconds"] for x in sent), default=0.0), 2),
            "messages_during_storm": sum(len(v) for v in keys.values()),
            "exactly_once": accounting,
            "resources": resources,
            "ok": ok,
        }


def storm_text(storm: dict[str, Any]) -> list[str]:
    once = storm["exactly_once"]
    rec = storm["reconnect_ms"]
    fails = f"{storm['failed']} failed {storm['failures']}" if storm["failed"] or storm["failures"] else "0 failed"
    all_live = f"{storm['all_live_s']:.2f} s" if storm["all_live_s"] is not None else "never (some failed)"
    return [
        f"   storm: {storm['reconnected']}/{storm['dropped']} live again; all of them after {all_live} "
        f"(per socket p50 {_fmt(rec['p50'])} ms, p99 {_fmt(rec['p99'])} ms, max {_fmt(rec['max'])} ms); {fails}, "
        f"{storm['retries']} retries; {storm['resumed_messages']} messages replayed by resume; "
        f"deflate negotiated by {storm['deflate_negotiated']}/{storm['reconnected']}",
        f"   exactly once: {storm['messages_during_storm']} messages sent across the storm, {once['expected']} deliveries owed "
        f"to {once['sockets']} sockets: lost {once['lost']}, repeated {once['repeated']}, unexpected {once['unexpected']}, "
        f"pre-storm replayed {once['stale']}, resyncs {once['resyncs']}, errors {once['errors'] or 0} -> "
        f"{'exactly once' if once['exactly_once'] else 'NOT exactly once'}"
        + (f" {once['lost_samples'][:2]} {once['repeated_samples'][:2]}" if not once["exactly_once"] else ""),
        f"   during the storm: {cpu_text(storm['resources'])}; send->receive p99 {_fmt(once['latency_ms']['p99'])} ms, "
        f"max {_fmt(once['latency_ms']['max'])} ms -> {'ok' if storm['ok'] else 'NOT ok'}",
    ]


class BigRoomRun(Run):
    """``--big-room N``: N sockets join one room (the bytes each join costs everyone, measured at two room
    sizes), then ``--big-room-senders`` of them send ``--big-room-rate`` messages/s to it."""

    def __init__(
        self, opts: Options, processes: int, database_url: str, redis_url: str, fixture: Any, room: int, target: str = "ours"
    ) -> None:
        super().__init__(opts, target, processes, database_url, redis_url, fixture)
        self.room = room

    @property
    def label(self) -> str:
        return "big-room" if self.target == "ours" else f"big-room-{self.target}"

    def execute(self) -> dict[str, Any]:
        opts = self.opts
        clear_channel_layer(self.redis_url)
        clear_presence(self.redis_url, [self.room])
        env = server_env(opts, self.database_url, self.redis_url)
        result: dict[str, Any] = {
            "target": self.target, "server": self.server, "processes": self.processes, "layer": self.layer(env), "server_deflate": self.deflate_setting(env),
            "room": self.room, "sockets_requested": opts.big_room, "rate": opts.big_room_rate, "steps": [],
        }  # fmt: skip
        self.log(
            f"\n== big room: {opts.big_room} sockets in one room, {self.target} on {self.server} x{self.processes}, "
            f"{opts.big_room_rate:g} messages/s from {max(1, min(opts.big_room_senders, opts.big_room))} senders"
        )
        with run_servers(server=self.server, count=self.processes, env=env, app=APPS[self.target]) as servers:
            self.server_pids = [s.proc.pid for s in servers]
            plan, ordered = big_room_plan(opts, self.room, self.fixture.tokens, [s.port for s in servers], PATHS[self.target])
            workers = Workers(opts.client_procs)
            try:
                with Sampler(server_pids=self.server_pids, client_pids=workers.pids) as sampler:
                    result["join"] = self.join(workers, ordered, sampler)
                    for line in join_text(result["join"]):
                        self.log(line)
                    if result["join"]["connected"] == 0:
                        result["error"] = "no socket connected"
                        return result
                    self.idle_cpu_s_per_s = self.measure_idle_cpu(sampler)
                    result["server_idle_cpu_pct"] = round(100 * self.idle_cpu_s_per_s, 1)
                    self.step_no = 0
                    self.log(step_header())
                    if opts.warmup > 0:
                        warmup = self.step(workers, plan, sampler, opts.big_room_rate, duration=opts.warmup)
                        result["warmup"] = warmup
                        self.log(step_row(warmup, label="warm"))
                    step = self.step(workers, plan, sampler, opts.big_room_rate)
                    result["steps"].append(step)
                    self.log(step_row(step))
            finally:
                workers.close()
                for s in servers:
                    if s.proc.poll() is not None:
                        result.setdefault("server_exits", []).append({"code": s.proc.returncode, "log": s.log_tail()})
        return result

    def join(self, workers: Workers, ordered: list[dict[str, Any]], sampler: Sampler) -> dict[str, Any]:
        """Fill the room phase by phase; at each probe, the bytes everyone received per socket that joined."""
        opts = self.opts
        n_workers = len(workers.pipes)
        phases: list[dict[str, Any]] = []
        probes: list[dict[str, Any]] = []
        join_ms: list[bytes] = []
        join_seconds = server_cpu = client_cpu = 0.0
        for kind, lo, hi in big_room_phases(opts):
            specs: list[list[dict[str, Any]]] = [[] for _ in range(n_workers)]
            for spec in ordered[lo:hi]:
                specs[spec["idx"] % n_workers].append(spec)
            before = None
            if kind == "probe":
                # What the fill set off has arrived; from here on, every byte is the probe's.
                self.quiet(workers, seconds=30.0, quiet_s=2.0)
                before = self.counters(workers, count_types=True)
            phase = self.connect(workers, specs, sampler, join_ms, concurrency=opts.big_room_concurrency)
            join_seconds += phase["seconds"]
            server_cpu += phase["resources"]["server_cpu_s"]
            client_cpu += phase["resources"]["client_cpu_s"]
            phases.append({"kind": kind, "from": lo, "to": hi, **phase})
            if before is not None:
                self.quiet(workers, seconds=30.0, quiet_s=2.0)
                after = self.counters(workers, count_types=False)
                joined = max(1, phase["connected"])
                by_type = {
                    kind_: {"events": n - before["by_type"].get(kind_, [0, 0])[0], "bytes": b - before["by_type"].get(kind_, [0, 0])[1]}
                    for kind_, (n, b) in after["by_type"].items()
                }
                probes.append(
                    {
                        "room_size": hi,
                        "joined": phase["connected"],
                        "wire_bytes": after["wire_bytes"] - before["wire_bytes"],
                        "text_bytes": after["text_bytes"] - before["text_bytes"],
                        "frames": after["frames"] - before["frames"],
                        "wire_bytes_per_join": round((after["wire_bytes"] - before["wire_bytes"]) / joined),
                        "text_bytes_per_join": round((after["text_bytes"] - before["text_bytes"]) / joined),
                        "frames_per_join": round((after["frames"] - before["frames"]) / joined, 1),
                        "by_type": {k: v for k, v in by_type.items() if v["events"]},
                    }
                )
        connected = sum(p["connected"] for p in phases)
        sys_weighted = [(p["resources"]["system_cpu_pct"], p["seconds"]) for p in phases if p["resources"].get("system_cpu_pct") is not None]
        sys_seconds = sum(sec for _, sec in sys_weighted)
        return {
            "requested": opts.big_room,
            "connected": connected,
            "failed": opts.big_room - connected,
            "failures": {k: v for p in phases for k, v in p["failures"].items()},
            "join_seconds": round(join_seconds, 2),  # the connect phases only, not the quiet waits around the probes
            "join_ms": latency_summary(join_ms),  # per socket, handshake -> subscribed
            "deflate_offered": opts.compression == "deflate",
            "deflate_negotiated": sum(p["deflate_negotiated"] for p in phases),
            "resources": {
                "server_cpu_pct": round(100 * server_cpu / join_seconds, 1) if join_seconds else None,
                "client_cpu_pct": round(100 * client_cpu / join_seconds, 1) if join_seconds else None,
                "system_cpu_pct": round(sum(v * sec for v, sec in sys_weighted) / sys_seconds, 1) if sys_seconds else None,
            },
            "probes": probes,
            "phases": phases,
        }

    def counters(self, workers: Workers, *, count_types: bool) -> dict[str, Any]:
        replies = workers.ask([{"cmd": "counters", "count_types": count_types}] * len(workers.pipes), timeout=30)
        by_type: dict[str, list[int]] = {}
        for r in replies:
            for kind, (n, b) in r["by_type"].items():
                entry = by_type.setdefault(kind, [0, 0])
                entry[0] += n
                entry[1] += b
        return {
            "wire_bytes": sum(r["wire_bytes"] for r in replies),
            "text_bytes": sum(r["text_bytes"] for r in replies),
            "frames": sum(r["frames"] for r in replies),
            "by_type": by_type,
        }


def join_text(join: dict[str, Any]) -> list[str]:
    lines = [
        f"   join: {join['connected']}/{join['requested']} sockets in {join['join_seconds']:.1f}s of connecting "
        f"(per socket p50 {_fmt(join['join_ms']['p50'])} ms, p99 {_fmt(join['join_ms']['p99'])} ms); "
        f"deflate negotiated by {join['deflate_negotiated']}/{join['connected']}; {cpu_text(join['resources'])}"
    ]
    for probe in join["probes"]:
        kinds = ", ".join(f"{k} {v['events']} events/{v['bytes']} B" for k, v in sorted(probe["by_type"].items()))
        lines.append(
            f"   presence at {probe['room_size']} sockets: {probe['joined']} joins cost {probe['wire_bytes_per_join']} B "
            f"on the wire ({probe['text_bytes_per_join']} B decompressed, {probe['frames_per_join']} frames) per join, "
            f"summed over every socket in the room [{kinds}]"
        )
    return lines


# -- reaction storm ----------------------------------------------------------------

# One Unicode emoji each, none with a variation selector (the server stores what it is sent).
REACTION_EMOJI = ["👍", "🎉", "😂", "🚀", "👀"]


class ReactionRun(Run):
    """``--reactions``: the load's sockets (--rooms x --clients-per-room, deflate offered) on ours; in each of the
    first rooms a fresh message, and the sockets of those rooms add and remove reactions on it at
    ``--reaction-rate`` in total while the senders send ``--reaction-message-rate`` messages/s. Measured: the
    acknowledged reactions, the ``reaction`` events each socket got for them (coalescing), whether every
    socket ends on the database's final summary, what it cost, and that no message was lost."""

    def __init__(self, opts: Options, processes: int, database_url: str, redis_url: str, fixture: Any) -> None:
        super().__init__(opts, "ours", processes, database_url, redis_url, fixture)

    @property
    def label(self) -> str:
        return "reactions"

    def execute(self) -> dict[str, Any]:
        from bench.ws_data import reaction_targets

        opts = self.opts
        clear_channel_layer(self.redis_url)
        rooms = self.fixture.room_ids[: opts.rooms]
        clear_presence(self.redis_url, rooms)
        env = server_env(opts, self.database_url, self.redis_url)
        count = max(1, opts.reaction_messages)
        targets = reaction_targets(room_ids=rooms[: min(count, len(rooms))], count=count, label=f"ws_bench {self.tag}")
        messages: dict[int, list[int]] = {}
        for room, message_id in targets:
            messages.setdefault(room, []).append(message_id)
        result: dict[str, Any] = {
            "target": "ours", "server": self.server, "processes": self.processes, "layer": self.layer(env),
            "server_deflate": self.deflate_setting(env), "rooms": opts.rooms, "clients_per_room": opts.clients_per_room,
            "rate": opts.reaction_rate, "message_rate": opts.reaction_message_rate, "deadline_s": opts.reaction_deadline,
            "rate_limit_reactions": env["RATE_LIMIT_REACTIONS"], "reaction_window_ms": env.get("REACTION_WINDOW_MS"),
            "emoji": REACTION_EMOJI, "messages": [{"room": room, "id": message_id} for room, message_id in targets], "steps": [],
        }  # fmt: skip
        self.log(
            f"\n== reactions: {opts.reaction_rate:g} reactions/s for {opts.reaction_duration:g} s on {count} message(s) in "
            f"{len(messages)} room(s), from their sockets (adding and removing {len(REACTION_EMOJI)} emoji), "
            f"{opts.reaction_message_rate:g} messages/s besides; ours on {self.server} x{self.processes}, "
            f"{opts.rooms} rooms x {opts.clients_per_room} sockets\n"
            f"   servers run with RATE_LIMIT_REACTIONS={env['RATE_LIMIT_REACTIONS']} (the default, 300/60 per user, would refuse "
            f"a storm from a room's users; BENCH_RATE_LIMIT_REACTIONS sets it) and "
            f"REACTION_WINDOW_MS={env.get('REACTION_WINDOW_MS') or '100 (default)'}"
        )
        with run_servers(server=self.server, count=self.processes, env=env, app=CHAT_APP) as servers:
            self.server_pids = [s.proc.pid for s in servers]
            plan = make_plan(opts, rooms, self.fixture.tokens, [s.port for s in servers], PATHS["ours"])
            workers = Workers(opts.client_procs)
            try:
                with Sampler(server_pids=self.server_pids, client_pids=workers.pids) as sampler:
                    result["sockets"] = self.connect(workers, plan.specs, sampler)
                    self.log(f"   {sockets_text(result['sockets'])}")
                    if result["sockets"]["connected"] == 0:
                        result["error"] = "no socket connected"
                        return result
                    self.idle_cpu_s_per_s = self.measure_idle_cpu(sampler)
                    result["server_idle_cpu_pct"] = round(100 * self.idle_cpu_s_per_s, 1)
                    self.step_no = 0
                    self.log(reaction_header())
                    if opts.warmup > 0:
                        warmup = self.reaction_step(workers, plan, sampler, messages, duration=opts.warmup)
                        result["warmup"] = warmup
                        self.log(reaction_row(warmup, label="warm"))
                        self.quiet(workers)
                    step = self.reaction_step(workers, plan, sampler, messages, duration=opts.reaction_duration)
                    result["steps"].append(step)
                    self.log(reaction_row(step))
                    for line in reaction_text(step):
                        self.log(line)
            finally:
                workers.close()
                for s in servers:
                    if s.proc.poll() is not None:
                        result.setdefault("server_exits", []).append({"code": s.proc.returncode, "log": s.log_tail()})
        return result

    def reaction_step(
        self, workers: Workers, plan: Plan, sampler: Sampler, messages: dict[int, list[int]], *, duration: float
    ) -> dict[str, Any]:
        from bench.ws_data import reaction_state

        opts = self.opts
        step_no = self.step_no
        self.step_no += 1
        n_workers = len(workers.pipes)
        reactors = [sum(1 for spec in worker if spec["room"] in messages) for worker in plan.specs]
        senders = max(1, sum(plan.senders_per_worker))
        ack_timeout = max(opts.drain, 10.0)
        start_at = time.time() + 0.5
        commands = [
            {
                "cmd": "reactions", "step": step_no, "start_at": start_at, "duration": duration, "messages": messages,
                "emoji": REACTION_EMOJI, "rate": opts.reaction_rate * n / max(1, sum(reactors)),
                "message_rate": opts.reaction_message_rate * m / senders, "size": opts.size, "ack_timeout": ack_timeout,
            }
            for n, m in zip(reactors, plan.senders_per_worker)
        ]  # fmt: skip
        meter = Meter(sampler)
        profilers = self.start_profilers(f"reactions{step_no}", duration)
        try:
            replies = workers.ask(commands, timeout=duration + ack_timeout + 30)
        finally:
            self.stop_profilers(profilers, interrupt=False)
        send_end = time.time()
        sent = [r["reactions"] for r in replies]
        # Every reaction is acknowledged (or the wait gave up): the database now holds the final state.
        expected = reaction_state(message_ids=[m for ids in messages.values() for m in ids])
        last_ack: dict[int, int] = {}
        for r in sent:
            for message_id, ns in r["last_ack_ns"].items():
                last_ack[int(message_id)] = max(last_ack.get(int(message_id), 0), ns)
        deadline_ns = (max(last_ack.values()) if last_ack else time.time_ns()) + int(opts.reaction_deadline * 1e9)
        checks = workers.ask(
            [{"cmd": "reaction_check", "messages": messages, "expected": expected, "last_ack_ns": last_ack,
              "deadline_ns": deadline_ns, "settle_s": 0.3}] * n_workers,
            timeout=opts.reaction_deadline + 30,
        )  # fmt: skip
        cpu = meter.stop()
        per_room: dict[int, int] = {}
        for r in replies:
            for room, n in r["messages"]["per_room"].items():
                per_room[int(room)] = per_room.get(int(room), 0) + n
        drained = workers.ask(
            [{"cmd": "drain", "per_room": per_room, "drain_s": opts.drain}] * n_workers, timeout=opts.drain + 30
        )
        return reaction_step_result(
            step_no=step_no, opts=opts, duration=duration, plan=plan, messages=messages, sent=sent,
            message_sent=[r["messages"] for r in replies], checks=checks, drained=drained, expected=expected,
            last_ack=last_ack, cpu=cpu, resources=sampler.window(start_at, send_end),
            idle_cpu_s=self.idle_cpu_s_per_s * cpu["seconds"],
        )  # fmt: skip


def reaction_step_result(
    *,
    step_no: int,
    opts: Options,
    duration: float,
    plan: Plan,
    messages: dict[int, list[int]],
    sent: list[dict[str, Any]],
    message_sent: list[dict[str, Any]],
    checks: list[dict[str, Any]],
    drained: list[dict[str, Any]],
    expected: dict[int, dict[str, tuple[int, tuple[int, ...]]]],
    last_ack: dict[int, int],
    cpu: dict[str, Any],
    resources: dict[str, Any],
    idle_cpu_s: float,
) -> dict[str, Any]:
    """One reaction step's figures from the load processes' replies (see bench/README.md, "Reaction storm")."""
    planned = sum(r["planned"] for r in sent)
    total_sent = sum(r["sent"] for r in sent)
    acked = sum(r["acked"] for r in sent)
    first_send = min((r["first_send_ns"] for r in sent if r["first_send_ns"]), default=0)
    last_ack_ns = max(last_ack.values(), default=0)
    ack_span = (last_ack_ns - first_send) / 1e9 if first_send and last_ack_ns > first_send else 0.0
    changed_by_message: dict[int, int] = {}
    model: dict[int, dict[str, int]] = {}
    for r in sent:
        for message_id, n in r["changed_by_message"].items():
            changed_by_message[int(message_id)] = changed_by_message.get(int(message_id), 0) + n
        for message_id, counts in r["model"].items():
            entry = model.setdefault(int(message_id), {})
            for emoji, n in counts.items():
                entry[emoji] = entry.get(emoji, 0) + n
    final_counts = {message_id: {emoji: count for emoji, (count, _) in emojis.items()} for message_id, emojis in expected.items()}
    # Without coalescing every change would be one event to every socket of its message's room.
    room_of = {message_id: room for room, ids in messages.items() for message_id in ids}
    model = {message_id: {emoji: n for emoji, n in model.get(message_id, {}).items() if n} for message_id in room_of}
    uncoalesced = sum(n * plan.subscribers.get(room_of.get(m, -1), 0) for m, n in changed_by_message.items())
    sockets = sum(c["sockets"] for c in checks)
    converged = sum(c["converged"] for c in checks)
    converge_ms = latency_summary([c["converge_ms"] for c in checks])
    events = sum(c["events"] for c in checks)
    event_bytes = sum(c["bytes"] for c in checks)
    wire = sum(c["wire_bytes_end"] for c in checks) - sum(r["wire_bytes_start"] for r in sent)
    # Events keep coming while a backlog of reactions is handled: per second of the first send -> last ack, at least the duration.
    per_socket_s = max(1, sockets) * max(duration, ack_span)
    within = converged == sockets and converge_ms["max"] is not None and converge_ms["max"] <= opts.reaction_deadline * 1000
    errors: dict[str, int] = {}
    for r in drained:
        for code, n in r["errors"].items():
            errors[code] = errors.get(code, 0) + n
    message_expected = sum(r["expected"] for r in drained)
    message_delivered = sum(r["unique"] for r in drained)
    messages_sent = sum(r["sent"] for r in message_sent)
    generator_kept_up = total_sent >= 0.97 * planned and messages_sent >= 0.97 * sum(r["planned"] for r in message_sent)
    cpu_net = max(0.0, cpu["server_cpu_s"] - idle_cpu_s)
    malformed = sum(c["malformed"] for c in checks)
    ok = (
        total_sent > 0 and generator_kept_up and acked == total_sent and not errors and malformed == 0
        and sockets > 0 and within and model == final_counts and message_expected == message_delivered
    )  # fmt: skip
    return {
        "step": step_no,
        "offered_rate": opts.reaction_rate,
        "duration_s": duration,
        "messages": len(room_of),
        "reactors": sum(r["reactors"] for r in sent),
        "planned": planned,
        "sent": total_sent,
        "sent_rate": round(total_sent / max(duration, *(r["send_seconds"] for r in sent)), 1) if total_sent else 0.0,
        "send_lag_max_ms": round(max(r["lag_max_ms"] for r in sent), 1),
        "generator_kept_up": generator_kept_up,
        "acked": acked,
        "changed": sum(r["changed"] for r in sent),
        # Over the send window at least: first send -> last ack.
        "acked_per_s": round(acked / max(ack_span, duration), 1) if acked else 0.0,
        "ack_latency_ms": latency_summary([r["ack_latencies_ms"] for r in sent]),
        "reaction_errors": sum(r["errors"] for r in sent),
        "errors": errors,
        "error_samples": [x for r in drained for x in r["error_samples"]][:5],
        "events": {
            "sockets": sockets,  # the sockets of the reacted rooms
            "received": events,
            "bytes": event_bytes,  # decompressed; a batched frame's share per event
            "per_socket_per_s": round(events / per_socket_s, 2),
            "bytes_per_socket_per_s": round(event_bytes / per_socket_s),
            # Everything those sockets received on the wire (compressed if negotiated): events, acks, messages.
            "wire_bytes_per_socket_per_s": round(wire / per_socket_s),
            "reactions_per_socket_per_s": round(uncoalesced / per_socket_s, 2),
            "uncoalesced": uncoalesced,
            "coalescing_ratio": round(uncoalesced / events, 2) if events else None,
            "older_versions": sum(c["older"] for c in checks),  # arrived after a newer summary of the same message
            "malformed": malformed,
        },
        "convergence": {
            "sockets": sockets,
            "converged": converged,
            "deadline_ms": opts.reaction_deadline * 1000,
            "within_deadline": within,
            "converge_ms": converge_ms,  # the message's last ack -> the socket's final summary (latest of its messages)
            "mismatch_samples": [x for c in checks for x in c["mismatch_samples"]][:5],
            "final_state": final_counts,
            # What the users hold after their acknowledged sends, summed by the load generator: the database must agree.
            "model_matches_database": model == final_counts,
        },
        "message_traffic": {
            "offered_rate": opts.reaction_message_rate,
            "sent": messages_sent,
            "expected": message_expected,
            "delivered": message_delivered,
            "lost": message_expected - message_delivered,
            "duplicates": sum(r["duplicates"] for r in drained),
            "disconnects": sum(r["disconnects"] for r in drained),
            "latency_ms": latency_summary([r["latencies_ms"] for r in drained]),
        },
        "cpu": cpu,  # exact, from the first send to the convergence check (servers and load generator)
        "resources": resources,  # sampled during the send window
        # Net of the idle baseline; the few messages sent meanwhile are included.
        "server_cpu_ms_per_reaction": round(1000 * cpu_net / acked, 3) if acked else None,
        "client_cpu_ms_per_reaction": round(1000 * cpu["client_cpu_s"] / total_sent, 3) if total_sent else None,
        "ok": ok,
    }


REACTION_COLUMNS = [
    ("step", 4), ("offer/s", 8), ("sent/s", 8), ("acked/s", 8), ("ack p50", 8), ("ack p99", 8), ("ev/sock/s", 10),
    ("B/sock/s", 9), ("coalesce", 9), ("converged", 10), ("conv p99", 9), ("msg lost", 9), ("srvCPU%", 8),
    ("cliCPU%", 8), ("sys%", 5), ("ms/react", 9), ("ok", 3),
]  # fmt: skip


def reaction_header() -> str:
    return "   " + " ".join(name.rjust(width) for name, width in REACTION_COLUMNS)


def reaction_row(step: dict[str, Any], label: str | None = None) -> str:
    ev, conv, msgs, cpu = step["events"], step["convergence"], step["message_traffic"], step["cpu"]
    values = [
        label or step["step"], step["offered_rate"], step["sent_rate"], step["acked_per_s"], step["ack_latency_ms"]["p50"],
        step["ack_latency_ms"]["p99"], ev["per_socket_per_s"], ev["bytes_per_socket_per_s"], ev["coalescing_ratio"],
        f"{conv['converged']}/{conv['sockets']}", conv["converge_ms"]["p99"], msgs["lost"], cpu.get("server_cpu_pct"),
        cpu.get("client_cpu_pct"), cpu.get("system_cpu_pct"), step["server_cpu_ms_per_reaction"], "yes" if step["ok"] else "NO",
    ]  # fmt: skip
    row = "   " + " ".join(_fmt(v).rjust(width) for v, (_, width) in zip(values, REACTION_COLUMNS))
    notes = []
    if step["errors"]:
        notes.append(f"errors {step['errors']}")
    if step["acked"] != step["sent"]:
        notes.append(f"acked {step['acked']}/{step['sent']}")
    if not step["generator_kept_up"]:
        notes.append(f"generator sent {step['sent']}/{step['planned']}")
    if not conv["model_matches_database"]:
        notes.append("the database differs from what was acknowledged")
    return row + (f"   [{'; '.join(notes)}]" if notes else "")


def reaction_text(step: dict[str, Any]) -> list[str]:
    ev, conv, msgs, cpu = step["events"], step["convergence"], step["message_traffic"], step["cpu"]
    acks, cms = step["ack_latency_ms"], conv["converge_ms"]
    lines = [
        f"   reactions: {step['acked']}/{step['sent']} acknowledged ({step['changed']} changed something) from {step['reactors']} "
        f"sockets on {step['messages']} message(s), {_fmt(step['acked_per_s'])}/s; reaction.ack p50 {_fmt(acks['p50'])} ms, "
        f"p99 {_fmt(acks['p99'])} ms, max {_fmt(acks['max'])} ms; errors {step['errors'] or 0}",
        f"   events: each of the {ev['sockets']} sockets of those rooms got {_fmt(ev['per_socket_per_s'])} reaction events/s "
        f"({ev['bytes_per_socket_per_s']} B/s decompressed; {ev['wire_bytes_per_socket_per_s']} B/s on the wire for all its "
        f"traffic) for {_fmt(ev['reactions_per_socket_per_s'])} reactions/s on its room's messages: coalescing ratio "
        f"{_fmt(ev['coalescing_ratio'])}; {ev['older_versions']} arrived older than a summary already held, {ev['malformed']} malformed",
        f"   convergence: {conv['converged']}/{conv['sockets']} sockets hold the database's final summary (count and people per "
        f"emoji) {_fmt(cms['p50'])} ms (p50), {_fmt(cms['p99'])} ms (p99), {_fmt(cms['max'])} ms (max) after the message's last "
        f"ack (deadline {conv['deadline_ms'] / 1000:g} s); acknowledged state = database: "
        f"{'yes' if conv['model_matches_database'] else 'NO'}; final {conv['final_state']}"
        + (f"; mismatches {conv['mismatch_samples'][:2]}" if conv["mismatch_samples"] else ""),
        f"   messages meanwhile: {msgs['sent']} sent, {msgs['delivered']}/{msgs['expected']} deliveries, lost {msgs['lost']}, "
        f"p99 {_fmt(msgs['latency_ms']['p99'])} ms; server CPU {_fmt(step['server_cpu_ms_per_reaction'])} ms per acknowledged "
        f"reaction (idle netted out, the messages included), {cpu_text(cpu)} -> {'ok' if step['ok'] else 'NOT ok'}",
    ]
    return lines


# -- idle sockets ------------------------------------------------------------------


def run_idle(opts: Options, processes: int, database_url: str, redis_url: str, fixture: Any) -> dict[str, Any]:
    """Hold ``opts.idle`` sockets with heartbeats; report RSS per connection and idle CPU.

    Sockets are opened in two waves (10 %, then the rest) so the per-connection
    figure is the RSS slope between them, not the server's one-time start-up costs.
    """
    clear_channel_layer(redis_url)
    env = server_env(opts, database_url, redis_url)
    total = opts.idle
    first_wave = max(1, total // 10)
    result: dict[str, Any] = {"target": "ours", "server": opts.server, "processes": processes, "requested": total}
    if not opts.quiet:
        print(f"\n== idle: {total} sockets, {opts.server} x{processes}, heartbeat every {opts.heartbeat:.0f}s", flush=True)
    with run_servers(server=opts.server, count=processes, env=env) as servers:
        ports = [s.port for s in servers]
        rooms = fixture.room_ids[: opts.rooms]
        waves: list[list[list[dict[str, Any]]]] = [[[] for _ in range(opts.client_procs)] for _ in range(2)]
        for j in range(total):
            wave = waves[0 if j < first_wave else 1]
            wave[j % opts.client_procs].append(
                {"idx": j, "room": rooms[j % len(rooms)], "url": f"ws://127.0.0.1:{ports[j % len(ports)]}/ws/", "token": fixture.tokens[j], "sender": False}
            )
        workers = Workers(opts.client_procs)
        tag = uuid.uuid4().hex[:12]
        try:
            with Sampler(server_pids=[s.proc.pid for s in servers], client_pids=workers.pids) as sampler:
                time.sleep(1.0)
                rss = [sampler.rss_now()]
                connected = [0]
                connect_seconds = 0.0
                failures: dict[str, int] = {}
                for wave in waves:
                    replies = workers.ask(
                        [
                            {"cmd": "setup", "tag": tag, "clients": specs, "concurrency": max(1, opts.connect_concurrency // opts.client_procs), "open_timeout": 30.0, "phase_timeout": opts.connect_timeout, "retries": opts.connect_retries, "deflate": opts.compression == "deflate"}
                            for specs in wave
                        ],
                        timeout=opts.connect_timeout + 30,
                    )
                    connect_seconds += max(r["seconds"] for r in replies)
                    for r in replies:
                        for name, n in r["failures"].items():
                            failures[name] = failures.get(name, 0) + n
                    time.sleep(3.0)  # let allocations settle before reading RSS
                    connected.append(connected[-1] + sum(r["connected"] for r in replies))
                    rss.append(sampler.rss_now())
                    if not opts.quiet:
                        print(f"   {connected[-1]} sockets open, server RSS {rss[-1] / 2**20:.0f} MB", flush=True)
                client_rss = sum(_rss_of(pid) for pid in workers.pids)
                hold_start = time.time()
                idle = workers.ask([{"cmd": "idle", "duration": opts.duration, "heartbeat": opts.heartbeat}] * len(workers.pipes), timeout=opts.duration + 30)
                hold_end = time.time()
                second_wave = connected[2] - connected[1]
                result.update(
                    {
                        "connected": connected[-1],
                        "failed": total - connected[-1],
                        "failures": failures,
                        "connect_seconds": round(connect_seconds, 1),
                        "server_rss_start_mb": round(rss[0] / 2**20, 1),
                        "server_rss_open_mb": round(rss[-1] / 2**20, 1),
                        "rss_per_connection_kb": round((rss[2] - rss[1]) / second_wave / 1024, 1) if second_wave > 0 else None,
                        "rss_per_connection_kb_incl_startup": round((rss[2] - rss[0]) / connected[2] / 1024, 1) if connected[2] else None,
                        "client_rss_mb": round(client_rss / 2**20, 1),
                        "hold_seconds": opts.duration,
                        "heartbeat_s": opts.heartbeat,
                        "pings": sum(r["pings"] for r in idle),
                        "pongs": sum(r["pongs"] for r in idle),
                        "open_after_hold": sum(r["open"] for r in idle),
                        "resources": sampler.window(hold_start, hold_end),
                        "nofile_limit": raise_nofile_limit(),
                    }
                )
        finally:
            workers.close()
    return result


def _rss_of(pid: int) -> int:
    import psutil

    try:
        return psutil.Process(pid).memory_info().rss
    except psutil.Error:
        return 0


# -- output ------------------------------------------------------------------------


COLUMNS = [
    ("step", 4), ("offer/s", 8), ("sent/s", 8), ("expected", 9), ("lost", 7), ("loss%", 7), ("deliv/s", 8),
    ("p50", 7), ("p95", 7), ("p99", 7), ("max", 8), ("ack p99", 8), ("srvCPU%", 8), ("srvMB", 6),
    ("cliCPU%", 8), ("redis%", 7), ("sys%", 5), ("ms/msg", 7), ("us/dlv", 7), ("ok", 3),
]  # fmt: skip


def step_header() -> str:
    return "   " + " ".join(name.rjust(width) for name, width in COLUMNS)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}" if abs(value) < 10 else f"{value:.1f}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def step_row(step: dict[str, Any], label: str | None = None) -> str:
    res = step["resources"]
    values = [
        label or step["step"], step["offered_rate"], step["sent_rate"], step["expected"], step["lost"], step["loss_pct"],
        step["deliveries_per_s"], step["latency_ms"]["p50"], step["latency_ms"]["p95"], step["latency_ms"]["p99"],
        step["latency_ms"]["max"], step["ack_latency_ms"]["p99"], res.get("server_cpu_pct"), res.get("server_rss_mb"),
        res.get("client_cpu_pct"), res.get("redis_cpu_pct"), res.get("system_cpu_pct"),
        step["server_cpu_ms_per_message"], step["server_cpu_us_per_delivery"], "yes" if step["ok"] else "NO",
    ]  # fmt: skip
    row = "   " + " ".join(_fmt(v).rjust(width) for v, (_, width) in zip(values, COLUMNS))
    notes = []
    if step["errors"]:
        notes.append(f"errors {step['errors']}")
    if not step["generator_kept_up"]:
        notes.append(f"generator sent {step['sent']}/{step['planned']}")
    if step["disconnects"]:
        notes.append(f"{step['disconnects']} sockets dropped")
    return row + (f"   [{'; '.join(notes)}]" if notes else "")


def _big_room_summary(big: dict[str, Any] | None, name: str) -> list[str]:
    if not big or not big.get("join"):
        return []
    join = big["join"]
    step = (big.get("steps") or [None])[0]
    presence = "; ".join(f"{p['wire_bytes_per_join']} B/join at {p['room_size']}" for p in join["probes"])
    delivery = (
        f"{step['offered_rate']:g} msg/s = {_fmt(step['offered_deliveries_per_s'])} deliveries/s owed, {_fmt(step['deliveries_per_s'])} delivered/s, "
        f"p50 {_fmt(step['latency_ms']['p50'])} ms, "
        f"p99 {_fmt(step['latency_ms']['p99'])} ms, lost {step['lost']}, {_fmt(step['server_cpu_us_per_delivery'])} us/delivery"
        if step
        else "not measured"
    )
    return [f"   {name}: {join['connected']}/{join['requested']} joined in {join['join_seconds']:.1f}s; presence {presence}; {delivery}"]


def summary(report: dict[str, Any]) -> str:
    lines = ["", "== summary (sustainable = highest offered rate with zero loss and p99 <= %.0f ms)" % report["options"]["p99_limit_ms"]]
    client_cores = 100 * report["options"]["client_procs"]
    for run in report["runs"]:
        s = run.get("sustainable")
        if s:
            failing = [x for x in run["steps"] if x["offered_rate"] == s["first_failing_rate"]]
            # A saturated load generator fails steps the server could have passed: say how busy it was.
            generator = (
                f" (load generator there: {_fmt(failing[-1]['resources'].get('client_cpu_pct'))}% of {client_cores}% CPU"
                f"{', fell behind its schedule' if not failing[-1]['generator_kept_up'] else ''})"
                if failing
                else ""
            )
            lines.append(
                f"   {run_label(run['target'], run.get('stack')):26} {run['server']} x{run['processes']}, {run.get('layer')} layer: {s['rate']:.0f} msg/s = "
                f"{s['deliveries_per_s']:.0f} deliveries/s ({s['subscribers_per_room']:.0f} sockets/room); "
                f"first failing offer: {s['first_failing_rate']}{generator}"
            )
    bare = report.get("bare_ratios") or []
    if bare:
        capped = " (the bare server passed every step up to --rate: its figure is a lower bound, the ratios upper bounds)" if bare[0]["bare_capped"] else ""
        lines.append(f"   against the bare websockets server of this run ({_fmt(bare[0]['bare_deliveries_per_s'])} deliveries/s){capped}:")
        for r in bare:
            lines.append(
                f"     {r['label']:26} x{r['processes']}: {_fmt(r['deliveries_per_s'])} deliveries/s = {_fmt(r['ratio'])} of bare's; "
                f"server CPU per delivery {_fmt(r['us_per_delivery'])} us vs {_fmt(r['bare_us_per_delivery'])} us "
                f"({_fmt(r['cpu_per_delivery_vs_bare'])}x bare's)"
            )
    for run in report["runs"]:
        sockets = run.get("sockets") or {}
        if sockets:
            lines.append(
                f"   {run_label(run['target'], run.get('stack')):26} x{run['processes']}: permessage-deflate "
                f"{'offered' if sockets.get('deflate_offered') else 'not offered'}, negotiated by "
                f"{sockets.get('deflate_negotiated', 0)}/{sockets.get('connected', 0)} sockets (server side: {run.get('server_deflate')})"
            )
    for r in report.get("ratios", []):
        lines.append(
            f"   ours x{r['processes']} / reference ({r['reference_stack']} stack) x{r['reference_processes']}: sustainable deliveries/s ratio {r['ratio']}; "
            f"server CPU per delivery (median of loss-free steps): ours {r['ours_us_per_delivery']} us, "
            f"reference {r['reference_us_per_delivery']} us (reference/ours = {r['cpu_efficiency_ratio']})"
        )
    storm = (report.get("storm") or {}).get("storm")
    if storm:
        once = storm["exactly_once"]
        lines.append(
            f"   storm: {storm['dropped']} sockets dropped at once, all live again after "
            f"{_fmt(storm['all_live_s'])} s (target {report['options']['storm_target']:g} s; per socket p50 "
            f"{_fmt(storm['reconnect_ms']['p50'])} ms, p99 {_fmt(storm['reconnect_ms']['p99'])} ms), {storm['failed']} failed; "
            f"{storm['messages_during_storm']} messages across it: lost {once['lost']}, repeated {once['repeated']} -> "
            f"{'ok' if storm['ok'] else 'NOT ok'}; server CPU {_fmt(storm['resources']['server_cpu_pct'])}%, "
            f"load generator {_fmt(storm['resources']['client_cpu_pct'])}%"
        )
    for key, name in (("big_room_bare", "big room (bare x1)"), ("big_room", "big room")):
        lines.extend(_big_room_summary(report.get(key), name))
    reactions = report.get("reactions") or {}
    for step in reactions.get("steps", []):
        ev, conv = step["events"], step["convergence"]
        lines.append(
            f"   reactions x{reactions['processes']}: {step['offered_rate']:g}/s offered on {step['messages']} message(s), "
            f"{_fmt(step['acked_per_s'])} acknowledged/s (p99 {_fmt(step['ack_latency_ms']['p99'])} ms); "
            f"{_fmt(ev['per_socket_per_s'])} events/s per socket ({ev['bytes_per_socket_per_s']} B/s) for "
            f"{_fmt(ev['reactions_per_socket_per_s'])} reactions/s (coalescing {_fmt(ev['coalescing_ratio'])}x); "
            f"converged {conv['converged']}/{conv['sockets']}, p99 {_fmt(conv['converge_ms']['p99'])} ms; "
            f"{_fmt(step['server_cpu_ms_per_reaction'])} ms server CPU per reaction, load generator "
            f"{_fmt(step['cpu'].get('client_cpu_pct'))}%; messages lost {step['message_traffic']['lost']} "
            f"-> {'ok' if step['ok'] else 'NOT ok'}"
        )
    idle = report.get("idle")
    if idle:
        lines.append(
            f"   idle: {idle.get('connected')}/{idle['requested']} sockets, {idle.get('rss_per_connection_kb')} KB RSS per connection, "
            f"server CPU {idle.get('resources', {}).get('server_cpu_pct')}% while idle, pongs {idle.get('pongs')}/{idle.get('pings')}"
        )
    return "\n".join(lines)


# -- entry points ------------------------------------------------------------------------


def cpu_comparison(reference: dict[str, Any], ours: dict[str, Any]) -> dict[str, Any]:
    """Server CPU per delivery of both: the median over each run's loss-free steps.

    CPU time per delivery moves far less with other load on the machine than
    latency does, so this ratio survives a noisy machine better than the
    sustainable-rate ratio (both runs use the same rooms, sockets and rates)."""

    def median_cost(run: dict[str, Any]) -> float | None:
        costs = sorted(
            s["server_cpu_us_per_delivery"]
            for s in run["steps"]
            if not s["lost"] and s["generator_kept_up"] and s["server_cpu_us_per_delivery"]
        )
        return costs[len(costs) // 2] if costs else None

    ref, our = median_cost(reference), median_cost(ours)
    return {
        "ours_us_per_delivery": our,
        "reference_us_per_delivery": ref,
        "cpu_efficiency_ratio": round(ref / our, 2) if ref and our else None,
    }


def reference_ratios(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Ours against each reference run: sustainable deliveries/s and server CPU per delivery."""
    return [
        {
            "reference_stack": reference["stack"],
            "processes": r["processes"],
            "reference_processes": reference["processes"],
            "ratio": round(r["sustainable"]["deliveries_per_s"] / base, 2) if base else None,
            **cpu_comparison(reference, r),
        }
        for reference in runs
        if reference["target"] == "reference" and reference.get("sustainable")
        for base in [reference["sustainable"]["deliveries_per_s"]]
        for r in runs
        if r["target"] == "ours" and r.get("sustainable")
    ]


def throughput(run: dict[str, Any]) -> float | None:
    """A run's deliveries/s: the sustainable rate's with --ramp, else its best step's."""
    if run.get("sustainable"):
        return run["sustainable"]["deliveries_per_s"] or None
    rates = [s["deliveries_per_s"] for s in run.get("steps", []) if s.get("deliveries_per_s")]
    return max(rates) if rates else None


def bare_ratios(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every other run against the bare websockets server of the same invocation: deliveries/s and CPU per delivery."""
    bare = next((r for r in runs if r["target"] == "bare"), None)
    if bare is None:
        return []
    base = throughput(bare)
    return [
        {
            "label": run_label(r["target"], r.get("stack")),
            "target": r["target"],
            "stack": r.get("stack"),
            "processes": r["processes"],
            "deliveries_per_s": throughput(r),
            "bare_deliveries_per_s": base,
            # Did the bare server pass every step of its ramp? Then its figure is only a lower bound.
            "bare_capped": bool(bare.get("sustainable")) and bare["sustainable"].get("first_failing_rate") is None,
            "ratio": round(throughput(r) / base, 3) if base and throughput(r) else None,
            # cpu_comparison's "reference" is the bare server here: its CPU per delivery over this run's.
            **{
                "us_per_delivery": cost["ours_us_per_delivery"],
                "bare_us_per_delivery": cost["reference_us_per_delivery"],
                "cpu_per_delivery_vs_bare": round(cost["ours_us_per_delivery"] / cost["reference_us_per_delivery"], 2)
                if cost["ours_us_per_delivery"] and cost["reference_us_per_delivery"]
                else None,
            },
        }
        for r in runs
        if r["target"] != "bare"
        for cost in [cpu_comparison(bare, r)]
    ]


def code_version() -> dict[str, Any]:
    """The commit measured, and whether the working tree differed from it."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    return {"commit": commit, "modified_files": len(status.splitlines())}


def run(opts: Options, *, database_url: str, redis_url: str) -> dict[str, Any]:
    """Run the benchmark described by ``opts``; Django must be set up. Returns the report."""
    from bench.ws_data import prepare

    raise_nofile_limit()
    storm_users = opts.storm + max(1, min(opts.senders, opts.rooms, opts.storm)) if opts.storm else 0
    users = max(opts.rooms * opts.clients_per_room, opts.idle, storm_users, opts.big_room)
    # The big room is one more room, after the load's: nothing else subscribes to it.
    rooms = opts.rooms + (1 if opts.big_room else 0)
    if opts.senders > opts.rooms * opts.clients_per_room:
        raise ValueError("--senders cannot exceed --rooms x --clients-per-room")
    fixture = prepare(rooms=rooms, users=users)
    report: dict[str, Any] = {
        "options": asdict(opts),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "cpus": os.cpu_count(),
        "code": code_version(),
        "runs": [],
    }
    if opts.idle:
        report["idle"] = run_idle(opts, opts.processes[0], database_url, redis_url, fixture)
        return report
    targets = ["reference", "ours"] if opts.target == "both" else [opts.target]
    if opts.bare and "bare" not in targets:
        targets.insert(0, "bare")
    if opts.load:
        if "bare" in targets:
            # The ceiling first, in the same invocation: what the plain library delivers on this machine now.
            report["runs"].append(Run(opts, "bare", 1, database_url, redis_url, fixture).execute())
        if "reference" in targets:
            # The reference is the naive single-process deployment, once per stack asked for.
            for stack in opts.reference_stacks:
                report["runs"].append(Run(opts, "reference", opts.processes[0], database_url, redis_url, fixture, stack).execute())
        if "ours" in targets:
            for processes in opts.processes:
                report["runs"].append(Run(opts, "ours", processes, database_url, redis_url, fixture).execute())
    report["ratios"] = reference_ratios(report["runs"])
    report["bare_ratios"] = bare_ratios(report["runs"])
    # The storm, the big room and the reactions run on ours at the largest process count, as deployed.
    if opts.storm:
        report["storm"] = StormRun(opts, opts.processes[-1], database_url, redis_url, fixture).execute()
    if opts.big_room:
        room = fixture.room_ids[opts.rooms]
        if "bare" in targets:
            # The ceiling for the room too: the plain library, one process, the same load generator, in the same run.
            report["big_room_bare"] = BigRoomRun(opts, 1, database_url, redis_url, fixture, room, target="bare").execute()
        report["big_room"] = BigRoomRun(opts, opts.processes[-1], database_url, redis_url, fixture, room).execute()
    if opts.reactions:
        report["reactions"] = ReactionRun(opts, opts.processes[-1], database_url, redis_url, fixture).execute()
    return report


def parse_args(argv: list[str] | None) -> Options:
    d = Options()
    p = argparse.ArgumentParser(prog="python -m bench.ws_bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--rooms", type=int, default=d.rooms, help="rooms (each socket subscribes to one)")
    p.add_argument("--clients-per-room", type=int, default=d.clients_per_room, help="sockets per room")
    p.add_argument("--senders", type=int, default=d.senders, help="how many of the sockets also send (spread over rooms)")
    p.add_argument("--rate", type=float, default=d.rate, help="messages/s offered in total (with --ramp: the highest step)")
    p.add_argument("--size", type=int, default=d.size, help="message body bytes")
    p.add_argument("--duration", type=float, default=d.duration, help="seconds per load step (or idle hold)")
    p.add_argument("--processes", default="1", help="server processes: 1, 2, or a list such as 1,2 (one run each)")
    p.add_argument("--server", choices=["daphne", "uvicorn"], default=d.server)
    p.add_argument(
        "--compression", choices=["none", "deflate"], default=d.compression,
        help="what the clients offer: permessage-deflate (the default, as every browser does; the server decides) or none",
    )  # fmt: skip
    p.add_argument(
        "--no-deflate", dest="compression", action="store_const", const="none",
        help="the clients do not offer permessage-deflate (= --compression none)",
    )  # fmt: skip
    p.add_argument(
        "--target", choices=["ours", "reference", "both", "bare"], default=d.target,
        help="what the load runs measure; bare: only the bare websockets server (bench/bare_broadcast.py)",
    )  # fmt: skip
    p.add_argument("--bare", action="store_true", help="also run the bare websockets server first, and print ratios to it")
    p.add_argument("--no-load", dest="load", action="store_false", help="skip the load runs (only --storm / --big-room / --reactions)")
    p.add_argument(
        "--reference-stack", default=",".join(d.reference_stacks), dest="reference_stacks",
        help="where the reference runs, one run each: tutorial (daphne, RedisChannelLayer defaults, redis-py connections "
        "as before 8.0), tutorial-defaults (with redis-py 8's 5 s read timeout and pool of 100), ours (--server, pub/sub layer)",
    )  # fmt: skip
    p.add_argument("--ramp", action="store_true", help="step the rate up from --ramp-start until loss or p99 fails")
    p.add_argument("--ramp-start", type=float, default=d.ramp_start)
    p.add_argument("--ramp-factor", type=float, default=d.ramp_factor)
    p.add_argument("--ramp-max-steps", type=int, default=d.ramp_max_steps)
    p.add_argument("--ramp-refine", type=int, default=d.ramp_refine, help="bisection steps after the first failure")
    p.add_argument("--warmup", type=float, default=d.warmup, help="seconds of unmeasured load before the first step")
    p.add_argument("--confirm", type=int, default=d.confirm, help="re-runs of a step that failed on latency alone")
    p.add_argument("--idle", type=int, default=0, help="idle mode: hold this many sockets with heartbeats")
    p.add_argument("--heartbeat", type=float, default=d.heartbeat, help="idle mode: seconds between pings per socket")
    storm = p.add_argument_group("reconnect storm (ours, at the largest --processes)")
    storm.add_argument("--storm", type=int, default=d.storm, metavar="N", help="drop N subscribed sockets at once; they reconnect and resume")
    storm.add_argument("--storm-rate", type=float, default=d.storm_rate, help="messages/s sent before and throughout the storm")
    storm.add_argument("--storm-pre", type=float, default=d.storm_pre, help="seconds of traffic (all delivered) before the storm")
    storm.add_argument("--storm-lead", type=float, default=d.storm_lead, help="seconds of sending between the storm's start and the drop")
    storm.add_argument("--storm-tail", type=float, default=d.storm_tail, help="seconds of sending after every socket is live again")
    storm.add_argument("--storm-timeout", type=float, default=d.storm_timeout, help="reconnects still pending then count as failed")
    storm.add_argument(
        "--storm-backoff", type=float, default=d.storm_backoff,
        help="first reconnect delay ceiling, s (chat.js: 0.5, a delay drawn from [ceiling/2, ceiling], doubling per retry); 0: at once",
    )  # fmt: skip
    storm.add_argument(
        "--storm-concurrency", type=int, default=d.storm_concurrency,
        help="handshakes in flight at once over all load processes; 0 (default): no limit, as browsers have none",
    )  # fmt: skip
    storm.add_argument("--storm-target", type=float, default=d.storm_target, help="seconds within which all must be live again (judged)")
    big = p.add_argument_group("big room (ours, at the largest --processes)")
    big.add_argument("--big-room", type=int, default=d.big_room, metavar="N", help="N sockets in one room: join, presence, delivery")
    big.add_argument("--big-room-rate", type=float, default=d.big_room_rate, help="messages/s sent to the big room")
    big.add_argument("--big-room-senders", type=int, default=d.big_room_senders, help="sockets of the big room that send")
    big.add_argument(
        "--big-room-probe-at", type=int, default=d.big_room_probe_at,
        help="the smaller room size at which bytes per join are measured (the larger: --big-room)",
    )  # fmt: skip
    big.add_argument("--big-room-probe", type=int, default=d.big_room_probe, help="sockets joined (and measured) at each probe size")
    big.add_argument(
        "--big-room-concurrency", type=int, default=d.big_room_concurrency,
        help="handshakes in flight at once while the room fills, over all load processes",
    )  # fmt: skip
    react = p.add_argument_group("reaction storm (ours, at the largest --processes)")
    react.add_argument(
        "--reactions", action="store_true",
        help="the load's sockets, and the sockets of the first rooms add and remove reactions on a fresh message each",
    )  # fmt: skip
    react.add_argument("--reaction-rate", type=float, default=d.reaction_rate, help="reactions/s offered in total")
    react.add_argument("--reaction-duration", type=float, default=d.reaction_duration, help="seconds of reacting")
    react.add_argument(
        "--reaction-messages", type=int, default=d.reaction_messages,
        help="messages reacted to, one in each of the first rooms (round-robin over --rooms beyond that)",
    )  # fmt: skip
    react.add_argument(
        "--reaction-message-rate", type=float, default=d.reaction_message_rate,
        help="messages/s the senders send meanwhile (all must arrive)",
    )  # fmt: skip
    react.add_argument(
        "--reaction-deadline", type=float, default=d.reaction_deadline,
        help="seconds after the last ack within which every socket must hold the final summary",
    )  # fmt: skip
    p.add_argument("--p99-limit", type=float, default=d.p99_limit_ms, dest="p99_limit_ms")
    p.add_argument("--drain", type=float, default=d.drain, help="seconds to wait for late deliveries after each step")
    p.add_argument("--client-procs", type=int, default=d.client_procs, help="load-generator processes")
    p.add_argument("--connect-concurrency", type=int, default=d.connect_concurrency)
    p.add_argument("--connect-timeout", type=float, default=d.connect_timeout)
    p.add_argument("--connect-retries", type=int, default=d.connect_retries, help="reconnect attempts per socket")
    p.add_argument("--profile-dir", help="py-spy every server process during every measured step; raw stacks go here")
    p.add_argument("--settings", default=d.settings_module, dest="settings_module", help="DJANGO_SETTINGS_MODULE of the servers")
    p.add_argument("--json", help="write the full report here")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    values = vars(args)
    values["reference_stacks"] = [x.strip() for x in str(args.reference_stacks).split(",") if x.strip()]
    unknown = sorted(set(values["reference_stacks"]) - set(REFERENCE_STACKS))
    if unknown or not values["reference_stacks"]:
        p.error(f"--reference-stack: choose from {', '.join(REFERENCE_STACKS)} (got {', '.join(unknown) or 'none'})")
    values["processes"] = [int(x) for x in str(args.processes).split(",") if x.strip()]
    if any(n < 1 for n in values["processes"]):
        p.error("--processes must be positive")
    return Options(**values)


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    urls = service_urls()
    if urls is None:
        return 2
    database_url, redis_url = urls
    # The coordinator only prepares fixtures; base settings read the same env vars.
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings.test")
    import django

    django.setup()
    # Bulk fixture writes are slow by design; the server processes keep their own slow-query log.
    logging.getLogger("perf.slow_query").setLevel(logging.ERROR)
    report = run(opts, database_url=database_url, redis_url=redis_url)
    print(summary(report))
    if opts.json:
        write_report(report, Path(opts.json))
        print(f"   report: {opts.json}")
    return 0


def write_report(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))


if __name__ == "__main__":
    sys.exit(main())
