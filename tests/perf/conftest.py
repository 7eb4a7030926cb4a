"""Helpers for the performance tests: extra database aliases on the real server."""

from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import Any, Iterator

import psycopg
from django.db import connection, connections


@contextmanager
def extra_database(alias: str, **overrides: Any) -> Iterator[Any]:
    """A temporary alias for the test database with ``overrides`` (PORT, OPTIONS, ...).

    Its own pool, when OPTIONS has one, is closed and dropped on exit.
    """
    settings_dict = copy.deepcopy(connection.settings_dict)
    settings_dict.update(overrides)
    connections.settings[alias] = settings_dict
    try:
        yield connections[alias]
    finally:
        wrapper = connections[alias]
        wrapper.close()
        if wrapper.vendor == "postgresql" and wrapper.pool is not None:
            wrapper.close_pool()
        del connections[alias]
        del connections.settings[alias]


def raw_connection() -> psycopg.Connection:
    """A plain psycopg connection to the test database, outside Django and its pool."""
    params = connection.settings_dict
    return psycopg.connect(
        dbname=params["NAME"],
        host=params["HOST"] or None,
        port=params["PORT"] or None,
        user=params["USER"] or None,
        password=params["PASSWORD"] or None,
        autocommit=True,
    )
