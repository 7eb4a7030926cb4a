"""The psycopg pool: statistics, exhaustion (503 after the timeout), killed connections."""

from __future__ import annotations

import threading

import pytest
from asgiref.sync import sync_to_async
from channels.testing import HttpCommunicator
from django.db import connection, connections
from django.test import Client, override_settings

from chatsite.asgi import application
from chatsite.errors import UNAVAILABLE_DETAIL
from perf.db import pool_stats
from tests.perf.conftest import extra_database, raw_connection
from tests.waiting import wait_until

TINY_POOL = {"pool": {"min_size": 1, "max_size": 1, "timeout": 0.5}}


def test_settings_map_onto_a_pool_with_health_checks() -> None:
    settings_dict = connection.settings_dict
    assert settings_dict["CONN_MAX_AGE"] == 0
    assert settings_dict["CONN_HEALTH_CHECKS"] is True
    pool = settings_dict["OPTIONS"]["pool"]
    assert set(pool) == {"min_size", "max_size", "timeout", "max_lifetime"}
    assert pool["min_size"] <= pool["max_size"]


@pytest.mark.django_db(transaction=True)
def test_pool_stats_move_when_connections_are_checked_out() -> None:
    connection.close()
    before = pool_stats()
    assert before["enabled"] is True
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    during = pool_stats()
    assert during["requests"] == before["requests"] + 1
    assert during["in_use"] >= 1
    connection.close()
    after = pool_stats()
    assert after["in_use"] == during["in_use"] - 1


# Pool exhaustion needs a pool of one connection with a short timeout. The pool
# belongs to a database alias, so these tests make a temporary alias on the
# test database; Django's test-case guard refuses aliases made at run time, so
# they unblock database access themselves and touch no table.


@override_settings(ROOT_URLCONF="tests.perf.probe_urls")
def test_exhausted_pool_waits_for_the_timeout_then_answers_503(django_db_setup, django_db_blocker) -> None:
    with django_db_blocker.unblock(), extra_database("tiny", OPTIONS=TINY_POOL):
        held, release = threading.Event(), threading.Event()

        def hold_the_only_connection() -> None:
            try:
                connections["tiny"].ensure_connection()
                held.set()
                release.wait(10)
            finally:
                connections["tiny"].close()

        holder = threading.Thread(target=hold_the_only_connection)
        holder.start()
        try:
            assert held.wait(10)
            before = pool_stats("tiny")
            assert before["in_use"] == 1

            responses = []

            def request() -> None:
                responses.append(Client().get("/api/v1/probe/tiny"))

            client_thread = threading.Thread(target=request)
            client_thread.start()
            # The request joins the pool's queue (it does not fail at once) and leaves it only by timing out.
            wait_until(lambda: pool_stats("tiny")["waiting"] == 1, message="the request never queued for a connection")
            client_thread.join(10)
            assert not client_thread.is_alive()
        finally:
            release.set()
            holder.join(10)

        [response] = responses
        assert response.status_code == 503
        assert response.json() == {"detail": UNAVAILABLE_DETAIL, "code": "unavailable"}
        stats = pool_stats("tiny")
        assert stats["waiting"] == 0
        assert stats["requests_queued"] == before["requests_queued"] + 1
        # psycopg_pool counts a queued request that ends without a connection (its timeout) as an error.
        assert stats["requests_errors"] == before["requests_errors"] + 1

        # The connection is back: the same request now succeeds.
        wait_until(lambda: pool_stats("tiny")["available"] == 1, message="the held connection never came back")
        assert Client().get("/api/v1/probe/tiny").status_code == 200
        connections["tiny"].close()


def _terminate_test_database_backends() -> int:
    """Kill every server process connected to the test database, from outside the pool."""
    with raw_connection() as killer:
        rows = killer.execute(
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
    return len(rows)


@pytest.mark.django_db(transaction=True)
def test_killed_connections_are_replaced_on_the_next_request() -> None:
    client = Client()
    assert client.get("/healthz").status_code == 200
    # The end of a request gives the connection back to the pool (CONN_MAX_AGE=0);
    # the test client skips that step (it disconnects close_old_connections), so do it here.
    connection.close()
    lost_before = pool_stats()["connections_lost"]
    assert _terminate_test_database_backends() >= 1

    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json()["database"] == "ok"
    assert pool_stats()["connections_lost"] > lost_before


@override_settings(ROOT_URLCONF="tests.perf.probe_urls")
def test_all_idle_connections_killed_are_replaced_without_backoff(django_db_setup, django_db_blocker) -> None:
    """Six dead idle connections and a 3 s pool timeout: psycopg_pool's own check
    retries at once, then after 1 s, then 2 s, and gives up (a 503); with the
    sweep, the first failed check replaces them all and the retry succeeds."""
    options = {"pool": {"min_size": 6, "max_size": 6, "timeout": 3}}
    with django_db_blocker.unblock(), extra_database("sturdy", OPTIONS=options):
        client = Client()
        assert client.get("/probe/sturdy").status_code == 200
        connections["sturdy"].close()
        pool = connections["sturdy"].pool
        pool.wait(timeout=10)
        assert pool_stats("sturdy")["available"] == 6
        lost_before = pool_stats("sturdy")["connections_lost"]
        _terminate_test_database_backends()

        response = client.get("/probe/sturdy")
        connections["sturdy"].close()

        assert response.status_code == 200
        assert pool_stats("sturdy")["connections_lost"] - lost_before == 6


@pytest.mark.django_db(transaction=True)
async def test_killed_connections_are_replaced_through_the_asgi_stack() -> None:
    """The real ASGI request cycle returns connections to the pool by itself."""

    async def healthz() -> dict:
        communicator = HttpCommunicator(application, "GET", "/healthz", headers=[(b"host", b"testserver")])
        response = await communicator.get_response(timeout=30)
        # Let the application finish: a dropped communicator cancels it and leaks its connection.
        await communicator.wait()
        return response

    assert (await healthz())["status"] == 200
    assert await sync_to_async(_terminate_test_database_backends)() >= 1
    response = await healthz()
    assert response["status"] == 200, response["body"]
    # The whole middleware stack ran on this path too (RequestContextMiddleware sets the request id).
    assert any(name.lower() == b"x-request-id" for name, _ in response["headers"])
