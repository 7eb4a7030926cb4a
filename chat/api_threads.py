"""JSON API endpoints for threads: a thread's replies, following it, its read marker, the threads you follow.

Replies are posted as messages (`POST /rooms/{id}/messages` with `thread_root`).
Mounted by chatsite.api.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja import Query, Router, Schema
from ninja import Field as NinjaField
from pydantic import StrictInt

from chat.api_schemas import MessageItem, MessageOut, MessagePageQuery
from chat.selectors import history as history_selectors
from chat.selectors import threads as thread_selectors
from chat.services import threads as thread_services
from chatsite.api_schemas import ERROR_RESPONSES, page_cursor_encode, page_limit, page_position
from projects.selectors import project_get_for_user

router = Router()


class ThreadPage(Schema):
    root: MessageOut
    items: list[MessageItem]  # type: ignore[valid-type]
    next_cursor: str | None
    following: bool
    last_read_id: int


class ThreadReadIn(Schema):
    last_id: StrictInt = NinjaField(..., ge=0)


class ThreadReadOut(Schema):
    last_id: int


class ThreadFollowOut(Schema):
    following: bool


class FollowedThreadOut(Schema):
    root: MessageOut
    unread: int
    last_read_id: int


class FollowedThreadList(Schema):
    items: list[FollowedThreadOut]


@router.get("/messages/{message_id}/thread", response={200: ThreadPage, **ERROR_RESPONSES}, tags=["threads"])
def thread_detail(request: HttpRequest, message_id: int, page: Query[MessagePageQuery]) -> dict[str, Any]:
    """The thread a message belongs to: its root and a page of replies, oldest to newest, paged as history is.

    Without `after`: the newest `limit` replies, `next_cursor` for older
    ones; with `after=<id>`: the replies after that id. Also whether you
    follow it and your read marker in it.
    """
    root = thread_selectors.thread_root_for_user(user=request.auth, message_id=message_id)
    before, after = page_position(page.cursor, page.after)
    limit = page_limit(page.limit)
    ids = history_selectors.thread_reply_ids(root_id=root.id, before=before, after=after, limit=limit + 1)
    more = len(ids) > limit
    ids = ids[:limit] if after is not None else ids[-limit:]
    found = history_selectors.message_dicts(ids=[root.id, *ids])
    if more:
        next_cursor = page_cursor_encode({"a": ids[-1]} if after is not None else {"b": ids[0]})
    else:
        next_cursor = None
    state = thread_selectors.thread_follow_state(user=request.auth, root_id=root.id)
    return {
        "root": found[root.id],
        "items": [found[i] for i in ids if i in found],
        "next_cursor": next_cursor,
        **state,
    }


@router.post("/messages/{message_id}/thread/read", response={200: ThreadReadOut, **ERROR_RESPONSES}, tags=["threads"])
def thread_read(request: HttpRequest, message_id: int, payload: ThreadReadIn) -> dict[str, Any]:
    """Move your read marker in the thread (it never moves back; clamped to its newest reply)."""
    root = thread_selectors.thread_root_for_user(user=request.auth, message_id=message_id)
    return {"last_id": thread_services.thread_mark_read(root=root, user=request.auth, last_read_id=payload.last_id)}


@router.put("/messages/{message_id}/thread/follow", response={200: ThreadFollowOut, **ERROR_RESPONSES}, tags=["threads"])
def thread_follow(request: HttpRequest, message_id: int) -> dict[str, Any]:
    """Follow the thread: it is listed in `GET /projects/{slug}/threads` with its unread count."""
    root = thread_selectors.thread_root_for_user(user=request.auth, message_id=message_id)
    return {"following": thread_services.thread_follow(root=root, user=request.auth, following=True)}


@router.delete("/messages/{message_id}/thread/follow", response={200: ThreadFollowOut, **ERROR_RESPONSES}, tags=["threads"])
def thread_unfollow(request: HttpRequest, message_id: int) -> dict[str, Any]:
    """Stop following the thread (replying in it follows it again)."""
    root = thread_selectors.thread_root_for_user(user=request.auth, message_id=message_id)
    return {"following": thread_services.thread_follow(root=root, user=request.auth, following=False)}


@router.get("/projects/{slug}/threads", response={200: FollowedThreadList, **ERROR_RESPONSES}, tags=["threads"])
def thread_list(request: HttpRequest, slug: str) -> dict[str, Any]:
    """The threads you follow in the project, newest reply first (at most 100), each with its unread count."""
    project, _ = project_get_for_user(user=request.auth, slug=slug)
    return {"items": thread_selectors.threads_for_user(user=request.auth, project=project)}
