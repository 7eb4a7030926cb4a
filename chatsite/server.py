"""The ASGI server entry point: daphne, with WebSocket protocol errors closed properly.

autobahn (under daphne) "fails by drop" by default: a protocol violation such
as a frame over the 1 MiB limit drops the TCP connection without a close
frame, so the client sees 1006 and cannot tell why. With ``failByDrop``
off, autobahn sends the close frame first (1009 for a frame too big), as
docs/PROTOCOL.md promises. Daphne does not expose the option, so this module
sets it on daphne's factory and then runs daphne's own command line:

    python -m chatsite.server -b 127.0.0.1 -p 8000 chatsite.asgi:application
"""

from __future__ import annotations

from daphne.cli import CommandLineInterface
from daphne.ws_protocol import WebSocketFactory

_reset_protocol_options = WebSocketFactory.resetProtocolOptions


def _reset_with_close_frames(self: WebSocketFactory) -> None:
    _reset_protocol_options(self)
    self.failByDrop = False


WebSocketFactory.resetProtocolOptions = _reset_with_close_frames

if __name__ == "__main__":
    CommandLineInterface.entrypoint()
