"""Real-time delivery metrics (prometheus_client). One place names them all."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

WS_CONNECTIONS = Gauge(
    "chat_ws_connections", "Open WebSocket connections.", multiprocess_mode="livesum"
)
WS_SUBSCRIPTIONS = Gauge(
    "chat_ws_subscriptions", "Room subscriptions held by open sockets.", multiprocess_mode="livesum"
)
WS_EVENTS_IN = Counter("chat_ws_frames_in_total", "Client frames received, by type.", ["type"])
WS_EVENTS_OUT = Counter("chat_ws_events_out_total", "Events forwarded to sockets, by kind.", ["kind"])
WS_FRAMES_OUT = Counter("chat_ws_frames_out_total", "WebSocket frames sent (a batch is one frame).")
WS_BYTES_OUT = Counter("chat_ws_bytes_out_total", "Bytes of WebSocket text sent.")
WS_BATCH_SIZE = Histogram(
    "chat_ws_batch_events", "Events per sent frame.", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256)
)
WS_SHED = Counter("chat_ws_shed_events_total", "Low-priority events dropped under pressure, by priority.", ["priority"])
WS_SLOW_CLOSES = Counter("chat_ws_slow_consumer_closes_total", "Sockets closed because they could not keep up.")
WS_GAP_FILLS = Counter("chat_ws_gap_fills_total", "Live-event gaps filled from the database (lost or reordered publishes).")
WS_RESYNCS = Counter("chat_ws_resyncs_total", "resync events sent (resume beyond the replay cap).")
WS_ACCESS_REVOKED = Counter(
    "chat_ws_access_revoked_total", "Subscriptions dropped because the user could no longer read the room."
)
WS_REVOKED = Counter("chat_ws_revoked_total", "Sockets closed because their credentials ended (4401).")
WS_ERRORS = Counter("chat_ws_error_frames_total", "Error frames sent, by code.", ["code"])
WS_DELIVERY_LATENCY = Histogram(
    "chat_ws_delivery_seconds",
    "From the commit of a message to its hand-off to the sockets of a server process (once per message and process).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
MESSAGES_CREATED = Counter("chat_messages_created_total", "Messages persisted.")
PUBLISH_FAILURES = Counter("chat_publish_failures_total", "Events that could not be handed to the channel layer.")
CACHE_WARM_RUNS = Counter("chat_cache_warm_runs_total", "Cache warmings run (chat.warming).")
CACHE_WARM_SECONDS = Counter("chat_cache_warm_seconds_total", "Time spent warming the cache, pauses left out (chat.warming).")
CACHE_WARM_FILLED = Counter(
    "chat_cache_warm_filled_total", "Cache entries the warming found missing and filled, by family.", ["family"]
)
