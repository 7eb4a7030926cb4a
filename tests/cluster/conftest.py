"""The cluster topology (deploy/cluster/chatcluster.py), started once for these tests, and what they share.

One cluster per test session, in a temporary directory on free ports, with
the test settings: HAProxy, two app nodes with their workers, a PostgreSQL
primary and streaming standby, a Redis primary, replica and three Sentinels.
Each test breaks one part and puts it back (``healthy``: every test starts
from the whole topology, whoever is the Redis primary by then). The cluster
is stopped at the end of the session, failures included, and the session
fails if anything of it is left running.

Measurements (recovery times, message and request counts) are printed at the
end of the run and written to test-artifacts/cluster-results.json; they are
reported, never asserted against a speed.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websockets

from tests.faults.conftest import Reader
from tests.servers import ROOT
from tests.waiting import wait_until


def _load_cluster_module() -> Any:
    path = ROOT / "deploy" / "cluster" / "chatcluster.py"
    spec = importlib.util.spec_from_file_location("chatcluster", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["chatcluster"] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


chatcluster = _load_cluster_module()

RESULTS: list[dict[str, Any]] = []

PASSWORD = "cluster-pass-1"

# Runs in ``manage.py shell`` against the cluster: four people in one project,
# a token each (printed for the tests).
SEED = f"""
import json
from chat.services import accounts as account_services
from projects import services as project_services
from projects.models import Membership
people = {{name: account_services.user_create(username=name, password="{PASSWORD}") for name in ("alice", "bob", "carol", "dave")}}
project = project_services.project_create(user=people["alice"], name="Cluster", slug="cluster")
for name in ("bob", "carol", "dave"):
    Membership.objects.create(project=project, user=people[name])
print("SEED " + json.dumps({{name: account_services.token_create(user=user)[1] for name, user in people.items()}}))
"""


def record(scenario: str, **values: Any) -> None:
    """Keep a scenario's measurements for the end-of-run summary (and print them now, for -s)."""
    entry = {"scenario": scenario, **values}
    RESULTS.append(entry)
    print(json.dumps(entry))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not RESULTS:
        return
    terminalreporter.section("cluster fault tests: measurements")
    for entry in RESULTS:
        terminalreporter.write_line(json.dumps(entry))
    out = ROOT / "test-artifacts"
    out.mkdir(exist_ok=True)
    (out / "cluster-results.json").write_text(json.dumps(RESULTS, indent=2))


class ClusterUnderTest:
    """The running cluster with the tokens of its people and helpers the scenarios share."""

    def __init__(self, cluster: Any, tokens: dict[str, str]) -> None:
        self.cluster = cluster
        self.tokens = tokens

    @property
    def port(self) -> int:
        """HAProxy's: where every client goes."""
        return self.cluster.ports.haproxy

    def http(self, method: str, path: str, *, token: str | None = None, body: Any = None, timeout: float = 20) -> tuple[int, Any, bytes]:
        from tests.faults.conftest import http

        return http(self.port, method, path, token=token, body=body, timeout=timeout)

    def new_room(self, name: str) -> int:
        """A public room of the project, made through HAProxy by alice."""
        status, _, body = self.http("POST", "/api/v1/projects/cluster/rooms", token=self.tokens["alice"], body={"name": name})
        assert status == 201, body
        return json.loads(body)["id"]

    def primary_rows(self, sql: str) -> list[tuple]:
        return self.cluster.pg_execute(sql, role="primary", database=chatcluster.DATABASE)

    def standby_rows(self, sql: str) -> list[tuple]:
        return self.cluster.pg_execute(sql, role="standby", database=chatcluster.DATABASE)

    def standby_message_scans(self) -> int:
        """Statements of the app on chat_message the standby has run: it grows only when the standby serves history.

        From pg_stat_statements, which counts a statement as it ends (the
        table statistics reach the views up to seconds later). The app quotes
        its table names; these tests' own look-ups do not, so they are not counted.
        """
        rows = self.standby_rows(
            "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements "
            "WHERE query LIKE '%\"chat_message\"%' AND dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
        )
        return int(rows[0][0])

    def standby_caught_up(self) -> bool:
        (primary,) = self.primary_rows("SELECT pg_current_wal_insert_lsn()")[0]
        rows = self.standby_rows(f"SELECT pg_last_wal_replay_lsn() >= '{primary}'::pg_lsn")
        return bool(rows[0][0])

    def stored(self, room_id: int) -> list[tuple[int, str | None]]:
        """(id, client_id) of the room's messages on the primary, by id."""
        return [(int(i), c) for i, c in self.primary_rows(f"SELECT id, client_id FROM chat_message WHERE room_id = {int(room_id)} ORDER BY id")]

    def node_states(self) -> dict[str, str]:
        return self.cluster.haproxy_states()

    def healthy(self) -> bool:
        c = self.cluster
        if any(state != "UP" for state in c.haproxy_states().values()):
            return False
        primary = c.sentinel_primary()
        if primary is None or not c.sentinels_ready():
            return False
        replicas = [p for p in c.ports.redis if p != primary]
        return all(c.redis_replica_synced(p) for p in replicas) and c._standby_streaming()


