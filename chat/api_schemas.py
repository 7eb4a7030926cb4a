"""Wire schemas of the chat API: tokens, the current user, rooms, members, messages and read markers.

Output shapes mirror chat.serialization (the same dicts the WebSocket sends);
the schemas exist to validate input and to document the API in OpenAPI. What
every list shares (cursors, ``fields``, errors) is in chatsite.api_schemas.
"""

from __future__ import annotations

from ninja import Field, Schema
from pydantic import StrictBool, StrictInt

from chatsite.api_schemas import PageQuery, Text, UserOut, selectable

# --- Input ----------------------------------------------------------------


class MessagePageQuery(PageQuery):
    after: int | None = Field(
        None,
        ge=0,
        description="Forward catch-up: the oldest messages with an id greater than this.",
    )


class TokenIn(Schema):
    username: Text
    password: Text


class TokenCreateIn(Schema):
    name: Text = Field(..., description="What the token is for: up to 100 characters (blank: `api`).")


class RoomCreateIn(Schema):
    name: Text
    slug: Text | None = None
    topic: Text = ""
    is_private: StrictBool = False


class RoomMemberAddIn(Schema):
    username: Text


class MessageCreateIn(Schema):
    body: Text = Field(..., description="1 to 10,000 characters, not only whitespace.")
    client_id: Text | None = Field(
        None, description="Up to 64 characters, unique per author: a retry with it returns the original."
    )
    thread_root: StrictInt | None = Field(
        None, gt=0, description="Reply in the thread of this message of the room (a reply's thread when it is a reply)."
    )


class MessageEditIn(Schema):
    body: Text


class ReadMarkIn(Schema):
    last_id: StrictInt = Field(..., ge=0, description="Id of the newest message the user has seen.")


# --- Output ---------------------------------------------------------------


class TokenOut(Schema):
    token: str


class ApiTokenOut(Schema):
    """One of your API tokens. The key itself is never shown again after it was issued."""

    id: int
    name: str
    created_at: str
    last_used_at: str | None


ApiTokenItem = selectable(ApiTokenOut, name="ApiTokenItem")


class ApiTokenPage(Schema):
    items: list[ApiTokenItem]  # type: ignore[valid-type]
    next_cursor: str | None


class ApiTokenCreatedOut(ApiTokenOut):
    token: str = Field(..., description="The bearer token: shown in this answer only.")


class MeOut(UserOut):
    is_staff: bool
    email: str = Field(..., description="Where digest e-mails go (docs/API.md, \"Notifications\"); empty for none.")


class ReactionOut(Schema):
    emoji: str
    count: int
    user_ids: list[int] = Field(..., description="Everyone who reacted with this emoji, first first: you reacted when your id is in it.")
    users: list[UserOut] = Field(..., description="The first few of them, to name.")


class ReactionIn(Schema):
    emoji: Text = Field(..., description="One Unicode emoji.")


class ReactionChangeOut(Schema):
    message: int
    emoji: str
    changed: bool = Field(..., description="False when the reaction was already there (add) or not there (remove).")
    reactions: list[ReactionOut]


class ThreadSummaryOut(Schema):
    reply_count: int
    last_reply_at: str
    last_reply_id: int
    participant_ids: list[int] = Field(..., description="The first five people who replied, in the order they first did.")
    participants: list[UserOut]


class MessageOut(Schema):
    id: int
    room: int
    seq: int
    author: UserOut
    body: str = Field(..., description="As its author wrote it (Markdown); empty for a deleted message.")
    html: str = Field(
        ...,
        description="The body rendered from Markdown and sanitized (docs/API.md, \"Rich text\"); empty for a deleted message.",
    )
    created_at: str
    edited_at: str | None
    deleted: bool
    client_id: str | None
    reactions: list[ReactionOut] = Field(..., description="The reaction summary, by emoji in the order first used.")
    thread_root: int | None = Field(..., description="For a reply: the first message of its thread.")
    thread: ThreadSummaryOut | None = Field(..., description="For the first message of a thread: its live replies.")


MessageItem = selectable(MessageOut, name="MessageItem")


class MessagePage(Schema):
    items: list[MessageItem]  # type: ignore[valid-type]
    next_cursor: str | None


class RoomOut(Schema):
    id: int
    slug: str
    name: str
    topic: str
    is_private: bool
    kind: str = Field(..., description="`room`, or `dm` for a direct message (see GET /projects/{slug}/dms).")
    project: str
    last_message_at: str | None
    unread: int | None = Field(None, description="Unread messages by others; only in room lists.")


RoomItem = selectable(RoomOut, name="RoomItem")


class RoomPage(Schema):
    items: list[RoomItem]  # type: ignore[valid-type]
    next_cursor: str | None


class RoomMemberOut(Schema):
    room: int
    user: UserOut


class ReadMarkOut(Schema):
    last_id: int
