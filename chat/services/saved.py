"""Writes of saved messages: a reader keeps a message for later, privately.

Anyone who can read the room may save its messages, in archived projects
too (a save changes nothing anyone else sees). Both writes are idempotent.
After commit they publish ``message.saved`` / ``message.unsaved`` to the
user's own sockets, so their other tabs and devices follow.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from django.db import IntegrityError, transaction

from chat import events
from chat.models import Message, SavedMessage
from chat.selectors import pins as pin_selectors
from chatsite.errors import Conflict


@transaction.atomic
def message_save(*, message: Message, user: Any) -> tuple[SavedMessage, bool]:
    """Save ``message`` for ``user``: ``(saved, created)``; saving it again returns the first save.

    ``message`` must come from chat.selectors.history.message_get_for_user
    (the user reads its room). A deleted message cannot be saved (Conflict
    ``deleted``). Two saves at once make one row (saved_user_message_uniq,
    the loser inside a savepoint). Publishes ``message.saved`` to the user
    after commit, only when created.
    """
    if message.deleted_at is not None:
        raise Conflict("A deleted message cannot be saved.", code="deleted")
    existing = SavedMessage.objects.filter(user=user, message=message).first()
    if existing is None:
        try:
            with transaction.atomic():
                saved = SavedMessage.objects.create(user=user, message=message)
        except IntegrityError:
            existing = SavedMessage.objects.filter(user=user, message=message).first()
            if existing is None:
                raise
    if existing is not None:
        return existing, False
    payload = pin_selectors.saved_dicts([saved])[0]
    transaction.on_commit(
        partial(events.publish_user_event, user_id=user.id, kind="message.saved", payload=payload),
        robust=True,
    )
    return saved, True


@transaction.atomic
def message_unsave(*, message: Message, user: Any) -> bool:
    """Forget ``user``'s save of ``message``; True if there was one. Idempotent.

    Publishes ``message.unsaved`` (``id``, ``room``) to the user after commit, only when a save was removed.
    """
    deleted, _ = SavedMessage.objects.filter(user=user, message_id=message.id).delete()
    if not deleted:
        return False
    payload = {"id": message.id, "room": message.room_id}
    transaction.on_commit(
        partial(events.publish_user_event, user_id=user.id, kind="message.unsaved", payload=payload),
        robust=True,
    )
    return True
