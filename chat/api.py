"""JSON API endpoints for tokens (issue, list, revoke), the current user, rooms and messages.

Thin: parse, call one selector/service, serialize. Permissions live in the
selectors (NotFound for what the user may not see) and the services
(Forbidden for what they may see but not change). Mounted by chatsite.api.
"""

from __future__ import annotations

from operator import itemgetter
from typing import Any

import orjson
from django.http import HttpRequest, HttpResponse
from ninja import Field, Query, Router, Schema, Status

from chat.api_schemas import (
    ApiTokenCreatedOut,
    ApiTokenOut,
    ApiTokenPage,
    MeOut,
    MessageCreateIn,
    MessageEditIn,
    MessageOut,
    MessagePage,
    MessagePageQuery,
    ReadMarkIn,
    ReadMarkOut,
    RoomCreateIn,
    RoomMemberAddIn,
    RoomMemberOut,
    RoomOut,
    RoomPage,
    TokenCreateIn,
    TokenIn,
    TokenOut,
)
from chat.models import ApiToken, Room
from chat.selectors import history as history_selectors
from chat.selectors import rooms as room_selectors
from chat.selectors import tokens as token_selectors
from chat.serialization import message_dict, room_dict
from chat.services import accounts as account_services
from chat.services import messages as message_services
from chat.services import rooms as room_services
from chatsite import login_policy, ratelimit
from chatsite.api_schemas import (
    ERROR_RESPONSES,
    ErrorOut,
    fields_parse,
    fields_select,
    page_cursor_encode,
    page_cursor_key,
    page_position,
    page_limit,
    PageQuery,
    RateLimitedOut,
)
from chatsite.errors import ChatError, Forbidden, InvalidInput
from chatsite.users import user_dict
from perf.compression import encoded_response, precompress
from projects.selectors import project_get_for_user

router = Router()

# What chatsite.api's orjson renderer sends, for the endpoints that render themselves.
JSON_CONTENT_TYPE = "application/json; charset=utf-8"


class InvalidCredentials(ChatError):
    status = 401
    code = "invalid_credentials"


# --- Auth and the current user -------------------------------------------


@router.post(
    "/auth/token", auth=None, response={201: TokenOut, 401: ErrorOut, 429: RateLimitedOut}, tags=["auth"]
)
def token_obtain(request: HttpRequest, payload: TokenIn) -> Status:
    """Exchange a username and password for a bearer token. Creates one ApiToken.

    Under the log-in limits (chatsite.login_policy, as /login/): a refused try
    is 429 with Retry-After and the password is not checked.
    """
    user = login_policy.login_authenticate(request, username=payload.username, password=payload.password)
    if user is None:
        raise InvalidCredentials("Invalid username or password.")
    ratelimit.hit("token", user.pk)
    _, raw = account_services.token_create(user=user)
    return Status(201, {"token": raw})


def _bearer_token(request: HttpRequest) -> ApiToken | None:
    """The caller's token this request was authenticated with, or None (session authentication).

    chatsite.api tries the bearer token first, so a valid one of the caller's
    own in the Authorization header is what authenticated the request.
    """
    scheme, _, raw_key = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token_selectors.token_get_by_key_for_user(user=request.auth, raw_key=raw_key.strip())


def _token_dict(token: ApiToken) -> dict[str, Any]:
    return {
        "id": token.id,
        "name": token.name,
        "created_at": token.created_at.isoformat(),
        "last_used_at": token.last_used_at.isoformat() if token.last_used_at else None,
    }


@router.delete("/auth/token", response={204: None, **ERROR_RESPONSES}, tags=["auth"])
def token_revoke_current(request: HttpRequest) -> Status:
    """Revoke the bearer token this request is made with: it stops working at once.

    With session authentication there is no such token: 400 `no_bearer_token`
    (revoke a token by id with `DELETE /auth/tokens/{token_id}`).
    """
    token = _bearer_token(request)
    if token is None:
        raise InvalidInput(
            "This request was not made with a bearer token; revoke a token by id at /auth/tokens/{token_id}.",
            code="no_bearer_token",
        )
    account_services.token_revoke(token=token, by=request.auth)
    return Status(204, None)


