"""Writes of reactions: add and remove one emoji of one person on one message, idempotently.

A reaction never touches the message row: the summary is read from the
reactions themselves (chat.selectors.reactions). After commit the message's
cache entry and its room's history pages are dropped, and the message is
marked for a ``reaction`` event, which chat.events.publish_reactions
coalesces: during a storm on one message, a socket gets one event per
message per window with the summary as it stands, not one per click.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import emoji as emoji_data
from django.db import IntegrityError, transaction

from chat import cache_keys, events
from chat.models import Message, Reaction
from chatsite import ratelimit
from chatsite.errors import Conflict, Forbidden, InvalidInput
from perf.cache import invalidate_on_commit

# Distinct emoji on one message: a bound on the summary every reader loads.
REACTION_KINDS_MAX = 50

# Bytes of one emoji: the longest standard sequences (family ZWJ sequences with
# skin tones) are under 40; the column holds 64 characters.
_EMOJI_MAX_LENGTH = 64


def clean_emoji(value: Any) -> str:
    """One Unicode emoji (a ZWJ sequence, a flag or a keycap counts as one), or InvalidInput ``invalid_emoji``."""
    if not isinstance(value, str) or not value or len(value) > _EMOJI_MAX_LENGTH:
        raise InvalidInput("emoji must be one Unicode emoji.", code="invalid_emoji")
    # Variation selector 16 is often added or left out by keyboards: one emoji either way.
    if not (emoji_data.is_emoji(value) or emoji_data.is_emoji(value.replace("\ufe0f", ""))):
        raise InvalidInput("emoji must be one Unicode emoji.", code="invalid_emoji")
    return value


def _require_writable(message: Message) -> None:
    if message.deleted_at is not None:
        raise Conflict("A deleted message cannot get reactions.", code="deleted")
    if message.room.project.archived:
        raise Forbidden("This project is archived; it is read-only.", code="archived")


def _changed(message: Message) -> None:
    invalidate_on_commit(cache_keys.message_cache_key(message.id), cache_keys.room_stamp_key(message.room_id))
    transaction.on_commit(
        partial(events.publish_reactions, room_id=message.room_id, message_id=message.id), robust=True
    )


@transaction.atomic
def reaction_add(*, message: Message, user: Any, emoji: Any) -> bool:
    """Add ``user``'s ``emoji`` to ``message``; True when it is new, False when it was there already.

    ``message`` comes from chat.selectors.history.message_get_for_user (the
    user may read its room). Rate-limited per user (``reaction``).
    """
    emoji = clean_emoji(emoji)
    _require_writable(message)
    ratelimit.hit("reaction", user.pk)
    kinds = Reaction.objects.filter(message=message).values("emoji").distinct()
    if not kinds.filter(emoji=emoji).exists() and kinds.count() >= REACTION_KINDS_MAX:
        raise Conflict(f"A message can have at most {REACTION_KINDS_MAX} different reactions.", code="too_many_reactions")
    try:
        with transaction.atomic():
            Reaction.objects.create(message=message, emoji=emoji, user=user)
    except IntegrityError:
        return False  # already there: this user's earlier add, or one at the same moment
    _changed(message)
    return True


@transaction.atomic
def reaction_remove(*, message: Message, user: Any, emoji: Any) -> bool:
    """Remove ``user``'s ``emoji`` from ``message``; True when there was one. Allowed on a deleted message."""
    emoji = clean_emoji(emoji)
    if message.room.project.archived:
        raise Forbidden("This project is archived; it is read-only.", code="archived")
    ratelimit.hit("reaction", user.pk)
    removed, _ = Reaction.objects.filter(message=message, emoji=emoji, user=user).delete()
    if removed:
        _changed(message)
    return bool(removed)
