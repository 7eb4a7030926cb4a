"""The slow-query log: one wrapper per connection, one JSON line per slow statement."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import orjson
import pytest
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.testing import WebsocketCommunicator
from django.db import connection, connections
from django.db.backends.signals import connection_created
from django.test import Client, override_settings

from perf import context
from perf.db import clean_sql, record_statement, slow_query_wrapper

ROOT = Path(__file__).resolve().parents[2]


def slow_records(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [orjson.loads(r.getMessage()) for r in caplog.records if r.name == "perf.slow_query"]


@pytest.mark.django_db(transaction=True)
def test_wrapper_added_once_although_every_pool_checkout_fires_connection_created() -> None:
    opened = []

    def count(sender: Any, connection: Any, **kwargs: Any) -> None:
        opened.append(connection.alias)

    connection.close()
    connection_created.connect(count)
    try:
        for _ in range(3):
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
            connection.close()  # back to the pool, as at the end of a request
    finally:
        connection_created.disconnect(count)
    assert connection.pool is not None
    assert opened.count("default") == 3
    assert connection.execute_wrappers.count(slow_query_wrapper) == 1


@pytest.mark.django_db(transaction=True)
def test_every_thread_gets_the_wrapper() -> None:
    seen: list[int] = []

    def work() -> None:
        try:
            with connections["default"].cursor() as cursor:
                cursor.execute("SELECT 1")
            seen.append(connections["default"].execute_wrappers.count(slow_query_wrapper))
        finally:
            connections["default"].close()

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(timeout=30)
    assert seen == [1]


@pytest.mark.django_db(transaction=True)
def test_callers_execute_wrapper_still_pops_its_own() -> None:
    """A connection opened inside ``with connection.execute_wrapper(...)`` keeps ours."""
    connection.close()
    calls = []

    def mine(execute: Any, sql: str, params: Any, many: bool, ctx: dict) -> Any:
        calls.append(sql)
        return execute(sql, params, many, ctx)

    with connection.execute_wrapper(mine):
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    assert calls == ["SELECT 1"]
    assert connection.execute_wrappers == [slow_query_wrapper]


@pytest.mark.django_db
@override_settings(SLOW_QUERY_THRESHOLD=0.05)
def test_slow_statement_is_one_json_line_without_parameters(caplog: pytest.LogCaptureFixture) -> None:
    token = context.bind(request_id="req-123", consumer="ChatConsumer")
    try:
        with caplog.at_level(logging.WARNING, logger="perf.slow_query"):
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_sleep(0.06), %s", ["secret-parameter"])
                cursor.execute("SELECT 1")
    finally:
        context.unbind(token)
    # Only the sleep is sure to pass the threshold (on a busy machine SELECT 1 may too).
    [record] = [r for r in slow_records(caplog) if r["sql"] == "SELECT pg_sleep(0.06), %s"]
    assert record["event"] == "slow_query"
    assert isinstance(record["duration_ms"], float)
    assert record["request_id"] == "req-123"
    assert record["consumer"] == "ChatConsumer"
    assert record["db"] == "default"
    assert "secret-parameter" not in caplog.text
    assert all(len(r.getMessage().splitlines()) == 1 for r in caplog.records if r.name == "perf.slow_query")


@override_settings(SLOW_QUERY_THRESHOLD=0.05)
def test_the_threshold_decides_which_statements_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    """A statement is logged when its time reaches the threshold, with that time in milliseconds."""
    with caplog.at_level(logging.WARNING, logger="perf.slow_query"):
        record_statement(0.049, "SELECT 'under'", alias="default")
        record_statement(0.05, "SELECT 'at'", alias="default")
        record_statement(1.5, "SELECT 'over'", alias="default", many=True, failed=True)
    assert [(r["sql"], r["duration_ms"]) for r in slow_records(caplog)] == [("SELECT 'at'", 50.0), ("SELECT 'over'", 1500.0)]
    assert slow_records(caplog)[1]["many"] is True and slow_records(caplog)[1]["failed"] is True


@pytest.mark.django_db
@override_settings(SLOW_QUERY_THRESHOLD=0)
def test_log_line_of_a_view_names_the_view_and_the_request_id(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="perf.slow_query"):
        response = Client().get("/healthz")
    assert response.status_code == 200
    records = slow_records(caplog)
    assert records
    assert {r["view"] for r in records} == {"healthz"}
    assert {r["request_id"] for r in records} == {response.headers["X-Request-ID"]}


@pytest.mark.django_db(transaction=True)
@override_settings(SLOW_QUERY_THRESHOLD=0)
async def test_consumer_binding_reaches_the_database_thread(caplog: pytest.LogCaptureFixture) -> None:
    """contextvars set in async code are copied into database_sync_to_async's thread."""

    def query() -> int:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 7")
            return threading.get_ident()

    context.bind(consumer="ChatConsumer", request_id="ws-42", totals=True)
    with caplog.at_level(logging.WARNING, logger="perf.slow_query"):
        thread_id = await database_sync_to_async(query)()
    assert thread_id != threading.get_ident()
    [record] = [r for r in slow_records(caplog) if r["sql"] == "SELECT 7"]
    assert record["consumer"] == "ChatConsumer"
    assert record["request_id"] == "ws-42"
    # The totals object is shared by reference, so the thread's count is seen here.
    assert context.current_totals().queries >= 1


