"""A node is drained in HAProxy and stopped, as for a deploy, while people chat and read through HAProxy.

Draining (HAProxy's runtime API: ``set server app/node1 state drain``) sends
no new request or socket to the node; what it already serves continues. The
node is then stopped gracefully (SIGTERM): it finishes its requests and closes
its sockets (1012, "service restart"), whose clients reconnect through
HAProxy to the other node and resume. No HTTP request fails, and every
acknowledged message is delivered exactly once, in order.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
import websockets

from tests.cluster.conftest import ClusterReader, ClusterUnderTest, record, run
from tests.waiting import wait_until

ROUNDS = 40
DRAIN_AT = 10
STOP_AT = 20


@pytest.mark.timeout(300)
def test_draining_a_node_moves_everyone_over_without_a_failed_request(cluster: ClusterUnderTest) -> None:
    room = cluster.new_room("drain")
    port = cluster.port
    c = cluster.cluster
    requests: list[tuple[float, int, str]] = []  # (start, status, node)
    posted: list[int] = []  # ids of the messages the load posted over HTTP
    times: dict[str, float] = {}

    async def load(stop: asyncio.Event, worker: int) -> None:
        token = cluster.tokens[("bob", "carol", "dave")[worker % 3]]
        paths = [f"/api/v1/rooms/{room}/messages", f"/api/v1/rooms/{room}/messages?after=0", "/api/v1/projects/cluster/rooms"]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            n = 0
            while not stop.is_set():
                n += 1
                start = time.monotonic()
                if worker == 0 and n % 5 == 0:
                    response = await client.post(
                        f"/api/v1/rooms/{room}/messages", json={"body": f"drain-http-{n}", "client_id": f"drain-http-{n}"},
                        headers={"Authorization": f"Bearer {token}"},
                    )  # fmt: skip
                else:
                    response = await client.get(paths[n % len(paths)], headers={"Authorization": f"Bearer {token}"})
                requests.append((start, response.status_code, response.headers.get("X-Chat-Node", "?")))
                if response.request.method == "POST" and response.status_code == 201:
                    posted.append(response.json()["id"])
                await asyncio.sleep(0.02)

    async def scenario() -> dict[str, object]:
        people = {name: ClusterReader(name, cluster.tokens[name], room) for name in ("alice", "bob", "carol", "dave")}
        for reader in people.values():
            await reader.connect(port, resume=False)
        nodes = {r.name: r.node for r in people.values()}
        assert set(nodes.values()) == {"node1", "node2"}, nodes
        drained = people["alice"].node
        drained_index = int(drained.removeprefix("node")) - 1
        moving = [r for r in people.values() if r.node == drained]
        acked: list[int] = []
        reconnected: dict[str, float] = {}

        async def deliver(reader: ClusterReader, client_id: str) -> None:
            acked.append(await reader.send_until_acked(client_id, port))
            if reader.reconnected_at is not None:
                reconnected.setdefault(reader.name, reader.reconnected_at)

        stop = asyncio.Event()
        workers = [asyncio.create_task(load(stop, i)) for i in range(3)]
        try:
            for i in range(ROUNDS):
                if i == DRAIN_AT:
                    times["drain"] = time.monotonic()
                    await asyncio.to_thread(c.drain, drained_index)
                if i == STOP_AT:
                    times["stop"] = time.monotonic()
                    await asyncio.to_thread(c.stop_node, drained_index)
                    times["stopped"] = time.monotonic()
                await deliver(people["alice"], f"drain-a{i}")
                await deliver(people["bob"], f"drain-b{i}")
                await asyncio.sleep(0.05)
        finally:
            stop.set()
            await asyncio.gather(*workers)
        everything = set(acked) | set(posted)
        for reader in moving:
            if reader.name in reconnected:
                continue
            try:
                await reader.read_until(everything, timeout=5)
            except (websockets.ConnectionClosed, OSError):
                await reader.connect(port)
                reconnected[reader.name] = time.monotonic()
        for reader in people.values():
            await reader.read_until(everything)
            assert reader.ids == everything, (reader.name, sorted(everything - reader.ids))
            reader.assert_sessions_clean()
            assert reader.node != drained, reader.name
        for reader in people.values():
            await reader.sock.close()
        return {"drained": drained, "index": drained_index, "acked": acked, "moved": len(moving), "reconnected": reconnected}

    outcome: dict[str, object] = {}
    try:
        outcome = run(scenario())
        failed = [(round(start - times["drain"], 2), status) for start, status, _ in requests if status >= 300]
        assert not failed, failed
        # After the drain (a moment for requests already on their way), only the other node answers.
        after = [node for start, _, node in requests if start > times["drain"] + 0.5]
        assert after and set(after) == {"node2" if outcome["drained"] == "node1" else "node1"}, set(after)
        acked = outcome["acked"]
        assert len(acked) == len(set(acked)) == 2 * ROUNDS
        assert [message_id for message_id, _ in cluster.stored(room)] == sorted([*acked, *posted])
        record(
            "app node drained and stopped",
            http_requests=len(requests),
            http_failed=len(failed),
            http_requests_after_drain=len(after),
            sockets_moved=outcome["moved"],
            node_shutdown_s=round(times["stopped"] - times["stop"], 2),
            last_socket_resumed_after_stop_s=round(max(outcome["reconnected"].values()) - times["stop"], 2),
            acked_messages=len(acked) + len(posted),
        )
    finally:
        for index in range(len(c.ports.nodes)):
            if not c.running(c.node_name(index)):
                c.stop_node(index)
                c.start_node(index)
            c.ready(index)
        wait_until(lambda: all(s == "UP" for s in c.haproxy_states().values()), timeout=60, message="node not back up")
