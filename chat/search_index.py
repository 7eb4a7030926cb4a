"""The message bodies' text search index: its one expression, and making it match the configured language.

The index is ``to_tsvector(<CHAT_SEARCH_CONFIG>, body)`` over chat_message,
a GIN index; chat.selectors.search writes the same expression, which is what
lets PostgreSQL use it. The configuration is a setting (SEARCH_CONFIG), so the
index is made by code, not declared in ``Meta.indexes``: the migration builds
it for the configuration in force, and ``manage.py search_index`` rebuilds it
after the setting changes. Other databases have no such index (the embedded
SQLite default matches words with LIKE).
"""

from __future__ import annotations

import re
from typing import Any

from django.conf import settings

INDEX_NAME = "message_body_search_idx"
# Configuration names are SQL identifiers: checked, then written into the SQL
# as a literal, since a bound parameter would not match the index expression.
_CONFIG_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def search_config() -> str:
    """The text search configuration in force (SEARCH_CONFIG), checked to be a plain name."""
    name = settings.CHAT_SEARCH_CONFIG
    if not _CONFIG_NAME.match(name):
        raise ValueError(f"SEARCH_CONFIG must be a text search configuration name, not {name!r}")
    return name


def body_vector_sql(column: str = "body") -> str:
    """The indexed expression; a query must use exactly this text for the index to serve it."""
    return f"to_tsvector('{search_config()}'::regconfig, {column})"


def search_index_ensure(*, connection: Any) -> bool:
    """Make the index match the configuration in force: create it, or drop and create it when built for
    another one. True when it was (re)built. PostgreSQL only; elsewhere nothing happens."""
    expression = body_vector_sql()  # checks the name first, on any database
    if connection.vendor != "postgresql":
        return False
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE indexname = %s", [INDEX_NAME])
        row = cursor.fetchone()
        if row is not None and f"'{search_config()}'::regconfig" in row[0]:
            return False
        if row is not None:
            cursor.execute(f"DROP INDEX {INDEX_NAME}")
        cursor.execute(f"CREATE INDEX {INDEX_NAME} ON chat_message USING gin ({expression})")
    return True