@router.get("/auth/tokens", response={200: ApiTokenPage, **ERROR_RESPONSES}, tags=["auth"], exclude_unset=True)
def token_list(request: HttpRequest, page: Query[PageQuery]) -> dict[str, Any]:
    """Your own API tokens, newest first; never their keys.

    Page size: `limit` (default 50; values above 100 are treated as 100).
    `fields` picks the token fields returned.
    """
    fields = fields_parse(page.fields, schema=ApiTokenOut)
    limit = page_limit(page.limit)
    before = page_cursor_key(page.cursor, key="b", kind=int)
    tokens = token_selectors.tokens_for_user(user=request.auth, before=before, limit=limit + 1)
    items = tokens[:limit]
    next_cursor = page_cursor_encode({"b": items[-1].id}) if len(tokens) > limit else None
    return {"items": fields_select(map(_token_dict, items), fields), "next_cursor": next_cursor}


@router.post("/auth/tokens", response={201: ApiTokenCreatedOut, **ERROR_RESPONSES}, tags=["auth"])
def token_create(request: HttpRequest, payload: TokenCreateIn) -> Status:
    """Create a named token for a signed-in browser session; the key is in this answer only.

    Session only (403 `session_required` with a bearer token), so a leaked
    token cannot mint others that outlive its revocation. Counts against the
    user's token limit, as `POST /auth/token` does.
    """
    if _bearer_token(request) is not None:
        raise Forbidden("Tokens are created from a signed-in session, not with a token.", code="session_required")
    ratelimit.hit("token", request.auth.pk)
    token, raw = account_services.token_create(user=request.auth, name=payload.name)
    return Status(201, {**_token_dict(token), "token": raw})


@router.delete("/auth/tokens/{token_id}", response={204: None, **ERROR_RESPONSES}, tags=["auth"])
def token_delete(request: HttpRequest, token_id: int) -> Status:
    """Revoke one of your tokens by id. Anyone else's id is 404, exactly like a missing one."""
    token = token_selectors.token_get_for_user(user=request.auth, token_id=token_id)
    account_services.token_revoke(token=token, by=request.auth)
    return Status(204, None)


@router.get("/me", response={200: MeOut, 401: ErrorOut}, tags=["auth"])
def me(request: HttpRequest) -> dict[str, Any]:
    user = request.auth
    return {**user_dict(user), "is_staff": user.is_staff, "email": user.email}


class ProfileIn(Schema):
    first_name: str | None = None
    last_name: str | None = None
    email: str | None = Field(None, description='Where digest e-mails go; "" for none.')


@router.patch("/me", response={200: MeOut, **ERROR_RESPONSES}, tags=["auth"])
def me_update(request: HttpRequest, payload: ProfileIn) -> dict[str, Any]:
    """Change your display name (first and last name) or e-mail address; what you leave out stays."""
    user = account_services.user_update_profile(
        user=request.auth, first_name=payload.first_name, last_name=payload.last_name, email=payload.email
    )
    return {**user_dict(user), "is_staff": user.is_staff, "email": user.email}


# --- Rooms ----------------------------------------------------------------


