"""The background worker: distribution work that is not the message itself.

Run with ``python manage.py chat_worker`` (``runworker`` on the configured
channel, settings.CHAT_BACKGROUND_CHANNEL; ``make run`` and docker-compose
start it). Services enqueue work after commit with
``chat.events.enqueue_background``; nothing here is on the sender's path.

Today it delivers notifications to users' personal groups (every socket of
that user, whatever rooms it follows): a ``mention`` to each user @mentioned
in a message who can read its room, and to every other member of a direct
message for each of its messages (with ``"dm": true``), so a DM reaches its
recipients as a mention does.
"""

from __future__ import annotations

import logging
from typing import Any

from channels.consumer import SyncConsumer

from chat import events
from chat.models import Room
from chat.selectors import history as history_selectors
from chat.selectors import rooms as room_selectors
from chat.serialization import message_dict
from chat.services import notifications as notification_services
from chat.services import threads as thread_services
from chat.services import uploads as upload_services
from perf.cache import backend as cache_backend
from perf.cache import cache_key

logger = logging.getLogger(__name__)

# Seconds a worker's claim on a job is kept: far longer than any copy of it takes to arrive.
CLAIM_TTL = 3600


def claim(kind: str, ident: object) -> bool:
    """True for the one worker that claims this job first.

    With the pub/sub channel layer every worker listening on the background
    channel receives every job (one per app node in a cluster); the claim,
    an ``add`` in the shared cache, makes exactly one of them do it.
    """
    return bool(cache_backend().add(cache_key("background", kind, ident), 1, CLAIM_TTL))


class BackgroundConsumer(SyncConsumer):
    def upload_created(self, event: dict[str, Any]) -> None:
        """Make a shared image's thumbnail, once, whichever worker claims it."""
        if claim("thumbnail", event["upload_id"]):
            upload_services.upload_thumbnail(upload_id=event["upload_id"])

    def message_created(self, event: dict[str, Any]) -> None:
        """Notify users @mentioned in a new message who can read its room, or every other member of a DM.

        Once per message, whichever worker claims it. In a DM everyone is
        notified whether named or not, and once: a mention adds nothing.
        """
        if not claim("mentions", event["message_id"]):
            return
        message = history_selectors.message_with_room(message_id=event["message_id"])
        if message is None or message.deleted_at is not None:
            return
        is_dm = message.room.kind == Room.Kind.DM
        if is_dm:
            users = list(room_selectors.room_members(room=message.room))
        else:
            users = history_selectors.mentioned_readers(room=message.room, body=message.body)
        if not users:
            return
        if message.thread_root_id is not None and not is_dm:
            # Someone named in a thread follows it, as if they had replied.
            thread_services.threads_mentioned(root_id=message.thread_root_id, user_ids=[u.id for u in users])
        # Who muted the room hears nothing of it; who asked not to be disturbed is told quietly (no desktop alert).
        wanted, quiet = notification_services.notified(room=message.room, users=[u for u in users if u.id != message.author_id])
        notification_services.notices_record(message=message, users=wanted)
        payload = {"room": message.room_id, "room_slug": message.room.slug, "message": message_dict(message), "dm": is_dm}
        for user in wanted:
            events.publish_user_event(user_id=user.id, kind="mention", payload={**payload, "quiet": user.id in quiet})
