"""Fixtures for the chat tests (the shared factories are in tests/conftest.py)."""

from __future__ import annotations

from typing import Any, Callable

import pytest

from chat.models import Message, Room


@pytest.fixture
def seed_messages(make_message) -> Callable[..., list[Message]]:
    """Post ``count`` messages to ``room`` through the service, authors taking turns."""

    def seed(room: Room, authors: list[Any], count: int) -> list[Message]:
        return [make_message(room, authors[i % len(authors)], body=f"seeded {i}") for i in range(count)]

    return seed


@pytest.fixture
def world(chat_world, make_token) -> dict[str, Any]:
    """chat_world with a bearer token for each of its users (``world["tokens"][name]``)."""
    tokens = {name: make_token(chat_world[name]) for name in ("owner", "member", "insider", "outsider", "admin")}
    return {**chat_world, "tokens": tokens}
