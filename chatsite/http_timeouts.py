"""A deadline for receiving an HTTP request's body: 408 when it does not arrive in time.

uvicorn calls the application as soon as a request's headers are in and hands
it the body as it arrives; nothing in the server bounds how long that takes, so
a client that sends its headers and then a byte now and then holds the
connection, and Django (which reads the whole body before it does anything)
waits with it. ``RequestBodyTimeout`` gives the whole body ``timeout`` seconds
from the moment the headers are in (a deadline, not a gap between chunks, so
dribbling a byte just often enough does not keep a request alive). When it
passes, the client gets a 408 (the API's JSON error body under /api/) with
``Connection: close`` and the application is told the client went away.

Requests that announce no body (no Content-Length or a zero one, no
Transfer-Encoding) pass through untouched. daphne (``ASGI_SERVER=daphne``)
buffers the whole body before it calls the application, so there this
deadline never fires and slow bodies must be bounded in front of it
(docs/SECURITY.md, "Slow clients").
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable

import orjson

logger = logging.getLogger(__name__)

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _expects_body(scope: Scope) -> bool:
    for name, value in scope.get("headers", ()):
        if name == b"transfer-encoding":
            return True
        if name == b"content-length":
            return value.strip() not in (b"", b"0")
    return False


def _is_api(scope: Scope) -> bool:
    path = scope.get("path", "")
    return path == "/api" or path.startswith("/api/")


def timeout_response(scope: Scope, timeout: float) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """Headers and body of the 408: the API's error body under /api/, a line of text elsewhere."""
    detail = f"The request body did not arrive within {timeout:g} seconds."
    if _is_api(scope):
        body = orjson.dumps({"detail": detail, "code": "request_timeout"})
        content_type = b"application/json; charset=utf-8"
    else:
        body = detail.encode()
        content_type = b"text/plain; charset=utf-8"
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        # The rest of the body may still be on its way: end the connection rather than read it.
        (b"connection", b"close"),
    ]
    return headers, body


class RequestBodyTimeout:
    def __init__(self, app: ASGIApp, *, timeout: float) -> None:
        self.app = app
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.timeout <= 0 or not _expects_body(scope):
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        body_done = False
        timed_out = False
        response_started = False

        async def bounded_receive() -> Message:
            nonlocal body_done, timed_out
            if timed_out:
                return {"type": "http.disconnect"}
            if body_done:
                # Waiting for the client to go away (Django listens for it) is not bounded.
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                timed_out = True
                await self._answer_timeout(scope, send, response_started)
                return {"type": "http.disconnect"}
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal response_started
            if timed_out:
                return  # the application was told the client left; its answer has nowhere to go
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        await self.app(scope, bounded_receive, tracked_send)

    async def _answer_timeout(self, scope: Scope, send: Send, response_started: bool) -> None:
        client = scope.get("client") or ("-", 0)
        logger.warning(
            "http: request body not received within %gs: %s %s from %s",
            self.timeout,
            scope.get("method"),
            scope.get("path"),
            client[0],
        )
        if response_started:
            return  # the application answered before reading the body; the server ends the connection
        headers, body = timeout_response(scope, self.timeout)
        await send({"type": "http.response.start", "status": 408, "headers": headers})
        await send({"type": "http.response.body", "body": body})
