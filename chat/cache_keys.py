"""Every cache key and key pattern of chat's cache entries.

Readers (chat.selectors) fill these keys; writers (chat.services,
chat.signals, chat.warming) drop or overwrite them. Both sides name a key
from here, so a writer never imports a reader to find one.
"""

from __future__ import annotations

from perf.cache import cache_key


# A cached entry's key names its format, so a release that changes what an
# entry holds never reads one written by the release before: rooms with their
# kind ("room_k"; entries under "room" lack it and would load it lazily, a
# query each time), messages and history pages with their reactions, thread
# fields and rendered body ("message_md", "page_br_md").


def room_cache_key(room_id: int) -> str:
    return cache_key("room_k", room_id)


def room_access_key(user_id: int, room_id: int) -> str:
    return cache_key("room_access", user_id, room_id)


def room_access_pattern(user_id: int) -> str:
    """Every room-access entry of one user."""
    return cache_key("room_access", user_id, "*")


def room_access_room_pattern(room_id: int) -> str:
    """Every user's access entry for one room."""
    return cache_key("room_access", "*", room_id)


def room_list_key(project_id: int, user_id: int) -> str:
    return cache_key("room_list", project_id, user_id)


def room_list_pattern(project_id: int) -> str:
    return cache_key("room_list", project_id, "*")


# A room's unread state: (last_message_seq, messages_deleted). Every unread
# entry of the room is named by it, so a new message (the seq) or a delete
# (the count) moves readers to new entries, and the old ones are never read
# again (their TTL removes them): no writer has to find and drop them.
UnreadState = tuple[int, int]


def unread_key(room_id: int, user_id: int, state: UnreadState, last_read: int) -> str:
    return cache_key("unread", room_id, user_id, *state, last_read)


def unread_tail_key(room_id: int, state: UnreadState) -> str:
    return cache_key("unread", room_id, "tail", *state)


def message_cache_key(message_id: int) -> str:
    return cache_key("message_md", message_id)


def history_page_key(room_id: int, before: int | None, limit: int) -> str:
    # "page_br": pages are stored encoded (perf.compression.precompress);
    # entries of the plain format, under "page", are never read.
    return cache_key("page_br_md", room_id, "newest" if before is None else before, limit)


def room_stamp_key(room_id: int) -> str:
    """Changes (is dropped) whenever a message of the room is edited or deleted: every page may show it."""
    return cache_key("stamp", "room", room_id)


def room_tail_stamp_key(room_id: int) -> str:
    """Changes (is dropped) whenever a message is added to the room: only the newest page shows it.

    Ids within a room commit in order (chat.services.messages.message_create
    holds the room's row lock from drawing the id to the commit), so a new
    message is newer than every page already read.
    """
    return cache_key("stamp", "tail", room_id)


def profiles_stamp_key() -> str:
    """Changes (is dropped) whenever a user's display data changes or a user is deleted."""
    return cache_key("stamp", "profiles")


def profile_key(user_id: int) -> str:
    return cache_key("profile", user_id)


def token_cache_key(key_hash: str) -> str:
    return cache_key("token", key_hash)