def test_management_command_is_named_from_argv(django_db_blocker: Any) -> None:
    """A real ``manage.py`` process: its slow statements carry the command name."""
    params = connection.settings_dict
    url = f"postgres://{params['USER']}@{params['HOST']}:{params['PORT']}/{params['NAME']}"
    env = {**os.environ, "DATABASE_URL": url, "SLOW_QUERY_THRESHOLD": "0"}
    result = subprocess.run(
        [sys.executable, "manage.py", "perf_report", "--limit", "1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    lines = [orjson.loads(line.split(" perf.slow_query ", 1)[1]) for line in result.stderr.splitlines() if " perf.slow_query " in line]
    assert lines
    assert {line["command"] for line in lines} == {"perf_report"}


def test_clean_sql_folds_placeholder_lists_and_whitespace() -> None:
    sql = 'SELECT "a"\n  FROM "t"\n WHERE "id" IN (%s, %s, %s, %s, %s, %s)'
    assert clean_sql(sql) == 'SELECT "a" FROM "t" WHERE "id" IN (%s, ...)'
    assert len(clean_sql("SELECT " + "x" * 5000)) < 2100


class BoundConsumer(AsyncWebsocketConsumer):
    """A consumer shaped like the chat consumer: binds in connect, queries in a handler."""

    async def connect(self) -> None:
        context.bind(consumer=type(self).__name__, request_id=context.scope_request_id(self.scope))
        await self.accept()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        def query() -> None:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 'from a consumer'")

        await database_sync_to_async(query)()
        await self.send(text_data="done")


@pytest.mark.django_db(transaction=True)
@override_settings(SLOW_QUERY_THRESHOLD=0)
async def test_binding_in_connect_names_queries_of_later_frames(caplog: pytest.LogCaptureFixture) -> None:
    communicator = WebsocketCommunicator(
        BoundConsumer.as_asgi(), "/ws/", headers=[(b"x-request-id", b"socket-77")]
    )
    connected, _ = await communicator.connect()
    assert connected
    try:
        with caplog.at_level(logging.WARNING, logger="perf.slow_query"):
            await communicator.send_to(text_data="go")
            assert await communicator.receive_from(timeout=10) == "done"
    finally:
        await communicator.disconnect()
    [record] = [r for r in slow_records(caplog) if "from a consumer" in r["sql"]]
    assert record["consumer"] == "BoundConsumer"
    assert record["request_id"] == "socket-77"
