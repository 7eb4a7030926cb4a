"""A project with one user per role, a public and a private room, and messages by others in each.

Roles (docs/ARCHITECTURE.md "Access rules"):

* ``anonymous``: no credentials at all;
* ``non_member``: a logged-in user outside the project;
* ``staff``: ``is_staff``, but not a member of the project;
* ``member``: a project member, not in the private room;
* ``private_member``: a project member who is also in the private room;
* ``admin``: a project admin who is *not* in the private room.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.test import Client

from chat.models import Message, Room, RoomMember
from chat.services import accounts as account_services
from chat.services import messages as message_services
from chat.services import rooms as room_services
from projects import services as project_services
from projects.models import Membership, Project
from tests.servers import app_servers

ROLES = ("anonymous", "non_member", "staff", "member", "private_member", "admin")

# Ids and slugs that do not exist: "exists but hidden" must answer exactly like these.
MISSING_ID = 987_654_321
MISSING_SLUG = "no-such-thing"
PRIVATE_ROOM_NAME = "hush-hush-room"


@dataclass
class World:
    project: Project
    public: Room
    private: Room
    users: dict[str, Any]
    # Two messages by someone else in each room, oldest first.
    public_messages: list[Message]
    private_messages: list[Message]
    tokens: dict[str, str] = field(default_factory=dict)

    def user(self, role: str) -> Any:
        return self.users.get(role)


@pytest.fixture
def world(make_user) -> World:
    owner = make_user("owner", first_name="Olive")
    users = {
        "anonymous": None,
        "non_member": make_user("outsider"),
        "staff": make_user("staffer", is_staff=True),
        "member": make_user("member"),
        "private_member": make_user("insider"),
        "admin": make_user("admin1"),
    }
    author = make_user("insider2")  # writes the private room's messages
    bystander = make_user("bystander")  # a project member outside the private room: the one to add to it
    make_user("newbie")  # not in the project: the one to invite
    project = project_services.project_create(user=owner, name="World", slug="world")
    for user in (users["member"], users["private_member"], author, bystander):
        Membership.objects.create(project=project, user=user, role=Membership.Role.MEMBER)
    Membership.objects.create(project=project, user=users["admin"], role=Membership.Role.ADMIN)
    public = Room.objects.select_related("project").get(project=project, slug="general")
    private = room_services.room_create(project=project, user=users["private_member"], name=PRIVATE_ROOM_NAME, is_private=True)
    RoomMember.objects.create(room=private, user=author)
    private = Room.objects.select_related("project").get(pk=private.pk)
    public_messages = [
        message_services.message_create(room=public, author=owner, body=f"public note {i}")[0] for i in range(2)
    ]
    private_messages = [
        message_services.message_create(room=private, author=author, body=f"private note {i}")[0] for i in range(2)
    ]
    tokens = {role: account_services.token_create(user=user)[1] for role, user in users.items() if user is not None}
    return World(project, public, private, users, public_messages, private_messages, tokens)


def page_client(user: Any) -> Client:
    """A browser: logged in through the session when ``user`` is given."""
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


def session_api_client(user: Any) -> tuple[Client, dict[str, str]]:
    """A logged-in browser that enforces CSRF, and the headers its JavaScript would send on a write."""
    client = Client(enforce_csrf_checks=True)
    if user is None:
        return client, {}
    client.force_login(user)
    # The project list renders a form, so it sets the csrftoken cookie.
    assert client.get("/").status_code == 200
    return client, {"X-CSRFToken": client.cookies["csrftoken"].value}


@pytest.fixture(scope="module")
def server_port(django_db_setup) -> Iterator[int]:
    """One real server process for the module, on this run's test database and Redis.

    Started exactly as tests/servers.py starts it (``python -m chatsite.server``
    with its defaults: uvicorn, 1 MiB messages). Tests create their data in
    ``transaction=True`` tests so the server sees it.
    """
    with app_servers(1) as servers:
        ((port, proc),) = servers
        yield port
        assert proc.poll() is None, "the server died during the module"
