"""JSON API endpoint for message search. Mounted by chatsite.api.

Thin, as chat.api: the query is parsed and its filters resolved by
chat.selectors.search, which also decides what the caller may find (the
rooms' one access rule). The schemas document its items.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja import Field, Query, Router, Schema

from chat.api_schemas import MessageOut
from chat.selectors import search as search_selectors
from chatsite import ratelimit
from chatsite.api_schemas import ERROR_RESPONSES, Text, invalid_cursor, page_cursor_decode, page_cursor_encode, page_limit
from projects.selectors import project_get_for_user

router = Router()


# --- Schemas ----------------------------------------------------------------


class SearchQuery(Schema):
    q: Text = Field(
        ...,
        description="Words (a `websearch_to_tsquery`: \"quoted phrase\", `or`, `-word`) and filters "
        "`from:username`, `in:room-slug`, `before:YYYY-MM-DD`, `after:YYYY-MM-DD`. Up to 500 characters.",
    )
    cursor: str | None = Field(None, description="The `next_cursor` of the previous page.")
    limit: int | None = Field(None, ge=1, description="Page size: default 50; values above 100 are treated as 100.")


class SearchRoomOut(Schema):
    id: int
    slug: str
    name: str = Field(..., description="The room's name; for a DM, its people as you see them.")
    kind: str


class SearchHitOut(Schema):
    """A message that matched, where it is, and the matching words in context."""

    message: MessageOut
    room: SearchRoomOut
    snippet: str = Field(
        ..., description="HTML: the matching part of the body, escaped, with each match in `<mark>`; nothing else is markup."
    )


class SearchPage(Schema):
    items: list[SearchHitOut]
    next_cursor: str | None = Field(
        ..., description="Null at the end; a page may hold fewer than `limit` items where a ranking window ends."
    )


# --- Cursor -----------------------------------------------------------------


def _position(cursor: str | None) -> search_selectors.SearchPosition:
    """The position in a search cursor: ``t`` the window's newest id, ``s`` and ``i`` the last score and id shown."""
    if cursor is None:
        return search_selectors.SearchPosition()
    data = page_cursor_decode(cursor, fields={"t": int, "s": float, "i": int})
    if ("s" in data) != ("i" in data):
        raise invalid_cursor()
    return search_selectors.SearchPosition(top=data.get("t"), score=data.get("s"), last_id=data.get("i"))


def _cursor(position: search_selectors.SearchPosition | None) -> str | None:
    if position is None:
        return None
    data = {"t": position.top, "s": position.score, "i": position.last_id}
    return page_cursor_encode({key: value for key, value in data.items() if value is not None})


# --- Endpoint ---------------------------------------------------------------


@router.get("/projects/{slug}/search", response={200: SearchPage, **ERROR_RESPONSES}, tags=["search"])
def message_search(request: HttpRequest, slug: str, query: Query[SearchQuery]) -> dict[str, Any]:
    """Messages of the project you can read that match `q`: rooms, private rooms you are in, your DMs, thread
    replies included, deleted messages never.

    Best matches first within windows of the newest matches (docs/API.md, "Search"). Errors: `400 empty_query`,
    `query_too_long`, `duplicate_filter`, `unsupported_filter` (`has:`), `unknown_user`, `unknown_room`,
    `invalid_date`, `invalid_cursor`; `404` for a project you are not in; `429` past `RATE_LIMIT_SEARCHES`.
    """
    project, _ = project_get_for_user(user=request.auth, slug=slug)
    ratelimit.hit("search", request.auth.pk)
    terms = search_selectors.search_parse(q=query.q)
    scope = search_selectors.search_scope(user=request.auth, project=project, terms=terms)
    page = search_selectors.messages_search(scope=scope, position=_position(query.cursor), limit=page_limit(query.limit))
    return {
        "items": search_selectors.search_hit_dicts(user=request.auth, hits=page.hits),
        "next_cursor": _cursor(page.next_position),
    }