class ClusterReader(Reader):
    """A chat client that connects through HAProxy and knows which node it landed on."""

    @property
    def node(self) -> str:
        return self.sock.ws.response.headers.get("X-Chat-Node", "?")

    async def connect(self, port: int, *, attempts: int = 60, resume: bool = True) -> None:
        # Through HAProxy a reconnect can meet a moment with no node marked up: retry longer than the default.
        await super().connect(port, attempts=attempts, resume=resume)

    # When this reader first had to reconnect to get a send acknowledged (send_until_acked).
    reconnected_at: float | None = None

    async def send_until_acked(self, client_id: str, port: int, *, attempts: int = 10) -> int:
        """Send until acknowledged; when the socket dies, reconnect through HAProxy and send again. The ack's id."""
        for _ in range(attempts):
            try:
                answer = await self.send(client_id)
            except (websockets.ConnectionClosed, OSError, asyncio.TimeoutError, TimeoutError):
                await self.connect(port)
                if self.reconnected_at is None:
                    self.reconnected_at = time.monotonic()
                continue
            assert answer["type"] == "message.ack", answer
            return answer["id"]
        raise AssertionError(f"{client_id} never acknowledged")


@pytest.fixture(scope="session")
def cluster_session() -> Iterator[ClusterUnderTest]:
    root = Path(tempfile.mkdtemp(prefix="chat-cluster-test-"))
    cluster = chatcluster.Cluster(
        root, chatcluster.Ports.free(), settings_module="chatsite.settings.test", fsync=False, log=lambda line: None
    )
    started = time.monotonic()
    try:
        cluster.up()
        output = cluster.manage("shell", "-c", SEED)
        tokens = json.loads(next(line for line in output.splitlines() if line.startswith("SEED "))[len("SEED ") :])
        record("cluster start", seconds=round(time.monotonic() - started, 1))
        yield ClusterUnderTest(cluster, tokens)
    finally:
        cluster.down()
        left = cluster.leftovers()
        if not left:
            import shutil

            shutil.rmtree(root, ignore_errors=True)
        assert not left, f"still running after the cluster was stopped: {left} (logs: {cluster.log_dir})"


@pytest.fixture
def cluster(cluster_session: ClusterUnderTest) -> Iterator[ClusterUnderTest]:
    """The whole topology, up: what every scenario starts from."""
    wait_until(cluster_session.healthy, timeout=60, interval=0.5, message="the cluster is not whole")
    yield cluster_session


def run(coro: Any) -> Any:
    """Run a scenario on a fresh event loop (the tests' own clients only; the servers run elsewhere)."""
    return asyncio.run(coro)
