"""Reads of threads: a thread's replies and the threads a user follows, with their unread counts."""

from __future__ import annotations

from typing import Any

from django.db.models import Count, IntegerField, OuterRef, Subquery

from chat.models import Message, ThreadFollow
from chat.selectors import history as history_selectors
from chat.selectors import rooms as room_selectors
from chat.selectors.unread import UNREAD_CAP
from chatsite.errors import NotFound
from projects.models import Project

# Followed threads listed at once (newest activity first).
FOLLOWED_THREADS_MAX = 100


def thread_root_for_user(*, user: Any, message_id: int) -> Message:
    """The root of the thread ``message_id`` belongs to (itself when it is a root), in a room the user may read."""
    message = history_selectors.message_get_for_user(user=user, message_id=message_id)
    if message.thread_root_id is None:
        return message
    root = history_selectors.message_get_for_user(user=user, message_id=message.thread_root_id)
    if root.thread_root_id is not None:  # never written so: a root is never a reply
        raise NotFound("Message not found.")
    return root


def threads_for_user(*, user: Any, project: Project) -> list[dict[str, Any]]:
    """The threads the user follows in ``project``'s rooms they can still read, newest reply first, each with
    the root message, its summary, ``unread`` (live replies by others after their marker, capped) and ``last_read_id``.

    A constant number of queries: the follows with their counts (the rooms' access a subquery of it), then
    the roots through the message cache (history_selectors.message_dicts).
    """
    unread = (
        Message.objects.filter(thread_root=OuterRef("root_id"), id__gt=OuterRef("last_read_id"), deleted_at__isnull=True)
        .exclude(author=user)
        .values("thread_root")
        .annotate(n=Count("id"))
        .values("n")
    )
    newest = Message.objects.filter(thread_root=OuterRef("root_id")).order_by("-id").values("id")[:1]
    # Only rooms the user can still read, before the cap: threads of a room they left never crowd out others.
    follows = list(
        ThreadFollow.objects.filter(
            user=user, following=True, root__room__project=project, root__deleted_at__isnull=True,
            root__room_id__in=room_selectors.readable_room_ids(user),
        )
        .annotate(unread=Subquery(unread, output_field=IntegerField()), newest=Subquery(newest))
        .filter(newest__isnull=False)
        .order_by("-newest")
        .values("root_id", "root__room_id", "last_read_id", "unread")[:FOLLOWED_THREADS_MAX]
    )  # fmt: skip
    roots = history_selectors.message_dicts(ids=[f["root_id"] for f in follows])
    return [
        {
            "root": roots[f["root_id"]],
            "unread": min(f["unread"] or 0, UNREAD_CAP),
            "last_read_id": f["last_read_id"],
        }
        for f in follows
        if f["root_id"] in roots
    ]


def thread_follow_state(*, user: Any, root_id: int) -> dict[str, Any]:
    """Whether the user follows the thread and how far they have read it."""
    row = ThreadFollow.objects.filter(user=user, root_id=root_id).values("following", "last_read_id").first()
    return row or {"following": False, "last_read_id": 0}
