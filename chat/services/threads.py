"""Writes of thread state: who follows a thread and how far they have read it.

Replies themselves are messages (chat.services.messages, the one writer);
this module keeps the follows that replies set off, and the reader's own
follow, unfollow and read marker.
"""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction
from django.db.models.functions import Greatest

from chat.models import Message, ThreadFollow
from chatsite.errors import InvalidInput


def threads_replied(*, replies: list[Message]) -> None:
    """After replies commit: each replier follows their thread again, read up to their reply, and each
    root's author follows it unless they chose not to. Two statements for the group."""
    newest: dict[tuple[int, int], int] = {}
    for reply in replies:
        key = (reply.author_id, reply.thread_root_id)
        newest[key] = max(newest.get(key, 0), reply.id)
    ThreadFollow.objects.bulk_create(
        [ThreadFollow(user_id=user, root_id=root, following=True, last_read_id=last) for (user, root), last in newest.items()],
        update_conflicts=True,
        unique_fields=["user", "root"],
        update_fields=["following", "last_read_id"],
    )
    root_authors = Message.objects.filter(id__in={r.thread_root_id for r in replies}).values_list("author_id", "id")
    ThreadFollow.objects.bulk_create(
        [ThreadFollow(user_id=author, root_id=root) for author, root in root_authors], ignore_conflicts=True
    )


def threads_mentioned(*, root_id: int, user_ids: list[int]) -> None:
    """People @mentioned in a reply follow its thread (again, if they had stopped), their read marker kept."""
    ThreadFollow.objects.bulk_create(
        [ThreadFollow(user_id=user_id, root_id=root_id, following=True) for user_id in user_ids],
        update_conflicts=True,
        unique_fields=["user", "root"],
        update_fields=["following"],
    )


def thread_follow(*, root: Message, user: Any, following: bool) -> bool:
    """Follow or unfollow the thread of ``root`` (a message the user may read). Returns ``following``."""
    updated = ThreadFollow.objects.filter(root=root, user=user).update(following=following)
    if not updated:
        try:
            with transaction.atomic():
                ThreadFollow.objects.create(root=root, user=user, following=following)
        except IntegrityError:  # a follow made meanwhile (a reply, another tab): set it again
            ThreadFollow.objects.filter(root=root, user=user).update(following=following)
    return following


def thread_mark_read(*, root: Message, user: Any, last_read_id: Any) -> int:
    """Move the user's read marker in the thread forward (never back), clamped to its newest reply. Returns it."""
    if not isinstance(last_read_id, int) or isinstance(last_read_id, bool) or last_read_id < 0:
        raise InvalidInput("last_id must be a non-negative integer.", code="invalid_field")
    newest = Message.objects.filter(thread_root=root).order_by("-id").values_list("id", flat=True).first() or 0
    marker = min(last_read_id, newest)
    updated = ThreadFollow.objects.filter(root=root, user=user).update(last_read_id=Greatest("last_read_id", marker))
    if not updated:
        try:
            with transaction.atomic():
                ThreadFollow.objects.create(root=root, user=user, following=False, last_read_id=marker)
        except IntegrityError:
            ThreadFollow.objects.filter(root=root, user=user).update(last_read_id=Greatest("last_read_id", marker))
    return max(marker, ThreadFollow.objects.filter(root=root, user=user).values_list("last_read_id", flat=True).first() or 0)
