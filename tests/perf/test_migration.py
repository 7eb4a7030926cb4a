"""The pg_stat_statements migration: created where preloaded, a no-op elsewhere."""

from __future__ import annotations

import importlib

import pytest
from django.apps import apps
from django.db import connection, connections

from tests.perf.conftest import extra_database

migration = importlib.import_module("perf.migrations.0001_pg_stat_statements")


@pytest.mark.django_db
def test_extension_exists_in_the_test_database() -> None:
    """The server preloads the library, so creating the test database created the extension."""
    with connection.cursor() as cursor:
        cursor.execute("SHOW shared_preload_libraries")
        assert migration.preload_includes(cursor.fetchone()[0])
        cursor.execute("SELECT extname FROM pg_extension WHERE extname = 'pg_stat_statements'")
        assert cursor.fetchone() == ("pg_stat_statements",)


@pytest.mark.django_db
def test_running_it_again_is_harmless() -> None:
    with connection.schema_editor() as editor:
        migration.create_extension(apps, editor)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("pg_stat_statements", True),
        ("auto_explain, pg_stat_statements", True),
        ("'pg_stat_statements'", True),
        ("", False),
        ("auto_explain", False),
        ("pg_stat_statements_extra", False),
    ],
)
def test_preload_value_parsing(value: str, expected: bool) -> None:
    assert migration.preload_includes(value) is expected


def test_sqlite_is_a_no_op(django_db_blocker) -> None:
    sqlite = {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": ":memory:",
        "OPTIONS": {},
        "TEST": {},
        "ATOMIC_REQUESTS": False,
        "AUTOCOMMIT": True,
        "CONN_MAX_AGE": 0,
        "CONN_HEALTH_CHECKS": False,
        "TIME_ZONE": None,
        "USER": "",
        "PASSWORD": "",
        "HOST": "",
        "PORT": "",
    }
    with django_db_blocker.unblock(), extra_database("embedded", **sqlite) as db:
        with db.schema_editor() as editor:
            migration.create_extension(apps, editor)
        assert db.introspection.table_names() == []
    assert "embedded" not in connections
