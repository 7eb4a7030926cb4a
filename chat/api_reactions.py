"""JSON API endpoints for reactions. Mounted by chatsite.api.

Thin, as chat.api: the selector checks the message can be read (404
otherwise), the service checks and writes.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja import Router, Status

from chat.api_schemas import ReactionChangeOut, ReactionIn
from chat.selectors import history as history_selectors
from chat.services import reactions as reaction_services
from chatsite.api_schemas import ERROR_RESPONSES

router = Router()


def _change_dict(*, message_id: int, emoji: str, changed: bool) -> dict[str, Any]:
    reactions = history_selectors.message_reactions(message_id=message_id)
    return {"message": message_id, "emoji": emoji, "changed": changed, "reactions": reactions}


@router.post(
    "/messages/{message_id}/reactions",
    response={200: ReactionChangeOut, 201: ReactionChangeOut, **ERROR_RESPONSES},
    tags=["reactions"],
)
def reaction_add(request: HttpRequest, message_id: int, payload: ReactionIn) -> Status:
    """React to a message with one Unicode emoji: 201 when added, 200 when you had already.

    The answer holds the message's summary as it is now; the room's sockets
    get a `reaction` event (gathered for REACTION_WINDOW_MS).
    """
    message = history_selectors.message_get_for_user(user=request.auth, message_id=message_id)
    emoji = reaction_services.clean_emoji(payload.emoji)
    added = reaction_services.reaction_add(message=message, user=request.auth, emoji=emoji)
    return Status(201 if added else 200, _change_dict(message_id=message.id, emoji=emoji, changed=added))


@router.delete(
    "/messages/{message_id}/reactions/{emoji}", response={200: ReactionChangeOut, **ERROR_RESPONSES}, tags=["reactions"]
)
def reaction_remove(request: HttpRequest, message_id: int, emoji: str) -> dict[str, Any]:
    """Take back your reaction (the emoji URL-encoded in the path); `changed` is false when you had none."""
    message = history_selectors.message_get_for_user(user=request.auth, message_id=message_id)
    emoji = reaction_services.clean_emoji(emoji)
    removed = reaction_services.reaction_remove(message=message, user=request.auth, emoji=emoji)
    return _change_dict(message_id=message.id, emoji=emoji, changed=removed)
