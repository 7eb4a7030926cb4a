"""An app node dies (server and worker, SIGKILL) while people chat through HAProxy.

Its clients' sockets end; they reconnect to the same address, HAProxy sends
them to the other node (a connection refused by the dead one is tried on the
other at once; health checks mark it down within a few seconds), they resume
from their last id and re-send what was never acknowledged (same client_id).
Afterwards every client holds every acknowledged message exactly once, each
connection delivered in room order without repeats, and every client_id is
stored once.
"""

from __future__ import annotations

import signal
import time

import pytest
import websockets

from tests.cluster.conftest import ClusterReader, ClusterUnderTest, record, run
from tests.waiting import wait_until

ROUNDS = 30
KILL_AT = 12


@pytest.mark.timeout(300)
def test_clients_of_a_killed_node_move_to_the_other_and_lose_nothing(cluster: ClusterUnderTest) -> None:
    room = cluster.new_room("node-failure")
    port = cluster.port
    c = cluster.cluster
    killed: dict[str, float] = {}

    async def scenario() -> tuple[list[int], list[str], dict[str, ClusterReader], int]:
        people = {name: ClusterReader(name, cluster.tokens[name], room) for name in ("alice", "bob", "carol", "dave")}
        for reader in people.values():
            await reader.connect(port, resume=False)
        # leastconn spreads the four sockets over both nodes; the victim is alice's.
        victim = people["alice"].node
        assert {r.node for r in people.values()} == {"node1", "node2"}, {r.name: r.node for r in people.values()}
        victim_index = int(victim.removeprefix("node")) - 1
        moved = [r for r in people.values() if r.node == victim]
        acked: list[int] = []
        sent: list[str] = []
        reconnected: dict[str, float] = {}

        async def deliver(reader: ClusterReader, client_id: str) -> None:
            """Send until acknowledged, reconnecting through HAProxy when the socket dies."""
            if client_id not in sent:
                sent.append(client_id)
            acked.append(await reader.send_until_acked(client_id, port))
            if reader.reconnected_at is not None:
                reconnected.setdefault(reader.name, reader.reconnected_at)

        for i in range(ROUNDS):
            if i == KILL_AT:
                # In flight: alice's send is on the wire when her node dies.
                await people["alice"].sock.send({"type": "message.send", "room": room, "body": f"failure-a{i}", "client_id": f"failure-a{i}"})
                killed["at"] = time.monotonic()
                c.stop_node(victim_index, signum=signal.SIGKILL)
            await deliver(people["alice"], f"failure-a{i}")
            await deliver(people["bob"], f"failure-b{i}")

        # The readers who only read notice their dead socket and reconnect too.
        for reader in moved:
            if reader.name in reconnected:
                continue
            try:
                await reader.read_until(set(acked), timeout=5)
            except (websockets.ConnectionClosed, OSError):
                await reader.connect(port)
                reconnected[reader.name] = time.monotonic()
        for reader in people.values():
            await reader.read_until(set(acked))
        for reader in people.values():
            assert reader.ids == set(acked), (reader.name, sorted(set(acked) - reader.ids))
            reader.assert_sessions_clean()
            assert reader.node != victim
        for reader in people.values():
            await reader.sock.close()
        killed["resumed"] = max(reconnected.values())
        killed["moved"] = len(moved)
        return acked, sent, people, victim_index

    try:
        acked, sent, people, victim_index = run(scenario())
        stored = cluster.stored(room)
        assert len(acked) == len(set(acked)) == 2 * ROUNDS
        assert sorted(client_id for _, client_id in stored) == sorted(sent)
        assert [message_id for message_id, _ in stored] == sorted(acked)
        marked_down = wait_until(
            lambda: c.haproxy_states()[c.node_name(victim_index)].startswith("DOWN") and time.monotonic(),
            timeout=30, interval=0.1, message="HAProxy did not mark the dead node down",
        )  # fmt: skip
        record(
            "app node killed",
            sockets_moved=killed["moved"],
            last_socket_resumed_s=round(killed["resumed"] - killed["at"], 2),
            acked_messages=len(acked),
            deliveries_checked=len(acked) * len(people),
            haproxy_marked_down_within_s=round(marked_down - killed["at"], 2),
        )
    finally:
        for index in range(len(c.ports.nodes)):
            if not c.running(c.node_name(index)):
                c.stop_node(index)  # its worker too, if only the server died
                c.start_node(index)
        wait_until(lambda: all(s == "UP" for s in c.haproxy_states().values()), timeout=60, message="node not back up")
