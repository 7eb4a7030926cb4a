"""The cluster topology on one machine, from Debian's packages: `make cluster` and `make cluster-stop`.

    python deploy/cluster/chatcluster.py up      # start everything, print where it is
    python deploy/cluster/chatcluster.py down    # stop everything `up` started
    python deploy/cluster/chatcluster.py status  # what runs, who is the Redis primary
    python deploy/cluster/chatcluster.py drain 1 # no new requests or sockets for node1 (ready 1: back)
    python deploy/cluster/chatcluster.py roll    # restart the app nodes one by one, as for a deploy

What runs, each a real server on its own port on 127.0.0.1 (docs/SCALING.md):

* HAProxy in front: HTTP and WebSockets, health checks on ``/healthz``,
  draining through its runtime API (a socket under ``run/``);
* two app nodes, each ``python -m chatsite.server`` with its own background
  worker (``manage.py chat_worker``);
* a PostgreSQL primary and a streaming hot standby made with
  ``pg_basebackup`` (the app's ``DATABASE_REPLICA_URL``);
* a Redis primary, one replica and three Sentinels (the app's
  ``REDIS_SENTINELS``).

Everything lives under one directory (``var/cluster`` for `make cluster`; a
temporary one for each test run in tests/cluster): data, logs, configuration
and a pid file for each process, so ``down`` stops exactly what ``up``
started, even from another shell. The default PostgreSQL (5432) and Redis
(6379) are never touched. PostgreSQL refuses to run as root: as root, its
commands run as the ``postgres`` OS user, which then owns the data directories.

The same :class:`Cluster` is what tests/cluster drives: it kills, stops,
drains and restarts single parts and asks them who they are.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent.parent
PYTHON = os.environ.get("PY") or (str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable)
# The name the Sentinels monitor; the app's REDIS_URL names it as its host.
SERVICE = "chat"
DATABASE = "chat"
HOST = "127.0.0.1"


def _pg_bin() -> Path:
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    if not versions:
        raise SystemExit("no PostgreSQL server binaries under /usr/lib/postgresql (apt-get install postgresql)")
    return versions[-1].parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60.0, interval: float = 0.2) -> Any:
    """Poll ``check`` until it returns something truthy; SystemExit naming ``what`` after ``timeout`` seconds."""
    ends = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > ends:
            raise RuntimeError(f"{what}: not within {timeout:g} s")
        time.sleep(interval)


def _start_time(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot), or None when there is no such process (or a zombie)."""
    try:
        stat = (Path("/proc") / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":
        return None
    return int(fields[19])


@dataclass
class Ports:
    haproxy: int
    nodes: list[int]
    pg_primary: int
    pg_standby: int
    redis: list[int]  # the primary at start, then its replica
    sentinels: list[int]

    @classmethod
    def fixed(cls, base: int) -> "Ports":
        """`make cluster`'s ports: a block from ``base`` (CLUSTER_BASE_PORT)."""
        return cls(
            haproxy=base,
            nodes=[base + 10, base + 11],
            pg_primary=base + 20,
            pg_standby=base + 21,
            redis=[base + 30, base + 31],
            sentinels=[base + 40, base + 41, base + 42],
        )

    @classmethod
    def free(cls) -> "Ports":
        """Ports nobody listens on now (tests)."""
        return cls(
            haproxy=free_port(),
            nodes=[free_port(), free_port()],
            pg_primary=free_port(),
            pg_standby=free_port(),
            redis=[free_port(), free_port()],
            sentinels=[free_port(), free_port(), free_port()],
        )


@dataclass
class Cluster:
    root: Path
    ports: Ports
    # chatsite.settings.dev for `make cluster` (as `make run`); tests run chatsite.settings.test.
    settings_module: str = "chatsite.settings.dev"
    # fsync off only where data does not matter (tests): it makes initdb and migrate quick.
    fsync: bool = True
    # Seconds without an answer before a Sentinel calls the Redis primary down.
    down_after_ms: int = 1000
    extra_env: dict[str, str] = field(default_factory=dict)
    # `make cluster` fills the demo project and its users (manage.py seed_demo), as `make run` does.
    seed_demo: bool = False
    log: Callable[[str], None] = print

    def __post_init__(self) -> None:
        self.root = Path(self.root).resolve()
        self.pg_bin = _pg_bin()
        self.procs: dict[str, subprocess.Popen] = {}

    # --- paths and addresses ---------------------------------------------------------

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def log_dir(self) -> Path:
        return self.root / "log"

    def pg_dir(self, role: str) -> Path:
        return self.root / "pg" / role

    def database_url(self, role: str = "primary", database: str = DATABASE) -> str:
        port = self.ports.pg_primary if role == "primary" else self.ports.pg_standby
        return f"postgres://postgres@{HOST}:{port}/{database}"

    @property
    def redis_url(self) -> str:
        return f"redis://{SERVICE}/0"

    @property
    def sentinels(self) -> str:
        return ",".join(f"{HOST}:{p}" for p in self.ports.sentinels)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.ports.haproxy}"

    def app_env(self, **extra: str) -> dict[str, str]:
        """The environment of an app process in this cluster: it finds everything the cluster way."""
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": self.settings_module,
            "DATABASE_URL": self.database_url("primary"),
            "DATABASE_REPLICA_URL": self.database_url("standby"),
            "REDIS_URL": self.redis_url,
            "REDIS_SENTINELS": self.sentinels,
            # HAProxy's X-Forwarded-For names the client.
            "TRUSTED_PROXIES": HOST,
            "SILKY_INTERCEPT_PERCENT": "0",
            "PYTHONPATH": str(ROOT),
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        env.update(self.extra_env)
        env.update(extra)
        return env

    # --- processes -----------------------------------------------------------------------

    def _spawn(self, name: str, command: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.Popen:
        """Start a long-running process in its own session, its output in log/<name>.log, its pid in run/<name>.pid."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(
                command, cwd=cwd or ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        (self.run_dir / f"{name}.pid").write_text(json.dumps({"pid": proc.pid, "started": _start_time(proc.pid)}))
        self.procs[name] = proc
        return proc

    def _recorded(self, name: str) -> int | None:
        """The pid of ``name`` from its pid file, if that very process still runs."""
        path = self.run_dir / f"{name}.pid"
        if not path.exists():
            return None
        record = json.loads(path.read_text())
        # A recycled pid is another process, started later: never signal it.
        if record["started"] is None or _start_time(record["pid"]) != record["started"]:
            return None
        return int(record["pid"])

    def running(self, name: str) -> bool:
        proc = self.procs.get(name)
        if proc is not None:
            return proc.poll() is None
        return self._recorded(name) is not None

    def send_signal(self, name: str, signum: int) -> None:
        proc = self.procs.get(name)
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signum)
            return
        pid = self._recorded(name)
        if pid is not None:
            os.kill(pid, signum)

    def stop(self, name: str, *, signum: int = signal.SIGTERM, timeout: float = 15.0) -> None:
        """Stop ``name`` (SIGTERM, then SIGKILL after ``timeout``) and wait until it is gone."""
        proc = self.procs.pop(name, None)
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signum)
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        else:
            pid = self._recorded(name)
            if pid is not None:
                os.kill(pid, signum)
                try:
                    wait_for(f"{name} to exit", lambda: self._recorded(name) is None, timeout=timeout, interval=0.1)
                except RuntimeError:
                    if self._recorded(name) is not None:
                        os.kill(pid, signal.SIGKILL)
                        wait_for(f"{name} to die", lambda: self._recorded(name) is None, timeout=10, interval=0.1)
        (self.run_dir / f"{name}.pid").unlink(missing_ok=True)

    def kill(self, name: str) -> None:
        """SIGKILL: gone as in a crash, connections reset."""
        self.stop(name, signum=signal.SIGKILL)

    # --- PostgreSQL ----------------------------------------------------------------------------

    def _as_postgres(self, *args: Any, check: bool = True) -> subprocess.CompletedProcess:
        command = [str(a) for a in args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}{done.stderr}")
        return done

    def _pg_owned_dir(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(path, owner.pw_uid, owner.pw_gid)

    def _pg_options(self, port: int) -> str:
        options = [
            f"-p {port}",
            f"-k {self.pg_dir('sockets')}",
            f"-c listen_addresses={HOST}",
            "-c max_connections=200",
            # The staff database report reads pg_stat_statements.
            "-c shared_preload_libraries=pg_stat_statements",
            # A physical slot keeps the WAL a stopped standby still needs.
            "-c max_replication_slots=4",
        ]
        if not self.fsync:
            options.append("-c fsync=off")
        return " ".join(options)

    def pg_start(self, role: str) -> None:
        port = self.ports.pg_primary if role == "primary" else self.ports.pg_standby
        data = self.pg_dir(role)
        self._as_postgres(
            self.pg_bin / "pg_ctl", "-D", data, "-o", self._pg_options(port), "-l", self.pg_dir("logs") / f"{role}.log", "-w", "-t", "120", "start"
        )

    def pg_stop(self, role: str, mode: str = "fast") -> None:
        data = self.pg_dir(role)
        if (data / "postmaster.pid").exists():
            self._as_postgres(self.pg_bin / "pg_ctl", "-D", data, "-m", mode, "-w", "-t", "120", "stop", check=False)

    def pg_running(self, role: str) -> bool:
        done = self._as_postgres(self.pg_bin / "pg_ctl", "-D", self.pg_dir(role), "status", check=False)
        return done.returncode == 0

    def pg_execute(self, sql: str, *, role: str = "primary", database: str = "postgres") -> list[tuple]:
        import psycopg

        with psycopg.connect(self.database_url(role, database), autocommit=True, connect_timeout=5) as conn:
            cursor = conn.execute(sql)
            return cursor.fetchall() if cursor.description else []

    def start_postgres(self) -> None:
        if os.geteuid() == 0:
            # The postgres OS user must reach its directories below the cluster's own.
            self.root.chmod(self.root.stat().st_mode | 0o711)
        for part in ("", "sockets", "logs"):
            self._pg_owned_dir(self.pg_dir(part) if part else self.root / "pg")
        if not (self.pg_dir("primary") / "PG_VERSION").exists():
            self._pg_owned_dir(self.pg_dir("primary"))
            init = ["-D", self.pg_dir("primary"), "-U", "postgres", "--auth=trust", "-E", "UTF8"]
            self._as_postgres(self.pg_bin / "initdb", *init, *([] if self.fsync else ["--no-sync"]))
        if not self.pg_running("primary"):
            self.pg_start("primary")
        self.log(f"postgres primary  {self.database_url('primary')}")
        if not self.pg_execute(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'"):
            self.pg_execute(f"CREATE DATABASE {DATABASE}")
        self.migrate()
        self.log("migrated")
        if not (self.pg_dir("standby") / "PG_VERSION").exists():
            shutil.rmtree(self.pg_dir("standby"), ignore_errors=True)
            self._pg_owned_dir(self.pg_dir("standby"))
            self.pg_dir("standby").chmod(0o700)  # PostgreSQL refuses a data directory others may read
            if not self.pg_execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = 'standby'"):
                self.pg_execute("SELECT pg_create_physical_replication_slot('standby')")
            self._as_postgres(
                self.pg_bin / "pg_basebackup", "-h", HOST, "-p", self.ports.pg_primary, "-U", "postgres",
                "-D", self.pg_dir("standby"), "-R", "-X", "stream", "-S", "standby", "-c", "fast",
            )  # fmt: skip
        if not self.pg_running("standby"):
            self.pg_start("standby")
        wait_for("the standby to stream from the primary", self._standby_streaming, timeout=60)
        self.log(f"postgres standby  {self.database_url('standby')} (streaming)")

    def _standby_streaming(self) -> bool:
        rows = self.pg_execute("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")
        return bool(rows and rows[0][0] >= 1)

    def migrate(self) -> None:
        done = subprocess.run(
            [PYTHON, "manage.py", "migrate", "--no-input", "-v", "0"],
            cwd=ROOT, env=self.app_env(DATABASE_REPLICA_URL=""), capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"migrate failed:\n{done.stdout}{done.stderr}")

    def manage(self, *args: str, timeout: float = 300) -> str:
        """``manage.py <args>`` as an app process of this cluster (Redis through the Sentinels); its output."""
        done = subprocess.run(
            [PYTHON, "manage.py", *args], cwd=ROOT, env=self.app_env(), capture_output=True, text=True, timeout=timeout
        )
        if done.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
        return done.stdout

    def standby_replay_delay(self, delay: str) -> None:
        """Set the standby's recovery_min_apply_delay (``"0"`` to stop delaying) and reload it."""
        self.pg_execute(f"ALTER SYSTEM SET recovery_min_apply_delay = '{delay}'", role="standby")
        self.pg_execute("SELECT pg_reload_conf()", role="standby")

    # --- Redis and Sentinel ----------------------------------------------------------------------

    def redis_name(self, port: int) -> str:
        return f"redis-{port}"

    def start_redis_server(self, port: int, *, replica_of: int | None = None) -> None:
        data = self.root / "redis" / str(port)
        data.mkdir(parents=True, exist_ok=True)
        command = [
            "redis-server", "--port", str(port), "--bind", HOST, "--dir", str(data),
            # Cache, sessions cache, rate limits, presence and pub/sub: nothing to persist.
            "--save", "", "--appendonly", "no", "--daemonize", "no",
        ]  # fmt: skip
        if replica_of is not None:
            command += ["--replicaof", HOST, str(replica_of)]
        self._spawn(self.redis_name(port), command)
        wait_for(f"redis on {port}", lambda: self.redis_command(port, "PING"), timeout=30)

    def redis_command(self, port: int, *args: str) -> Any:
        import redis

        client = redis.Redis(host=HOST, port=port, socket_connect_timeout=0.5, socket_timeout=2, decode_responses=True)
        try:
            return client.execute_command(*args)
        except redis.RedisError:
            return None
        finally:
            client.close()

    def start_sentinel(self, port: int, primary: int) -> None:
        data = self.root / "sentinel" / str(port)
        data.mkdir(parents=True, exist_ok=True)
        config = data / "sentinel.conf"
        if not config.exists():
            # Sentinel rewrites its own file as the topology changes: written once, kept after.
            config.write_text(
                "\n".join(
                    [
                        f"port {port}",
                        f"bind {HOST}",
                        f"dir {data}",
                        f"sentinel monitor {SERVICE} {HOST} {primary} 2",
                        f"sentinel down-after-milliseconds {SERVICE} {self.down_after_ms}",
                        f"sentinel failover-timeout {SERVICE} 10000",
                        f"sentinel parallel-syncs {SERVICE} 1",
                        f"sentinel client-reconfig-script {SERVICE} {ROOT / 'deploy' / 'cluster' / 'redis-failover.sh'}",
                        "",
                    ]
                )
            )
        # The failover script empties the app's database (REDIS_URL's number) on the new primary.
        env = {**os.environ, "CHAT_REDIS_DB": self.redis_url.rsplit("/", 1)[1]}
        self._spawn(f"sentinel-{port}", ["redis-sentinel", str(config)], env=env)
        wait_for(f"sentinel on {port}", lambda: self.redis_command(port, "PING"), timeout=30)

    def sentinel_primary(self) -> int | None:
        """The port of the Redis primary as a majority of the Sentinels name it now."""
        votes: dict[int, int] = {}
        for port in self.ports.sentinels:
            answer = self.redis_command(port, "SENTINEL GET-MASTER-ADDR-BY-NAME", SERVICE)
            if answer:
                votes[int(answer[1])] = votes.get(int(answer[1]), 0) + 1
        best = max(votes.items(), key=lambda kv: kv[1], default=None)
        return best[0] if best and best[1] >= 2 else None

    def sentinels_ready(self) -> bool:
        """Every Sentinel knows the other two and one replica, and they agree on the primary."""
        for port in self.ports.sentinels:
            info = self.redis_command(port, "SENTINEL MASTER", SERVICE)
            if not info:
                return False
            if info["num-other-sentinels"] < 2 or info["num-slaves"] < 1 or info["is_sdown"] or info["is_odown"]:
                return False
        return self.sentinel_primary() is not None

    def redis_replica_synced(self, port: int) -> bool:
        info = self.redis_command(port, "INFO", "replication") or {}
        return info.get("role") == "slave" and info.get("master_link_status") == "up"

    def start_redis(self) -> None:
        primary, replica = self.ports.redis
        # After a failover the other one may be the primary: start each as the Sentinels last named it.
        known = self._sentinel_config_primary() or primary
        other = replica if known == primary else primary
        if not self.running(self.redis_name(known)):
            self.start_redis_server(known)
        if not self.running(self.redis_name(other)):
            self.start_redis_server(other, replica_of=known)
        wait_for("the redis replica to sync", lambda: self.redis_replica_synced(other), timeout=60)
        for port in self.ports.sentinels:
            if not self.running(f"sentinel-{port}"):
                self.start_sentinel(port, known)
        wait_for("the sentinels to find each other and the replica", self.sentinels_ready, timeout=60)
        self.log(f"redis primary     {HOST}:{known}, replica {HOST}:{other}; sentinels {self.sentinels} (service {SERVICE!r})")

    def _sentinel_config_primary(self) -> int | None:
        for port in self.ports.sentinels:
            config = self.root / "sentinel" / str(port) / "sentinel.conf"
            if config.exists():
                for line in config.read_text().splitlines():
                    parts = line.split()
                    if parts[:3] == ["sentinel", "monitor", SERVICE]:
                        return int(parts[4])
        return None

    # --- app nodes --------------------------------------------------------------------------

    def node_name(self, index: int) -> str:
        return f"node{index + 1}"

    def start_node(self, index: int) -> None:
        """One app node: the server on its port and its own background worker."""
        port = self.ports.nodes[index]
        name = self.node_name(index)
        env = self.app_env()
        self._spawn(name, [PYTHON, "-m", "chatsite.server", "-b", HOST, "-p", str(port), "chatsite.asgi:application"], env=env)
        self._spawn(f"{name}-worker", [PYTHON, "manage.py", "chat_worker"], env=env)
        wait_for(f"{name} on {port}", lambda: self._node_healthy(port), timeout=60)

    def _node_healthy(self, port: int) -> bool:
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://{HOST}:{port}/healthz", timeout=2) as response:
                return response.status == 200
        except (OSError, urllib.error.URLError):
            return False

    def stop_node(self, index: int, *, signum: int = signal.SIGTERM) -> None:
        name = self.node_name(index)
        self.stop(name, signum=signum)
        self.stop(f"{name}-worker", signum=signum)

    # --- HAProxy -------------------------------------------------------------------------------

    @property
    def haproxy_socket(self) -> Path:
        return self.run_dir / "haproxy.sock"

    def haproxy_config(self) -> str:
        servers = "\n".join(f"    server {self.node_name(i)} {HOST}:{port} check" for i, port in enumerate(self.ports.nodes))
        return f"""\
global
    # No maxconn: HAProxy derives it from the open-files limit it is given.
    # Draining and state, from `make cluster` and the tests (the runtime API).
    stats socket {self.haproxy_socket} mode 600 level admin
    log stdout format raw local0 notice

defaults
    mode http
    log global
    option httplog
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    # An open WebSocket is a tunnel: idle for minutes is normal (the server pings every 20 s).
    timeout tunnel 1h
    timeout client-fin 5s
    timeout http-request 10s
    timeout http-keep-alive 5s
    # A request that meets a node that just died is tried again on the other one.
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response response-timeout

frontend chat
    bind {HOST}:{self.ports.haproxy}
    option forwardfor
    default_backend app

backend app
    balance leastconn
    option httpchk
    http-check send meth GET uri /healthz ver HTTP/1.1 hdr Host {HOST}
    http-check expect status 200
    # Down after 3 failed checks a second apart, up after 2 good ones.
    default-server inter 1s fall 3 rise 2
    # Which node answered: for people and tests, not for clients to rely on.
    http-response set-header X-Chat-Node %s
{servers}
"""

    def start_haproxy(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        config = self.root / "haproxy.cfg"
        config.write_text(self.haproxy_config())
        check = subprocess.run(["haproxy", "-c", "-f", str(config)], capture_output=True, text=True, timeout=30)
        if check.returncode != 0:
            raise RuntimeError(f"haproxy config:\n{check.stdout}{check.stderr}")
        self._spawn("haproxy", ["haproxy", "-db", "-f", str(config)])
        wait_for(f"haproxy on {self.ports.haproxy}", lambda: port_open(self.ports.haproxy), timeout=30)
        wait_for("haproxy to see both nodes up", lambda: all(s == "UP" for s in self.haproxy_states().values()), timeout=30)
        self.log(f"haproxy           {self.url} (runtime API: {self.haproxy_socket})")

    def haproxy(self, command: str) -> str:
        """One command on HAProxy's runtime API; its answer."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(str(self.haproxy_socket))
            s.sendall(command.encode() + b"\n")
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def haproxy_states(self) -> dict[str, str]:
        """Each node's state as HAProxy's health checks and admin state make it: UP, DOWN, DRAIN, MAINT, …"""
        lines = self.haproxy("show stat").splitlines()
        header = lines[0].lstrip("# ").split(",")
        states = {}
        for line in lines[1:]:
            row = dict(zip(header, line.split(",")))
            if row.get("pxname") == "app" and row.get("svname") not in ("FRONTEND", "BACKEND"):
                states[row["svname"]] = row["status"]
        return states

    def drain(self, index: int) -> None:
        """No new connections to the node; the open ones stay until it closes them."""
        self.haproxy(f"set server app/{self.node_name(index)} state drain")

    def ready(self, index: int) -> None:
        self.haproxy(f"set server app/{self.node_name(index)} state ready")

    def roll(self) -> None:
        """Restart the app nodes one at a time, as a deploy does: drain, stop gracefully, start, ready.

        The drained node takes no new request or socket; stopping it ends its
        requests and closes its sockets, whose clients reconnect through
        HAProxy to the others and resume (tests/cluster/test_drain.py).
        """
        for index in range(len(self.ports.nodes)):
            name = self.node_name(index)
            self.drain(index)
            self.stop_node(index)
            self.start_node(index)
            self.ready(index)
            wait_for(f"{name} up in haproxy", lambda: self.haproxy_states().get(name) == "UP", timeout=60)
            self.log(f"{name} restarted")

    # --- the whole -----------------------------------------------------------------------------

    def up(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "ports.json").write_text(json.dumps(asdict(self.ports)))
        self.start_postgres()
        self.start_redis()
        if self.seed_demo:
            self.manage("seed_demo")
        for index in range(len(self.ports.nodes)):
            if not self.running(self.node_name(index)):
                self.start_node(index)
            self.log(f"app {self.node_name(index)}         http://{HOST}:{self.ports.nodes[index]} (with its worker)")
        if not self.running("haproxy"):
            self.start_haproxy()

    def down(self) -> None:
        """Stop everything this cluster started, front first; leaves the data for the next `up`."""
        names = ["haproxy"]
        for index in range(len(self.ports.nodes)):
            names += [self.node_name(index), f"{self.node_name(index)}-worker"]
        names += [f"sentinel-{p}" for p in self.ports.sentinels] + [self.redis_name(p) for p in self.ports.redis]
        for name in names:
            self.stop(name)
        for role in ("standby", "primary"):
            self.pg_stop(role)

    def leftovers(self) -> list[str]:
        """What still runs or listens after :meth:`down`: nothing, when it worked."""
        found = [p.stem for p in self.run_dir.glob("*.pid") if self._recorded(p.stem) is not None] if self.run_dir.exists() else []
        found += [role for role in ("primary", "standby") if (self.pg_dir(role) / "postmaster.pid").exists()]
        ports = [self.ports.haproxy, *self.ports.nodes, self.ports.pg_primary, self.ports.pg_standby, *self.ports.redis, *self.ports.sentinels]
        found += [f"port {p}" for p in ports if port_open(p)]
        return found

    def status(self) -> dict[str, Any]:
        return {
            "haproxy": self.haproxy_states() if self.haproxy_socket.exists() and self.running("haproxy") else "stopped",
            "redis_primary": self.sentinel_primary(),
            "postgres": {role: self.pg_running(role) for role in ("primary", "standby")},
        }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="chatcluster", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("up", "down", "status", "drain", "ready", "roll"))
    parser.add_argument("node", nargs="?", type=int, help="drain/ready: the node's number (1, 2)")
    parser.add_argument("--dir", default=os.environ.get("CLUSTER_DIR", str(ROOT / "var" / "cluster")))
    parser.add_argument("--base-port", type=int, default=int(os.environ.get("CLUSTER_BASE_PORT", "17000")))
    args = parser.parse_args(argv)
    root = Path(args.dir)
    saved = root / "ports.json"
    # The ports of a cluster that exists win: `down` must find what `up` started.
    ports = Ports(**json.loads(saved.read_text())) if saved.exists() else Ports.fixed(args.base_port)
    cluster = Cluster(root, ports, seed_demo=True)
    if args.action == "up":
        try:
            cluster.up()
        except BaseException:
            print("start failed; stopping what started (logs in " + str(cluster.log_dir) + ")", file=sys.stderr)
            cluster.down()
            raise
        print(f"\nThe cluster serves {cluster.url}/ (the demo logins of README.md).")
        print("Stop it with `make cluster-stop`.")
    elif args.action == "down":
        cluster.down()
        left = cluster.leftovers()
        if left:
            raise SystemExit(f"still running: {', '.join(left)}")
        print("cluster stopped; nothing of it runs")
    elif args.action in ("drain", "ready"):
        if args.node is None or not 1 <= args.node <= len(ports.nodes):
            raise SystemExit(f"{args.action} needs a node number, 1 to {len(ports.nodes)}")
        getattr(cluster, args.action)(args.node - 1)
        print(json.dumps(cluster.haproxy_states()))
    elif args.action == "roll":
        cluster.roll()
    else:
        print(json.dumps(cluster.status(), indent=2))


if __name__ == "__main__":
    main()
