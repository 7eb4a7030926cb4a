"""The ADR-008 performance table, measured on this machine: ``make bench``.

    python -m bench.adr_bench            # 60 s windows after 60 s of settling: 10 to 30 minutes on 2 cores, by how far the ramp gets
    python -m bench.adr_bench --quick    # 30 s windows, shorter sub-benchmarks

Needs DATABASE_URL (PostgreSQL) and REDIS_URL; everything else it starts
itself, on 127.0.0.1 only, and stops on exit (also on errors and Ctrl-C):

1. **Data**: ``migrate``, then ``python -m bench.seed --users 10000 --projects 20
   --rooms 500 --messages 1000000`` (does nothing when the data set is there;
   shows a progress bar when it loads).
2. **Database**: ``python -m bench.bench_db --json``: p95 of every hot query, cache off.
3. **Real time** (bench/ws_bench.py, its own servers): WebSocket p99 at the
   ADR load (500 sockets, 100 messages/s), then a ramp of the message rate to
   find the highest rate at which every message is persisted and delivered
   with p99 <= 200 ms.
4. **The stack**: one server process (uvicorn, chatsite.server) per core on its own port (no load
   balancer: the load generator spreads users over the ports), and the
   background worker (``manage.py chat_worker``). Production settings, with
   the message rate limit raised (``RATE_LIMIT_MESSAGES=100000/60``: a load
   generator's few thousand users would otherwise be throttled as abusers).
5. **HTTP** (bench/bench_http.py, if present): the history API at a fixed rate.
6. **Locust** (loadtest/locustfile.py with the stepping shape
   loadtest/steps.py, one run), the Mattermost way: users step up (250, 500,
   1000, 2000, 3000, 5000 by default; earlier users stay connected); after each
   ramp settles, a window of fixed length holds while the error rate is at most
   0.1 %, HTTP p99 and WebSocket delivery p99 are at most 200 ms and the
   server processes' CPU is not pegged (below 95 % of all cores). The first
   step that fails ends the ramp; the capacity is the highest step that held.
   The cache hit rate is read from the server processes in each window.

Prints the ADR table filled in, writes every raw number to
``bench/results/adr.json`` and a chart of latency percentiles against load to
``bench/results/adr-latency.png``. A part that is skipped, missing or failed
shows as such in the table, never as a number.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import re
import resource
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bench import service_urls

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
LOADTEST = ROOT / "loadtest"
SEED_SIZES = {"users": 10_000, "projects": 20, "rooms": 500, "messages": 1_000_000}
PARTS = ("db", "ws", "throughput", "http", "locust")

# --quick: shorter windows and sub-benchmarks.
QUICK = {"step_time": 30.0, "step_settle": 20.0, "db_iterations": 300, "ws_duration": 10.0, "throughput_duration": 6.0,
         "http_requests": 1000, "http_duration": 10.0}  # fmt: skip

# The ADR's rows: (key, metric, ADR target, our target).
ROWS = (
    ("api_p95", "API p95 response time", "< 200 ms", "≤ 20 ms"),
    ("db_p95", "Database query p95", "< 100 ms", "≤ 2 ms"),
    ("ws_p99", "WebSocket latency (p99)", "< 50 ms", "≤ 20 ms at the ADR load"),
    ("cache_hit", "Cache hit rate", "> 70%", "≥ 95%"),
    ("users", "Concurrent users", "> 500", "≥ 5,000 (each with a WebSocket, Locust mix)"),
    ("messages", "Messages/s", "> 100", "≥ 1,000 persisted and delivered"),
)
# (ADR bound, our bound, "lower is better")
BOUNDS = {
    "api_p95": (200.0, 20.0, True),
    "db_p95": (100.0, 2.0, True),
    "ws_p99": (50.0, 20.0, True),
    "cache_hit": (70.0, 95.0, False),
    "users": (500.0, 5000.0, False),
    "messages": (100.0, 1000.0, False),
}
STRICT = {"api_p95", "db_p95", "ws_p99", "cache_hit", "users", "messages"}  # ADR uses < / >


@dataclass
class Options:
    steps: list[int] = field(default_factory=lambda: [250, 500, 1000, 2000, 3000, 5000])
    step_time: float = 60.0
    # Three mean think times: the users a ramp added have taken their first
    # steps (cold cache entries of their own) before the window opens.
    step_settle: float = 60.0
    spawn_rate: float = 50.0
    think_time: float = 20.0
    adr_users: int = 500
    adr_rate: float = 100.0
    locust_processes: int = 1
    locust_args: str = ""  # more locustfile options, e.g. "--think-time 10 --mix post=20"
    confirm: int = 1
    error_limit_pct: float = 0.1
    p99_limit_ms: float = 200.0
    cpu_limit_pct: float = 95.0
    server_processes: int = 0  # 0: one per core
    db_iterations: int = 1000
    ws_duration: float = 20.0
    throughput_duration: float = 10.0
    throughput_max: float = 2000.0
    http_rate: float = 100.0
    http_requests: int = 2000
    http_duration: float = 20.0
    skip: list[str] = field(default_factory=list)
    no_seed: bool = False
    work_dir: str = str(RESULTS)  # logs, sub-benchmark reports, the token file
    json: str = str(RESULTS / "adr.json")
    chart: str = str(RESULTS / "adr-latency.png")


# -- small helpers ---------------------------------------------------------------------


def log(text: str = "") -> None:
    print(text, flush=True)


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile of raw values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]


def server_env(opts: Options) -> dict[str, str]:
    """Production settings for every server process, with this run's services."""
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="chatsite.settings.production",
        SECRET_KEY=os.environ.get("SECRET_KEY") or "adr-bench-only-" + uuid.uuid4().hex,
        SECURE_SSL_REDIRECT="0",  # plain HTTP on 127.0.0.1
        DEBUG="0",
        RATE_LIMIT_MESSAGES=os.environ.get("BENCH_RATE_LIMIT_MESSAGES", "100000/60"),
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")])),
    )
    # Two servers, the worker and the benchmarks share one PostgreSQL: keep the pools modest.
    env.setdefault("DB_POOL_SIZE", "5")
    env.setdefault("DB_MAX_OVERFLOW", "10")
    return env


