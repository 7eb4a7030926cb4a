"""Real-time publishing. One helper names groups; one function publishes.

An event is serialized to JSON text exactly once, here, and that text is
forwarded unchanged to every subscribed socket by chat.consumers.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from chat import metrics

logger = logging.getLogger(__name__)

# The channel-layer message type every room event travels as (handler: room_event).
ROOM_EVENT = "room.event"
USER_EVENT = "user.event"


def room_group(room_id: int) -> str:
    """The channel-layer group of a room's subscribers."""
    return f"room.{int(room_id)}"


def room_event_message(*, room_id: int, kind: str, payload: dict[str, Any], seq: int | None = None) -> dict[str, Any]:
    """The channel-layer message for one event: the frame text plus routing fields."""
    text = orjson.dumps({"type": kind, **payload}).decode()
    return {"type": ROOM_EVENT, "room": room_id, "kind": kind, "seq": seq, "text": text, "ts": time.time()}


def user_group(user_id: int) -> str:
    """The channel-layer group of all sockets of one user (mentions, personal events)."""
    return f"user.{int(user_id)}"


def publish_user_event(*, user_id: int, kind: str, payload: dict[str, Any]) -> None:
    """Send one event to every socket of a user. Failures are logged and counted."""
    layer = get_channel_layer()
    if layer is None:
        return
    text = orjson.dumps({"type": kind, **payload}).decode()
    message = {"type": USER_EVENT, "kind": kind, "text": text}
    try:
        async_to_sync(layer.group_send)(user_group(user_id), message)
    except Exception:  # noqa: BLE001
        metrics.PUBLISH_FAILURES.inc()
        logger.exception("publish failed user=%s kind=%s", user_id, kind)


def publish_room_event(*, room_id: int, kind: str, payload: dict[str, Any], seq: int | None = None) -> None:
    """Send one event to a room's group. Call it from ``transaction.on_commit``.

    A channel-layer failure (Redis down) is logged and swallowed: the write is
    already committed, and subscribers recover it through resume/gap fill.
    """
    layer = get_channel_layer()
    if layer is None:
        return
    message = room_event_message(room_id=room_id, kind=kind, payload=payload, seq=seq)
    try:
        async_to_sync(layer.group_send)(room_group(room_id), message)
    except Exception:  # noqa: BLE001 - any layer failure must not undo a committed write
        metrics.PUBLISH_FAILURES.inc()
        logger.exception("publish failed room=%s kind=%s seq=%s", room_id, kind, seq)


def background_channel() -> str:
    """The worker's channel name (settings.CHAT_BACKGROUND_CHANNEL; ``manage.py chat_worker`` runs it)."""
    from django.conf import settings

    return settings.CHAT_BACKGROUND_CHANNEL


def enqueue_background(message: dict[str, Any]) -> None:
    """Hand work that is not the message itself (mentions, …) to the background worker."""
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.send)(background_channel(), message)
    except Exception:  # noqa: BLE001 - best effort; the message itself is already delivered
        metrics.PUBLISH_FAILURES.inc()
        logger.warning("background enqueue failed: %s", message.get("type"), exc_info=True)