@router.get(
    "/projects/{slug}/rooms", response={200: RoomPage, **ERROR_RESPONSES}, tags=["rooms"], exclude_unset=True
)
def room_list(request: HttpRequest, slug: str, page: Query[PageQuery]) -> dict[str, Any]:
    """The rooms of a project the caller may read, with unread counts, in creation (id) order.

    Direct messages are not rooms here: `GET /projects/{slug}/dms` lists them.
    Page size: `limit` (default 50; values above 100 are treated as 100).
    `fields` picks the room fields returned.
    """
    fields = fields_parse(page.fields, schema=RoomOut)
    project, _ = project_get_for_user(user=request.auth, slug=slug)
    limit = page_limit(page.limit)
    after_id = page_cursor_key(page.cursor, key="i", kind=int) or 0

    def page_of(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        # The page's rooms (and one more, to know whether a next page exists), by id: only they get unread counts.
        rooms = sorted((r for r in rows if r["id"] > after_id and r.get("kind", Room.Kind.ROOM) != Room.Kind.DM), key=itemgetter("id"))
        return rooms[: limit + 1]

    rooms = room_selectors.rooms_for_user(user=request.auth, project=project, select=page_of)
    items = rooms[:limit]
    for room in items:
        room.project = project  # room_dict reads the slug; spare a query per room
    next_cursor = page_cursor_encode({"i": items[-1].id}) if len(rooms) > limit else None
    return {"items": fields_select(map(room_dict, items), fields), "next_cursor": next_cursor}


@router.post("/projects/{slug}/rooms", response={201: RoomOut, **ERROR_RESPONSES}, tags=["rooms"])
def room_create(request: HttpRequest, slug: str, payload: RoomCreateIn) -> Status:
    """Create a room in a project (any project member). The creator becomes a room member."""
    project, _ = project_get_for_user(user=request.auth, slug=slug)
    ratelimit.hit("room_create", request.auth.pk)
    room = room_services.room_create(
        project=project,
        user=request.auth,
        name=payload.name,
        slug=payload.slug,
        topic=payload.topic,
        is_private=payload.is_private,
    )
    room.unread = 0
    return Status(201, room_dict(room))


@router.get("/rooms/{room_id}", response={200: RoomOut, **ERROR_RESPONSES}, tags=["rooms"])
def room_detail(request: HttpRequest, room_id: int) -> dict[str, Any]:
    """A room the caller may read (`unread` is null here; room lists carry it)."""
    room = room_selectors.room_get_for_user(user=request.auth, room_id=room_id)
    return room_dict(room)


@router.post("/rooms/{room_id}/members", response={201: RoomMemberOut, **ERROR_RESPONSES}, tags=["rooms"])
def room_member_add(request: HttpRequest, room_id: int, payload: RoomMemberAddIn) -> Status:
    """Add a project member to a (private) room. Room members and project admins only."""
    room = room_selectors.room_get_for_user(user=request.auth, room_id=room_id)
    member = room_services.room_member_add(room=room, username=payload.username, by=request.auth)
    return Status(201, {"room": room.id, "user": user_dict(member.user)})


@router.delete("/rooms/{room_id}/members/{user_id}", response={204: None, **ERROR_RESPONSES}, tags=["rooms"])
def room_member_remove(request: HttpRequest, room_id: int, user_id: int) -> Status:
    """Leave a room (your own id) or, as a project admin, remove a member.

    Leaving a private room ends your access to it, on open sockets too. The
    last member of a private room cannot leave (409 `last_member`).
    """
    room = room_selectors.room_get_for_user(user=request.auth, room_id=room_id)
    member = room_selectors.room_member_get(room=room, user_id=user_id)
    room_services.room_member_remove(room=room, user=member, by=request.auth)
    return Status(204, None)


@router.post("/rooms/{room_id}/read", response={200: ReadMarkOut, **ERROR_RESPONSES}, tags=["rooms"])
def room_read(request: HttpRequest, room_id: int, payload: ReadMarkIn) -> dict[str, int]:
    """Move the caller's read marker forward (never back; clamped to the newest message)."""
    room = room_selectors.room_get_for_user(user=request.auth, room_id=room_id)
    marker = room_services.room_mark_read(room=room, user=request.auth, last_read_message_id=payload.last_id)
    return {"last_id": marker}


# --- Messages -------------------------------------------------------------


def _message_page(
    *, room: Room, before: int | None, after: int | None, limit: int, fields: tuple[str, ...] | None = None
) -> dict[str, Any]:
    """One page of history, oldest to newest, and the cursor that continues it.

    Ids only ever grow, so new messages arriving between fetches never shift a
    page: nothing is skipped or repeated. One row beyond the page is read to
    know whether another page exists.
    """
    if after is not None:
        messages = history_selectors.room_history_dicts(room=room, after=after, limit=limit + 1, fields=fields)
        more = len(messages) > limit
        messages = messages[:limit]
        next_cursor = page_cursor_encode({"a": messages[-1]["id"]}) if more else None
    else:
        messages = history_selectors.room_history_dicts(room=room, before=before, limit=limit + 1, fields=fields)
        more = len(messages) > limit
        messages = messages[-limit:]
        next_cursor = page_cursor_encode({"b": messages[0]["id"]}) if more else None
    return {"items": messages, "next_cursor": next_cursor}


@router.get("/rooms/{room_id}/messages", response={200: MessagePage, **ERROR_RESPONSES}, tags=["messages"])
def message_list(request: HttpRequest, room_id: int, page: Query[MessagePageQuery]) -> HttpResponse:
    """A page of a room's messages, oldest to newest. Deleted messages appear as tombstones.

    Without `after`: the newest `limit` messages; `next_cursor` fetches the
    older page before them (null at the start of the room). With `after=<id>`:
    the oldest `limit` messages newer than that id; `next_cursor` continues
    forward (null when caught up). `limit` defaults to 50; values above 100
    are treated as 100. `fields` picks the message fields returned.
    """
    fields = fields_parse(page.fields, schema=MessageOut)
    room = room_selectors.room_get_for_user(user=request.auth, room_id=room_id)
    before, after = page_position(page.cursor, page.after)
    limit = page_limit(page.limit)
    # Rendered as it is: the items are chat.serialization's dicts (the
    # WebSocket's shape), so validating each against MessagePage on the way
    # out would only cost time (about 40% of this endpoint's). The tests hold
    # the output to the schema.
    if after is None and fields is None:
        # The pages every reader shares (a room's newest, and older ones while
        # scrolling back) are cached rendered (history_selectors.room_history_page).
        # They are kept brotli-compressed (perf.compression.precompress): one
        # compression per rendering rather than per reader.
        encoded = history_selectors.room_history_page(
            room=room,
            before=before,
            limit=limit,
            render=lambda: precompress(orjson.dumps(_message_page(room=room, before=before, after=None, limit=limit))),
        )
        return encoded_response(request, encoded, content_type=JSON_CONTENT_TYPE)
    result = _message_page(room=room, before=before, after=after, limit=limit, fields=fields)
    result["items"] = fields_select(result["items"], fields)
    return HttpResponse(orjson.dumps(result), content_type=JSON_CONTENT_TYPE)


@router.post(
    "/rooms/{room_id}/messages", response={200: MessageOut, 201: MessageOut, **ERROR_RESPONSES}, tags=["messages"]
)
def message_create(request: HttpRequest, room_id: int, payload: MessageCreateIn) -> Status:
    """Post a message (broadcast to the room's sockets after commit).

    201 when created. With a `client_id` this author already used in this
    room, nothing is written and the original comes back with 200; the same
    `client_id` in another room is 409.
    """
    room = room_selectors.room_get_for_user(user=request.auth, room_id=room_id)
    ratelimit.hit("message", request.auth.pk)
    message, created = message_services.message_create(
        room=room, author=request.auth, body=payload.body, client_id=payload.client_id, thread_root=payload.thread_root
    )
    return Status(201 if created else 200, message_dict(message))


@router.patch("/messages/{message_id}", response={200: MessageOut, **ERROR_RESPONSES}, tags=["messages"])
def message_edit(request: HttpRequest, message_id: int, payload: MessageEditIn) -> dict[str, Any]:
    """Edit a message's body (author or project admin); broadcast after commit."""
    message = history_selectors.message_get_for_user(user=request.auth, message_id=message_id)
    message = message_services.message_edit(message=message, by=request.auth, body=payload.body)
    return history_selectors.message_dicts(ids=[message.id])[message.id]


@router.delete("/messages/{message_id}", response={204: None, **ERROR_RESPONSES}, tags=["messages"])
def message_delete(request: HttpRequest, message_id: int) -> Status:
    """Delete a message (author or project admin); it stays in history as a tombstone."""
    message = history_selectors.message_get_for_user(user=request.auth, message_id=message_id)
    message_services.message_delete(message=message, by=request.auth)
    return Status(204, None)