def _interrupt(proc: subprocess.Popen, grace: float = 30) -> None:
    """Ctrl-C a sub-benchmark (it writes its report on the way out); kill it if it takes longer than ``grace``."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _raise_child_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def logs_dir(opts: Options) -> Path:
    path = Path(opts.work_dir) / "logs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def run_logged(
    name: str, cmd: list[str], *, env: dict[str, str], timeout: float, logs: Path, attach: bool = False
) -> tuple[int, Path]:
    """Run a sub-benchmark to completion (bounded by ``timeout``); its output goes to a log file."""
    path = logs / f"{name}.log"
    with open(path, "wb") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env,
            stdout=None if attach else out,
            stderr=None if attach else subprocess.STDOUT,
            preexec_fn=_raise_child_nofile,
        )
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _interrupt(proc)
            return -1, path
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    return code, path


def tail(path: Path, lines: int = 8) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def part_result(status: str, reason: str = "", **data: Any) -> dict[str, Any]:
    return {"status": status, "reason": reason, **data}


# -- 1. data -----------------------------------------------------------------------------


def seed(opts: Options, env: dict[str, str]) -> dict[str, Any]:
    py = sys.executable
    code, path = run_logged("migrate", [py, "manage.py", "migrate", "--no-input"], env=env, timeout=600, logs=logs_dir(opts))
    if code != 0:
        raise RuntimeError(f"migrate failed:\n{tail(path)}")
    if opts.no_seed:
        return part_result("skipped", "--no-seed")
    log("Data set: python -m bench.seed " + " ".join(f"--{k} {v}" for k, v in SEED_SIZES.items()) + " (nothing to do when present)")
    sizes = [f"--{k}={v}" for k, v in SEED_SIZES.items()]
    started = time.monotonic()
    code, _ = run_logged("seed", [py, "-m", "bench.seed", *sizes], env=env, timeout=3600, logs=logs_dir(opts), attach=True)
    if code != 0:
        raise RuntimeError("bench.seed failed (see above)")
    return part_result("ok", seconds=round(time.monotonic() - started, 1))


# -- 2. database -------------------------------------------------------------------------


def bench_db(opts: Options, env: dict[str, str]) -> dict[str, Any]:
    if not (ROOT / "bench" / "bench_db.py").exists():
        return part_result("missing", "bench/bench_db.py is not there")
    logs = logs_dir(opts)
    out_path = logs / "bench_db.json"
    cmd = [sys.executable, "-m", "bench.bench_db", "--json", "--iterations", str(opts.db_iterations),
           "--max-seconds", "30"]  # fmt: skip
    with open(out_path, "wb") as out, open(logs / "bench_db.log", "wb") as err:
        try:
            proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=out, stderr=err, timeout=1200)
        except subprocess.TimeoutExpired:
            return part_result("failed", "bench_db did not finish in 20 minutes")
    if proc.returncode != 0:
        return part_result("failed", f"bench_db exited with {proc.returncode}: {tail(logs / 'bench_db.log', 3)}")
    try:
        report = orjson.loads(out_path.read_bytes())
        rows = report["results"]
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        return part_result("failed", f"bench_db printed no JSON report ({exc})")
    if not rows:
        return part_result("failed", "bench_db measured no query")
    worst = max(rows, key=lambda r: r["db_p95_ms"])
    return part_result(
        "ok",
        worst_db_p95_ms=worst["db_p95_ms"],
        worst_query=worst["query"],
        median_db_p95_ms=percentile([r["db_p95_ms"] for r in rows], 50),
        queries=len(rows),
        report=report,
    )


# -- 3. real time (bench/ws_bench.py) ----------------------------------------------------


def ws_run(name: str, args: list[str], env: dict[str, str], timeout: float, logs: Path) -> tuple[dict[str, Any] | None, str]:
    if not (ROOT / "bench" / "ws_bench.py").exists():
        return None, "bench/ws_bench.py is not there"
    out = logs / f"{name}.json"
    out.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "bench.ws_bench", *args, "--json", str(out)]
    code, path = run_logged(name, cmd, env=env, timeout=timeout, logs=logs)
    if code != 0 or not out.exists():
        return None, f"ws_bench exited with {code}: {tail(path, 3)}"
    return orjson.loads(out.read_bytes()), ""


def bench_ws_adr(opts: Options, env: dict[str, str], processes: int) -> dict[str, Any]:
    """WebSocket p99 at the ADR load: ``adr_users`` sockets, ``adr_rate`` messages/s."""
    rooms = max(1, opts.adr_users // 10)
    senders = min(opts.adr_users, max(1, int(opts.adr_rate)))
    args = ["--rooms", str(rooms), "--clients-per-room", "10", "--senders", str(senders), "--rate", str(opts.adr_rate),
            "--duration", str(opts.ws_duration), "--processes", str(processes), "--confirm", str(opts.confirm)]  # fmt: skip
    report, error = ws_run("ws_adr", args, env, timeout=600 + 3 * opts.ws_duration, logs=logs_dir(opts))
    if report is None:
        return part_result("failed" if "exited" in error else "missing", error)
    run = report["runs"][0]
    steps = run.get("steps") or []
    if not steps:
        return part_result("failed", run.get("error", "no step measured"), report=report)
    step = steps[-1]
    return part_result(
        "ok",
        sockets=run["sockets"]["connected"],
        rate=step["offered_rate"],
        sent_rate=step["sent_rate"],
        p50_ms=step["latency_ms"]["p50"],
        p95_ms=step["latency_ms"]["p95"],
        p99_ms=step["latency_ms"]["p99"],
        lost=step["lost"],
        ok=step["ok"],
        report=report,
    )


def bench_throughput(opts: Options, env: dict[str, str], processes: int) -> dict[str, Any]:
    """Highest message rate persisted and delivered (zero loss, p99 <= the limit)."""
    start = 250.0
    args = ["--rooms", "100", "--clients-per-room", "4", "--senders", "400", "--rate", str(opts.throughput_max),
            "--ramp", "--ramp-start", str(start), "--ramp-factor", "2", "--ramp-refine", "2",
            "--duration", str(opts.throughput_duration), "--processes", str(processes),
            "--p99-limit", str(opts.p99_limit_ms), "--confirm", str(opts.confirm)]  # fmt: skip
    report, error = ws_run("ws_throughput", args, env, timeout=900 + 12 * opts.throughput_duration, logs=logs_dir(opts))
    if report is None:
        return part_result("failed" if "exited" in error else "missing", error)
    run = report["runs"][0]
    sustainable = run.get("sustainable") or {}
    steps = [
        {
            "offered_rate": s["offered_rate"],
            "sent_rate": s["sent_rate"],
            "deliveries_per_s": s["deliveries_per_s"],
            "lost": s["lost"],
            "p50_ms": s["latency_ms"]["p50"],
            "p95_ms": s["latency_ms"]["p95"],
            "p99_ms": s["latency_ms"]["p99"],
            "server_cpu_pct": s["resources"].get("server_cpu_pct"),
            "ok": s["ok"],
        }
        for s in run.get("steps", [])
    ]
    best = max((s for s in steps if s["ok"] and s["offered_rate"] == sustainable.get("rate")), key=lambda s: s["sent_rate"], default=None)
    return part_result(
        "ok",
        rate=sustainable.get("rate", 0.0),
        sent_rate=best["sent_rate"] if best else 0.0,
        deliveries_per_s=best["deliveries_per_s"] if best else 0.0,
        first_failing_rate=sustainable.get("first_failing_rate"),
        subscribers_per_room=sustainable.get("subscribers_per_room"),
        steps=steps,
        report=report,
    )


# -- 4. the stack ------------------------------------------------------------------------


@dataclass
class Stack:
    ports: list[int]
    servers: list[subprocess.Popen]
    worker: subprocess.Popen | None

    @property
    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{p}" for p in self.ports]

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.servers] + ([self.worker.pid] if self.worker else [])

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.servers) and (self.worker is None or self.worker.poll() is None)


def server_command(port: int) -> list[str]:
    # As scripts/serve.sh and the Dockerfile run it (chatsite.server: uvicorn, backlog 4096).
    return [
        sys.executable, "-m", "chatsite.server", "-b", "127.0.0.1", "-p", str(port), "-v", "0",
        "--ping-interval", "20", "--ping-timeout", "30", "--max-message-size", "1048576",
        "loadtest.stats_asgi:application",
    ]  # fmt: skip


def _wait_http(url: str, proc: subprocess.Popen, timeout: float, log_path: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server {url} exited with {proc.returncode}:\n{tail(log_path)}")
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"server {url} did not answer /healthz within {timeout:.0f}s:\n{tail(log_path)}")


def _wait_worker(proc: subprocess.Popen, env: dict[str, str], timeout: float, log_path: Path) -> None:
    """Pub/sub delivers only to present listeners: wait until the worker has subscribed."""
    import redis
    from django.conf import settings

    channel = settings.CHAT_BACKGROUND_CHANNEL
    client = redis.Redis.from_url(env["REDIS_URL"])
    try:
        deadline = time.monotonic() + timeout
        while not dict(client.pubsub_numsub(channel)).get(channel.encode()):
            if proc.poll() is not None:
                raise RuntimeError(f"chat_worker exited with {proc.returncode}:\n{tail(log_path)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"chat_worker did not subscribe within {timeout:.0f}s")
            time.sleep(0.2)
    finally:
        client.close()


def _wait_warmed(proc: subprocess.Popen, timeout: float, log_path: Path) -> None:
    """The worker warms an empty cache as it starts (chat.warming): measure after that, as a deploy would serve.

    Its first check logs "cache warmed", "cache warming skipped" or "cache
    warming failed"; a worker that started no warmer (off, or caching off)
    printed no "cache warmer:".
    """
    if b"cache warmer:" not in log_path.read_bytes():
        return
    first_check = re.compile(r"cache warm(ed|ing skipped|ing failed)")
    deadline = time.monotonic() + timeout
    while not first_check.search(log_path.read_text(errors="replace")):
        if proc.poll() is not None:
            raise RuntimeError(f"chat_worker exited with {proc.returncode}:\n{tail(log_path)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"chat_worker did not warm the cache within {timeout:.0f}s:\n{tail(log_path)}")
        time.sleep(0.2)
    lines = log_path.read_text(errors="replace").splitlines()
    log("  " + next((line.strip() for line in lines if first_check.search(line)), "cache warming: see worker.log"))


@contextmanager
def stack(processes: int, env: dict[str, str], logs: Path) -> Iterator[Stack]:
    """``processes`` servers on free ports and the background worker; all stopped on exit."""
    started: list[subprocess.Popen] = []
    try:
        ports, servers = [], []
        for i in range(processes):
            port = free_port()
            with open(logs / f"server-{i}.log", "wb") as out:
                proc = subprocess.Popen(server_command(port), cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                        stderr=out, preexec_fn=_raise_child_nofile)  # fmt: skip
            started.append(proc)
            ports.append(port)
            servers.append(proc)
        with open(logs / "worker.log", "wb") as out:
            # INFO: the run waits for the warmer's first line (_wait_warmed).
            worker = subprocess.Popen([sys.executable, "manage.py", "chat_worker"], cwd=ROOT, env={**env, "LOG_LEVEL": "INFO"},
                                      stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
        started.append(worker)
        for i, (port, proc) in enumerate(zip(ports, servers)):
            _wait_http(f"http://127.0.0.1:{port}", proc, 60, logs / f"server-{i}.log")
        _wait_worker(worker, env, 60, logs / "worker.log")
        _wait_warmed(worker, 120, logs / "worker.log")
        yield Stack(ports=ports, servers=servers, worker=worker)
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


# -- 5. HTTP (bench/bench_http.py) --------------------------------------------------------


def bench_http(opts: Options, env: dict[str, str], stack_: Stack) -> dict[str, Any]:
    script = ROOT / "bench" / "bench_http.py"
    if not script.exists():
        return part_result("missing", "bench/bench_http.py is not there")
    out = logs_dir(opts) / "bench_http.json"
    out.unlink(missing_ok=True)
    cmd = [sys.executable, str(script), "--database-url", env["DATABASE_URL"], "--redis-url", env["REDIS_URL"],
           "--server-url", stack_.urls[0], "--rate", str(opts.http_rate), "--requests", str(opts.http_requests),
           "--duration", str(opts.http_duration), "--scenarios", "api_newest_br", "api_older_br", "--json", str(out)]  # fmt: skip
    code, path = run_logged("bench_http", cmd, env=env, timeout=300 + 6 * opts.http_duration, logs=logs_dir(opts))
    if code != 0 or not out.exists():
        return part_result("failed", f"bench_http exited with {code}: {tail(path, 3)}")
    try:
        report = orjson.loads(out.read_bytes())
        rows = [r for r in report["results"] if "open" in str(r.get("mode", ""))]
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        return part_result("failed", f"unexpected bench_http report ({exc})")
    if not rows:
        return part_result("failed", "bench_http reported no open-loop (fixed-rate) result")
    return part_result(
        "ok",
        rate=opts.http_rate,
        p95_ms=max(r["p95_ms"] for r in rows),
        p99_ms=max(r["p99_ms"] for r in rows),
        errors=sum(sum(r["errors"].values()) for r in rows),
        rows=rows,
    )


# -- 6. Locust ------------------------------------------------------------------------------


def make_tokens(count: int, path: Path) -> int:
    from bench.make_tokens import load_user_tokens

    content = load_user_tokens(count=count)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(content))
    os.chmod(path, 0o600)
    return len(content["users"])


def locust_command(opts: Options, stack_: Stack, tokens: Path, report: Path, stats: Path) -> list[str]:
    """One Locust run with the stepping shape (loadtest/steps.py) against every server port."""
    cmd = [
        sys.executable, "-m", "locust", "-f", f"{LOADTEST / 'locustfile.py'},{LOADTEST / 'steps.py'}", "--headless",
        "-H", stack_.urls[0], "--hosts", ",".join(stack_.urls), "--tokens-file", str(tokens),
        "--think-time", str(opts.think_time),
        "--steps", ",".join(map(str, opts.steps)), "--step-time", str(opts.step_time),
        "--step-settle", str(opts.step_settle), "--step-spawn-rate", str(opts.spawn_rate),
        "--step-confirm", str(opts.confirm), "--step-error-limit", str(opts.error_limit_pct),
        "--step-p99-limit", str(opts.p99_limit_ms), "--step-cpu-limit", str(opts.cpu_limit_pct),
        "--step-server-pids", ",".join(map(str, stack_.pids)), "--step-cache-stats", "--step-report", str(report),
        "--stats-file", str(stats), "--only-summary", "--stop-timeout", "5", "--exit-code-on-error", "0",
        "--loglevel", "WARNING",
    ]  # fmt: skip
    if opts.locust_processes > 1:
        cmd += ["--processes", str(opts.locust_processes)]
    return cmd + shlex.split(opts.locust_args)


def locust_time_bound(opts: Options) -> float:
    """The longest the stepped run may take: every ramp, settle and (re-)measurement, plus slack."""
    total, previous = 120.0, 0
    for users in opts.steps:
        total += (users - previous) / opts.spawn_rate + 60 + opts.step_settle + opts.step_time * (1 + opts.confirm) + 5
        previous = users
    return total


def step_line(s: dict[str, Any]) -> str:
    def f(v: Any, fmt: str = "{:.0f}") -> str:
        return "-" if v is None else fmt.format(v)

    http, ws = s.get("http", {}), s.get("ws_delivery", {})
    cache = (s.get("cache") or {}).get("hit_rate_pct")
    verdict = "held" if s["held"] else "FAILED: " + "; ".join(s["reasons"])
    return (
        f"{s['users']:>6} {f(s.get('rps'), '{:.1f}'):>7} {f(s.get('error_rate_pct'), '{:.2f}'):>6} "
        f"{f(http.get('p50')):>5} {f(http.get('p95')):>5} {f(http.get('p99')):>5} {f(ws.get('p99')):>6} "
        f"{f(s.get('server_cpu_pct')):>6} {f(s.get('generator_cpu_pct')):>6} {f(s.get('system_cpu_pct')):>5} "
        f"{f(cache, '{:.1f}'):>6}  {verdict}"
    )


STEP_HEADER = (
    f"{'users':>6} {'req/s':>7} {'err%':>6} {'p50':>5} {'p95':>5} {'p99':>5} {'WSp99':>6} "
    f"{'srv%':>6} {'gen%':>6} {'sys%':>5} {'cache%':>6}  verdict\n"
    "                      (HTTP ms)   (delivery) (CPU, % of one core)"
)


def locust_capacity(opts: Options, stack_: Stack) -> dict[str, Any]:
    """Raise users step by step in one Locust run (users stay connected) until a step fails."""
    logs = logs_dir(opts)
    tokens = Path(opts.work_dir) / "loadtest-tokens.json"
    wanted = max(opts.steps)
    made = make_tokens(wanted, tokens)
    if made < wanted:
        log(f"   only {made} load users can read a room: above {made} users, identities are reused")
    log(f"   {made} tokens issued; think time {opts.think_time:g} s; per step: spawn at {opts.spawn_rate:g}/s, "
        f"settle {opts.step_settle:g} s, measure {opts.step_time:g} s")  # fmt: skip
    log(STEP_HEADER)
    report_path, stats_path = logs / "locust-steps.json", logs / "locust-stats.json"
    report_path.unlink(missing_ok=True)
    printed = 0

    def progress() -> None:
        nonlocal printed
        try:
            steps = orjson.loads(report_path.read_bytes())["steps"]
        except (OSError, orjson.JSONDecodeError, KeyError):
            return
        for step in steps[printed:]:
            log(step_line(step))
        printed = len(steps)

    bound = locust_time_bound(opts)
    with open(logs / "locust.log", "wb") as out:
        proc = subprocess.Popen(
            locust_command(opts, stack_, tokens, report_path, stats_path),
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, preexec_fn=_raise_child_nofile,
        )  # fmt: skip
        deadline = time.monotonic() + bound
        try:
            while proc.poll() is None and time.monotonic() < deadline:
                time.sleep(2)
                progress()
        finally:
            if proc.poll() is None:
                _interrupt(proc)
    progress()
    try:
        report = orjson.loads(report_path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return part_result("failed", f"Locust wrote no step report (exit {proc.returncode}): {tail(logs / 'locust.log', 3)}")
    steps = report["steps"]
    for step in steps:
        step.pop("stats", None)  # raw entries stay in the log directory's report
    if not report.get("finished"):
        held = [s["users"] for s in steps if s["held"]]
        return part_result(
            "failed",
            f"the stepped run did not finish within {bound:.0f} s (exit {proc.returncode})",
            tokens=made, steps=steps, capacity_so_far=max(held, default=0),
        )  # fmt: skip
    return part_result(
        "ok",
        tokens=made,
        capacity=report["capacity"],
        first_failing=report["first_failing"],
        limit=report["limit"],
        plan=report.get("plan"),
        server_alive=stack_.alive(),
        steps=steps,
    )


# -- the table ----------------------------------------------------------------------------


def verdict(key: str, value: float | None) -> str:
    if value is None:
        return ""
    adr, ours, lower = BOUNDS[key]
    meets_adr = value < adr if lower else value > adr
    meets_ours = value <= ours if lower else value >= ours
    return f" (ADR {'✓' if meets_adr else '✗'}, ours {'✓' if meets_ours else '✗'})"


def step_at(locust: dict[str, Any], users: int) -> dict[str, Any] | None:
    """The last window measured with ``users`` users; if the run stopped below that, the step
    closest to it (the caller labels the number with the step's own user count)."""
    steps = [s for s in locust.get("steps", []) if s.get("http")]
    if not steps:
        return None
    exact = [s for s in steps if s["users"] == users]
    if exact:
        return exact[-1]
    return min(reversed(steps), key=lambda s: abs(s["users"] - users))


def not_measured(part: dict[str, Any] | None) -> str:
    if part is None:
        return "not measured"
    return f"not measured ({part['status']}: {part['reason']})" if part.get("reason") else f"not measured ({part['status']})"


def table_values(report: dict[str, Any], opts: Options) -> dict[str, tuple[float | None, str]]:
    parts = report["parts"]
    values: dict[str, tuple[float | None, str]] = {}

    locust = parts.get("locust")
    adr_step = step_at(locust, opts.adr_users) if locust and locust["status"] == "ok" else None
    http = parts.get("http")
    if adr_step and adr_step.get("http", {}).get("p95") is not None:
        v = adr_step["http"]["p95"]
        text = f"{v:.0f} ms (every API call of the Locust mix, {adr_step['users']} users)"
        if http and http["status"] == "ok":
            text += f"; history API alone {http['p95_ms']:.1f} ms at {http['rate']:g} req/s"
        values["api_p95"] = (v, text)
    elif http and http["status"] == "ok":
        values["api_p95"] = (http["p95_ms"], f"{http['p95_ms']:.1f} ms (history API at {http['rate']:g} req/s)")
    else:
        values["api_p95"] = (None, not_measured(locust if locust and locust["status"] != "ok" else http))

    db = parts.get("db")
    if db and db["status"] == "ok":
        v = db["worst_db_p95_ms"]
        values["db_p95"] = (v, f"{v:.2f} ms (slowest of {db['queries']} hot queries: {db['worst_query']}; median {db['median_db_p95_ms']:.2f} ms)")
    else:
        values["db_p95"] = (None, not_measured(db))

    ws = parts.get("ws")
    if ws and ws["status"] == "ok" and ws["p99_ms"] is not None:
        v = ws["p99_ms"]
        lost = f", {ws['lost']} lost" if ws["lost"] else ", none lost"
        values["ws_p99"] = (v, f"{v:.1f} ms ({ws['sockets']} sockets, {ws['sent_rate']:g} messages/s{lost})")
    else:
        values["ws_p99"] = (None, not_measured(ws))

    cache = (adr_step or {}).get("cache") or {}
    if cache.get("hit_rate_pct") is not None:
        v = cache["hit_rate_pct"]
        values["cache_hit"] = (v, f"{v:.1f}% (Locust mix, {adr_step['users']} users; {cache['hits'] + cache['misses']:,} lookups)")
    elif locust and locust["status"] == "ok":
        values["cache_hit"] = (None, "not measured (the servers returned no cache counters)")
    else:
        values["cache_hit"] = (None, not_measured(locust))

    if locust and locust["status"] == "ok":
        v = float(locust["capacity"])
        limit = "; ".join(locust["limit"])
        if not locust["capacity"]:
            values["users"] = (v, f"below {locust['first_failing']:,}: the first step failed ({limit})")
        elif locust["first_failing"]:
            values["users"] = (v, f"{locust['capacity']:,} (highest step held; {locust['first_failing']:,} failed: {limit})")
        else:
            values["users"] = (v, f"{locust['capacity']:,} ({limit})")
    else:
        values["users"] = (None, not_measured(locust))

    tp = parts.get("throughput")
    if tp and tp["status"] == "ok" and tp["rate"]:
        v = tp["sent_rate"] or 0.0
        fail = f"; {tp['first_failing_rate']:g}/s failed" if tp.get("first_failing_rate") else ""
        values["messages"] = (v, f"{v:,.0f} (zero loss, p99 ≤ {opts.p99_limit_ms:.0f} ms, {tp['deliveries_per_s']:,.0f} deliveries/s{fail})")
    elif tp and tp["status"] == "ok":
        lowest = min((s for s in tp["steps"]), key=lambda s: s["offered_rate"], default=None)
        detail = (
            f": at {lowest['offered_rate']:g}/s, {lowest['lost']} lost, p99 {lowest['p99_ms'] or 0:.0f} ms" if lowest else ""
        )
        values["messages"] = (0.0, f"below {tp['first_failing_rate']:g}: every rate tried failed{detail}")
    else:
        values["messages"] = (None, not_measured(tp))
    return values


def ceilings(report: dict[str, Any]) -> dict[str, Any]:
    """What the cores could carry if the servers had them to themselves, from CPU time per unit of work.

    CPU time per request or message is read from the kernel and hardly depends
    on other work on the machine, unlike latency; dividing the cores by it
    gives an upper bound (PostgreSQL, Redis and the load generator need CPU
    too, so the real figure on the same cores is lower).
    """
    cores = report["machine"]["cpus"] or 1
    out: dict[str, Any] = {"cores": cores}
    locust = report["parts"].get("locust") or {}
    per_user = [
        s["server_cpu_pct"] / s["users"]
        for s in locust.get("steps", [])
        if s.get("server_cpu_pct") and s.get("users_running") == s["users"]
    ]
    if per_user:
        cost = percentile(per_user, 50)
        out["users"] = {"server_cpu_pct_per_user": round(cost, 4), "ceiling": int(cores * 100 / cost)}
    tp = report["parts"].get("throughput") or {}
    per_message = [
        s["server_cpu_ms_per_message"]
        for run in (tp.get("report") or {}).get("runs", [])
        for s in run.get("steps", [])
        if s.get("server_cpu_ms_per_message")
    ]
    if per_message:
        cost = percentile(per_message, 50)
        out["messages"] = {"server_cpu_ms_per_message": cost, "ceiling": int(cores * 1000 / cost)}
    return out


def render_ceilings(c: dict[str, Any]) -> str:
    parts = []
    if "users" in c:
        parts.append(f"~{c['users']['ceiling']:,} users ({c['users']['server_cpu_pct_per_user']:.3f}% of a core each)")
    if "messages" in c:
        parts.append(f"~{c['messages']['ceiling']:,} messages/s ({c['messages']['server_cpu_ms_per_message']:.1f} ms of CPU each)")
    if not parts:
        return ""
    return (f"CPU-bound ceilings of the server processes alone on {c['cores']} cores (upper bounds: the database, "
            f"Redis and the load generator need CPU too): " + "; ".join(parts))  # fmt: skip


def render_table(report: dict[str, Any], opts: Options) -> str:
    values = table_values(report, opts)
    lines = ["| Metric | ADR target | Our target | Measured |", "|---|---|---|---|"]
    for key, metric, adr, ours in ROWS:
        value, text = values[key]
        lines.append(f"| {metric} | {adr} | {ours} | {text}{verdict(key, value)} |")
    report["table"] = {key: {"value": v, "text": t} for key, (v, t) in values.items()}
    return "\n".join(lines)


# -- the chart -----------------------------------------------------------------------------


def _nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


def chart(report: dict[str, Any], path: Path, opts: Options) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no chart"
    locust = report["parts"].get("locust") or {}
    tp = report["parts"].get("throughput") or {}
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5))
    # Last attempt per step.
    steps = list({s["users"]: s for s in locust.get("steps", []) if s.get("http")}.values())
    if steps:
        users = [s["users"] for s in steps]
        for key, label, style in (("p50", "HTTP p50", "-"), ("p95", "HTTP p95", "-"), ("p99", "HTTP p99", "-")):
            ax1.plot(users, [_nan(s["http"][key]) for s in steps], style, marker="o", label=label)
        ax1.plot(users, [_nan(s["ws_delivery"]["p99"]) for s in steps], "--", marker="s", label="WS delivery p99")
        ax1.axhline(opts.p99_limit_ms, color="grey", linestyle=":", label=f"{opts.p99_limit_ms:.0f} ms limit")
        for s in steps:
            if not s["held"]:
                ax1.annotate("failed", (s["users"], s["http"]["p99"] or 1), textcoords="offset points", xytext=(0, 8), ha="center", color="red")
        ax1.set_xscale("log")
        ax1.set_xticks(users, [str(u) for u in users])
        ax1.minorticks_off()
        ax1b = ax1.twinx()
        cores = os.cpu_count() or 1
        ax1b.plot(users, [_nan(s.get("server_cpu_pct")) for s in steps], color="tab:grey", alpha=0.6, marker=".", label="server CPU")
        machine_cpu = [_nan(s.get("system_cpu_pct")) * cores for s in steps]
        ax1b.plot(users, machine_cpu, color="black", alpha=0.3, linestyle="--", label="machine CPU (every process)")
        ax1b.set_ylabel("server CPU (% of one core)")
        ax1b.set_ylim(0, (os.cpu_count() or 1) * 100)
        handles = ax1.get_legend_handles_labels()
        handles_b = ax1b.get_legend_handles_labels()
        ax1.legend(handles[0] + handles_b[0], handles[1] + handles_b[1], fontsize=8, loc="upper left")
    else:
        ax1.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax1.transAxes)
    ax1.set_title(f"Locust chat mix: latency against concurrent users (think time {opts.think_time:g} s)")
    ax1.set_xlabel("concurrent users (each with a WebSocket)")
    ax1.set_ylabel("ms (log scale)")
    # Log scale: a few ms and several seconds on one chart, and the bend stands out.
    ax1.set_yscale("log")
    # The last attempt at each rate (a step failed on latency alone is measured again).
    tsteps = sorted({s["offered_rate"]: s for s in tp.get("steps", [])}.values(), key=lambda s: s["offered_rate"])
    if tsteps:
        rates = [s["offered_rate"] for s in tsteps]
        for key, label in (("p50_ms", "p50"), ("p95_ms", "p95"), ("p99_ms", "p99")):
            ax2.plot(rates, [_nan(s[key]) for s in tsteps], marker="o", label=f"delivery {label}")
        ax2.axhline(opts.p99_limit_ms, color="grey", linestyle=":", label=f"{opts.p99_limit_ms:.0f} ms limit")
        for s in tsteps:
            if not s["ok"]:
                ax2.annotate("failed", (s["offered_rate"], s["p99_ms"] or 1), textcoords="offset points", xytext=(0, 8), ha="center", color="red")
        ax2.set_xscale("log")
        ax2.set_xticks(rates, [f"{r:g}" for r in rates])
        ax2.minorticks_off()
        ax2.legend(fontsize=8, loc="upper left")
    else:
        ax2.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax2.transAxes)
    ax2.set_title("Messages persisted and delivered: latency against rate")
    ax2.set_xlabel("messages/s offered")
    ax2.set_ylabel("send → receive ms (log scale)")
    ax2.set_yscale("log")
    m = report["machine"]
    load = m.get("load_average_at_start", ["?"])[0], m.get("load_average_at_end", ["?"])[0]
    fig.suptitle(
        f"{m['cpus']} cores ({m['cpu_model']}), {m['ram_gb']} GB RAM; {report['started_at']}; "
        f"load average {load[0]} at start, {load[1]} at end",
        fontsize=9,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"chart: {path}"


# -- machine -------------------------------------------------------------------------------


def machine(env: dict[str, str]) -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    from django.db import connection

    cpu_model, ram_gb = platform.processor() or "?", 0.0
    with suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    with suppress(OSError, StopIteration):
        kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal:"))
        ram_gb = round(kb / 2**20, 1)
    with connection.cursor() as cursor:
        cursor.execute("SELECT version()")
        postgres = cursor.fetchone()[0].split(" on ")[0]
    redis_version = "?"
    with suppress(Exception):
        import redis

        client = redis.Redis.from_url(env["REDIS_URL"])
        redis_version = client.info("server")["redis_version"]
        client.close()
    packages = {}
    for name in ("Django", "channels", "channels-redis", "uvicorn", "psycopg", "locust"):
        try:
            packages[name] = version(name)
        except PackageNotFoundError:
            packages[name] = None
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model,
        "ram_gb": ram_gb,
        "postgresql": postgres,
        "redis": f"Redis {redis_version}",
        "python": platform.python_version(),
        "packages": packages,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def code_version() -> dict[str, Any]:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    return {"commit": commit, "modified_files": len(status.splitlines())}


# -- main ------------------------------------------------------------------------------------


def run(opts: Options) -> dict[str, Any]:
    raise_nofile()
    env = server_env(opts)
    processes = opts.server_processes or (os.cpu_count() or 1)
    # The coordinator reads the same database and Redis as the servers.
    for key in ("DJANGO_SETTINGS_MODULE", "SECRET_KEY", "SECURE_SSL_REDIRECT", "DEBUG"):
        os.environ[key] = env[key]
    import django

    django.setup()
    report: dict[str, Any] = {
        "started_at": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "command": "python -m bench.adr_bench " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "machine": machine(env),
        "code": code_version(),
        "options": {k: v for k, v in vars(opts).items()},
        "server": {
            "asgi": "uvicorn (chatsite.server)",
            "processes": processes,
            "settings": env["DJANGO_SETTINGS_MODULE"],
            "rate_limit_messages": env["RATE_LIMIT_MESSAGES"],
            "db_pool": f"{env['DB_POOL_SIZE']} + {env['DB_MAX_OVERFLOW']} overflow per process",
        },
        "parts": {},
    }
    parts = report["parts"]
    m = report["machine"]
    log(f"Machine: {m['cpus']} cores ({m['cpu_model']}), {m['ram_gb']} GB RAM; {m['postgresql']}; {m['redis']}")
    log(f"Load average at start: {m['load_average_at_start']}")

    def phase(name: str, title: str, fn: Any, *args: Any) -> None:
        if name in opts.skip:
            parts[name] = part_result("skipped", f"--skip {name}")
            return
        log(f"\n== {title}")
        started = time.monotonic()
        try:
            parts[name] = fn(*args)
        except Exception as exc:  # a broken part is reported, the others still run
            parts[name] = part_result("failed", f"{type(exc).__name__}: {exc}")
        parts[name]["seconds"] = round(time.monotonic() - started, 1)
        status = parts[name]["status"]
        log(f"   {status}" + (f": {parts[name]['reason']}" if parts[name].get("reason") else "") + f" ({parts[name]['seconds']:.0f} s)")

    parts["seed"] = seed(opts, env)
    phase("db", "Database: python -m bench.bench_db (hot queries, cache off)", bench_db, opts, env)
    phase("ws", f"WebSocket latency at the ADR load: {opts.adr_users} sockets, {opts.adr_rate:g} messages/s (bench/ws_bench.py)", bench_ws_adr, opts, env, processes)
    phase("throughput", "Messages/s persisted and delivered: rate ramp (bench/ws_bench.py)", bench_throughput, opts, env, processes)
    if {"http", "locust"} - set(opts.skip):
        log(f"\n== Stack: uvicorn x{processes} (one per core), chat_worker; production settings")
        try:
            with stack(processes, env, logs_dir(opts)) as stack_:
                log("   " + ", ".join(stack_.urls))
                phase("http", f"HTTP: history API at {opts.http_rate:g} req/s (bench/bench_http.py)", bench_http, opts, env, stack_)
                phase("locust", "Locust chat mix: users stepped up until a step fails", locust_capacity, opts, stack_)
        except Exception as exc:
            for name in ("http", "locust"):
                parts.setdefault(name, part_result("failed", f"stack did not start: {exc}"))
    for name in ("http", "locust"):
        parts.setdefault(name, part_result("skipped", f"--skip {name}"))
    report["finished_at"] = time.strftime("%Y-%m-%d %H:%M:%S %z")
    # Other work on the machine takes CPU from the servers: the numbers only mean something beside this.
    report["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return report


def parse_args(argv: list[str] | None) -> Options:
    d = Options()
    p = argparse.ArgumentParser(prog="python -m bench.adr_bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", default=",".join(map(str, d.steps)), help="Locust user counts, comma-separated")
    p.add_argument("--step-time", type=float, default=None, help="seconds measured per step, after spawning")
    p.add_argument("--step-settle", type=float, default=d.step_settle, help="seconds between a ramp and its measurement")
    p.add_argument("--spawn-rate", type=float, default=d.spawn_rate, help="users started per second")
    p.add_argument("--think-time", type=float, default=d.think_time, help="mean seconds between a user's actions")
    p.add_argument("--adr-users", type=int, default=d.adr_users, help="the ADR load: users (and sockets)")
    p.add_argument("--adr-rate", type=float, default=d.adr_rate, help="the ADR load: messages/s")
    p.add_argument("--locust-processes", type=int, default=d.locust_processes, help="Locust processes (--processes)")
    p.add_argument("--locust-args", default=d.locust_args, help="more locustfile options, quoted as one argument")
    p.add_argument("--confirm", type=int, default=d.confirm, help="re-runs of a step that failed on latency alone")
    p.add_argument("--error-limit", type=float, default=d.error_limit_pct, dest="error_limit_pct", help="percent")
    p.add_argument("--p99-limit", type=float, default=d.p99_limit_ms, dest="p99_limit_ms", help="ms")
    p.add_argument("--cpu-limit", type=float, default=d.cpu_limit_pct, dest="cpu_limit_pct", help="percent of all cores")
    p.add_argument("--server-processes", type=int, default=d.server_processes, help="server processes (0: one per core)")
    p.add_argument("--db-iterations", type=int, default=None, help="bench_db calls per query")
    p.add_argument("--ws-duration", type=float, default=None, help="seconds of the ADR-load WebSocket step")
    p.add_argument("--throughput-duration", type=float, default=None, help="seconds per rate step")
    p.add_argument("--throughput-max", type=float, default=d.throughput_max, help="highest message rate tried")
    p.add_argument("--http-rate", type=float, default=d.http_rate, help="bench_http fixed rate, req/s")
    p.add_argument("--http-requests", type=int, default=None)
    p.add_argument("--http-duration", type=float, default=None)
    p.add_argument("--skip", default="", help=f"parts to leave out, comma-separated: {', '.join(PARTS)}")
    p.add_argument("--no-seed", action="store_true", help="do not run bench.seed")
    p.add_argument("--quick", action="store_true", help="30 s windows, shorter sub-benchmarks")
    p.add_argument("--work-dir", default=d.work_dir, help="logs, sub-benchmark reports and the token file go here")
    p.add_argument("--json", default=d.json)
    p.add_argument("--chart", default=d.chart)
    args = p.parse_args(argv)
    values = vars(args)
    quick = values.pop("quick")
    values["steps"] = sorted({int(x) for x in str(args.steps).split(",") if x.strip()})
    values["skip"] = [x.strip() for x in str(args.skip).split(",") if x.strip()]
    unknown = set(values["skip"]) - set(PARTS)
    if unknown:
        p.error(f"unknown part(s) for --skip: {', '.join(sorted(unknown))}")
    if not values["steps"] or min(values["steps"]) < 1:
        p.error("--steps must list positive user counts")
    # Options given on the command line win; --quick only changes the others.
    for key, value in QUICK.items():
        if values[key] is None:
            values[key] = value if quick else getattr(d, key)
    return Options(**values)


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    urls = service_urls()
    if urls is None:
        return 2
    database_url, redis_url = urls
    sys.path.insert(0, str(ROOT))
    started = time.monotonic()
    report = run(opts)
    table = render_table(report, opts)
    report["seconds"] = round(time.monotonic() - started, 1)
    path = Path(opts.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    chart_note = chart(report, Path(opts.chart), opts)
    report["ceilings"] = ceilings(report)
    path.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))
    m = report["machine"]
    log("")
    log(f"== ADR-008 performance targets ({m['cpus']} cores, {m['cpu_model']}, {m['ram_gb']} GB RAM; "
        f"{report['seconds'] / 60:.0f} min; load average {m['load_average_at_start'][0]:g} at start, "
        f"{m['load_average_at_end'][0]:g} at end)")  # fmt: skip
    log(table)
    note = render_ceilings(report["ceilings"])
    if note:
        log("")
        log(note)
    log("")
    log(f"raw numbers: {path}")
    log(chart_note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
