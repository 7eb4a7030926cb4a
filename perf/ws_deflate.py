"""WebSocket permessage-deflate that compresses an event once, not once per socket.

Every browser offers permessage-deflate (RFC 7692). With the usual
negotiation each socket keeps its own compression context, so one event sent
to 2,000 sockets is compressed 2,000 times, and every socket holds a zlib
window for its whole life. Here the server negotiates *no context takeover*
in both directions: each message is compressed on its own, so the same
payload under the same parameters always gives the same bytes, and a
process-wide table hands those bytes to every socket that sends the payload
next. A socket keeps no zlib state between messages.

It plugs into the ``websockets`` library through its extension API (a
``ServerPerMessageDeflateFactory`` whose negotiated extension is wrapped),
and into uvicorn through its ``ws`` protocol class (:class:`SharedDeflateProtocol`,
chatsite.server). Messages shorter than ``min_size`` go uncompressed, which
RFC 7692 allows on a connection that negotiated the extension.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.extensions.base import Extension
from websockets.extensions.permessage_deflate import PerMessageDeflate, ServerPerMessageDeflateFactory
from websockets.frames import CTRL_OPCODES, Frame, Opcode
from websockets.server import ServerProtocol
from websockets.typing import ExtensionParameter

# zlib level and memory: chat frames are small JSON, and compression runs once per event.
# Without context takeover every message gets a new compressor, and zlib clears
# its hash table at each start: at memLevel 8 that is 64 KB, most of the cost
# of a small message; at 5 it is 8 KB, with the same output for chat frames.
COMPRESS_SETTINGS = {"level": 6, "memLevel": 5}
# Below this many bytes a message is sent as it is: deflate's framing would eat the gain.
DEFAULT_MIN_SIZE = 128
# Distinct payloads remembered per process: a burst of events, each sent to many sockets.
TABLE_SIZE = 512


class _Table:
    """Compressed payloads by (window bits, opcode, payload), least recently used out first."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.entries: OrderedDict[tuple[int, int, bytes], bytes] = OrderedDict()
        self.hits = 0
        self.misses = 0
        self.small = 0

    def get(self, key: tuple[int, int, bytes]) -> bytes | None:
        found = self.entries.get(key)
        if found is not None:
            self.entries.move_to_end(key)
            self.hits += 1
        return found

    def put(self, key: tuple[int, int, bytes], data: bytes) -> None:
        self.misses += 1
        self.entries[key] = data
        if len(self.entries) > self.size:
            self.entries.popitem(last=False)


_table = _Table(TABLE_SIZE)


def stats() -> dict[str, int]:
    """Messages sent compressed from the table (hits), compressed here (misses), sent as they were (small)."""
    return {"hits": _table.hits, "misses": _table.misses, "small": _table.small, "entries": len(_table.entries)}


class SharedDeflate(Extension):
    """One socket's permessage-deflate: decoding is the library's; whole messages are encoded once per process."""

    name = PerMessageDeflate.name

    def __init__(self, inner: PerMessageDeflate, *, min_size: int) -> None:
        self.inner = inner
        self.min_size = min_size

    def decode(self, frame: Frame, *, max_size: int | None = None) -> Frame:
        return self.inner.decode(frame, max_size=max_size)

    def encode(self, frame: Frame) -> Frame:
        if frame.opcode in CTRL_OPCODES:
            return frame
        if not frame.fin or frame.opcode is Opcode.CONT:
            # A fragmented message: the library compresses its frames in order.
            return self.inner.encode(frame)
        payload = bytes(frame.data)
        if len(payload) < self.min_size:
            _table.small += 1
            return frame
        key = (self.inner.local_max_window_bits, int(frame.opcode), payload)
        data = _table.get(key)
        if data is None:
            data = bytes(self.inner.encode(frame).data)
            _table.put(key, data)
        return Frame(frame.opcode, data, True, True, frame.rsv2, frame.rsv3)


class SharedDeflateFactory(ServerPerMessageDeflateFactory):
    """Negotiates permessage-deflate without context takeover either way, and shares each message's bytes."""

    def __init__(self, *, min_size: int = DEFAULT_MIN_SIZE) -> None:
        super().__init__(
            server_no_context_takeover=True,
            client_no_context_takeover=True,
            compress_settings=dict(COMPRESS_SETTINGS),
        )
        self.min_size = min_size

    def process_request_params(
        self, params: Sequence[ExtensionParameter], accepted_extensions: Sequence[Extension]
    ) -> tuple[list[ExtensionParameter], Extension]:
        response, extension = super().process_request_params(params, accepted_extensions)
        return response, SharedDeflate(extension, min_size=self.min_size)


class SharedDeflateProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O ``websockets`` protocol, negotiating :class:`SharedDeflateFactory`'s deflate."""

    min_size = DEFAULT_MIN_SIZE

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The same ServerProtocol uvicorn builds, with this extension instead of its own deflate.
        self.conn = ServerProtocol(
            extensions=[SharedDeflateFactory(min_size=self.min_size)],
            max_size=self.config.ws_max_size,
            logger=logging.getLogger("uvicorn.error"),
        )
