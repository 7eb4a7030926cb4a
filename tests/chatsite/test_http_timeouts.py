"""Slow HTTP clients against a real server process (chatsite.http_timeouts, HTTP_KEEPALIVE_TIMEOUT).

Every wait below has a deadline only so a broken server fails the test
instead of hanging it; nothing asserts how fast anything is.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import orjson
import pytest

from tests.servers import app_servers
from tests.waiting import wait_until

BODY_TIMEOUT = 2
KEEPALIVE_TIMEOUT = 1
# Generous: the server runs on a shared machine.
MARGIN = 15

# The test database must exist for the server (pytest-django creates it only for tests that ask for it).
pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def port(django_db_setup) -> Iterator[int]:
    """One server on this run's test database, with short timeouts; the tests create no data."""
    with app_servers(1, HTTP_BODY_TIMEOUT=str(BODY_TIMEOUT), HTTP_KEEPALIVE_TIMEOUT=str(KEEPALIVE_TIMEOUT)) as [
        (server_port, proc)
    ]:
        yield server_port
        assert proc.poll() is None, "the server died during the module"


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=MARGIN)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _request_head(method: str, path: str, length: int, *, content_type: str = "application/json", extra: str = "") -> bytes:
    return (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {length}\r\n{extra}\r\n"
    ).encode()


def _parse(data: bytes) -> tuple[int, dict[str, str], bytes] | None:
    """(status, headers, body) once ``data`` holds a whole response with a Content-Length, else None."""
    head, sep, rest = data.partition(b"\r\n\r\n")
    if not sep:
        return None
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    if len(rest) < length:
        return None
    return int(lines[0].split()[1]), headers, rest[:length]


def _dribble_until_answered(sock: socket.socket, *, every: float, timeout: float) -> tuple[int, dict[str, str], bytes]:
    """Send one body byte every ``every`` seconds until a whole response arrives (within ``timeout``)."""
    data = bytearray()
    sock.settimeout(every)

    def answered() -> tuple[int, dict[str, str], bytes] | None:
        try:
            sock.sendall(b" ")
        except OSError:
            pass  # the server may have closed its side after answering; read what it sent
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return None
        assert chunk, f"closed before a whole response; got {bytes(data[:200])!r}"
        data.extend(chunk)
        return _parse(bytes(data))

    # The receive timeout paces the bytes: no pause of its own between tries.
    return wait_until(answered, timeout=timeout, interval=0, message=lambda: f"no response; got {bytes(data[:200])!r}")


def _wait_for_server_close(sock: socket.socket, *, timeout: float) -> None:
    """Read and discard until the server closes the connection; fail after ``timeout`` seconds."""
    sock.settimeout(0.5)

    def closed() -> bool:
        try:
            return not sock.recv(65536)
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True

    wait_until(closed, timeout=timeout, interval=0, message="the server kept the connection open")


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    sock.settimeout(MARGIN)
    while (parsed := _parse(data)) is None:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed mid-response: {data[:200]!r}"
        data += chunk
    return parsed


@pytest.mark.parametrize("every", [0.25, BODY_TIMEOUT * 2], ids=["each-gap-under-the-timeout", "gaps-over-the-timeout"])
def test_a_body_dribbled_past_the_deadline_gets_a_json_408_and_the_connection_closed(port: int, every: float) -> None:
    with _connect(port) as sock:
        sock.sendall(_request_head("POST", "/api/v1/auth/token", 1000) + b'{"username": ')
        status, headers, body = _dribble_until_answered(sock, every=every, timeout=BODY_TIMEOUT + MARGIN)
        assert status == 408
        assert headers["content-type"].startswith("application/json")
        assert headers["connection"] == "close"
        assert orjson.loads(body)["code"] == "request_timeout"
        _wait_for_server_close(sock, timeout=MARGIN)


def test_a_slow_page_form_gets_a_plain_408(port: int) -> None:
    with _connect(port) as sock:
        # With a CSRF cookie, so the CSRF check reads the form (the body) instead of refusing at once.
        head = _request_head(
            "POST", "/login/", 500, content_type="application/x-www-form-urlencoded", extra="Cookie: csrftoken=" + "a" * 32 + "\r\n"
        )
        sock.sendall(head + b"username=")
        status, headers, body = _dribble_until_answered(sock, every=0.5, timeout=BODY_TIMEOUT + MARGIN)
        assert status == 408
        assert headers["content-type"].startswith("text/plain")
        assert b"did not arrive" in body


def test_a_client_that_sends_its_body_in_time_is_unaffected(port: int) -> None:
    payload = orjson.dumps({"username": "nobody", "password": "wrong"})
    with _connect(port) as sock:
        # In two parts with a pause well under the timeout, then a second request on the same connection.
        sock.sendall(_request_head("POST", "/api/v1/auth/token", len(payload)) + payload[:5])
        time.sleep(0.2)
        sock.sendall(payload[5:])
        status, _, body = _read_response(sock)
        assert status == 401, body
        assert orjson.loads(body)["code"] == "invalid_credentials"

        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        status, _, body = _read_response(sock)
        assert status == 200, body


def test_an_idle_keep_alive_connection_is_closed_after_the_keepalive_timeout(port: int) -> None:
    with _connect(port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        status, headers, _ = _read_response(sock)
        assert status == 200
        assert headers.get("connection", "keep-alive").lower() != "close"
        _wait_for_server_close(sock, timeout=KEEPALIVE_TIMEOUT + MARGIN)
