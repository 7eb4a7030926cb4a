"""Reads of reactions: the summaries shown under messages, for many messages in one query.

A summary lists each emoji of a message, in the order it was first used,
with its count and the ids of the people who used it (oldest first). Who
"I" am is not part of it, so one summary serves every reader (history
caches, the room page fragment, the ``reaction`` event); :func:`with_names`
adds the first few names, the same for every reader.
"""

from __future__ import annotations

from typing import Any

from chat.models import Reaction

# Names shown with each emoji ("alice, bob and 3 others").
SUMMARY_NAMES = 3


def reaction_summaries(*, message_ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    """Each message's summary: ``[{"emoji", "count", "user_ids"}]``; messages without reactions are left out.

    One query over reaction_message_emoji_user_uniq, whatever the number of messages.
    """
    if not message_ids:
        return {}
    rows = Reaction.objects.filter(message_id__in=message_ids).order_by("id").values_list("message_id", "emoji", "user_id")
    found: dict[int, dict[str, list[int]]] = {}
    for message_id, emoji, user_id in rows:
        found.setdefault(message_id, {}).setdefault(emoji, []).append(user_id)
    return {
        message_id: [{"emoji": emoji, "count": len(users), "user_ids": users} for emoji, users in emojis.items()]
        for message_id, emojis in found.items()
    }


def named_user_ids(summaries: list[list[dict[str, Any]]]) -> set[int]:
    """The user ids :func:`with_names` shows names of, for a page of summaries (one profile lookup)."""
    return {uid for summary in summaries for entry in summary for uid in entry["user_ids"][:SUMMARY_NAMES]}


def with_names(summary: list[dict[str, Any]], *, profiles: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    """The summary with the first few reactors' display data (``users``), the same for every reader."""
    return [
        {**entry, "users": [profiles[uid] for uid in entry["user_ids"][:SUMMARY_NAMES] if uid in profiles]}
        for entry in summary
    ]
