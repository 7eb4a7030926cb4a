"""One of two servers is killed with SIGKILL while its clients chat.

Its clients notice the dead connection, reconnect to the other server, resume
from their last id and re-send what was never acknowledged (same client_id).
Afterwards every client holds every acknowledged message exactly once (after
de-duplicating by id across connections), each connection delivered in room
order without repeats, and every re-sent client_id is stored once.
"""

from __future__ import annotations

import asyncio
import signal

import pytest
import websockets

from chat.models import Message
from tests.faults.conftest import Reader, ServerLog
from tests.servers import app_servers

pytestmark = pytest.mark.django_db(transaction=True)

ROUNDS = 30
KILL_AT = 12


def test_clients_of_a_killed_server_fail_over_and_resume_without_loss(chat_world, make_token) -> None:
    room = chat_world["public"]
    tokens = {name: make_token(chat_world[name]) for name in ("member", "owner", "insider")}

    with app_servers(2) as servers:
        (port_a, proc_a), (port_b, proc_b) = servers
        ServerLog(proc_a)
        log_b = ServerLog(proc_b)

        async def scenario() -> tuple[list[int], list[str]]:
            alice = Reader("alice", tokens["member"], room.id)  # sends, on A
            carol = Reader("carol", tokens["insider"], room.id)  # reads, on A
            bob = Reader("bob", tokens["owner"], room.id)  # sends, on B
            for reader, port in ((alice, port_a), (carol, port_a), (bob, port_b)):
                await reader.connect(port, resume=False)
            acked: list[int] = []
            sent: list[str] = []

            async def deliver(reader: Reader, client_id: str) -> None:
                """Send until acknowledged, failing over to B when the socket dies."""
                sent.append(client_id)
                for _ in range(5):
                    try:
                        answer = await reader.send(client_id)
                    except (websockets.ConnectionClosed, OSError, asyncio.TimeoutError, TimeoutError):
                        await reader.connect(port_b)
                        continue
                    assert answer["type"] == "message.ack", answer
                    acked.append(answer["id"])
                    return
                raise AssertionError(f"{client_id} never acknowledged")

            for i in range(ROUNDS):
                if i == KILL_AT:
                    # In flight: alice's send is on the wire when A dies.
                    await alice.sock.send({"type": "message.send", "room": room.id, "body": f"a{i}", "client_id": f"a{i}"})
                    proc_a.send_signal(signal.SIGKILL)
                    proc_a.wait(timeout=10)
                await deliver(alice, f"a{i}")
                await deliver(bob, f"b{i}")

            # carol only reads: her socket died with A; she reconnects to B and resumes.
            try:
                await carol.read_until(set(acked), timeout=5)
            except (websockets.ConnectionClosed, OSError):
                await carol.connect(port_b)
            for reader in (alice, bob, carol):
                await reader.read_until(set(acked))
            for reader in (alice, bob, carol):
                assert reader.ids == set(acked), (reader.name, sorted(set(acked) - reader.ids))
                reader.assert_sessions_clean()
                await reader.sock.close()
            assert len(carol.sessions) == 2 and len(alice.sessions) == 2 and len(bob.sessions) == 1
            return acked, sent

        acked, sent = asyncio.run(scenario())
        assert proc_a.returncode == -signal.SIGKILL
        assert proc_b.poll() is None, log_b.tail()

    assert len(acked) == len(set(acked)) == 2 * ROUNDS
    stored = list(Message.objects.filter(room=room).order_by("id").values_list("client_id", "id"))
    assert sorted(client_id for client_id, _ in stored) == sorted(set(sent))
    assert [message_id for _, message_id in stored] == sorted(acked)
