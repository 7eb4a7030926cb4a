"""manage.py search_index: rebuild the message search index for the SEARCH_CONFIG in force (after changing it)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand
from django.db import connection

from chat.search_index import INDEX_NAME, search_config, search_index_ensure


class Command(BaseCommand):
    help = "Build the message search index for SEARCH_CONFIG, replacing one built for another configuration."

    def handle(self, *args: Any, **options: Any) -> None:
        if connection.vendor != "postgresql":
            self.stdout.write("No search index on this database: the embedded default matches words without one.")
            return
        rebuilt = search_index_ensure(connection=connection)
        state = "built" if rebuilt else "already matches"
        self.stdout.write(f"{INDEX_NAME} {state} text search configuration {search_config()!r}.")
