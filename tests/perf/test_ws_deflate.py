"""permessage-deflate compressed once per message for every socket (perf.ws_deflate), on a real uvicorn server."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import zlib

import pytest
import uvicorn
import websockets

from perf import ws_deflate
from tests.servers import free_port

BIG = "x" * 40 + '{"type":"message.new","body":"' + "hello chat " * 60 + '"}'
SMALL = '{"type":"pong"}'


async def broadcast_app(scope, receive, send):  # noqa: ANN001
    """Accept, then send every text the client sends to every socket connected (twice for "twice")."""
    if scope["type"] == "lifespan":
        return
    assert scope["type"] == "websocket"
    sockets = broadcast_app.sockets
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    sockets.append(send)
    try:
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            for other in list(sockets):
                await other({"type": "websocket.send", "text": message["text"]})
    finally:
        sockets.remove(send)


broadcast_app.sockets = []


@pytest.fixture
async def server():
    port = free_port()
    config = uvicorn.Config(
        broadcast_app, host="127.0.0.1", port=port, ws=ws_deflate.SharedDeflateProtocol, lifespan="off", log_level="warning"
    )
    instance = uvicorn.Server(config)
    task = asyncio.create_task(instance.serve())
    for _ in range(200):
        if instance.started:
            break
        await asyncio.sleep(0.05)
    assert instance.started
    yield port
    instance.should_exit = True
    await asyncio.wait_for(task, 10)


async def test_deflate_is_negotiated_without_context_takeover_either_way(server):
    async with websockets.connect(f"ws://127.0.0.1:{server}/", compression="deflate") as ws:
        offer = ws.response.headers["Sec-WebSocket-Extensions"]
        assert offer.startswith("permessage-deflate")
        assert "server_no_context_takeover" in offer and "client_no_context_takeover" in offer
        await ws.send(BIG)
        assert await ws.recv() == BIG


async def test_one_message_to_many_sockets_is_compressed_once(server):
    sockets = [await websockets.connect(f"ws://127.0.0.1:{server}/", compression="deflate") for _ in range(5)]
    try:
        before = ws_deflate.stats()
        unique = BIG + os.urandom(8).hex()
        await sockets[0].send(unique)
        received = [await asyncio.wait_for(ws.recv(), 5) for ws in sockets]
        assert received == [unique] * 5
        after = ws_deflate.stats()
        assert after["misses"] - before["misses"] == 1
        assert after["hits"] - before["hits"] == 4
        # Small messages go as they are: nothing to gain, nothing remembered.
        await sockets[1].send(SMALL)
        assert [await asyncio.wait_for(ws.recv(), 5) for ws in sockets] == [SMALL] * 5
        assert ws_deflate.stats()["small"] - after["small"] == 5
        assert ws_deflate.stats()["misses"] == after["misses"]
    finally:
        for ws in sockets:
            await ws.close()


async def test_a_client_that_does_not_offer_deflate_gets_plain_frames(server):
    async with websockets.connect(f"ws://127.0.0.1:{server}/", compression=None) as ws:
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
        await ws.send(BIG)
        assert await ws.recv() == BIG


def _raw_frame_after_handshake(port: int, offer: str) -> tuple[bytes, int, bytes]:
    """Handshake by hand offering ``offer``, send BIG masked, return (response head, first byte, payload) of the echo."""
    key = base64.b64encode(os.urandom(16)).decode()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(
            (
                f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Extensions: {offer}\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += conn.recv(4096)
        head, rest = head.split(b"\r\n\r\n", 1)
        payload = BIG.encode()
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        conn.sendall(bytes([0x81, 0x80 | 126]) + len(payload).to_bytes(2, "big") + mask + masked)
        data = rest
        while len(data) < 4:
            data += conn.recv(65536)
        first, length = data[0], data[1] & 0x7F
        offset = 2
        if length == 126:
            length, offset = int.from_bytes(data[2:4], "big"), 4
        while len(data) < offset + length:
            data += conn.recv(65536)
        return head, first, data[offset : offset + length]


async def test_frames_on_the_wire_are_compressed_like_a_browser_expects(server):
    # What Chrome offers; the server runs on this loop, so the blocking client runs in a thread.
    head, first, payload = await asyncio.to_thread(
        _raw_frame_after_handshake, server, "permessage-deflate; client_max_window_bits"
    )
    assert b"101" in head.split(b"\r\n")[0]
    assert first & 0x40, "RSV1: the message is compressed"
    assert len(payload) < len(BIG) / 2
    assert zlib.decompressobj(wbits=-15).decompress(payload + b"\x00\x00\xff\xff").decode() == BIG


@pytest.mark.django_db(transaction=True)
def test_the_chat_server_negotiates_it_and_chat_works_over_it(chat_world, make_token):
    from tests.servers import app_servers
    from tests.wsclient import ChatSocket

    room = chat_world["public"]
    tokens = [make_token(chat_world["member"]), make_token(chat_world["owner"])]

    async def scenario(port: int) -> None:
        alice, bob = [await ChatSocket.open(port, token) for token in tokens]
        for sock in (alice, bob):
            assert "server_no_context_takeover" in sock.ws.response.headers["Sec-WebSocket-Extensions"]
            await sock.send({"type": "subscribe", "room": room.id})
            await sock.until("subscribed")
        body = "compressed once " * 20
        await alice.send({"type": "message.send", "room": room.id, "body": body, "client_id": "z1"})
        ack, _ = await alice.until("message.ack")
        got, _ = await bob.until("message.new")
        assert got["message"]["id"] == ack["id"] and got["message"]["body"] == body
        for sock in (alice, bob):
            await sock.close()

    with app_servers(1) as servers:
        asyncio.run(scenario(servers[0][0]))
