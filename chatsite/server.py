"""The ASGI server entry point: uvicorn (default) or daphne, with the same options.

    python -m chatsite.server -b 127.0.0.1 -p 8000 [--server uvicorn|daphne] chatsite.asgi:application

uvicorn is the default because the WebSocket benchmark measured it cheaper per
delivered frame than daphne, with a lower p99 at the same load
(docs/PERFORMANCE.md, "Real-time delivery"). It runs with uvloop, httptools
and the sans-I/O ``websockets`` protocol, whose pings are timers rather than
tasks, so idle sockets cost less memory and CPU ("What a socket costs";
``ASGI_SERVER`` or ``--server`` picks daphne instead).

Both close over-size frames with 1009 and ping idle sockets. Under uvicorn,
WebSocket permessage-deflate, which every browser offers, is negotiated
without context takeover and each message is compressed once per process for
all its sockets (perf.ws_deflate; ``WS_DEFLATE=false`` or ``--no-ws-deflate``
turns it off). daphne's
autobahn "fails by drop" by default (a protocol violation drops the TCP
connection without a close frame, so the client sees 1006); with daphne this
module turns ``failByDrop`` off first, so autobahn sends the close frame
(docs/PROTOCOL.md).
"""

from __future__ import annotations

import argparse
import gc
import os
import sys

from chatsite import env

SERVERS = ("uvicorn", "daphne")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m chatsite.server", description=__doc__.split("\n\n")[0])
    p.add_argument("application", nargs="?", default="chatsite.asgi:application")
    p.add_argument("--server", choices=SERVERS, default=env.ASGI_SERVER)
    p.add_argument("-b", "--bind", default="127.0.0.1", help="interface to listen on")
    p.add_argument("-p", "--port", type=int, default=8000)
    p.add_argument("--ping-interval", type=float, default=20.0, help="seconds between server pings on a WebSocket")
    p.add_argument("--ping-timeout", type=float, default=30.0, help="seconds to wait for a pong before closing")
    p.add_argument("--max-message-size", type=int, default=1024 * 1024, help="largest WebSocket message (bytes); bigger: 1009")
    p.add_argument("--backlog", type=int, default=4096, help="listen backlog (thousands of sockets may connect at once)")
    p.add_argument(
        "--keepalive-timeout", type=int, default=env.HTTP_KEEPALIVE_TIMEOUT,
        help="seconds an idle HTTP connection is kept open after a response (uvicorn only; HTTP_KEEPALIVE_TIMEOUT)",
    )  # fmt: skip
    p.add_argument(
        "--ws-deflate", action=argparse.BooleanOptionalAction, default=env.WS_DEFLATE,
        help="negotiate permessage-deflate, each message compressed once for all sockets (uvicorn only; WS_DEFLATE)",
    )  # fmt: skip
    p.add_argument(
        "--no-gc-freeze", dest="gc_freeze", action="store_false", default=env.SERVER_GC_FREEZE,
        help="keep the objects loaded at start-up in the cyclic garbage collector's full collections (SERVER_GC_FREEZE=0)",
    )  # fmt: skip
    p.add_argument(
        "--gc-full-every", type=int, default=env.SERVER_GC_FULL_EVERY,
        help="generation-1 collections between two full ones (Python's default 10; SERVER_GC_FULL_EVERY)",
    )  # fmt: skip
    p.add_argument(
        "-w", "--workers", type=int, default=env.SERVER_WORKERS,
        help="server processes sharing the port (uvicorn only; needs REDIS_URL); default SERVER_WORKERS, else WEB_CONCURRENCY, else 1",
    )  # fmt: skip
    p.add_argument("-v", "--verbosity", type=int, default=1)
    return p.parse_args(argv)


def effective_workers(args: argparse.Namespace) -> int:
    """How many processes to run: more than one only with Redis.

    Without REDIS_URL (the embedded mode) the channel layer and the cache live
    in the process: sockets on one process would not hear messages sent
    through another, and one process's writes would not invalidate another's
    cache.
    """
    if args.workers <= 1:
        return 1
    if args.server != "uvicorn":
        raise SystemExit("--workers needs uvicorn: daphne serves from one process.")
    if not env.REDIS_URL:
        print("REDIS_URL is not set: one server process (the embedded channel layer and cache are per process).", file=sys.stderr)
        return 1
    return args.workers


def tune_collector(full_every: int) -> None:
    """Make full (generation 2) collections rarer: one per ``full_every`` generation-1 collections.

    With thousands of sockets open the process holds a few hundred thousand
    long-lived objects (a hundred per socket, in uvicorn, websockets, asyncio
    and the consumer), and a full collection walks all of them: a stall of
    the event loop of about 0.1 s at 2,000 sockets. At Python's default of
    10, steady delivery load brought one every 20 s. Whatever is freed by
    reference counting (almost everything) is unaffected; cyclic garbage
    waits longer for the collection that frees it (docs/PERFORMANCE.md,
    "Garbage collector pauses").
    """
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, max(1, full_every))


