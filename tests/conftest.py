"""Factory-function fixtures. Every test talks to the real PostgreSQL and Redis."""

from __future__ import annotations

import inspect
import itertools
import time
from typing import Any, Callable

import pytest
import redis
from django.conf import settings
from django.core.signals import setting_changed
from django.test import Client

from chat.models import Message, Room
from chat.services import accounts as account_services
from chat.services import messages as message_services
from chat.services import rooms as room_services
from chatsite import env
from perf import metrics as perf_metrics
from projects import services as project_services
from projects.models import Membership, Project

_counter = itertools.count(1)

PASSWORD = "pw-for-tests-only"


@pytest.fixture(scope="session", autouse=True)
def _close_pools_at_exit(django_db_setup, django_db_blocker):
    """Close the psycopg pools before the test database is dropped (they hold connections)."""
    yield
    from django.db import connections

    with django_db_blocker.unblock():
        # Connections checked out by worker threads (database_sync_to_async)
        # outlive the pool; end them so the test database can be dropped.
        with connections["default"].cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        for conn in connections.all():
            conn.close()
            if hasattr(conn, "close_pool"):
                conn.close_pool()


def _close_thread_connections() -> None:
    from django.db import connections

    for conn in connections.all():
        if conn.connection is None or conn.in_atomic_block:
            continue
        try:
            conn.close()
        except Exception:  # noqa: BLE001 - a connection a test killed is simply dropped
            conn.connection = None


@pytest.fixture(autouse=True)
def _release_channels_thread_connection():
    """After each test, give back the connection held by Channels' shared database thread.

    ``database_sync_to_async`` runs on one long-lived thread per process, and a
    connection opened there under one test's context can outlive it (Django
    keeps connections per asgiref context; ``close_old_connections`` in the
    next test's context does not see it). A later test that kills backends
    would leave the one after it a dead connection. asyncio.run from this
    (sync) fixture reaches that thread, not the main one.
    """
    yield
    import asyncio

    from channels.db import database_sync_to_async

    try:
        asyncio.get_running_loop()
        return  # inside a running loop (should not happen in a sync fixture): leave it
    except RuntimeError:
        pass
    try:
        asyncio.run(database_sync_to_async(_close_thread_connections)())
    except Exception:  # noqa: BLE001 - hygiene only
        pass


@pytest.fixture(autouse=True)
def _clean_redis() -> None:
    """Each test starts with an empty Redis database (cache, sessions, channel layer)."""
    # This process's own metrics sampler flushes the users it saw to Redis
    # every few seconds: forget earlier tests' users so none land in this one.
    with perf_metrics._seen_lock:
        perf_metrics._seen.clear()
    client = redis.Redis.from_url(env.REDIS_URL)
    client.flushdb()
    client.close()


# Rate limits count in fixed windows (chatsite.ratelimit) that all end on a
# minute boundary (60, 300 and 3600 s alike). A test that counts up to a limit
# and then expects a refusal fails when a boundary falls between the two, so a
# test that sets limits first waits out the last seconds of a minute.
RATE_WINDOW_MARGIN_SECONDS = 8


def _clear_of_rate_window_edge(*, setting: str, enter: bool, **kwargs: Any) -> None:
    if setting != "RATE_LIMITS" or not enter:
        return
    left = 60 - time.time() % 60
    if left < RATE_WINDOW_MARGIN_SECONDS:
        time.sleep(left + 0.05)


setting_changed.connect(_clear_of_rate_window_edge, dispatch_uid="tests.rate_window_edge")


@pytest.fixture
def make_user(db) -> Callable[..., Any]:
    def make(username: str | None = None, *, is_staff: bool = False, **extra: Any) -> Any:
        username = username or f"user{next(_counter)}"
        return account_services.user_create(username=username, password=PASSWORD, is_staff=is_staff, **extra)

    return make


@pytest.fixture
def make_project(db, make_user) -> Callable[..., Project]:
    def make(owner: Any = None, *, name: str | None = None, members: tuple = (), admins: tuple = ()) -> Project:
        owner = owner or make_user()
        name = name or f"Project {next(_counter)}"
        project = project_services.project_create(user=owner, name=name)
        for user in members:
            Membership.objects.create(project=project, user=user, role=Membership.Role.MEMBER)
        for user in admins:
            Membership.objects.create(project=project, user=user, role=Membership.Role.ADMIN)
        return project

    return make


@pytest.fixture
def make_room(db) -> Callable[..., Room]:
    def make(project: Project, *, creator: Any = None, name: str | None = None, is_private: bool = False) -> Room:
        creator = creator or project.memberships.filter(role=Membership.Role.OWNER).first().user
        room = room_services.room_create(
            project=project, user=creator, name=name or f"room-{next(_counter)}", is_private=is_private
        )
        return Room.objects.select_related("project").get(pk=room.pk)

    return make


@pytest.fixture
def make_message(db) -> Callable[..., Message]:
    def make(room: Room, author: Any, body: str | None = None, client_id: str | None = None) -> Message:
        message, _ = message_services.message_create(
            room=room, author=author, body=body or f"message {next(_counter)}", client_id=client_id
        )
        return message

    return make


@pytest.fixture
def make_token(db) -> Callable[[Any], str]:
    def make(user: Any) -> str:
        return account_services.token_create(user=user)[1]

    return make


@pytest.fixture
def api_client(make_token) -> Callable[[Any], Client]:
    """A test client that sends ``Authorization: Bearer`` for ``user`` (anonymous for None)."""

    def make(user: Any = None) -> Client:
        if user is None:
            return Client()
        return Client(headers={"Authorization": f"Bearer {make_token(user)}"})

    return make


@pytest.fixture
def chat_world(make_user, make_project, make_room) -> dict[str, Any]:
    """A project with an owner, an admin, a member, an outsider; a public and a private room."""
    owner = make_user("owner")
    admin = make_user("admin1")
    member = make_user("member")
    private_member = make_user("insider")
    outsider = make_user("outsider")
    staff = make_user("staff", is_staff=True)
    project = make_project(owner, name="World", members=(member, private_member), admins=(admin,))
    public = Room.objects.select_related("project").get(project=project, slug="general")
    private = make_room(project, creator=private_member, name="secret", is_private=True)
    return {
        "owner": owner,
        "admin": admin,
        "member": member,
        "insider": private_member,
        "outsider": outsider,
        "staff": staff,
        "project": project,
        "public": public,
        "private": private,
    }


@pytest.fixture
async def _loop_resources():
    """After an async test, stop what the app started on the test's event loop (perf.redis.loop_resource).

    The publisher, the room hub and the async Redis client live as long as
    their event loop; a server's loop lives as long as the server, a test's
    only as long as the test.
    """
    yield
    from perf.redis import aclose_loop_resources

    await aclose_loop_resources()


def pytest_collection_modifyitems(items: list[Any]) -> None:
    for item in items:
        if inspect.iscoroutinefunction(getattr(item, "function", None)):
            item.fixturenames.append("_loop_resources")


def pytest_report_header(config: Any) -> str:
    db = settings.DATABASES["default"]
    return f"database: {db['ENGINE']} {db.get('HOST')}:{db.get('PORT')} | redis: {env.REDIS_URL}"
