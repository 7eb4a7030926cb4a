"""The background worker: distribution work that is not the message itself.

Run with ``python manage.py chat_worker`` (``runworker`` on the configured
channel, settings.CHAT_BACKGROUND_CHANNEL; ``make run`` and docker-compose
start it). Services enqueue work after commit with
``chat.events.enqueue_background``; nothing here is on the sender's path.

Today it delivers @mention notifications to the mentioned users' personal
groups (every socket of that user, whatever rooms it follows).
"""

from __future__ import annotations

import logging
from typing import Any

from channels.consumer import SyncConsumer

from chat import events
from chat.selectors import history as history_selectors
from chat.serialization import message_dict

logger = logging.getLogger(__name__)


class BackgroundConsumer(SyncConsumer):
    def message_created(self, event: dict[str, Any]) -> None:
        """Notify users @mentioned in a new message who can read its room."""
        message = history_selectors.message_with_room(message_id=event["message_id"])
        if message is None or message.deleted_at is not None:
            return
        users = history_selectors.mentioned_readers(room=message.room, body=message.body)
        if not users:
            return
        payload = {"room": message.room_id, "message": message_dict(message)}
        for user in users:
            if user.id != message.author_id:
                events.publish_user_event(user_id=user.id, kind="mention", payload=payload)