def load_application(path: str, *, freeze: bool, full_every: int = 10) -> object:
    """Import the ASGI application; with ``freeze``, move everything loaded so far out of the cyclic GC's reach.

    Django, the URLconf, the apps and their modules are a few hundred thousand
    objects that live as long as the process. Every full (generation 2)
    collection walks all of them: a pause of the event loop with thousands of
    sockets open, every socket's frames late by that much
    (docs/PERFORMANCE.md, "Garbage collector pauses"). ``gc.freeze()`` puts
    them in the permanent generation, which collections skip; reference
    counting still frees them. The collection just before clears import-time
    garbage so it is not frozen.
    """
    from uvicorn.importer import import_from_string

    app = import_from_string(path)
    if freeze:
        from django.urls import get_resolver

        get_resolver().url_patterns  # noqa: B018 - the URLconf and its views now, not at the first request
        gc.collect()
        gc.freeze()
    tune_collector(full_every)
    return app


# The application path handed to each of several server processes.
WORKER_APPLICATION = "CHAT_SERVER_APPLICATION"


def worker_application() -> object:
    """The application of one of several server processes (uvicorn imports this in each)."""
    return load_application(os.environ[WORKER_APPLICATION], freeze=env.SERVER_GC_FREEZE, full_every=env.SERVER_GC_FULL_EVERY)


def run_uvicorn(args: argparse.Namespace) -> None:
    import uvicorn

    from perf.ws_deflate import SharedDeflateProtocol

    workers = effective_workers(args)
    if workers > 1:
        # Each process imports the application itself; uvicorn's supervisor
        # binds the socket once, shares it, and restarts a process that dies.
        os.environ[WORKER_APPLICATION] = args.application
        os.environ["SERVER_GC_FREEZE"] = "1" if args.gc_freeze else "0"
        os.environ["SERVER_GC_FULL_EVERY"] = str(args.gc_full_every)
        app: object = "chatsite.server:worker_application"
    else:
        app = load_application(args.application, freeze=args.gc_freeze, full_every=args.gc_full_every)
    uvicorn.run(
        app,  # type: ignore[arg-type]
        factory=workers > 1,
        workers=workers,
        host=args.bind,
        port=args.port,
        # The sans-I/O websockets protocol; with deflate, its subclass that compresses
        # each message once per process (perf.ws_deflate), not uvicorn's per-socket deflate.
        ws=SharedDeflateProtocol if args.ws_deflate else "websockets-sansio",
        ws_max_size=args.max_message_size,
        ws_per_message_deflate=False,
        ws_ping_interval=args.ping_interval,
        ws_ping_timeout=args.ping_timeout,
        # Shutdown sends what the publisher holds and closes the loop's Redis clients (chatsite.asgi.lifespan).
        lifespan="on",
        # The app writes its own JSON request log (perf.middleware).
        access_log=False,
        # Forwarded headers are believed only from TRUSTED_PROXIES, by the
        # application itself (chatsite.asgi); uvicorn's default would believe
        # them from any peer on 127.0.0.1.
        proxy_headers=False,
        log_level="info" if args.verbosity >= 1 else "warning",
        backlog=args.backlog,
        # Bounds only the wait for a next request on a connection that has had
        # one; uvicorn has no deadline for a request's headers (docs/SECURITY.md,
        # "Slow clients"), and the body's is the application's (chatsite.http_timeouts).
        timeout_keep_alive=args.keepalive_timeout,
        timeout_graceful_shutdown=5,
    )


def run_daphne(args: argparse.Namespace) -> None:
    from daphne.cli import CommandLineInterface
    from daphne.ws_protocol import WebSocketFactory

    reset_protocol_options = WebSocketFactory.resetProtocolOptions

    def reset_with_close_frames(self: WebSocketFactory) -> None:
        reset_protocol_options(self)
        self.failByDrop = False

    WebSocketFactory.resetProtocolOptions = reset_with_close_frames
    # No --proxy-headers: forwarded headers are the application's to judge (chatsite.asgi).
    CommandLineInterface().run(
        [
            "-e", f"tcp:port={args.port}:interface={args.bind}:backlog={args.backlog}",
            "--ping-interval", str(int(args.ping_interval)),
            "--ping-timeout", str(int(args.ping_timeout)),
            "--websocket-max-message-size", str(args.max_message_size),
            "--websocket-max-frame-size", str(args.max_message_size),
            "-v", str(args.verbosity),
            args.application,
        ]  # fmt: skip
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    (run_uvicorn if args.server == "uvicorn" else run_daphne)(args)


if __name__ == "__main__":
    main()
