"""The WebSocket's message sends, committed in groups.

Every ``message.send`` of a server process goes through its event loop's
group commit (chat.batching): a send that finds one of ``CHAT_SEND_GROUPS``
slots free is written at once, alone; sends that arrive while they are busy
wait and then go together: one trip to a database thread, one statement and
one commit for all of them (chat.services.messages.messages_create, the one
writer), one rate-limit round trip at most, and one round of cache updates after it.

A socket handles its frames one at a time, so it has at most one send in a
group; the per-room ``seq``, the commit order and ``client_id`` idempotency
are the writer's, unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings

from chat.batching import ThreadBatcher, batcher
from chat.models import Room
from chat.selectors import rooms as room_selectors
from chat.services import messages as message_services
from chatsite import ratelimit
from chatsite.errors import ChatError


@dataclass
class Send:
    """One ``message.send``. ``room`` is given when the socket is subscribed to it (its access is known:
    changes reach the socket as events); else the access is checked here."""

    user: Any
    room_id: int
    body: Any
    client_id: str
    room: Room | None = None
    thread_root: Any = None


def ack_frame(room_id: int, client_id: str, message: Any, created: bool) -> dict[str, Any]:
    return {
        "type": "message.ack",
        "room": room_id,
        "client_id": client_id,
        "id": message.id,
        "seq": message.seq,
        "thread_root": message.thread_root_id,
        "created_at": message.created_at.isoformat(),
        "duplicate": not created,
    }


def write_group(sends: list[Send]) -> list[dict[str, Any] | ChatError]:
    """Check, count and write a group of sends (in a database thread): the ack frame or the refusal of each."""
    results: list[dict[str, Any] | ChatError | None] = [None] * len(sends)
    rooms: list[tuple[int, Room]] = []
    for i, send in enumerate(sends):
        try:
            rooms.append((i, send.room or room_selectors.room_get_for_user(user=send.user, room_id=send.room_id)))
        except ChatError as exc:
            results[i] = exc
    # The group's rate-limit counts in one round trip at most (not one per sender new to this process).
    refusals = ratelimit.hit_many("message", [sends[i].user.pk for i, _ in rooms])
    drafts: list[tuple[int, message_services.Draft]] = []
    for (i, room), refusal in zip(rooms, refusals):
        if refusal is not None:
            results[i] = refusal
            continue
        send = sends[i]
        draft = message_services.Draft(
            room=room, author=send.user, body=send.body, client_id=send.client_id, thread_root=send.thread_root
        )
        drafts.append((i, draft))
    outcomes = message_services.messages_create([draft for _, draft in drafts])
    for (i, _), outcome in zip(drafts, outcomes):
        send = sends[i]
        results[i] = outcome if isinstance(outcome, ChatError) else ack_frame(send.room_id, send.client_id, *outcome)
    return results  # type: ignore[return-value]


def group_commit() -> ThreadBatcher:
    """This event loop's group commit: ``await group_commit().submit(Send(...))`` is the send's ack frame."""
    return batcher("send", write_group, slots=settings.CHAT_SEND_GROUPS, max_group=settings.CHAT_SEND_GROUP_MAX)
